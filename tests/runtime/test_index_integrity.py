"""A damaged, tampered or concurrently written index never serves a wrong answer or loses rows."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fashion_match.cli.index import main as fm_index
from fashion_match.cli.search import main as fm_search
from fashion_match.errors import Locked
from fashion_match.fileio import exclusive_lock
from fashion_match.runtime import Matcher
from fashion_match.runtime.index import Index, IndexMismatch
from fashion_match.runtime.index_build import build_shards
from fashion_match.runtime.index_sources import resolve_sources
from tests.conftest import photo, run_cli

FM_INDEX = str(Path(sys.executable).parent / "fm-index")


def gallery(root: Path, n: int, seed: int = 0, size: int = 40) -> Path:
    for i in range(n):
        d = root / f"item {i // 2:03d}"
        d.mkdir(parents=True, exist_ok=True)
        photo(size, size, seed=seed + i).save(d / f"{i % 2}.png")
    return root


@pytest.fixture
def built(odd_dir: Path, tiny_model_dir: Path) -> tuple[Path, Path]:
    src = gallery(odd_dir / "shop", 12)
    with Matcher(tiny_model_dir) as m:
        Index.build(src, odd_dir / "idx", matcher=m, shard_rows=4, progress=False)
    return src, odd_dir / "idx"


def _edit_json(path: Path, edit) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_a_flipped_data_byte_is_refused_naming_the_shard(
    built: tuple[Path, Path], tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, idx = built
    shard = idx / "shards" / "00001.npy"
    raw = bytearray(shard.read_bytes())
    raw[-1] ^= 0x40  # an exponent bit of the last row's last value: that row scores far above 1
    shard.write_bytes(bytes(raw))
    query = str(src / "item 005" / "1.png")
    code, out, err = run_cli(capsys, fm_search, query, "--index", str(idx), "--model", str(tiny_model_dir))
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "00001.npy: row 3 has norm" in err and "rebuild the index" in err
    code, _, err = run_cli(capsys, fm_index, "info", str(idx))  # cheap checks: no --verify needed
    assert code == 2 and "00001.npy" in err


def test_zero_byte_and_truncated_shards_are_errors_not_interruptions(
    built: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, idx = built
    shard = idx / "shards" / "00000.npy"
    body = shard.read_bytes()
    for data, needle in ((b"", "header unreadable"), (body[:-7], "truncated or padded"), (body + b"\0" * 8, "padded")):
        shard.write_bytes(data)
        code, out, err = run_cli(capsys, fm_index, "info", str(idx))
        assert code == 2 and needle in err and "00000.npy" in err and "interrupted" not in err


def test_shard_names_cannot_leave_the_index(built: tuple[Path, Path], tmp_path: Path) -> None:
    _, idx = built
    outside = tmp_path / "other"
    outside.mkdir()
    shutil.copy(idx / "shards" / "00000.npy", outside / "x.npy")
    for bad in ("../../other/x.npy", "/etc/passwd", "../index.json", ".hidden.npy"):
        _edit_json(idx / "index.json", lambda d, b=bad: d["shards"][0].update(file=b))
        with pytest.raises(IndexMismatch, match="not a plain file name inside"):
            Index.open(idx)
    (idx / "shards" / "link.npy").symlink_to(outside / "x.npy")
    _edit_json(idx / "index.json", lambda d: d["shards"][0].update(file="link.npy"))
    with pytest.raises(IndexMismatch, match="not a plain file name inside"):
        Index.open(idx)


@pytest.mark.parametrize(
    "target, edit, needle",
    [
        ("index.json", lambda d: d.pop("shards"), "missing 'shards'"),
        ("index.json", lambda d: d.pop("embedding_dim"), "missing 'embedding_dim'"),
        ("index.json", lambda d: d.update(embedding_dim="8"), "'embedding_dim' must be integer, found a string"),
        ("index.json", lambda d: d.update(dtype="float64"), "dtype 'float64'"),
        ("index.json", lambda d: d["shards"][0].update(rows=-1), "'rows' is -1"),
        ("index.json", lambda d: d.update(sources="abc"), "'sources' must be list of strings"),
        ("shards/00000.json", lambda d: d.pop("paths"), "missing 'paths'"),
        ("shards/00000.json", lambda d: d.update(ids=None), "'ids' must be list of strings, found null"),
        ("shards/00000.json", lambda d: d["ids"].pop(), "3 ids for 4 rows"),
        ("shards/00000.json", lambda d: d.update(bad="x"), "'bad' must be list of objects"),
    ],
)
def test_malformed_index_files_name_the_file_and_field(
    built: tuple[Path, Path], target: str, edit, needle: str
) -> None:  # type: ignore[no-untyped-def]
    _, idx = built
    _edit_json(idx / target, edit)
    with pytest.raises(IndexMismatch) as ei:
        Index.open(idx)
    assert target.split("/")[-1] in str(ei.value) and needle in str(ei.value)


@pytest.mark.parametrize("text", ["[]", "nul", "[" * 200_000, '{"format_version": NaN}'])
def test_index_json_that_is_not_an_index(built: tuple[Path, Path], text: str) -> None:
    _, idx = built
    (idx / "index.json").write_text(text)
    with pytest.raises(IndexMismatch, match="index.json"):
        Index.open(idx)


def test_verify_covers_the_metadata(built: tuple[Path, Path]) -> None:
    _, idx = built
    _edit_json(idx / "shards" / "00002.json", lambda d: d["items"].reverse())  # still well-formed
    Index.open(idx)
    with pytest.raises(IndexMismatch, match="00002.json: sha256"):
        Index.open(idx, verify=True)


def test_scores_stay_within_one(built: tuple[Path, Path], tiny_model_dir: Path) -> None:
    src, idx = built
    index = Index.open(idx)
    with Matcher(tiny_model_dir) as m:
        results, _ = index.search([src / e.id for e in index.entries], k=12, matcher=m)
    sims = [mt["similarity"] for r in results for mt in r.matches]
    assert len(sims) == 144 and max(sims) <= 1.0 and min(sims) >= -1.0


def _interrupt_after(embed, shards: int):  # type: ignore[no-untyped-def]
    calls = {"n": 0}

    def wrapped(sources):  # type: ignore[no-untyped-def]
        if calls["n"] == shards:
            raise KeyboardInterrupt  # what a kill between two shards leaves behind
        calls["n"] += 1
        return embed(sources)

    return wrapped


def _killed_after_two_shards(src: Path, out: Path, m: Matcher) -> Path:
    """What a build killed between its second and third shard leaves in `out` (4 images a shard)."""

    def embed(sources):  # type: ignore[no-untyped-def]
        e = m.embed(sources)
        return e.vectors, e.indices, [(b.name, b.reason) for b in e.bad]

    out.mkdir()
    with pytest.raises(KeyboardInterrupt):
        build_shards(
            out,
            resolve_sources(src),
            _interrupt_after(embed, 2),
            first_shard=0,
            dtype="float32",
            shard_rows=4,
            progress=False,
        )
    return out


def test_resume_re_embeds_a_shard_changed_after_it_was_written(odd_dir: Path, tiny_model_dir: Path) -> None:
    src = gallery(odd_dir / "shop", 12)
    (src / "item 000" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")  # a bad file in the first shard
    with Matcher(tiny_model_dir) as m:
        whole = Index.build(src, odd_dir / "whole", matcher=m, shard_rows=4, progress=False)
        out = _killed_after_two_shards(src, odd_dir / "killed", m)
        npy = out / "shards" / "00000.npy"
        tampered = np.load(npy)[::-1].copy()  # unit rows, same shape: only a hash sees it
        np.save(npy, tampered)
        meta = out / "shards" / "00001.json"
        meta.write_text(meta.read_text().replace("item 002", "item 999"))
        resumed = Index.build(src, out, matcher=m, shard_rows=4, progress=False)
    np.testing.assert_array_equal(np.concatenate(resumed.shards), np.concatenate(whole.shards))
    assert [e.item_id for e in resumed.entries] == [e.item_id for e in whole.entries]
    assert resumed.manifest["skipped"] == whole.manifest["skipped"] and len(whole.manifest["skipped"]) == 1
    Index.open(out, verify=True)


def test_add_tells_images_apart_by_absolute_path(
    odd_dir: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = gallery(odd_dir / "a", 6, seed=0)
    b = gallery(odd_dir / "b", 6, seed=100)  # the same relative names, other photos
    idx = odd_dir / "idx"
    model = ("--model", str(tiny_model_dir))
    assert run_cli(capsys, fm_index, "build", str(a), "--out", str(idx), *model)[0] == 0
    code, out, err = run_cli(capsys, fm_index, "add", str(idx), str(b), *model, "--json")
    rep = json.loads(out)
    assert code == 0 and rep["images"] == 12 and rep["added"] == 6 and rep["duplicates"] == []
    code, out, err = run_cli(capsys, fm_index, "add", str(idx), str(a), *model)
    assert code == 0 and "0 new" in out and err.count("duplicate:") == 6
    assert f"duplicate: {a / 'item 000' / '0.png'}: already in the index" in err
    assert Index.open(idx).manifest["sources"] == [str(a), str(b)]  # an add of nothing leaves the index as it was


def test_a_second_writer_is_refused_while_the_first_holds_the_lock(tmp_path: Path) -> None:
    with exclusive_lock(tmp_path, "index"):
        with pytest.raises(Locked, match=f"process {os.getpid()} is writing this index"):
            with exclusive_lock(tmp_path, "index"):
                pass
    with exclusive_lock(tmp_path, "index"):  # released on exit
        pass


def _wait_for_lock(folder: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        lock = folder / ".lock"
        if lock.exists() and lock.read_text().strip() == f"process {proc.pid}":
            return
        assert proc.poll() is None, "the first writer ended before it took the lock"
        time.sleep(0.01)
    raise AssertionError("the first writer never took the lock")


@pytest.mark.parametrize("mode", ["build", "add"])
def test_two_writer_processes_never_mix(odd_dir: Path, tmp_path: Path, tiny_model_dir: Path, mode: str) -> None:
    """The first writer is paused (SIGSTOP) while holding the lock: the second must be refused
    with one line and change nothing; the first then finishes with exactly its own rows."""
    first, second = gallery(odd_dir / "first", 40, seed=0), gallery(odd_dir / "second", 30, seed=500)
    idx = tmp_path / "idx"
    model = ["--model", str(tiny_model_dir), "--batch-size", "4"]
    base = 0
    if mode == "add":
        base_src = gallery(odd_dir / "base", 4, seed=900)
        subprocess.run([FM_INDEX, "build", str(base_src), "--out", str(idx), *model], check=True, capture_output=True)
        base = 4
    cmd = (
        (lambda s: [FM_INDEX, "build", str(s), "--out", str(idx), *model])
        if mode == "build"
        else (lambda s: [FM_INDEX, "add", str(idx), str(s), *model])
    )
    a = subprocess.Popen(cmd(first), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for_lock(idx, a)
        os.kill(a.pid, signal.SIGSTOP)
        if mode == "add":  # a reader meanwhile needs no lock and sees the whole old index
            assert len(Index.open(idx, verify=True)) == base
        b = subprocess.run(cmd(second), capture_output=True, text=True, timeout=120)
        os.kill(a.pid, signal.SIGCONT)
        assert b.returncode == 2 and b.stderr.count("\n") == 1, b.stderr
        assert f"process {a.pid} is writing this index now" in b.stderr
        assert a.wait(timeout=120) == 0, a.stderr.read() if a.stderr else ""
    finally:
        if a.poll() is None:
            os.kill(a.pid, signal.SIGCONT)
            a.kill()
    index = Index.open(idx, verify=True)
    paths = [e.path for e in index.entries]
    assert len(paths) == len(set(paths)) == base + 40
    assert all(str(odd_dir / "second") not in p for p in paths)
    # unpaused, the second writer now runs: an add appends all its rows, a build is refused (index exists)
    again = subprocess.run(cmd(second), capture_output=True, text=True, timeout=120)
    if mode == "add":
        assert again.returncode == 0 and len(Index.open(idx, verify=True)) == base + 70
    else:
        assert again.returncode == 2 and "exists; use 'fm-index add'" in again.stderr


def test_writers_started_together_lose_nothing(odd_dir: Path, tmp_path: Path, tiny_model_dir: Path) -> None:
    """Free-running: whichever add wins the lock, every row of every add that succeeded is there."""
    srcs = [gallery(odd_dir / f"src{i}", 16, seed=100 * i) for i in range(3)]
    idx = tmp_path / "idx"
    model = ["--model", str(tiny_model_dir)]
    subprocess.run([FM_INDEX, "build", str(srcs[0]), "--out", str(idx), *model], check=True, capture_output=True)
    procs = [
        subprocess.Popen([FM_INDEX, "add", str(idx), str(s), *model], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for s in srcs[1:]
    ]
    codes = [p.wait(timeout=120) for p in procs]
    assert set(codes) <= {0, 2}
    index = Index.open(idx, verify=True)
    want = 16 + 16 * codes.count(0)
    paths = [e.path for e in index.entries]
    assert len(paths) == len(set(paths)) == want
    for p, c in zip(procs, codes, strict=True):
        err = p.stderr.read().decode() if p.stderr else ""
        assert c == 0 or "is writing this index now" in err


def test_a_garbled_build_plan_is_named(odd_dir: Path, tiny_model_dir: Path) -> None:
    src = gallery(odd_dir / "shop", 4)
    out = odd_dir / "idx"
    out.mkdir()
    (out / ".build.json").write_text("{" * 100_000)
    with (
        Matcher(tiny_model_dir) as m,
        pytest.raises(IndexMismatch, match=r"\.build\.json: not valid JSON for a build plan.*delete"),
    ):
        Index.build(src, out, matcher=m, progress=False)


def test_a_resumed_build_keeps_the_bad_files_of_the_shards_it_reuses(odd_dir: Path, tiny_model_dir: Path) -> None:
    src = gallery(odd_dir / "shop", 12)
    (src / "item 000" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")  # in shard 0, which is reused
    with Matcher(tiny_model_dir) as m:
        whole = Index.build(src, odd_dir / "whole", matcher=m, shard_rows=4, progress=False)
        out = _killed_after_two_shards(src, odd_dir / "killed", m)
        resumed = Index.build(src, out, matcher=m, shard_rows=4, progress=False)
    assert [s["path"] for s in whole.manifest["skipped"]] == [str(src / "item 000" / "broken.png")]
    assert resumed.manifest["skipped"] == whole.manifest["skipped"]
    assert resumed.report is not None and resumed.report.bad == whole.manifest["skipped"]


def test_every_file_of_an_index_is_written_atomically(
    odd_dir: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A killed writer can leave a stale file, never a half-written one: every file the index keeps
    went through the atomic writer (temporary file, fsync, rename)."""
    import fashion_match.runtime.index_build as build
    import fashion_match.runtime.index_format as fmt

    written: set[str] = set()

    def spy(real):  # type: ignore[no-untyped-def]
        def wrapper(path, *a, **k):  # type: ignore[no-untyped-def]
            written.add(Path(path).name)
            return real(path, *a, **k)

        return wrapper

    for module in (fmt, build):
        for name in ("atomic_open", "write_json_atomic"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, spy(getattr(module, name)))
    src = gallery(odd_dir / "shop", 10)
    with Matcher(tiny_model_dir) as m:
        idx = Index.build(src, odd_dir / "idx", matcher=m, shard_rows=4, progress=False)
        idx.add(gallery(odd_dir / "more", 4, seed=50), matcher=m, progress=False)
    kept = {p.name for p in (odd_dir / "idx").rglob("*") if p.is_file()} - {".lock"}
    assert kept == {"index.json", *(f"{i:05d}.{e}" for i in range(4) for e in ("npy", "json"))}
    assert kept <= written
