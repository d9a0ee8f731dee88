"""`--data SPEC`: one string names any dataset, for every command."""

from __future__ import annotations

from collections.abc import Callable

from fashion_match.data.records import Dataset
from fashion_match.errors import UsageError


def _loaders() -> dict[str, tuple[Callable[[str | None], Dataset], bool, str]]:
    # name -> (loader, argument required, what the argument is); imports stay lazy
    from fashion_match.data import deepfashion, fashion_mnist, fmnist_c2s, generic

    return {
        "deepfashion-inshop": (lambda a: deepfashion.load_inshop(a or ""), True, "DIR (benchmark root)"),
        "deepfashion-c2s": (lambda a: deepfashion.load_c2s(a or ""), True, "DIR (benchmark root)"),
        "folder": (lambda a: generic.load_folder(a or ""), True, "DIR/<item_id>/<images>"),
        "csv": (lambda a: generic.load_csv(a or ""), True, "FILE with path,item_id[,split][,domain]"),
        "fashion-mnist": (fashion_mnist.load_fashion_mnist, False, "[DIR] of idx .gz files"),
        "fmnist-c2s": (fmnist_c2s.load_fmnist_c2s, False, "[DIR] of Fashion-MNIST idx .gz files"),
    }


FORMAT_NAMES = ("deepfashion-inshop", "deepfashion-c2s", "folder", "csv", "fashion-mnist", "fmnist-c2s")


def spec_help() -> str:
    return "; ".join(f"{k}:{v[2]}" for k, v in _loaders().items())


def load_dataset(spec: str) -> Dataset:
    """Parse `format[:ARG]` and load the dataset it names."""
    fmt, sep, arg = spec.partition(":")
    loaders = _loaders()
    if fmt not in loaders:
        raise UsageError(f"dataset spec {spec!r}: unknown format {fmt!r}; use one of: {spec_help()}")
    loader, required, what = loaders[fmt]
    if required and not arg:
        raise UsageError(f"dataset spec {spec!r}: {fmt} needs an argument, as in {fmt}:{what}")
    return loader(arg if sep else None)
