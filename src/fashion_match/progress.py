"""Progress of long steps, always on stderr so `--json` output stays clean.

On a terminal a counted step is a tqdm bar; on any other stream (a log file, CI, a pipe) it is a
plain line every `LINE_EVERY_S` seconds and one when it ends, so a job that runs for minutes is
never silent. `stage` brackets a step with a start line and a line with its elapsed time.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

LINE_EVERY_S = 10.0
QUIET_BELOW_S = 2.0  # a counted step this short, with no line yet, ends without one


def _stream() -> IO[str]:
    return sys.stderr


def on_terminal() -> bool:
    try:
        return _stream().isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def say(line: str) -> None:
    """One line on stderr, placed above a running bar instead of through it."""
    if on_terminal():
        from tqdm import tqdm

        tqdm.write(line, file=_stream())
    else:
        print(line, file=_stream(), flush=True)


def _seconds(t: float) -> str:
    return f"{t:.1f} s" if t < 120 else f"{t / 60:.1f} min"


class Bar:
    """`total` things to do: a tqdm bar on a terminal, else lines with the count and elapsed time."""

    def __init__(self, total: int | None, desc: str, unit: str = "img", enabled: bool = True) -> None:
        self.total, self.desc, self.unit, self.enabled = total, desc, unit, enabled
        self.n, self._lines = 0, 0
        self.t0 = self._last = time.perf_counter()
        self._tqdm: Any = None
        if enabled and on_terminal():
            from tqdm import tqdm

            self._tqdm = tqdm(total=total, desc=desc, unit=unit, file=_stream(), leave=False, dynamic_ncols=True)

    def _count(self) -> str:
        return f"{self.n}/{self.total} {self.unit}" if self.total is not None else f"{self.n} {self.unit}"

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._tqdm is not None:
            self._tqdm.update(n)
        elif self.enabled and time.perf_counter() - self._last >= LINE_EVERY_S:
            self._last = time.perf_counter()
            self._lines += 1
            say(f"{self.desc}: {self._count()}, {_seconds(self._last - self.t0)}")

    def set_postfix(self, **kw: Any) -> None:
        if self._tqdm is not None:
            self._tqdm.set_postfix(**kw)

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None
        elif self.enabled and self.n and (self._lines or time.perf_counter() - self.t0 >= QUIET_BELOW_S):
            say(f"{self.desc}: {self._count()} in {_seconds(time.perf_counter() - self.t0)}")
        self.enabled = False  # a second close says nothing

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def stage(desc: str, enabled: bool = True) -> Iterator[None]:
    """`desc ...` when the step starts and `desc: done in T` (or `failed after T`) when it ends."""
    t0 = time.perf_counter()
    if enabled:
        say(f"{desc} ...")
    try:
        yield
    except BaseException:
        if enabled:
            say(f"{desc}: failed after {_seconds(time.perf_counter() - t0)}")
        raise
    if enabled:
        say(f"{desc}: done in {_seconds(time.perf_counter() - t0)}")
