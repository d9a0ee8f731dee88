"""fm-match runs as a real process: it leaves with os._exit, which would end pytest itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO, encode, photo

EXE = Path(sys.executable).parent / "fm-match"
PAIR = [str(REPO / "examples/sample/01-pullover/consumer.jpg"), str(REPO / "examples/sample/01-pullover/shop.png")]
OTHER = str(REPO / "examples/sample/00-ankle-boot/shop.png")


def fm_match(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=120)


def test_match_exit_0_and_line_format() -> None:
    r = fm_match(*PAIR)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("match  similarity ") and "  threshold " in r.stdout and r.stderr == ""


def test_no_match_exit_1_and_json_schema() -> None:
    r = fm_match(PAIR[0], OTHER, "--json", "--device", "cpu")  # the device it reports is asked for
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    assert set(out) == {"a", "b", "similarity", "threshold", "match", "backend", "precision", "device", "model"}
    assert out["match"] is False and out["similarity"] < out["threshold"]
    assert out["backend"] == "onnxruntime" and out["precision"] == "fp32" and out["b"] == OTHER
    assert out["device"] == "cpu"


def test_threshold_option_flips_the_verdict() -> None:
    assert fm_match(PAIR[0], OTHER, "--threshold", "-1").returncode == 0
    assert fm_match(*PAIR, "--threshold", "1").returncode == 1


@pytest.mark.parametrize(
    "args, needle",
    [
        (["missing.jpg"], "missing.jpg: no such file"),
        (["--precision", "fp16", "--backend", "torch"], "no 'fp16' format"),
        (["--backend", "tensorrt"], "tensorrt"),
        (["--model", "/nonexistent/model"], "not a model directory"),
        (["--device", "cuda"], "cuda"),
        (["--device", "cuda:x"], "'cuda:x': choose auto, cpu, cuda or cuda:N"),
    ],
)
def test_errors_are_one_line_exit_2(args: list[str], needle: str) -> None:
    argv = [PAIR[0], *args] if args[0].endswith(".jpg") else [*PAIR, *args]
    r = fm_match(*argv)
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fm-match: error: ") and needle in lines[0], r.stderr


def _odd_images(d: Path) -> dict[str, Path]:
    base = photo(120, 90, seed=3)
    files = {}
    files["cmyk"] = d / "cmyk ü.jpg"
    files["cmyk"].write_bytes(encode(base.convert("CMYK"), "JPEG"))
    files["16bit"] = d / "sixteen.png"
    Image.fromarray(np.asarray(base.convert("L")).astype(np.uint16) * 257).save(files["16bit"])
    files["palette_alpha"] = d / "palette.png"
    files["palette_alpha"].write_bytes(encode(base.convert("P"), "PNG", transparency=0))
    exif = Image.Exif()
    exif[0x0112] = 8
    files["exif_rotated"] = d / "rotated.jpg"
    base.save(files["exif_rotated"], exif=exif)
    files["1x1"] = d / "one.png"
    Image.new("RGB", (1, 1), (200, 10, 10)).save(files["1x1"])
    files["4000x3000"] = d / "big photo.jpg"
    photo(4000, 3000, seed=4).save(files["4000x3000"], quality=85)
    return files


@pytest.mark.parametrize("kind", ["cmyk", "16bit", "palette_alpha", "exif_rotated", "1x1", "4000x3000"])
def test_odd_but_valid_images_get_a_verdict(odd_dir: Path, kind: str) -> None:
    path = _odd_images(odd_dir)[kind]
    r = fm_match(str(path), PAIR[1], "--json")
    assert r.returncode in (0, 1), r.stderr
    assert -1.0 <= json.loads(r.stdout)["similarity"] <= 1.0


@pytest.mark.parametrize("content", [b"", b"plain text, not a picture", "truncated", "dir"])
def test_bad_files_exit_2(odd_dir: Path, content: bytes | str) -> None:
    p = odd_dir / "bad file.jpg"
    if content == "dir":
        p.mkdir()
    elif content == "truncated":
        data = encode(photo(200, 200), "JPEG")
        p.write_bytes(data[: len(data) // 3])
    else:
        assert isinstance(content, bytes)
        p.write_bytes(content)
    r = fm_match(PAIR[0], str(p))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and str(p) in r.stderr
    assert "Traceback" not in r.stderr


def test_small_scores_keep_their_digits() -> None:
    from fashion_match.cli.common import score_text

    assert [score_text(x) for x in (0.857, 0.0, 0.000221, 8.2e-08, -0.5)] == [
        "0.857",
        "0.000",
        "0.00022",
        "8.2e-08",
        "-0.500",
    ]
