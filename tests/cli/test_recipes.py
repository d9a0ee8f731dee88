"""The recipes under benchmarks/recipes/ cannot run here (they need a GPU or DeepFashion), but their
fm-train command lines must still parse: a renamed option or an out-of-range value would otherwise
only show on the user's GPU box."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from fashion_match.cli.train import cli as fm_train
from fashion_match.train.config import parse_batch

RECIPES = sorted((Path(__file__).resolve().parents[2] / "benchmarks" / "recipes").glob("*.sh"))


def fm_train_lines(script: str, command: str = "fm-train") -> list[list[str]]:
    """The arguments of each of the recipe's `command` runs, its shell variables replaced by their
    defaults (an arithmetic `$((2 * N))` evaluated)."""
    joined = script.replace("\\\n", " ")
    defaults = dict(re.findall(r"^(\w+)=\$\{\w+:-([^}]*)\}", joined, flags=re.M))
    out = []
    for line in [ln for ln in joined.splitlines() if re.match(rf"\s*{command}\s+\S", ln)]:
        line = line.replace('"${extra[@]}"', "")  # optional extras, checked by the smoke run instead
        line = re.sub(
            r"\$\(\((.+?)\)\)",
            lambda m: str(eval(re.sub(r"\b([A-Z_]+)\b", lambda v: defaults[v.group(1)], m.group(1)))),
            line,
        )  # noqa: S307 - the recipe's own arithmetic
        line = re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m.group(1), "/data"), line)
        out.append(shlex.split(line)[1:])
    return out


def fm_train_args(script: str) -> list[str]:
    return fm_train_lines(script)[0]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_fm_export_and_fm_precision_lines_parse(recipe: Path) -> None:
    from fashion_match.cli.export import cli as fm_export
    from fashion_match.cli.precision import cli as fm_precision

    text = recipe.read_text(encoding="utf-8")
    for command, cli in (("fm-export", fm_export), ("fm-precision", fm_precision)):
        for args in fm_train_lines(text, command):
            cli.make_context(command, args)  # raises click.UsageError on an unknown option or bad value


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_fm_train_lines_parse(recipe: Path) -> None:
    text = recipe.read_text(encoding="utf-8")
    lines = fm_train_lines(text)
    assert lines or fm_train_lines(text, "fm-export")  # a recipe trains, or exports what was trained
    for args in lines:
        ctx = fm_train.make_context("fm-train", args)  # raises click.UsageError on an unknown option or bad value
        assert (ctx.params["data"] and ctx.params["out"]) or ctx.params["resume"]  # a resume replays its config
        parse_batch(ctx.params["batch"])


def test_recipes_found() -> None:
    assert {p.name for p in RECIPES} >= {
        "deepfashion_inshop_resnet50.sh",
        "default_model_gpu.sh",
        "default_model_attributes.sh",
    }


def test_a_wrong_option_in_a_recipe_is_caught() -> None:
    args = fm_train_args('OUT=${OUT:-runs/x}\nfm-train --data fmnist-c2s --epohcs 3 --out "$OUT"\n')
    with pytest.raises(click.UsageError):
        fm_train.make_context("fm-train", args)
