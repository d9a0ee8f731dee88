"""Atomic writes and hashing: a crash never leaves a half-written artifact behind."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from fashion_match.errors import FmError, Locked


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def make_temp(folder: Path, name: str) -> Path:
    """An empty temporary file beside `name` in `folder`, with normal (umask) permissions."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    os.fchmod(fd, _umask_mode())  # mkstemp makes 0600 files; artifacts are meant to be shared
    os.close(fd)
    return Path(tmp)


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Write to a temporary file in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = make_temp(path.parent, path.name)
    except OSError as e:
        raise FmError(f"{path}: cannot write here ({e.strerror or e})") from None
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:  # disk full, quota, I/O error: name the file, keep the old one
        Path(tmp).unlink(missing_ok=True)
        full = e.errno in (errno.ENOSPC, errno.EDQUOT) or "requested and" in str(e)  # numpy's short write
        what = "disk full" if full else "cannot write"
        raise FmError(f"{path}: {what} ({e.strerror or e}); nothing was replaced") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    text = json.dumps(obj, indent=2, sort_keys=False) + "\n"
    with atomic_open(path, "w") as f:
        f.write(text)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextmanager
def exclusive_lock(folder: Path, what: str, name: str = ".lock") -> Iterator[None]:
    """Hold an exclusive flock on folder/name, or refuse at once with one line naming the holder.

    The kernel drops the lock when its process dies (even by kill -9), so a crashed writer never
    leaves the folder locked. The file itself stays: removing it would let two writers lock two
    different files of the same name.
    """
    try:
        fd = os.open(folder / name, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise FmError(f"{folder}: cannot lock the {what} ({e.strerror or e})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "another process"
            raise Locked(
                f"{folder}: {holder} is writing this {what} now; nothing was changed - run again when it has finished"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()}".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def check_output_dir(path: str | Path, what: str) -> Path:
    """Create `path` as a directory we can write, or fail now, before any work is done."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FmError(f"{path}: exists and is not a directory; choose another {what}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = make_temp(path, "write-probe")
        probe.unlink()
    except OSError as e:
        raise FmError(f"{path}: cannot write the {what} here ({e.strerror or e})") from None
    return path
