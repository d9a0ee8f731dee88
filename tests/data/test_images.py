from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fashion_match.data.images import decode_image, iter_batches, load_batch, load_image
from fashion_match.data.preprocess import PreprocessSpec
from fashion_match.errors import BadImage
from tests.conftest import encode, photo

SPEC = PreprocessSpec(size=32, resize="squash")


def _rgba_half_transparent() -> Image.Image:
    a = np.zeros((10, 10, 4), np.uint8)
    a[..., 0] = 200
    a[:, :5, 3] = 255  # left half opaque red-ish, right half fully transparent
    return Image.fromarray(a, "RGBA")


def test_rgba_composited_on_white() -> None:
    out = np.asarray(decode_image(encode(_rgba_half_transparent(), "PNG")))
    assert out.shape == (10, 10, 3) and out.dtype == np.uint8
    assert tuple(out[0, 0]) == (200, 0, 0)
    assert tuple(out[0, 9]) == (255, 255, 255)


def test_palette_with_transparency_composited_on_white() -> None:
    p = Image.new("P", (4, 4), 0)
    p.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    p.putpixel((1, 1), 1)
    out = np.asarray(decode_image(encode(p, "PNG", transparency=0)))
    assert tuple(out[0, 0]) == (255, 255, 255)  # palette index 0 is transparent
    assert tuple(out[1, 1]) == (10, 200, 30)


def test_la_composited_on_white() -> None:
    la = Image.merge("LA", (Image.new("L", (3, 3), 50), Image.new("L", (3, 3), 0)))
    assert tuple(np.asarray(decode_image(encode(la, "PNG")))[0, 0]) == (255, 255, 255)


def test_cmyk_jpeg_becomes_rgb() -> None:
    src = photo(40, 30)
    out = decode_image(encode(src.convert("CMYK"), "JPEG", quality=95))
    assert out.mode == "RGB" and out.size == (40, 30)
    assert np.abs(np.asarray(out, int) - np.asarray(src, int)).mean() < 12


def test_16bit_png_scaled_to_8bit() -> None:
    a = np.full((5, 6), 65535, np.uint16)
    a[0, 0] = 0
    a[0, 1] = 32768
    out = np.asarray(decode_image(encode(Image.fromarray(a), "PNG")))
    assert out.shape == (5, 6, 3)
    assert out[0, 0, 0] == 0 and out[0, 1, 0] == 128 and out[1, 1, 0] == 255


@pytest.mark.parametrize("mode", ["I", "F", "1", "L"])
def test_other_modes(mode: str) -> None:
    if mode == "F":
        im = Image.fromarray(np.linspace(0, 1, 20, dtype=np.float32).reshape(4, 5))
        fmt = "TIFF"
    elif mode == "I":
        im = Image.fromarray(np.arange(20, dtype=np.int32).reshape(4, 5) * 3000)
        fmt = "TIFF"
    else:
        im = photo(5, 4).convert(mode)
        fmt = "PNG"
    assert im.mode == mode
    out = np.asarray(decode_image(encode(im, fmt)))
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8
    if mode == "F":
        assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255
    if mode == "I":
        assert out[-1, -1, 0] == (19 * 3000) >> 8


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"])
def test_formats(fmt: str) -> None:
    out = decode_image(encode(photo(33, 21), fmt))
    assert out.mode == "RGB" and out.size == (33, 21)


def test_gif_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    out = np.asarray(decode_image(buf.getvalue()))
    assert out[0, 0, 0] > 200 and out[0, 0, 2] < 50


def test_exif_orientation_applied() -> None:
    im = Image.new("RGB", (40, 20), (0, 0, 0))
    im.paste((255, 255, 255), (0, 0, 10, 20))  # white stripe on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    out = decode_image(encode(im, "JPEG", exif=exif, quality=95))
    assert out.size == (20, 40)
    a = np.asarray(out)
    assert a[2, 10].mean() > 200 and a[-3, 10].mean() < 50  # stripe now on top


def test_jpeg_draft_decoding_shrinks_big_photos() -> None:
    data = encode(photo(2000, 1500), "JPEG", quality=90)
    full = decode_image(data)
    small = decode_image(data, min_side=224)
    assert full.size == (2000, 1500)
    assert min(small.size) >= 224 and small.size[0] < 1000
    # the fast path gives nearly the same pixels after the final resize
    a = np.asarray(full.resize((64, 48), Image.Resampling.BILINEAR), int)
    b = np.asarray(small.resize((64, 48), Image.Resampling.BILINEAR), int)
    assert np.abs(a - b).mean() < 4


