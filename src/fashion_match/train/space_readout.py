"""Fitting attribute spaces' value readout (models.attr_spaces.ValueReadout) and adding it to a model.

A space ranks a gallery by cosine; its readout ranks by the probability that two images share the
value: each value's prototype is the mean direction of its training images in the space, an
image's posterior is a softmax over its cosines to the prototypes, and the temperature (one per
space) is the one of the highest held-out mAP. Nothing in the spaces changes: the readout is a
function of their vectors, fitted in minutes, so it can be added to a model trained before it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from fashion_match.data.attributes import Attribute
from fashion_match.models.attr_spaces import ValueReadout

SCALES = (4.0, 8.0, 16.0, 32.0)  # softmax temperatures tried (as cosine scales)
PROTOTYPE_IMAGES = 20_000  # training images the prototypes average (evenly spaced); means settle long before
HELD_QUERIES = 2_000  # held-out queries the temperature is chosen on


def prototypes(emb: np.ndarray, labels: torch.Tensor, attrs: list[Attribute]) -> torch.Tensor:
    """(A, V, d): per space, the normalised mean vector of each value's images (zero if it has none)."""
    width = max(len(a.values) for a in attrs)
    out = torch.zeros(len(attrs), width, emb.shape[-1])
    for a, attr in enumerate(attrs):
        y = labels[:, a].numpy()
        for v in range(len(attr.values)):
            if (y == v).any():
                out[a, v] = torch.nn.functional.normalize(torch.from_numpy(emb[y == v, a].mean(0)), dim=0)
    return out


