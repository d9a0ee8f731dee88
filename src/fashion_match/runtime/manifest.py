"""`manifest.json`: what a model directory holds, with a sha256 for every file.

It sits beside the artifacts, never inside their bytes. The runtime refuses any artifact whose
bytes, dims or preprocessing disagree with it (`ManifestMismatch`). Plain JSON: nothing in a
model directory is ever unpickled or executed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fashion_match.data.preprocess import PreprocessSpec
from fashion_match.errors import BackendUnavailable, ManifestMismatch, UsageError
from fashion_match.fileio import sha256_file, write_json_atomic
from fashion_match.formats import lookup

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
REQUIRED = ("format_version", "model", "embedding_dim", "preprocess", "threshold", "artifacts")


@dataclass
class Manifest:
    folder: Path
    data: dict[str, Any]

    @property
    def model(self) -> str:
        return str(self.data["model"])

    @property
    def embedding_dim(self) -> int:
        return int(self.data["embedding_dim"])

    @property
    def preprocess(self) -> PreprocessSpec:
        return PreprocessSpec.from_dict(self.data["preprocess"])

    @property
    def threshold(self) -> float:
        return float(self.data["threshold"])

    @property
    def artifacts(self) -> dict[str, dict[str, Any]]:
        return dict(self.data["artifacts"])

    def artifact(self, backend: str, precision: str) -> tuple[Path, dict[str, Any]]:
        """Path and manifest entry of the artifact for (backend, precision), hash-checked."""
        fmt = lookup(backend, precision)
        entry = self.artifacts.get(fmt.artifact)
        if entry is None:
            raise BackendUnavailable(
                f"{self.folder}: no {precision} artifact for {backend} ({fmt.artifact}); "
                f"make it with {fmt.made_by}, or choose another --precision/--backend"
            )
        if entry.get("backend") != backend or entry.get("precision") != precision:
            raise ManifestMismatch(
                f"{self.folder / MANIFEST}: {fmt.artifact} is listed as "
                f"{entry.get('backend')}/{entry.get('precision')}, expected {backend}/{precision}"
            )
        made_from = entry.get("made_from")
        if made_from:
            parent = self.artifacts.get(made_from.get("file", ""), {})
            if parent.get("sha256") != made_from.get("sha256"):
                raise ManifestMismatch(
                    f"{self.folder / MANIFEST}: {fmt.artifact} was made from another {made_from.get('file')} "
                    "than the one listed now; re-run fm-export to remake it"
                )
        path = self.folder / fmt.artifact
        verify_file(path, entry)
        return path, entry

    def short_id(self) -> str:
        """Model name plus the first hex digits of its fp32 artifact hash, for logs and JSON."""
        first = next(iter(self.artifacts.values()), {})
        return f"{self.model}@{str(first.get('sha256', ''))[:12]}"


def verify_file(path: Path, entry: dict[str, Any]) -> None:
    if not path.is_file():
        raise ManifestMismatch(f"{path}: listed in {MANIFEST} but missing; re-export the model directory")
    want = entry.get("sha256")
    got = sha256_file(path)
    if got != want:
        raise ManifestMismatch(
            f"{path}: sha256 {got[:16]}... does not match {MANIFEST} ({str(want)[:16]}...); "
            "the file was modified or belongs to another export - re-export it"
        )


def load_manifest(folder: str | Path) -> Manifest:
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"--model {folder}: not a model directory")
    path = folder / MANIFEST
    if not path.is_file():
        raise ManifestMismatch(f"{path}: missing; every model directory needs the manifest written by fm-export")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ManifestMismatch(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ManifestMismatch(f"{path}: expected a JSON object")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise ManifestMismatch(f"{path}: missing keys {missing}")
    if data["format_version"] != FORMAT_VERSION:
        raise ManifestMismatch(
            f"{path}: format_version {data['format_version']} is not {FORMAT_VERSION}; re-export with this version"
        )
    if not isinstance(data["artifacts"], dict) or not all(isinstance(v, dict) for v in data["artifacts"].values()):
        raise ManifestMismatch(f"{path}: 'artifacts' must map file names to objects")
    try:
        PreprocessSpec.from_dict(data["preprocess"])
        if int(data["embedding_dim"]) < 1 or not isinstance(data["threshold"], int | float):
            raise ValueError("embedding_dim or threshold")
    except (UsageError, ValueError, TypeError) as e:
        raise ManifestMismatch(f"{path}: invalid field ({e})") from None
    return Manifest(folder, data)


def write_manifest(folder: str | Path, data: dict[str, Any]) -> Path:
    path = Path(folder) / MANIFEST
    write_json_atomic(path, data)
    return path


def default_model_dir() -> Path:
    """The embedded default model, shipped inside the package."""
    from importlib import resources

    return Path(str(resources.files("fashion_match") / "assets" / "default_model"))
