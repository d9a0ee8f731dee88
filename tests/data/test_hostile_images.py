"""Images a hostile or careless user hands us: each case once failed in a way a user could see."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import EpsImagePlugin, Image

from fashion_match.data.images import MAX_RESIZE_PIXELS, decode_image, load_batch, load_image
from fashion_match.data.preprocess import IMAGENET, PreprocessSpec
from fashion_match.errors import BadImage
from tests.conftest import REPO, encode, photo

FM_MATCH = Path(sys.executable).parent / "fm-match"
GOOD = str(REPO / "examples/sample/01-pullover/shop.png")
RSS_CAP_MB = 400  # fm-match on a normal pair peaks near 140 MB; a thin-image bomb once took 2,200-8,700 MB


def _peak_rss_mb(*args: str) -> tuple[int, str, int]:
    """Run fm-match in a fresh interpreter and read that child's peak resident memory."""
    probe = (
        "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "print(r.returncode); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
        "sys.stdout.write(r.stderr)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(FM_MATCH), *args], capture_output=True, text=True, timeout=120
    )
    rc, rss, *err = out.stdout.split("\n", 2)
    return int(rc), "".join(err), int(rss) // 1024


@pytest.mark.parametrize("size", [(8000, 1), (65000, 2), (1, 60000)])
def test_thin_image_is_refused_before_it_allocates(tmp_path: Path, size: tuple[int, int]) -> None:
    path = tmp_path / f"thin {size[0]}x{size[1]}.png"
    Image.new("RGB", size, (200, 10, 10)).save(path)
    assert path.stat().st_size < 1000  # a tiny file: the bomb is in its shape
    rc, err, rss = _peak_rss_mb(str(path), GOOD)
    assert rc == 2 and err.count("\n") == 1 and "too thin to resize" in err and path.name in err
    assert rss < RSS_CAP_MB, f"peak RSS {rss} MB"


def test_resize_guard_follows_the_spec() -> None:
    spec = PreprocessSpec(size=224)
    assert spec.resize_pixels(300, 200) == 384 * 256  # what shorter_crop allocates before its crop
    assert PreprocessSpec(resize="letterbox").resize_pixels(8000, 1) == 224 * 224
    ok = np.zeros((40, 40 * 60, 3), np.uint8)  # 60:1 still fits (4 M pixels once resized)
    assert load_image(ok, spec).shape == (224, 224, 3)
    with pytest.raises(BadImage, match="too thin"):
        load_image(np.zeros((10, 10 * 70, 3), np.uint8), spec)
    assert spec.resize_pixels(10 * 70, 10) > MAX_RESIZE_PIXELS
    # squash and letterbox never grow with the aspect ratio: the same strip is fine there
    assert load_image(np.zeros((1, 8000, 3), np.uint8), PreprocessSpec(resize="letterbox")).shape == (224, 224, 3)


def test_a_bounding_box_is_judged_after_the_crop() -> None:
    wide = np.full((100, 1000, 3), 128, np.uint8)
    assert load_image(wide, IMAGENET).shape == (224, 224, 3)
    with pytest.raises(BadImage, match="too thin"):
        load_image(wide, IMAGENET, bbox=(0, 0, 1000, 3))  # a 1000x3 crop


def _mutated_tiff() -> bytes:
    """An uncompressed TIFF with four bytes of its header changed: Pillow raised TypeError on it."""
    d = bytearray(encode(photo(64, 48), "TIFF"))
    rng = random.Random(19)
    for _ in range(rng.randint(1, 4)):
        d[rng.randrange(min(len(d), 200))] = rng.randrange(256)
    return bytes(d)


def test_any_library_exception_is_that_files_bad_image(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BadImage, match="corrupt image"):
        load_image(_mutated_tiff(), IMAGENET, name="flipped.tiff")

    def boom(self: object) -> None:
        raise KeyError("a plugin bug")

    png = encode(photo(), "PNG")
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", boom)
    with pytest.raises(BadImage, match=r"x\.png: corrupt image \(KeyError"):
        decode_image(png, name="x.png")


def test_a_batch_keeps_every_good_image_around_one_that_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    good = [encode(photo(seed=i), "PNG") for i in range(5)]
    batch = load_batch([good[0], good[1], _mutated_tiff(), good[2], good[3], good[4]], IMAGENET, workers=2)
    assert batch.indices == [0, 1, 3, 4, 5] and len(batch.bad) == 1 and batch.pixels.shape[0] == 5

    real_resize = PreprocessSpec.resize_image

    def flaky(self: PreprocessSpec, im: Image.Image) -> Image.Image:
        if im.width == 33:
            raise ZeroDivisionError("resampler bug")
        return real_resize(self, im)

    monkeypatch.setattr(PreprocessSpec, "resize_image", flaky)
    batch = load_batch([good[0], encode(photo(33, 20), "PNG"), good[1]], IMAGENET, workers=2)
    assert batch.indices == [0, 2] and "cannot be resized (ZeroDivisionError" in batch.bad[0].reason


def test_eps_named_jpg_never_reaches_the_eps_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    eps = tmp_path / "photo.jpg"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n0 0 moveto 16 16 lineto stroke\n%%EOF\n")
    assert Image.open(eps).format == "EPS"  # what Pillow would pick by itself (and run Ghostscript to load)

    def forbidden(*_a: object, **_k: object) -> None:
        raise AssertionError("the EPS plugin was reached")

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", forbidden)
    with pytest.raises(BadImage, match="not an image in an accepted format"):
        decode_image(eps)


def test_fifo_and_devices_are_not_regular_files(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)  # opening it would block forever
    with pytest.raises(BadImage, match="not a regular file"):
        decode_image(fifo)
    with pytest.raises(BadImage, match="not a regular file"):
        decode_image("/dev/zero")
    with pytest.raises(BadImage, match="NUL byte"):
        decode_image("a\x00b.jpg")


def test_codec_messages_stay_off_stderr(tmp_path: Path) -> None:
    """Pillow warns on a TIFF that still decodes, libtiff prints from C on one that does not:
    stdout keeps the verdict, stderr keeps to the one error line; --debug shows the rest."""
    from tests.fuzz.mutate import base_images, mutate_image

    bases = base_images()
    warns, fails = tmp_path / "warns.tif", tmp_path / "fails.tif"
    warns.write_bytes(mutate_image("tiff", bases["tiff"], 67)[1])  # "Tag data larger than file"
    fails.write_bytes(mutate_image("tiff-lzw", bases["tiff-lzw"], 2)[1])  # libtiff: "Using code not yet in table"
    r = subprocess.run([str(FM_MATCH), str(warns), str(warns)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("match") and r.stderr == ""
    r = subprocess.run([str(FM_MATCH), str(fails), GOOD], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith(f"fm-match: error: {fails}")
    loud = subprocess.run(
        [str(FM_MATCH), str(warns), str(warns), "--debug"], capture_output=True, text=True, timeout=120
    )
    assert loud.returncode == 0 and "Tag data larger than file" in loud.stderr
