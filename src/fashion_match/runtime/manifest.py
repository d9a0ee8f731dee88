"""`manifest.json`: what a model directory holds, with a sha256 for every file.

It sits beside the artifacts, never inside their bytes. The runtime refuses any artifact whose
bytes, dims or preprocessing disagree with it (`ManifestMismatch`). Plain JSON: nothing in a
model directory is ever unpickled or executed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fashion_match.data.preprocess import PreprocessSpec
from fashion_match.errors import BackendUnavailable, ManifestMismatch, UsageError
from fashion_match.fileio import sha256_file, write_json_atomic
from fashion_match.formats import lookup
from fashion_match.schema import field, read_json, require_object

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
        want_backend, want_precision = fmt.listed_as
        if entry.get("backend") != want_backend or entry.get("precision") != want_precision:
            raise ManifestMismatch(
                f"{self.folder / MANIFEST}: {fmt.artifact} is listed as "
                f"{entry.get('backend')}/{entry.get('precision')}, expected {want_backend}/{want_precision}"
            )
        gated = entry.get("execution_gates", {}).get(fmt.gate_key) if fmt.gate_key else None
        if fmt.gate_key and not (isinstance(gated, dict) and gated.get("passed") is True):
            # a precision the file does not carry (bf16 arithmetic on FP32 weights): only once gated
            raise BackendUnavailable(
                f"{self.folder}: {precision} execution of {fmt.artifact} on {backend} has not passed the "
                f"accuracy gate; gate it with {fmt.made_by.split(' (')[0]} {self.folder}"
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
    fix = "re-export the model directory with fm-export"
    data = require_object(
        read_json(path, ManifestMismatch, "a model manifest", hint=fix), path, ManifestMismatch, "a manifest"
    )
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise ManifestMismatch(f"{path}: missing keys {missing}; {fix}")
    if data["format_version"] != FORMAT_VERSION:
        raise ManifestMismatch(
            f"{path}: format_version {data['format_version']} is not {FORMAT_VERSION}; re-export with this version"
        )
    check_fields(data, path)
    return Manifest(folder, data)


def check_fields(data: dict[str, Any], path: Path) -> None:
    """Types and ranges of every field the runtime reads; the first wrong one is named."""
    fix = "re-export the model directory with fm-export"

    def need(obj: dict[str, Any], key: str, kind: str, where: str = "", **kw: Any) -> Any:
        return field(obj, key, kind, f"{path}{where}", ManifestMismatch, hint=fix, **kw)

    need(data, "model", "string")
    need(data, "embedding_dim", "integer", low=1, high=1 << 20)
    # a cosine threshold: NaN would make every pair "no match", 5.0 too, silently
    need(data, "threshold", "number", low=-1.0, high=1.0)
    try:
        PreprocessSpec.from_dict(need(data, "preprocess", "object"))
    except UsageError as e:
        raise ManifestMismatch(f"{path}: invalid 'preprocess' ({e}); {fix}") from None
    for name, entry in need(data, "artifacts", "object").items():
        where = f" artifacts[{name!r}]"
        if not isinstance(entry, dict):
            raise ManifestMismatch(f"{path}:{where} must be an object; {fix}")
        if Path(name).name != name or name in ("", ".", ".."):
            raise ManifestMismatch(f"{path}:{where}: an artifact is a file name inside the model directory; {fix}")
        for key in ("backend", "precision", "sha256"):
            need(entry, key, "string", where)
        gates = need(entry, "execution_gates", "object", where, required=False)
        for key, figures in (gates or {}).items():
            if not isinstance(figures, dict):
                raise ManifestMismatch(f"{path}:{where} execution_gates[{key!r}] must be an object; {fix}")
        made_from = need(entry, "made_from", "object", where, required=False)
        if made_from is not None:
            for key in ("file", "sha256"):
                need(made_from, key, "string", f"{where} made_from")


def write_manifest(folder: str | Path, data: dict[str, Any]) -> Path:
    path = Path(folder) / MANIFEST
    write_json_atomic(path, data)
    return path


def default_model_dir() -> Path:
    """The embedded default model, shipped inside the package."""
    from importlib import resources

    return Path(str(resources.files("fashion_match") / "assets" / "default_model"))
