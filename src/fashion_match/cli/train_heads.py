"""`fm-train`'s head modes: tag heads, attribute spaces and their value readout on a trained model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from fashion_match.cli.common import echo_json


def head_mode(
    flag: str, allowed: set[str], out: Path, default_out: Path, validate: Any = None
) -> tuple[set[str], Path]:
    """The options given explicitly (any a mode does not read is refused, never ignored; then
    `validate(given)` runs) and the output folder, checked: its OUT/model must not exist, since a
    model directory is written whole."""
    from fashion_match.errors import UsageError
    from fashion_match.fileio import check_output_dir

    ctx = click.get_current_context()
    given = {n for n in ctx.params if ctx.get_parameter_source(n) != click.core.ParameterSource.DEFAULT}
    if given - allowed:
        wrong = ", ".join(f"--{n.replace('_', '-')}" for n in sorted(given - allowed))
        takes = ", ".join(f"--{n.replace('_', '-')}" for n in sorted(allowed - {"as_json", flag[2:].replace("-", "_")}))
        raise UsageError(f"{wrong}: not an option of {flag} (it takes {takes})")
    if validate is not None:
        validate(given)
    out = out if "out" in given else default_out
    if (out / "model").exists():
        raise UsageError(f"{out / 'model'}: exists; choose another --out")
    check_output_dir(out, "output folder (--out)")
    return given, out


_TAG_OPTIONS = {"data", "out", "tags_for", "tag_loss", "eval_limit", "train_limit", "epochs", "lr", "seed", "as_json"}


def tags_mode(
    model_dir: Path,
    data: str | None,
    out: Path,
    as_json: bool,
    fields: dict[str, Any],
    loss: str,
    eval_limit: int | None,
) -> int:
    from fashion_match.train.tags import TagConfig, export_with_tags, train_tags

    given, out = head_mode("--tags-for", _TAG_OPTIONS, out, Path("runs/tags"))
    cfg = TagConfig(loss=loss, seed=fields["seed"], **{k: fields[k] for k in ("epochs", "lr") if k in given})
    meta = train_tags(
        model_dir,
        data or "fmnist-attr",
        out / "tags.safetensors",
        cfg,
        train_limit=fields.get("train_limit"),
        eval_limit=eval_limit,
    )
    export_with_tags(model_dir, out / "tags.safetensors", out / "model")
    if as_json:
        echo_json(meta["report"])
        return 0
    for name, r in meta["report"].items():
        if r["kind"] == "single":
            click.echo(f"{name}: accuracy {r['accuracy']:.4f} on {r['images']:,} test images")
        else:
            click.echo(
                f"{name}: mAP {r['map']:.4f}, macro-F1 {r['macro_f1']:.4f} at the calibrated thresholds, "
                f"top-3 recall {r['top3_recall']:.4f}, top-5 {r['top5_recall']:.4f}"
            )
    click.echo(f"tag heads -> {out / 'tags.safetensors'}")
    click.echo(f"model with the tag heads (fm-tag --model {out / 'model'}): {out / 'model'}")
    return 0


_SPACE_OPTIONS = {"data", "out", "spaces_for", "eval_limit", "train_limit", "epochs", "lr", "seed", "as_json"}
_SPACE_OPTIONS |= {"embedding_dim", "from_block", "taps"}


def _taps(text: str) -> tuple[int, ...]:
    from fashion_match.errors import UsageError

    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise UsageError(f"--taps {text}: give block numbers separated by commas, e.g. 3,6") from None


def spaces_mode(
    model_dir: Path,
    data: str | None,
    out: Path,
    as_json: bool,
    fields: dict[str, Any],
    eval_limit: int | None,
    from_block: int,
    taps: str,
) -> int:
    from fashion_match.errors import UsageError
    from fashion_match.train.attr_spaces import export_with_spaces, train_spaces_for

    def check(given: set[str]) -> None:
        if "taps" in given and "from_block" not in given:
            raise UsageError("--taps: only with --from-block (taps join an attribute branch's maps)")

    given, out = head_mode("--spaces-for", _SPACE_OPTIONS, out, Path("runs/spaces"), check)
    kw: dict[str, Any] = {k: fields[k] for k in ("epochs", "lr") if k in given}
    if "from_block" in given:
        kw |= {"branch_from": from_block, "taps": _taps(taps)}
        kw.setdefault("epochs", 8)
    from fashion_match.train.distributed import process_group

    with process_group():  # under torchrun: the branch trains on every rank, rank 0 writes
        meta = train_spaces_for(
            model_dir,
            data or "fmnist-attr",
            out / "spaces.safetensors",
            dim=fields["embedding_dim"] if "embedding_dim" in given else 64,
            seed=fields["seed"],
            train_limit=fields.get("train_limit"),
            eval_limit=eval_limit,
            **kw,
        )
    if "rank" in meta:
        return 0
    export_with_spaces(model_dir, out / "spaces.safetensors", out / "model")
    if as_json:
        echo_json({"test_map": meta["test_map"], "thresholds": meta["thresholds"], "model": str(out / "model")})
        return 0
    click.echo("test mAP per attribute space: " + ", ".join(f"{k} {v:.4f}" for k, v in meta["test_map"].items()))
    click.echo(f"model with the spaces (fm-match A B --attribute NAME --model {out / 'model'}): {out / 'model'}")
    return 0


_READOUT_OPTIONS = {"data", "out", "readout_for", "eval_limit", "train_limit", "as_json"}


def readout_mode(
    model_dir: Path, data: str | None, out: Path, as_json: bool, fields: dict[str, Any], eval_limit: int | None
) -> int:
    from fashion_match.train.space_readout import export_with_readout, readout_for

    _, out = head_mode("--readout-for", _READOUT_OPTIONS, out, Path("runs/readout"))
    meta = readout_for(
        model_dir,
        data or "fmnist-attr",
        out / "readout.safetensors",
        train_limit=fields.get("train_limit"),
        eval_limit=eval_limit,
        progress=not as_json,
    )
    export_with_readout(model_dir, out / "readout.safetensors", out / "model")
    keys = ("test_map", "cosine_test_map", "scales", "thresholds")
    if as_json:
        echo_json({k: meta[k] for k in keys} | {"model": str(out / "model")})
        return 0
    for name, m in meta["test_map"].items():
        click.echo(f"{name}: test mAP {m:.4f} by value posteriors, {meta['cosine_test_map'][name]:.4f} by cosine")
    click.echo(f"model with the readout (fm-search --attribute NAME --model {out / 'model'}): {out / 'model'}")
    return 0
