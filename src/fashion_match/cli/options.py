"""Options shared by the commands that load a model (read from the one formats table)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from fashion_match.errors import UsageError
from fashion_match.formats import BACKENDS, PRECISIONS
from fashion_match.runtime.backend import DEVICES, check_device

F = TypeVar("F", bound=Callable[..., Any])


def device_option() -> Callable[[F], F]:
    """--device, checked while parsing: a typo is a usage error before any model loads."""

    def check(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
        try:
            return check_device(value)
        except UsageError:
            raise click.BadParameter(f"{value!r}: choose {DEVICES}") from None

    return click.option("--device", default="auto", show_default=True, callback=check, help=f"{DEVICES}.")


def model_options(f: F) -> F:
    for opt in reversed(
        [
            click.option(
                "--model",
                "model_dir",
                type=click.Path(path_type=Path),
                default=None,
                help="Model directory (default: the embedded model).",
            ),
            click.option("--backend", type=click.Choice(("auto", *BACKENDS)), default="auto", show_default=True),
            click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True),
            device_option(),
            click.option("--threads", type=click.IntRange(1, 256), default=None, help="Inference threads."),
        ]
    ):
        f = opt(f)
    return f
