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


def fm_train_args(script: str) -> list[str]:
    """The recipe's fm-train arguments (the run that starts with --data), its shell variables replaced
    by their defaults."""
    joined = script.replace("\\\n", " ")
    defaults = dict(re.findall(r"^(\w+)=\$\{\w+:-([^}]*)\}", joined, flags=re.M))
    (line,) = [ln for ln in joined.splitlines() if re.match(r"\s*fm-train\s+--data", ln)]
    line = line.replace('"${extra[@]}"', "")  # optional extras, checked by the smoke run instead
    line = re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m.group(1), "/data"), line)
    return shlex.split(line)[1:]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_fm_train_line_parses(recipe: Path) -> None:
    args = fm_train_args(recipe.read_text(encoding="utf-8"))
    ctx = fm_train.make_context("fm-train", args)  # raises click.UsageError on an unknown option or bad value
    assert ctx.params["data"] and ctx.params["out"]
    parse_batch(ctx.params["batch"])


def test_recipes_found() -> None:
    assert {p.name for p in RECIPES} >= {"deepfashion_inshop_resnet50.sh", "default_model_gpu.sh"}


def test_a_wrong_option_in_a_recipe_is_caught() -> None:
    args = fm_train_args('OUT=${OUT:-runs/x}\nfm-train --data fmnist-c2s --epohcs 3 --out "$OUT"\n')
    with pytest.raises(click.UsageError):
        fm_train.make_context("fm-train", args)