def test_huge_photo_loads_resized() -> None:
    data = encode(photo(4000, 3000), "JPEG", quality=85)
    assert load_image(data, PreprocessSpec(size=64)).shape == (64, 64, 3)


def test_array_and_path_sources(odd_dir: Path) -> None:
    im = photo(12, 10)
    p = odd_dir / "foto ü.png"
    im.save(p)
    a = np.asarray(im)
    assert np.array_equal(np.asarray(decode_image(p)), a)
    assert np.array_equal(np.asarray(decode_image(str(p))), a)
    assert np.array_equal(np.asarray(decode_image(a)), a)
    assert np.asarray(decode_image(a[..., 0])).shape == (10, 12, 3)
    u16 = a[..., 0].astype(np.uint16) << 8
    assert np.array_equal(np.asarray(decode_image(u16))[..., 0], a[..., 0])
    assert np.asarray(decode_image(lambda: a)).shape == (10, 12, 3)


def _bad_files(d: Path) -> dict[str, tuple[Path, str]]:
    good = encode(photo(64, 64), "JPEG")
    (d / "empty.jpg").write_bytes(b"")
    (d / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (d / "corrupt.jpg").write_bytes(good[:20] + bytes(range(256)) * 4)
    (d / "notes.jpg").write_text("this is not an image")
    (d / "a folder.jpg").mkdir()
    return {
        "empty": (d / "empty.jpg", "empty"),
        "truncated": (d / "truncated.jpg", "truncated"),
        "corrupt": (d / "corrupt.jpg", "corrupt"),
        "text": (d / "notes.jpg", "not an image"),
        "dir": (d / "a folder.jpg", "directory"),
        "missing": (d / "nope.png", "no such file"),
    }


@pytest.mark.parametrize("kind", ["empty", "truncated", "corrupt", "text", "dir", "missing"])
def test_bad_files_named_with_reason(odd_dir: Path, kind: str) -> None:
    path, reason = _bad_files(odd_dir)[kind]
    with pytest.raises(BadImage) as ei:
        decode_image(path)
    assert ei.value.name == str(path)
    assert reason in ei.value.reason
    assert str(path) in str(ei.value) and "\n" not in str(ei.value)


def test_decompression_bomb_refused() -> None:
    data = encode(Image.new("L", (300, 200)), "PNG")
    with pytest.raises(BadImage, match="decompression bomb"):
        decode_image(data, max_pixels=50_000)
    assert decode_image(data, max_pixels=60_000).size == (300, 200)


def test_bad_arrays() -> None:
    with pytest.raises(BadImage):
        decode_image(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(BadImage):
        decode_image(np.zeros((0, 4, 3), np.uint8))


def test_load_batch_keeps_order_and_reports_bad(odd_dir: Path) -> None:
    bad = _bad_files(odd_dir)
    goods = []
    for i in range(4):
        p = odd_dir / f"good {i}.png"
        photo(20, 20, seed=i).save(p)
        goods.append(p)
    sources = [goods[0], bad["truncated"][0], goods[1], bad["missing"][0], goods[2], goods[3]]
    b = load_batch(sources, SPEC, workers=3)
    assert b.indices == [0, 2, 4, 5]
    assert [e.name for e in b.bad] == [str(bad["truncated"][0]), str(bad["missing"][0])]
    for row, i in zip(b.pixels, b.indices, strict=True):
        assert np.array_equal(row, load_image(sources[i], SPEC))


def test_iter_batches_covers_everything_in_order(odd_dir: Path) -> None:
    arrays = [np.full((8, 8, 3), i, np.uint8) for i in range(23)]
    sources: list = list(arrays)
    sources[7] = odd_dir / "missing.png"
    seen, bad = [], []
    for b in iter_batches(sources, SPEC, batch_size=5, workers=2):
        seen += b.indices
        bad += [e.name for e in b.bad]
        for row, i in zip(b.pixels, b.indices, strict=True):
            assert row[0, 0, 0] == i
    assert seen == [i for i in range(23) if i != 7]
    assert bad == [str(odd_dir / "missing.png")]


def test_rgba_array_is_composited_on_white() -> None:
    a = np.zeros((4, 6, 4), np.uint8)
    a[..., 0] = 200  # red everywhere, but only the left half opaque
    a[:, :3, 3] = 255
    a[:, 3:, 3] = 0
    out = np.asarray(decode_image(a))
    assert out[:, :3].tolist() == [[[200, 0, 0]] * 3] * 4  # opaque: the pixel itself
    assert out[:, 3:].tolist() == [[[255, 255, 255]] * 3] * 4  # transparent: white, not the hidden red
