"""A small client for fm-serve, on Triton's own `tritonclient` (HTTP or gRPC, binary tensors).

    from fashion_match.serve import Client
    with Client("http://127.0.0.1:8000") as c:      # or "grpc://127.0.0.1:8001"
        v = c.match("a.jpg", "b.jpg")               # Verdict(similarity, threshold, match)
        hits = c.search("q.jpg", k=5)["matches"]    # [{"rank", "id", "item_id", "similarity", "match"}]

Files are read here, on the client, and sent as bytes: the server never opens a path.
A per-image error from the server (an unreadable image) raises `ServerImageError` naming it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

import numpy as np

from fashion_match.errors import FmError, MissingDependency, UsageError

ImageArg = str | os.PathLike[str] | bytes


class ServerImageError(FmError):
    """The server could not use one image of the request (it answered the others)."""


class ServerUnavailable(FmError):
    pass


def _read(img: ImageArg) -> bytes:
    if isinstance(img, bytes | bytearray):
        return bytes(img)
    try:
        with open(img, "rb") as f:
            return f.read()
    except OSError as e:
        raise UsageError(f"{os.fspath(img)}: cannot read it ({e.strerror or e})") from None


class Client:
    def __init__(self, url: str = "http://127.0.0.1:8000", timeout_s: float = 60.0) -> None:
        u = urlparse(url if "://" in url else f"http://{url}")
        if u.scheme not in ("http", "grpc") or not u.hostname:
            raise UsageError(f"--server {url}: give http://HOST:PORT or grpc://HOST:PORT")
        self.url, self.timeout_s = url, timeout_s
        try:
            if u.scheme == "grpc":
                import tritonclient.grpc as tc
            else:
                import tritonclient.http as tc
        except (ImportError, RuntimeError) as e:
            raise MissingDependency(
                f"the fm-serve client needs tritonclient: pip install 'fashion-match[triton]' ({e})"
            ) from None
        self.tc, self.grpc = tc, u.scheme == "grpc"
        target = f"{u.hostname}:{u.port or (8001 if self.grpc else 8000)}"
        if self.grpc:
            self.client = tc.InferenceServerClient(target)
        else:
            self.client = tc.InferenceServerClient(target, connection_timeout=timeout_s, network_timeout=timeout_s)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()

    def _infer(self, model: str, inputs: dict[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        from tritonclient.utils import InferenceServerException

        ins = []
        for name, arr in inputs.items():
            dtype = "BYTES" if arr.dtype == object else self.tc_dtype(arr.dtype)
            t = self.tc.InferInput(name, list(arr.shape), dtype)
            t.set_data_from_numpy(arr)
            ins.append(t)
        outs = [self.tc.InferRequestedOutput(n) for n in outputs]
        try:
            kw = {"client_timeout": self.timeout_s} if self.grpc else {}
            res = self.client.infer(model, ins, outputs=outs, **kw)
        except InferenceServerException as e:
            raise ServerUnavailable(f"{self.url} {model}: {' '.join(str(e).split())[:300]}") from None
        except OSError as e:  # refused, reset, timed out
            raise ServerUnavailable(f"{self.url}: cannot reach fm-serve ({e})") from None
        return {n: res.as_numpy(n) for n in outputs}

    @staticmethod
    def tc_dtype(dtype: np.dtype) -> str:
        from tritonclient.utils import np_to_triton_dtype

        return str(np_to_triton_dtype(dtype))

    @staticmethod
    def _check(errors: np.ndarray, names: Sequence[str]) -> None:
        for e, name in zip(errors.reshape(-1), names, strict=True):
            if e:
                raise ServerImageError(f"{name}: {e.decode(errors='replace').split(': ', 1)[-1]}")

    @staticmethod
    def _blobs(images: Sequence[ImageArg]) -> np.ndarray:
        return np.array([[_read(i)] for i in images], dtype=object).reshape(len(images), 1)

    def ready(self, models: Sequence[str] = ("fm_embed", "fm_match")) -> bool:
        """Triton is up and `models` are loaded (Triton's own health and model-ready endpoints)."""
        try:
            return bool(self.client.is_server_ready()) and all(self.client.is_model_ready(m) for m in models)
        except Exception:  # noqa: BLE001 - any transport failure means "not ready"
            return False

    def embed(self, images: Sequence[ImageArg]) -> np.ndarray:
        out = self._infer("fm_embed", {"image": self._blobs(images)}, ["embedding", "error"])
        self._check(out["error"], [_name(i) for i in images])
        return out["embedding"]

    def match(self, a: ImageArg, b: ImageArg) -> Any:
        from fashion_match.runtime.matcher import Verdict

        out = self._infer(
            "fm_match",
            {"image_a": self._blobs([a]), "image_b": self._blobs([b])},
            ["similarity", "threshold", "match", "error"],
        )
        self._check(out["error"], [f"{_name(a)} / {_name(b)}"])
        return Verdict(float(out["similarity"][0, 0]), float(out["threshold"][0, 0]), bool(out["match"][0, 0]))

    def search(self, image: ImageArg, k: int = 10) -> dict[str, Any]:
        """{"threshold", "matches": [{"rank", "id", "item_id", "similarity", "match"}]} from the served index."""
        out = self._infer(
            "fm_search",
            {"image": self._blobs([image]), "k": np.array([[k]], np.int32)},
            ["ids", "item_ids", "scores", "threshold", "error"],
        )
        self._check(out["error"], [_name(image)])
        t = float(out["threshold"][0, 0])
        hits = []
        for r, (gid, item, s) in enumerate(zip(out["ids"][0], out["item_ids"][0], out["scores"][0], strict=True)):
            if gid:
                sim = round(float(s), 6)
                hits.append(
                    {
                        "rank": r + 1,
                        "id": gid.decode(),
                        "path": None,  # the server's files are its own
                        "item_id": item.decode() or None,
                        "similarity": sim,
                        "match": sim >= t,
                    }
                )
        return {"threshold": t, "matches": hits}

    def tag(self, image: ImageArg, top: int = 3) -> dict[str, Any]:
        out = self._infer(
            "fm_tag", {"image": self._blobs([image]), "top": np.array([[top]], np.int32)}, ["tags", "error"]
        )
        self._check(out["error"], [_name(image)])
        return json.loads(out["tags"][0, 0])  # type: ignore[no-any-return]


def _name(img: ImageArg) -> str:
    return "<bytes>" if isinstance(img, bytes | bytearray) else os.fspath(img)
