"""`--data SPEC`: one string names any dataset, for every command, parsed by one set of rules.

    FORMAT:ARG        deepfashion-inshop:DIR, deepfashion-c2s:DIR, folder:DIR, csv:FILE,
                      deepfashion-attr:DIR, fashionai:DIR, attr-csv:FILE (attribute labels)
    FORMAT[:DIR]      fashion-mnist, fmnist-c2s, fmnist-attr (DIR: where the idx files are; default: Debian's)
    DIR               a folder of images, as folder:DIR
    FILE.csv          as csv:FILE.csv

A path that exists always wins over a format name (a folder called `fashion-mnist` is a folder).
"""

from __future__ import annotations

from collections.abc import Callable

from fashion_match.data.records import Dataset
from fashion_match.errors import UsageError


def _loaders() -> dict[str, tuple[Callable[[str | None], Dataset], bool, str]]:
    # name -> (loader, argument required, what the argument is); imports stay lazy
    from fashion_match.data import (
        deepfashion,
        deepfashion_attr,
        fashion_mnist,
        fashionai,
        fmnist_attr,
        fmnist_c2s,
        generic,
    )

    return {
        "deepfashion-inshop": (lambda a: deepfashion.load_inshop(a or ""), True, "DIR (benchmark root)"),
        "deepfashion-c2s": (lambda a: deepfashion.load_c2s(a or ""), True, "DIR (benchmark root)"),
        "deepfashion-attr": (
            lambda a: deepfashion_attr.load_attr_benchmark(a or ""),
            True,
            "DIR (Category and Attribute Prediction root)",
        ),
        "fashionai": (lambda a: fashionai.load_fashionai(a or ""), True, "DIR (holds Annotations/label.csv)"),
        "attr-csv": (lambda a: fashionai.load_attr_csv(a or ""), True, "FILE with path,<attribute>,..."),
        "folder": (lambda a: generic.load_folder(a or ""), True, "DIR/<item_id>/<images>"),
        "csv": (lambda a: generic.load_csv(a or ""), True, "FILE with path,item_id[,split][,domain]"),
        "fashion-mnist": (fashion_mnist.load_fashion_mnist, False, "[DIR] of idx .gz files"),
        "fmnist-c2s": (fmnist_c2s.load_fmnist_c2s, False, "[DIR] of Fashion-MNIST idx .gz files"),
        "fmnist-attr": (fmnist_attr.load_fmnist_attr, False, "[DIR] of Fashion-MNIST idx .gz files"),
    }


FORMAT_NAMES = (
    "deepfashion-inshop",
    "deepfashion-c2s",
    "deepfashion-attr",
    "fashionai",
    "attr-csv",
    "folder",
    "csv",
    "fashion-mnist",
    "fmnist-c2s",
    "fmnist-attr",
)


def spec_help() -> str:
    return "; ".join(f"{k}:{v[2]}" for k, v in _loaders().items())


def parse_spec(spec: str) -> tuple[str, str | None]:
    """(format, argument) of a dataset spec, by the rules above; `UsageError` naming the choices."""
    from pathlib import Path

    path = Path(spec).expanduser()
    if path.is_dir():
        return "folder", spec
    if path.is_file() and path.suffix.lower() == ".csv":
        return "csv", spec
    fmt, sep, arg = spec.partition(":")
    loaders = _loaders()
    if fmt not in loaders:
        raise UsageError(
            f"dataset spec {spec!r}: no such folder or CSV file, and {fmt!r} is not a format; use a folder, "
            f"a CSV file or one of: {spec_help()}"
        )
    _, required, what = loaders[fmt]
    if required and not arg:
        raise UsageError(f"dataset spec {spec!r}: {fmt} needs an argument, as in {fmt}:{what}")
    return fmt, arg if sep else None


def load_dataset(spec: str) -> Dataset:
    """Load the dataset `spec` names (see `parse_spec`)."""
    fmt, arg = parse_spec(spec)
    return _loaders()[fmt][0](arg)
