"""Serving on Triton Inference Server (fm-serve) and its client; PyTriton and tritonclient load lazily."""

from __future__ import annotations

from typing import Any

__all__ = ["Client"]


def __getattr__(name: str) -> Any:
    if name == "Client":
        from fashion_match.serve.client import Client

        return Client
    raise AttributeError(name)
