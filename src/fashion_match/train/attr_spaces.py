"""Training attribute-specific spaces (models.attr_spaces) on a frozen backbone's feature maps.

The backbone's last feature maps for the training images are computed once (the runtime's
preprocessing); the attentions, projections and value proxies train on them, with random
mirroring of the maps. Evaluation follows ASEN: per attribute, query images rank the gallery and
the relevant ones share that attribute's value; mean average precision per attribute.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from fashion_match.data.attributes import UNKNOWN, Attribute, label_arrays
from fashion_match.metrics import mean_average_precision
from fashion_match.models.attr_spaces import MARGIN, SCALE, AttributeSpaces, ValueProxies
from fashion_match.train.cached import augment_maps, backbone_outputs

log = logging.getLogger(__name__)


def single_attributes(attrs: list[Attribute]) -> list[Attribute]:
    return [a for a in attrs if a.kind == "single"]


def value_labels(records: list[Any], attrs: list[Attribute]) -> torch.Tensor:
    """(N, A) value index per record and attribute, UNKNOWN where it has none."""
    arrays = label_arrays(records, attrs)
    return torch.from_numpy(np.stack([arrays[a.name] for a in attrs], axis=1).reshape(len(records), len(attrs)))


def feature_maps(model: Any, records: list[Any], desc: str, progress: bool = True) -> tuple[torch.Tensor, list[int]]:
    return backbone_outputs(model, records, pool=False, desc=desc, progress=progress)


def train_spaces(
    maps: torch.Tensor,
    labels: torch.Tensor,
    attrs: list[Attribute],
    *,
    dim: int = 64,
    epochs: int = 20,
    batch: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    scale: float = SCALE,
    margin: float = MARGIN,
    progress: bool = True,
) -> AttributeSpaces:
    from fashion_match.progress import Bar

    torch.manual_seed(seed)
    spaces = AttributeSpaces(maps.shape[1], len(attrs), dim)
    proxies = ValueProxies([len(a.values) for a in attrs], dim, scale, margin)
    opt = torch.optim.AdamW([*spaces.parameters(), *proxies.parameters()], lr=lr, weight_decay=1e-4)
    steps = max(1, len(maps) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * steps, pct_start=0.1)
    g = torch.Generator().manual_seed(seed)
    with Bar(epochs * steps, "attribute spaces", unit="step", enabled=progress) as bar:
        for _ in range(epochs):
            perm = torch.randperm(len(maps), generator=g)
            spaces.train()
            for s in range(steps):
                i = perm[s * batch : (s + 1) * batch]
                loss = proxies(spaces(augment_maps(maps[i], flip=True, shift=0)), labels[i])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                bar.update()
    return spaces.eval()


@torch.no_grad()
def embed_spaces(spaces: AttributeSpaces, maps: torch.Tensor, chunk: int = 512) -> np.ndarray:
    return torch.cat([spaces(maps[s : s + chunk]) for s in range(0, len(maps), chunk)]).numpy()


def attribute_map(
    q: np.ndarray, g: np.ndarray, q_labels: torch.Tensor, g_labels: torch.Tensor, attrs: list[Attribute]
) -> dict[str, float]:
    """Per attribute, mAP of queries ranking the gallery with relevant = the same value; `q` and `g`
    are either (N, d) (one space for every attribute: a baseline) or (N, A, d) (a space each)."""
    out = {}
    for a, attr in enumerate(attrs):
        qa, ga = (q[:, a], g[:, a]) if q.ndim == 3 else (q, g)
        qk, gk = q_labels[:, a].numpy(), g_labels[:, a].numpy()
        qm, gm = qk != UNKNOWN, gk != UNKNOWN
        out[attr.name] = round(mean_average_precision(qa[qm] @ ga[gm].T, qk[qm], gk[gm]), 4)
    return out


def space_thresholds(emb: np.ndarray, labels: torch.Tensor, attrs: list[Attribute]) -> dict[str, float]:
    """Per space, the similarity threshold of maximum balanced accuracy on held-out images: two
    images match in space a when they share a's value."""
    from fashion_match.metrics import calibrate_threshold

    out = {}
    for a, attr in enumerate(attrs):
        y = labels[:, a].numpy()
        keep = y != UNKNOWN
        e, k = emb[keep, a], y[keep]
        i, j = np.triu_indices(len(k), 1)
        sims, same = (e @ e.T)[i, j], k[i] == k[j]
        del i, j  # tens of millions of pairs: hundreds of MB each
        if same.all() or not same.any():
            continue
        best = calibrate_threshold(sims[same], sims[~same], auc=False)
        out[attr.name] = round(float(best["threshold"]), 6)
    return out


