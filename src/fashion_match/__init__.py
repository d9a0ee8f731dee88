"""fashion-match: efficient fashion matching — train, export, match, benchmark."""

__version__ = "0.1.0"

from fashion_match.errors import FmError  # noqa: E402  (re-exported root error)

__all__ = ["FmError", "__version__"]
