"""`fm-train`: metric-learning training; its output directory feeds the exporter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from fashion_match.cli.common import debug_option, echo_json, entrypoint
from fashion_match.cli.train_heads import head_mode, readout_mode, spaces_mode, tags_mode
from fashion_match.train.config import AUGMENTS, LABELS, LOSSES


class _BackboneOption(click.Option):
    """--model's help lists the backbone registry itself, read only when help is shown (it needs torch)."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        from fashion_match.models import list_models

        names = [n for n in list_models() if n != "tiny"]
        self.help = f"{', '.join(names)}; tiny is a 32-px test network for the test suite, not a model to train."
        return super().get_help_record(ctx)


@click.command(help=__doc__)
@click.option("--data", "data", help="Dataset spec, e.g. deepfashion-inshop:DIR, fmnist-c2s, folder:DIR.")
@click.option("--model", cls=_BackboneOption, default="mobilenet_v2", show_default=True)
@click.option("--embedding-dim", type=click.IntRange(2, 8192), default=512, show_default=True)
@click.option("--pretrained", default="imagenet", show_default=True, help="imagenet, none, or a weights file.")
@click.option("--image-size", type=click.IntRange(16, 1024), default=None, help="Override the model's input size.")
@click.option("--loss", type=click.Choice(LOSSES), default="proxy_anchor", show_default=True)
@click.option(
    "--label",
    type=click.Choice(LABELS),
    default="auto",
    show_default=True,
    help="What counts as the same class: item ids or categories (auto: items where they repeat).",
)
@click.option("--epochs", type=click.IntRange(1, 100000), default=10, show_default=True)
@click.option(
    "--freeze-epochs",
    type=click.IntRange(0, 100000),
    default=1,
    show_default=True,
    help="Frozen-backbone warm-up epochs before the whole network trains.",
)
@click.option(
    "--cache-frozen",
    is_flag=True,
    help="Frozen epochs train the head on pooled features computed once (fast on CPU; no augmentation).",
)
@click.option(
    "--train-blocks",
    type=click.IntRange(0),
    default=None,
    help="Only the last N backbone blocks ever train; with --cache-frozen the rest runs once.",
)
@click.option(
    "--map-shift",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="With --cache-frozen and --train-blocks: shift cached maps randomly by up to N cells (augmentation).",
)
@click.option(
    "--augment",
    type=click.Choice(AUGMENTS),
    default="consumer",
    show_default=True,
    help="Pixel augmentation: consumer-photo crops/colour/blur, the runtime's framing mirrored (flip), or none.",
)
@click.option("--batch", default="32x4", show_default=True, help="PxK: P classes x K images per class.")
@click.option("--lr", type=float, default=1e-4, show_default=True, help="Backbone learning rate.")
@click.option("--head-lr-mult", type=float, default=100.0, show_default=True)
@click.option("--weight-decay", type=float, default=1e-4, show_default=True)
@click.option("--category-head", is_flag=True, help="Train category logits jointly (reports top-1/3/5).")
@click.option(
    "--category-metric-weight",
    type=click.FloatRange(0),
    default=0.0,
    show_default=True,
    help="Add Proxy-Anchor over categories on the embedding, with this weight (beside the item loss).",
)
@click.option(
    "--init", "init", type=click.Path(path_type=Path), help="Start from these weights (an fm-train model.safetensors)."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=click.IntRange(0, 64), default=2, show_default=True)