def query_gallery(records: list[Any]) -> tuple[list[int], list[int]]:
    """ASEN-style evaluation split of test records: consumer photos query shop photos where the
    data has both, else alternate records query the others."""
    q = [i for i, r in enumerate(records) if r.domain == "consumer"]
    g = [i for i, r in enumerate(records) if r.domain == "shop"]
    if q and g:
        return q, g
    return list(range(0, len(records), 2)), list(range(1, len(records), 2))


def train_spaces_for(
    model_dir: Any,
    data: str,
    out: Any,
    *,
    dim: int = 64,
    epochs: int = 20,
    lr: float = 1e-3,
    seed: int = 0,
    train_limit: int | None = None,
    eval_limit: int | None = None,
    branch_from: int | None = None,
    taps: tuple[int, ...] = (),
    branch_lr: float = 3e-4,
    scale: float = SCALE,
    margin: float = MARGIN,
    progress: bool = True,
) -> dict[str, Any]:
    """Train attribute spaces for the model in `model_dir` on `data`'s single-valued attributes:
    on its frozen maps, or with `branch_from` on an attribute branch fine-tuned with them
    (train.attr_branch; checkpoints beside `out`). Write them to `out` with their thresholds and
    test mAP, and return that metadata."""
    import json
    from pathlib import Path

    from safetensors.torch import save

    from fashion_match.data.spec import load_dataset
    from fashion_match.errors import UsageError
    from fashion_match.fileio import atomic_open, sha256_file
    from fashion_match.formats import WEIGHTS
    from fashion_match.models.checkpoint import load_weights
    from fashion_match.progress import stage
    from fashion_match.runtime.manifest import load_manifest
    from fashion_match.train.tags import split_records

    model_dir, out = Path(model_dir), Path(out)
    manifest = load_manifest(model_dir)
    model = load_weights(model_dir / WEIGHTS, manifest.data["architecture"]).eval()
    ds = load_dataset(data)
    attrs = single_attributes(ds.attributes)
    if not attrs:
        raise UsageError(f"{data}: has no single-valued attributes to learn spaces for")
    if model.attr_branch is not None and branch_from is not None:
        raise UsageError(
            f"{model_dir}: already has an attribute branch; train a new one on its base model, or spaces on this "
            "branch's frozen maps (without --from-block)"
        )
    from fashion_match.train import attr_branch as ab
    from fashion_match.train.distributed import ranks

    rank, world, _ = ranks()
    if world > 1 and branch_from is None:
        raise UsageError(
            "torchrun: only an attribute branch (--from-block K) trains across ranks; spaces on frozen maps "
            "train in one process (minutes on a CPU)"
        )
    origin = None
    if branch_from is not None:
        torch.manual_seed(seed)
        origin = ab.prepare(model, branch_from, taps, attrs, dim)
    train, held, test = split_records(ds, train_limit, eval_limit)
    maps, labels = {}, {}
    for name, recs in (("train", train), ("held", held), ("test", test)):
        desc = f"{'trunk maps and taps' if branch_from is not None else 'feature maps'} ({name})"
        m, kept = (
            ab.cached_inputs(model, recs, desc, progress)
            if branch_from is not None
            else feature_maps(model, recs, desc, progress)
        )
        recs[:] = [recs[i] for i in kept]
        maps[name], labels[name] = m, value_labels(recs, attrs)
    q, g = query_gallery(test)
    config: dict[str, Any] = {"epochs": epochs, "lr": lr, "seed": seed, "scale": scale, "margin": margin}
    history = None
    if branch_from is None:
        spaces = train_spaces(
            maps["train"],
            labels["train"],
            attrs,
            dim=dim,
            epochs=epochs,
            lr=lr,
            seed=seed,
            scale=scale,
            margin=margin,
            progress=progress,
        )

        def embed(name: str) -> np.ndarray:
            return embed_spaces(spaces, maps[name])
    else:
        config |= {"branch_lr": branch_lr, "batch": 128, "shift": 1, "from_block": branch_from, "taps": list(taps)}

        def test_map(net: Any) -> dict[str, Any]:
            e = ab.embed_cached(net, maps["test"])
            return {"test_map": attribute_map(e[q], e[g], labels["test"][q], labels["test"][g], attrs)}

        history = ab.fit_branch(model, maps, labels, attrs, out.parent, config, test_map, progress)
        if rank != 0:  # rank 0 holds the same weights and writes the result
            return {"rank": rank, "history": history}
        net = ab.BranchSpaces(model, ab._trunk_channels(model))
        spaces = model.attr_spaces  # type: ignore[assignment]

        def embed(name: str) -> np.ndarray:
            return ab.embed_cached(net, maps[name])  # type: ignore[no-any-return]

    images = {k: len(v) for k, v in maps.items()}
    from fashion_match.data.records import spaced
    from fashion_match.train.space_readout import PROTOTYPE_IMAGES, readout_meta

    rows = spaced(list(range(images["train"])), PROTOTYPE_IMAGES)  # the readout's prototypes average these
    maps["train"] = maps["train"][rows]  # the largest tensor here (GBs on a full split): thresholds need memory
    vectors = {name: embed(name) for name in ("train", "held", "test")}
    del maps["train"]
    with stage(f"space thresholds on {images['held']:,} held-out images", progress):  # all pairs: minutes at 10,000
        thresholds = space_thresholds(vectors["held"], labels["held"], attrs)
    emb = vectors["test"]
    report = attribute_map(emb[q], emb[g], labels["test"][q], labels["test"][g], attrs)
    labels["train"] = labels["train"][rows]
    posterior = readout_meta(vectors, labels, (held, test), attrs, progress)
    readout = posterior.pop("readout")
    meta: dict[str, Any] = {
        "attributes": [{"name": a.name, "values": list(a.values)} for a in attrs],
        "dim": dim,
        "thresholds": thresholds,
        "test_map": report,
        "posteriors": posterior,
        "images": images,
        "config": config,
        "data": data,
        "base_model": manifest.model,
        "base_weights_sha256": sha256_file(model_dir / WEIGHTS),
    }
    state = {f"attr_spaces.{k}": v.detach().contiguous() for k, v in spaces.state_dict().items()}
    state |= {f"space_readout.{k}": v.contiguous() for k, v in readout.state_dict().items()}
    if branch_from is not None:
        meta["attribute_branch"] = {"from_block": branch_from, "taps": list(taps), "started_from": origin}
        meta["history"] = history
        assert model.attr_branch is not None
        state |= {f"attr_branch.{k}": v.detach().contiguous() for k, v in model.attr_branch.state_dict().items()}
    blob = save(state, metadata={"fashion_match_spaces": json.dumps(meta, allow_nan=False)})
    with atomic_open(out, "wb") as fh:
        fh.write(blob)
    return meta


