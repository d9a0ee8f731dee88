"""Seeded fuzzing of the image path: mutated PNG/JPEG/TIFF/GIF/WebP/BMP through the decoder, a
batch build and fm-match. Nothing may escape as an uncaught exception, print more than its one
line, lose a good image from a batch, or take memory without bound."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fashion_match.cli.common import entrypoint
from fashion_match.cli.match import cli as match_cli
from fashion_match.data.images import load_image
from fashion_match.data.preprocess import PreprocessSpec
from fashion_match.errors import BadImage
from fashion_match.runtime import load_manifest
from tests.conftest import REPO, photo
from tests.fuzz.mutate import KINDS, base_images, mutate_image

N_DECODES = 4000
DECODE_RSS_CAP_MB = 300  # the worker peaks near 60 MB; an unguarded 8000x1 PNG alone took 2,200 MB
FM_INDEX = str(Path(sys.executable).parent / "fm-index")


def test_decoder_survives_every_mutant_within_a_memory_cap() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "tests.fuzz.decode_worker", str(N_DECODES)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stderr == ""  # no libtiff or Pillow chatter with the CLI's logging set-up
    rep = json.loads(r.stdout)
    assert rep["unexpected"] == [] and rep["n"] == N_DECODES
    assert not any(k.endswith("/wrong shape") for k in rep["counts"])
    assert rep["peak_rss_mb"] < DECODE_RSS_CAP_MB, rep["peak_rss_mb"]
    # the mutants exercise both outcomes for every format and kind, or the fuzzing says little
    for name in base_images():
        assert any(k.startswith(f"{name}/") and k.endswith("/bad") for k in rep["counts"]), name
    for kind in KINDS:
        assert sum(v for k, v in rep["counts"].items() if f"/{kind}/" in k) >= N_DECODES // len(KINDS) - 1
    assert sum(v for k, v in rep["counts"].items() if k.endswith("/ok")) > 200  # many survive a flip


def _mutant_folder(root: Path, n: int, first_seed: int) -> tuple[list[Path], list[Path]]:
    """n mutants plus 30 good photos in one folder tree; returns (all files, good files)."""
    bases = base_images()
    names = sorted(bases)
    files, good = [], []
    for i in range(n):
        seed = first_seed + i
        name = names[seed % len(names)]
        _, data = mutate_image(name, bases[name], seed)
        ext = {"png-rgba": "png", "jpeg-progressive": "jpg", "jpeg": "jpg"}.get(name, name.split("-")[0])
        p = root / f"m{i % 10}" / f"{name} {seed}.{ext}"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        files.append(p)
    for i in range(30):
        p = root / "good" / f"g{i:02d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        photo(40, 40, seed=i).save(p)
        files.append(p)
        good.append(p)
    return files, good


def _decodes(p: Path, spec: PreprocessSpec) -> bool:
    """The reference: this one file alone through the decoder, with the model's own preprocessing."""
    try:
        load_image(p, spec)
        return True
    except BadImage:
        return False


def test_a_batch_build_keeps_every_image_that_decodes(odd_dir: Path, tiny_model_dir: Path) -> None:
    files, good = _mutant_folder(odd_dir / "gallery", 300, first_seed=10_000)
    spec = load_manifest(tiny_model_dir).preprocess
    readable = {str(p) for p in files if _decodes(p, spec)}
    assert {str(p) for p in good} <= readable and len(readable) < len(files)
    out = odd_dir / "idx"
    r = subprocess.run(
        [FM_INDEX, "build", str(odd_dir / "gallery"), "--out", str(out), "--model", str(tiny_model_dir), "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(r.stdout)
    from fashion_match.runtime.index import Index

    kept = {e.path for e in Index.open(out, verify=True).entries}
    assert kept == readable  # every readable file kept, every other one listed with its reason
    assert len(rep["skipped_files"]) == len(files) - len(readable)
    assert all(line.startswith(("  skipped: ", "  ... ")) for line in r.stderr.splitlines())


@pytest.fixture
def fm_match():  # type: ignore[no-untyped-def]
    return entrypoint(match_cli, "fm-match")  # in-process: the command without its fast os._exit


def test_fm_match_on_mutants_is_a_verdict_or_one_line(
    odd_dir: Path, tiny_model_dir: Path, capfd: pytest.CaptureFixture[str], fm_match
) -> None:  # type: ignore[no-untyped-def]
    files, _ = _mutant_folder(odd_dir / "m", 60, first_seed=20_000)
    ref = str(REPO / "examples/sample/01-pullover/shop.png")
    spec = load_manifest(tiny_model_dir).preprocess
    codes = []
    for p in files[:60]:
        with pytest.raises(SystemExit) as ei:
            fm_match([str(p), ref, "--model", str(tiny_model_dir)])
        out, err = capfd.readouterr()  # file-descriptor level: C libraries' output is seen too
        code = int(ei.value.code or 0)
        codes.append(code)
        if _decodes(p, spec):
            assert code in (0, 1) and err == "" and out.startswith(("match", "no match")), (p, err)
        else:
            assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith(f"fm-match: error: {p}: "), (
                p,
                err,
            )
            assert "unexpected" not in err
    assert 2 in codes and ({0, 1} & set(codes))
