"""Lean inference: `Backend`s and the `Matcher`. Imports neither torch nor train/export code."""

from fashion_match.runtime.backend import Backend, BackendInfo, open_backend
from fashion_match.runtime.manifest import Manifest, default_model_dir, load_manifest
from fashion_match.runtime.matcher import Embeddings, Matcher, Verdict

__all__ = [
    "Backend",
    "BackendInfo",
    "Embeddings",
    "Manifest",
    "Matcher",
    "Verdict",
    "default_model_dir",
    "load_manifest",
    "open_backend",
]
