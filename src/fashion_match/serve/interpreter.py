"""Whether this Python can host Triton's Python backend (what PyTriton runs the models in).

The backend's stub is a separate program linked against `libpython3.X.so.1.0`, found by the
dynamic loader, while it imports this interpreter's standard library. Both must be the same build:
a pyenv 3.11.7 whose stub loads Debian's libpython 3.11.2 fails when the stub starts
(`'_thread.RLock' object has no attribute '_recursion_count'`), and a Python built without a
shared libpython cannot host it at all. Debian's /usr/bin/python3 works (bash dev.sh serve uses it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from fashion_match.errors import UsageError

FIX = "run fm-serve from Debian's Python: bash dev.sh serve sets up .venv-serve with /usr/bin/python3"


def loader_libpython(soname: str) -> Path | None:
    """Where the dynamic loader would find `soname` (LD_LIBRARY_PATH first, then ldconfig's cache)."""
    for d in filter(None, os.environ.get("LD_LIBRARY_PATH", "").split(":")):
        if (Path(d) / soname).exists():
            return (Path(d) / soname).resolve()
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        if line.strip().startswith(soname + " ") and "=>" in line:
            return Path(line.split("=>")[1].strip()).resolve()
    return None


def interpreter_problem() -> str | None:
    """Why this interpreter cannot host Triton's Python backend, or None."""
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        return f"{sys.executable} (Python {ver}) has no shared libpython, which Triton's Python backend needs"
    own = Path(str(sysconfig.get_config_var("LIBDIR"))) / f"libpython{ver}.so.1.0"
    found = loader_libpython(own.name)
    if found is None:
        return f"the dynamic loader finds no {own.name} for {sys.executable}"
    if own.exists() and found != own.resolve():
        return (
            f"{sys.executable} is Python {sys.version.split()[0]} from {sys.prefix}, but the loader would give "
            f"Triton's stub {found} (another build), which fails when the stub starts"
        )
    return None


def check_interpreter() -> None:
    why = interpreter_problem()
    if why:
        raise UsageError(f"{why}; {FIX}")
