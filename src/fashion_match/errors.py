"""One root error, a few children. Messages say what was asked, what was found, and the fix.

The CLI catches `FmError`, prints its message as one line on stderr and exits 2.
"""

from __future__ import annotations


class FmError(Exception):
    """Root of every error a user can cause or fix (bad file, bad option, missing extra)."""

    def __str__(self) -> str:
        # One line, always: the CLI prints exactly this.
        return " ".join(super().__str__().split())


class UsageError(FmError):
    """An option or argument that cannot work."""


class BadImage(FmError):
    """An image that is missing, empty, truncated, corrupt, too large or not an image."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"{name}: {reason}")


class BadDataset(FmError):
    """A dataset whose files do not follow their format (file and line named)."""


class MissingDependency(FmError):
    """An optional library is not installed; the message names the extra to install."""


class BackendUnavailable(FmError):
    """A backend, device or precision that cannot run here. Never downgraded silently."""


class ManifestMismatch(FmError):
    """An artifact that does not match its manifest (hash, dims, preprocessing, versions)."""


class Locked(FmError):
    """Another process is writing the same index or output; nothing was changed."""


class ExportError(FmError):
    """An export that failed, or whose result failed its accuracy gate."""


def require(module: str, extra: str) -> object:
    """Import an optional module, or fail with the pip command that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependency(
            f"'{module}' is not installed ({e}); install it with: pip install 'fashion-match[{extra}]'"
        ) from e
