"""The backend registry names classes by string (lazy imports): check each one keeps the contract."""

from __future__ import annotations

import inspect

import pytest

from fashion_match.formats import BACKENDS
from fashion_match.runtime.backend import REGISTRY, BaseBackend, backend_class


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_registered_backend_keeps_the_contract(name: str) -> None:
    cls = backend_class(name)  # imports its module; the libraries it needs load only when it opens
    assert issubclass(cls, BaseBackend)  # type: ignore[arg-type]
    assert cls.unavailable_reason("cpu") is None or isinstance(cls.unavailable_reason("cpu"), str)
    params = inspect.signature(cls).parameters
    assert list(params)[:3] == ["path", "entry", "manifest"]
    assert (
        params["device"].kind is inspect.Parameter.KEYWORD_ONLY
        and params["threads"].kind is inspect.Parameter.KEYWORD_ONLY
    )


def test_the_registry_and_the_format_table_name_the_same_backends() -> None:
    assert set(REGISTRY) == set(BACKENDS)


def test_only_onnxruntime_reads_the_extra_outputs() -> None:
    """Tag and space outputs are read by ONNX Runtime; any other backend says so in one error."""
    import numpy as np

    from fashion_match.errors import UsageError
    from fashion_match.runtime.backend import BackendInfo
    from fashion_match.runtime.onnxruntime_backend import OnnxRuntimeBackend

    assert OnnxRuntimeBackend.reads_outputs and not BaseBackend.reads_outputs
    be = BaseBackend()
    be.info = BackendInfo(backend="torch", precision="fp32", device="cpu", artifact="x", embedding_dim=4, input_size=8)
    with pytest.raises(UsageError, match="backend torch cannot read a model's tag or space outputs"):
        be.outputs(np.zeros((1, 8, 8, 3), np.uint8))