@torch.no_grad()
def posteriors(readout: ValueReadout, emb: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """(N, A, d) space vectors -> (N, A, V) value posteriors, without the readout's completion
    coordinate: the dot product of two rows is the probability that they share the value (what a
    query in runtime.tagging.query_form scores against an indexed row)."""
    t = torch.from_numpy(np.ascontiguousarray(emb, np.float32))
    return torch.cat([readout(t[s : s + chunk])[..., :-1] for s in range(0, len(t), chunk)]).numpy()


def fit_readout(
    train: tuple[np.ndarray, torch.Tensor],
    held: tuple[np.ndarray, torch.Tensor],
    held_qg: tuple[list[int], list[int]],
    attrs: list[Attribute],
) -> tuple[ValueReadout, dict[str, Any]]:
    """The readout for spaces whose vectors and value labels on training and held-out images are
    `train` and `held`; `held_qg` splits the held-out images into queries and gallery (ASEN)."""
    from fashion_match.data.records import spaced
    from fashion_match.train.attr_spaces import attribute_map

    rows = spaced(list(range(len(train[0]))), PROTOTYPE_IMAGES)
    protos = prototypes(train[0][rows], train[1][rows], attrs)
    counts = [len(a.values) for a in attrs]
    q = spaced(held_qg[0], HELD_QUERIES)
    g = held_qg[1]
    held_map: dict[str, dict[str, float]] = {a.name: {} for a in attrs}
    for s in SCALES:
        p = posteriors(ValueReadout(protos, counts, torch.full((len(attrs),), s)), held[0])
        for name, m in attribute_map(p[q], p[g], held[1][q], held[1][g], attrs).items():
            held_map[name][str(s)] = m
    best = [max(SCALES, key=lambda s: held_map[a.name][str(s)]) for a in attrs]  # noqa: B023 - used at once
    readout = ValueReadout(protos, counts, torch.tensor(best)).eval()
    info = {
        "scales": {a.name: s for a, s in zip(attrs, best, strict=True)},
        "held_map": held_map,
        "prototype_images": len(rows),
    }
    return readout, info


class SpaceVectors(nn.Module):
    """The frozen model up to its attribute spaces' vectors (N, A, d)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.attr_spaces(self.model.head_maps(x))  # type: ignore[no-any-return]


def readout_for(
    model_dir: Any,
    data: str,
    out: Any,
    *,
    train_limit: int | None = None,
    eval_limit: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fit a value readout for the spaces of the model in `model_dir` on `data` (the data they were
    trained on); write it to `out` (safetensors, with its thresholds and test mAP) and return that
    metadata. Needs a model with spaces and without a readout."""
    import json
    from pathlib import Path

    from safetensors.torch import save

    from fashion_match.data.spec import load_dataset
    from fashion_match.errors import UsageError
    from fashion_match.fileio import atomic_open, sha256_file
    from fashion_match.formats import WEIGHTS
    from fashion_match.models.checkpoint import load_weights
    from fashion_match.runtime.manifest import load_manifest
    from fashion_match.train.attr_spaces import single_attributes, value_labels
    from fashion_match.train.cached import cpu_outputs
    from fashion_match.train.tags import split_records

    model_dir = Path(model_dir)
    manifest = load_manifest(model_dir)
    model = load_weights(model_dir / WEIGHTS, manifest.data["architecture"]).eval()
    if model.attr_spaces is None:
        raise UsageError(f"{model_dir}: has no attribute spaces to read out (train them: fm-train --spaces-for)")
    if model.space_readout is not None:
        raise UsageError(f"{model_dir}: its spaces already have a value readout")
    ds = load_dataset(data)
    by_name = {a.name: a for a in single_attributes(ds.attributes)}
    if not set(model.space_names) <= set(by_name):
        raise UsageError(f"{data}: has no labels for the model's spaces {', '.join(model.space_names)}")
    attrs = [by_name[n] for n in model.space_names]  # the model's space order
    from fashion_match.data.records import spaced

    train, held, test = split_records(ds, train_limit, eval_limit)  # the split the spaces were trained on
    train = [train[i] for i in spaced(list(range(len(train))), PROTOTYPE_IMAGES)]  # all the prototypes read
    vectors = SpaceVectors(model)
    emb, labels = {}, {}
    for name, recs in (("train", train), ("held", held), ("test", test)):
        e, kept = cpu_outputs(vectors, model, recs, pool=False, desc=f"space vectors ({name})", progress=progress)
        recs[:] = [recs[i] for i in kept]
        emb[name], labels[name] = e.numpy(), value_labels(recs, attrs)
    meta = readout_meta(emb, labels, (held, test), attrs, progress)
    meta |= {"data": data, "base_model": manifest.model, "base_weights_sha256": sha256_file(model_dir / WEIGHTS)}
    readout = meta.pop("readout")
    state = {f"space_readout.{k}": v.contiguous() for k, v in readout.state_dict().items()}
    blob = save(state, metadata={"fashion_match_readout": json.dumps(meta, allow_nan=False)})
    with atomic_open(Path(out), "wb") as fh:
        fh.write(blob)
    return meta


def readout_meta(
    emb: dict[str, np.ndarray],
    labels: dict[str, torch.Tensor],
    records: tuple[list[Any], list[Any]],
    attrs: list[Attribute],
    progress: bool,
) -> dict[str, Any]:
    """Fit the readout on the train and held-out vectors, then its match thresholds (held-out) and
    test mAP, beside the raw cosine's: what a spaces file records under `posteriors`."""
    from fashion_match.progress import stage
    from fashion_match.train.attr_spaces import attribute_map, query_gallery, space_thresholds

    held_recs, test_recs = records
    readout, info = fit_readout(
        (emb["train"], labels["train"]), (emb["held"], labels["held"]), query_gallery(held_recs), attrs
    )
    with stage(f"posterior thresholds on {len(emb['held']):,} held-out images", progress):
        thresholds = space_thresholds(posteriors(readout, emb["held"]), labels["held"], attrs)
    q, g = query_gallery(test_recs)
    p = posteriors(readout, emb["test"])
    return {
        "readout": readout,
        "thresholds": thresholds,
        "test_map": attribute_map(p[q], p[g], labels["test"][q], labels["test"][g], attrs),
        "cosine_test_map": attribute_map(emb["test"][q], emb["test"][g], labels["test"][q], labels["test"][g], attrs),
        **info,
    }


def attach_saved_readout(model: Any, tensors: dict[str, torch.Tensor]) -> None:
    """Attach to `model` (its spaces attached) the readout saved under `space_readout.` in `tensors`."""
    counts = [len(v) for v in model.space_values]
    readout = ValueReadout(tensors["space_readout.prototypes"], counts, torch.ones(len(counts)))
    readout.load_state_dict(
        {k.removeprefix("space_readout."): v for k, v in tensors.items() if k.startswith("space_readout.")}
    )
    model.attach_readout(readout.eval())


def export_with_readout(model_dir: Any, readout_file: Any, out: Any) -> dict[str, Any]:
    """A model directory `out`: the model with the readout in `readout_file` attached, exported with
    the output `attr_posteriors`; its spaces, tags and item embedding unchanged."""
    from pathlib import Path

    from fashion_match.train.reexport import file_record, read_head_file, reexport_with

    meta, tensors = read_head_file(Path(readout_file), "fashion_match_readout", "fm-train --readout-for")

    def attach(model: Any) -> dict[str, Any]:
        attach_saved_readout(model, tensors)
        return file_record(Path(readout_file))

    from fashion_match.runtime.manifest import load_manifest
    from fashion_match.train.reexport import kept_heads

    spaces = kept_heads(load_manifest(Path(model_dir)).data)["spaces"]
    spaces["posteriors"] = {k: meta[k] for k in ("scales", "thresholds", "test_map", "cosine_test_map", "data")}
    return reexport_with(Path(model_dir), Path(out), "value readout", "readout", attach, spaces=spaces)
