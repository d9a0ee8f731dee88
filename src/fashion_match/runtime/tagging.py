"""Reading `tag_probs`: each image's attribute values and tags, from one forward pass.

The manifest's `tags` block says what each slice of the output means (`attributes`: name, kind,
values, offset) and when a tag counts as present (`thresholds`, per multi-label attribute, one per
tag, calibrated when the heads were trained). Checked when the model opens, never trusted blindly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fashion_match.errors import ManifestMismatch, UsageError

TAGS_OUTPUT = "tag_probs"  # the graph output of a model with tag heads (models.tag_heads)
SPACES_OUTPUT = "attr_embeddings"  # ... and of one with attribute spaces (models.attr_spaces): (N, A, d)
POSTERIORS_OUTPUT = "attr_posteriors"  # ... and their value posteriors (models.attr_spaces.ValueReadout): (N, A, V + 1)


@dataclass(frozen=True)
class TagBlock:
    name: str
    kind: str  # "single" | "multi"
    values: tuple[str, ...]
    offset: int
    thresholds: tuple[float, ...]  # multi only


def tag_blocks(manifest: Any) -> list[TagBlock]:
    """The model's tag layout, checked; `UsageError` for a model without tags."""
    data = manifest.data.get("tags")
    if data is None:
        raise UsageError(f"{manifest.folder}: this model has no tag heads (train them: fm-train --tags-for MODEL_DIR)")
    where = f"{manifest.folder / 'manifest.json'} tags"
    try:
        blocks, end = [], 0
        for d in data["attributes"]:
            values = tuple(str(v) for v in d["values"])
            th = (
                tuple(float(t) for t in data.get("thresholds", {}).get(d["name"], [0.5] * len(values)))
                if d["kind"] == "multi"
                else ()
            )
            if d["kind"] not in ("single", "multi") or int(d["offset"]) != end or (th and len(th) != len(values)):
                raise ValueError(f"block {d['name']!r} is inconsistent")
            blocks.append(TagBlock(str(d["name"]), str(d["kind"]), values, end, th))
            end += len(values)
    except (KeyError, TypeError, ValueError) as e:
        raise ManifestMismatch(f"{where}: not a tag layout this version reads ({e}); re-export the model") from None
    return blocks


def read_tags(probs: np.ndarray, blocks: Sequence[TagBlock], top: int = 3) -> list[dict[str, Any]]:
    """Per image: for each single-valued attribute its `top` values with probabilities, for each
    multi-label one the tags at or above their thresholds (most probable first)."""
    out = []
    for row in probs:
        image: dict[str, Any] = {}
        for b in blocks:
            p = row[b.offset : b.offset + len(b.values)]
            order = np.argsort(-p, kind="stable")
            if b.kind == "single":
                image[b.name] = [{"value": b.values[j], "prob": round(float(p[j]), 4)} for j in order[:top]]
            else:
                image[b.name] = [
                    {"tag": b.values[j], "prob": round(float(p[j]), 4)} for j in order if p[j] >= b.thresholds[j]
                ]
        out.append(image)
    return out


def space_of(manifest: Any, name: str) -> tuple[int, float | None]:
    """(index into the space output, match threshold) of attribute space `name`; `UsageError`
    naming the known ones otherwise. The threshold is that of `space_output`'s similarity."""
    data = manifest.data.get("spaces")
    if data is None:
        raise UsageError(
            f"--attribute {name}: {manifest.folder} has no attribute spaces (made by fm-train --spaces-for MODEL_DIR)"
        )
    try:
        names = [str(a["name"]) for a in data["attributes"]]
        thresholds = [a.get("threshold") for a in data["attributes"]]
        if not isinstance(data["dim"], int) or data["dim"] < 1:
            raise ValueError("dim is not a positive integer")
        if data.get("posteriors") is not None:
            post = data["posteriors"]["thresholds"]
            thresholds = [post.get(n) for n in names]
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise ManifestMismatch(f"{manifest.folder / 'manifest.json'} spaces: not readable ({e}); re-export") from None
    if name not in names:
        raise UsageError(f"--attribute {name}: unknown; this model has {', '.join(names)}")
    t = thresholds[names.index(name)]
    return names.index(name), (float(t) if isinstance(t, int | float) else None)


def space_output(manifest: Any) -> tuple[str, int]:
    """(graph output, width per attribute) that attribute matching and search compare by dot
    product: the value posteriors where the model has them (a query's, in `query_form`, with a
    row: the probability that the two images share the value), else the spaces' unit vectors."""
    data = manifest.data["spaces"]
    try:
        if data.get("posteriors") is not None:
            width = data["posteriors"]["width"]
            if not isinstance(width, int) or width < 1:
                raise ValueError("posteriors width is not a positive integer")
            return POSTERIORS_OUTPUT, width
        return SPACES_OUTPUT, int(data["dim"])
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise ManifestMismatch(f"{manifest.folder / 'manifest.json'} spaces: not readable ({e}); re-export") from None


def query_form(vectors: np.ndarray) -> np.ndarray:
    """Rows of `attr_posteriors` as queries: the completion coordinate (the last) set to 0, so a
    query's dot product with a row is the probability that the two share the value."""
    out = np.array(vectors, dtype=np.float32, copy=True)
    out[..., -1] = 0.0
    return out


def output_dims(manifest: Any) -> dict[str, tuple[int, ...]]:
    """Each graph output's shape after the batch dimension, in graph order, from the manifest: what
    a backend that sizes its own buffers (TensorRT) must find in the engine."""
    out: dict[str, tuple[int, ...]] = {"embedding": (int(manifest.embedding_dim),)}
    try:
        if manifest.data.get("tags") is not None:
            out[TAGS_OUTPUT] = (sum(len(d["values"]) for d in manifest.data["tags"]["attributes"]),)
        if manifest.data.get("spaces") is not None:
            s = manifest.data["spaces"]
            out[SPACES_OUTPUT] = (len(s["attributes"]), int(s["dim"]))
            if s.get("posteriors") is not None:
                out[POSTERIORS_OUTPUT] = (len(s["attributes"]), int(s["posteriors"]["width"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ManifestMismatch(f"{manifest.folder / 'manifest.json'}: output layout not readable ({e})") from None
    return out


def head_data(manifest: Any) -> str | None:
    """The dataset the model's tag heads or spaces were trained on, or None (no heads)."""
    for key in ("spaces", "tags"):
        block = manifest.data.get(key)
        if block is not None:
            return str(block.get("data") or "")
    return None