def export_with_spaces(model_dir: Any, spaces_file: Any, out: Any) -> dict[str, Any]:
    """A model directory `out`: the model with the spaces in `spaces_file` attached (and their
    attribute branch, when they were trained with one), exported with the output `attr_embeddings`.

    The item embedding is unchanged. An attribute branch replaces a category branch: categories
    are an attribute there, and the item similarity becomes the pure item cosine again, so then the
    match threshold is calibrated again."""
    from pathlib import Path

    from fashion_match.train.reexport import file_record, read_head_file, reexport_with

    meta, tensors = read_head_file(Path(spaces_file), "fashion_match_spaces", "fm-train --spaces-for")
    names = [a["name"] for a in meta["attributes"]]
    branch = meta.get("attribute_branch")

    def attach(model: Any) -> dict[str, Any]:
        if branch is not None:
            if model.category_branch is not None:
                model.category_branch, model.branch_from, model.category_share = None, None, 0.0
                model.classifier = None
            model.add_attribute_branch(int(branch["from_block"]), tuple(branch["taps"]))
            model.attr_branch.load_state_dict(
                {k.removeprefix("attr_branch."): v for k, v in tensors.items() if k.startswith("attr_branch.")}
            )
        spaces = AttributeSpaces(model.head_dim, len(names), int(meta["dim"]))
        spaces.load_state_dict(
            {k.removeprefix("attr_spaces."): v for k, v in tensors.items() if k.startswith("attr_spaces.")}
        )
        model.attach_spaces(spaces.eval(), names, [a["values"] for a in meta["attributes"]])
        if "space_readout.prototypes" in tensors:  # files written before readouts existed have none
            from fashion_match.train.space_readout import attach_saved_readout

            attach_saved_readout(model, tensors)
        return file_record(Path(spaces_file)) | ({"attribute_branch": branch} if branch else {})

    spaces = {"thresholds": meta["thresholds"], "test_map": meta["test_map"], "data": meta["data"]}
    if meta.get("posteriors"):
        spaces["posteriors"] = {k: v for k, v in meta["posteriors"].items() if k != "held_map"} | {"data": meta["data"]}
    from fashion_match.runtime.manifest import load_manifest

    had_branch = load_manifest(Path(model_dir)).data["architecture"].get("category_branch_from") is not None
    return reexport_with(
        Path(model_dir),
        Path(out),
        "attribute spaces",
        "spaces",
        attach,
        changes_similarity=bool(branch) and had_branch,
        spaces=spaces,
    )