@click.option("--eval-queries", type=click.IntRange(1), default=None, help="Evaluate on N evenly spaced queries.")
@click.option(
    "--eval-gallery", type=click.IntRange(1), default=None, help="... against N evenly spaced gallery images."
)
@click.option("--steps-per-epoch", type=click.IntRange(1), default=None)
@click.option("--train-limit", type=click.IntRange(1), default=None, help="Use only the first N training images.")
@click.option("--no-amp", is_flag=True, help="Disable mixed precision on GPU.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/train"), show_default=True)
@click.option(
    "--resume",
    type=click.Path(path_type=Path),
    default=None,
    help="Continue the run in DIR from its last completed epoch (its config.json wins).",
)
@click.option(
    "--branch-for",
    type=click.Path(path_type=Path),
    help="Instead of a new model: train a category branch (its own copy of the last backbone blocks and a "
    "classifier) for this model directory on --data [default: fashion-mnist]; writes OUT/branch.safetensors and "
    "OUT/model, the model with the branch attached, for fm-export.",
)
@click.option(
    "--from-block",
    type=click.IntRange(1),
    default=16,
    show_default=True,
    help="With --branch-for: where the category branch starts. With --spaces-for: fine-tune an attribute branch "
    "(the model's own copy of the blocks from here) with the spaces instead of using frozen maps.",
)
@click.option(
    "--taps",
    default="",
    help="With --spaces-for --from-block: early blocks whose outputs join the attribute branch's maps, e.g. 3,6 "
    "(colour and texture an item-trained trunk has learnt to ignore).",
)
@click.option(
    "--category-share",
    type=click.FloatRange(0, 1),
    default=0.1,
    show_default=True,
    help="With --branch-for: the share of the similarity put on the class probabilities.",
)
@click.option("--category-mirror", is_flag=True, help="With --branch-for: average the branch over mirrored maps too.")
@click.option(
    "--tags-for",
    type=click.Path(path_type=Path),
    help="Instead of a new model: train attribute/tag heads on this model directory's frozen features, on "
    "--data's attribute labels [default: fmnist-attr]; writes OUT/tags.safetensors with thresholds and a test report.",
)
@click.option(
    "--spaces-for",
    type=click.Path(path_type=Path),
    help="Instead of a new model: train attribute-specific spaces (ASEN-style attention) on this model directory's "
    "frozen feature maps, for --data's single-valued attributes [default: fmnist-attr]; writes "
    "OUT/spaces.safetensors and OUT/model (fm-match --attribute NAME).",
)
@click.option(
    "--readout-for",
    type=click.Path(path_type=Path),
    help="Instead of a new model: fit the value readout (each space's value posteriors, which attribute matching "
    "and search then compare) for this model directory's attribute spaces, on --data [default: fmnist-attr]; "
    "writes OUT/readout.safetensors and OUT/model.",
)
@click.option(
    "--tag-loss",
    type=click.Choice(["weighted", "focal", "plain"]),
    default="weighted",
    show_default=True,
    help="With --tags-for: imbalance-weighted BCE/CE, focal loss, or plain BCE/CE.",
)
@click.option("--eval-limit", type=click.IntRange(1), help="With --tags-for: test on about N images (whole items).")
@click.option("--json", "as_json", is_flag=True, help="Print the final summary as JSON.")
@debug_option
def cli(
    data: str | None,
    batch: str,
    init: Path | None,
    no_amp: bool,
    out: Path,
    resume: Path | None,
    branch_for: Path | None,
    from_block: int,
    taps: str,
    category_share: float,
    category_mirror: bool,
    tags_for: Path | None,
    spaces_for: Path | None,
    readout_for: Path | None,
    tag_loss: str,
    eval_limit: int | None,
    as_json: bool,
    **fields: Any,
) -> int:
    """Options named like a TrainConfig field pass straight through; the others are translated."""
    from fashion_match.errors import UsageError
    from fashion_match.fileio import check_output_dir
    from fashion_match.formats import WEIGHTS
    from fashion_match.progress import say
    from fashion_match.train.checkpoint import completed_epochs
    from fashion_match.train.config import TrainConfig, parse_batch
    from fashion_match.train.trainer import summary_table, train

    modes = [
        f for f, v in (("--tags-for", tags_for), ("--spaces-for", spaces_for), ("--readout-for", readout_for)) if v
    ]
    if len(modes) > 1:
        raise UsageError(f"{' and '.join(modes)}: one at a time (run each on the OUT/model of the one before)")
    if readout_for is not None:
        return readout_mode(readout_for, data, out, as_json, fields, eval_limit)
    if tags_for is not None:
        return tags_mode(tags_for, data, out, as_json, fields, tag_loss, eval_limit)
    if spaces_for is not None:
        return spaces_mode(spaces_for, data, out, as_json, fields, eval_limit, from_block, taps)
    if branch_for is not None:
        return _branch(branch_for, data, batch, out, as_json, fields, from_block, category_share, category_mirror)
    if resume is not None:
        cfg_path = resume / "config.json"
        if not cfg_path.is_file():
            raise UsageError(f"--resume {resume}: no config.json there (not an fm-train output directory)")
        cfg = TrainConfig.load(cfg_path)
        cfg.out = str(resume)
        ctx = click.get_current_context()
        given = [n for n in ctx.params if ctx.get_parameter_source(n) != click.core.ParameterSource.DEFAULT]
        extra = [f"--{n.replace('_', '-')}" for n in given if n not in ("resume", "as_json")]
        if extra:  # a resumed run is the run its config.json describes, or its result would differ
            raise UsageError(
                f"{', '.join(extra)} with --resume: a resumed run keeps its config.json (its schedule is set for "
                f"{cfg.epochs} epochs); to train on from it, start a new run with --init {resume}/latest/{WEIGHTS}"
            )
        done = completed_epochs(resume)
        if done >= cfg.epochs:
            click.echo(f"{resume}: already complete ({done} of {cfg.epochs} epochs); nothing to do", err=True)
            return 0
        say(f"resuming {resume} from epoch {done + 1} of {cfg.epochs}")
    else:
        if not data:
            raise UsageError("--data is required (e.g. --data fmnist-c2s or --data deepfashion-inshop:DIR)")
        p, k = parse_batch(batch)
        cfg = TrainConfig(data=data, p=p, k=k, init=str(init) if init else None, amp=not no_amp, out=str(out), **fields)
        check_output_dir(out, "run folder (--out)")  # before the data and the model load
    result = train(cfg, resume=resume is not None, progress=True)  # on stderr: --json stays clean
    if as_json:
        echo_json(result)
    elif result["history"]:
        click.echo(summary_table(result["history"]))
        click.echo(f"best R@1 {result['best_recall_at_1']:.4f}; checkpoints in {cfg.out}/best and {cfg.out}/latest")
    return 0


