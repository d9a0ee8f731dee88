"""Progress on a stream that is not a terminal: plain lines with counts and elapsed time, on stderr."""

from __future__ import annotations

import re

import pytest

from fashion_match import progress


def test_a_bar_writes_count_lines_and_a_closing_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(progress, "LINE_EVERY_S", 0.0)
    with progress.Bar(3, "embedding gallery") as bar:
        for _ in range(3):
            bar.update()
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 4
    assert all(re.fullmatch(rf"embedding gallery: {i}/3 img, \d+\.\d s", line) for i, line in enumerate(lines[:3], 1))
    assert re.fullmatch(r"embedding gallery: 3/3 img in \d+\.\d s", lines[-1])


def test_a_disabled_bar_and_stage_say_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with progress.Bar(2, "x", enabled=False) as bar, progress.stage("y", enabled=False):
        bar.update(2)
    assert capsys.readouterr() == ("", "")


def test_a_stage_says_when_it_starts_ends_or_fails(capsys: pytest.CaptureFixture[str]) -> None:
    with progress.stage("fp16: converting"):
        pass
    with pytest.raises(RuntimeError), progress.stage("int8: converting"):
        raise RuntimeError("boom")
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "fp16: converting ..." and re.fullmatch(r"fp16: converting: done in \d+\.\d s", err[1])
    assert err[2] == "int8: converting ..." and err[3].startswith("int8: converting: failed after ")


def test_a_short_bar_ends_quietly(capsys: pytest.CaptureFixture[str]) -> None:
    with progress.Bar(2, "checking images") as bar:
        bar.update(2)
    assert capsys.readouterr().err == ""  # under QUIET_BELOW_S and no line yet: nothing to say