# what --branch-for reads: everything else belongs to a new model's training and is refused
_BRANCH_OPTIONS = {"data", "batch", "out", "branch_for", "from_block", "category_share", "category_mirror"}
_BRANCH_OPTIONS |= {"epochs", "lr", "seed", "map_shift", "as_json"}


def _branch(
    model_dir: Path,
    data: str | None,
    batch: str,
    out: Path,
    as_json: bool,
    fields: dict[str, Any],
    from_block: int,
    share: float,
    mirror: bool,
) -> int:
    from fashion_match.errors import UsageError
    from fashion_match.train.branch import attach_and_export, train_category_branch

    def plain_batch(given: set[str]) -> None:
        if "batch" in given and not batch.isdigit():
            raise UsageError(f"--batch {batch}: --branch-for takes a plain batch size (e.g. 128)")

    given, out = head_mode("--branch-for", _BRANCH_OPTIONS, out, Path("runs/branch"), plain_batch)
    kw: dict[str, Any] = {k: fields[k] for k in ("epochs", "lr", "seed") if k in given}
    if "map_shift" in given:
        kw["shift"] = fields["map_shift"]
    meta = train_category_branch(
        model_dir,
        out / "branch.safetensors",
        from_block=from_block,
        batch=int(batch) if "batch" in given else 128,
        data=data or "fashion-mnist",
        progress=not as_json,
        **kw,
    )
    manifest = attach_and_export(model_dir, out / "branch.safetensors", out / "model", share=share, mirror=mirror)
    result = {"branch": meta, "model": str(out / "model"), "calibration": manifest["calibration"]}
    if as_json:
        echo_json(result)
    else:
        last = meta["history"][-1]
        click.echo(f"category branch: test top-1 {last['test_top1']:.4f} after {len(meta['history'])} epochs")
        threshold = manifest["calibration"]["threshold"]
        click.echo(f"model with the branch (share {share}): {out / 'model'}; threshold {threshold:.3f}")
    return 0


main = entrypoint(cli, "fm-train")


if __name__ == "__main__":  # torchrun --nproc_per_node N -m fashion_match.cli.train ...
    main()
