"""`Matcher`: embed images in batches and decide whether two show the same item."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from fashion_match.data.images import BadImage, ImageSource, iter_batches, load_batch
from fashion_match.errors import UsageError
from fashion_match.runtime.backend import Backend, open_backend
from fashion_match.runtime.manifest import default_model_dir, load_manifest


@dataclass
class Embeddings:
    vectors: np.ndarray  # float32 (n_ok, D), L2-normalised, in input order
    indices: list[int]  # input position of each row
    bad: list[BadImage]  # inputs that could not be decoded, with the reason


@dataclass(frozen=True)
class Verdict:
    similarity: float
    threshold: float
    match: bool


def check_threshold(value: object) -> float:
    """A cosine threshold: a finite number in [-1, 1]. NaN would make every pair "no match" silently."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and -1 <= value <= 1:
        return float(value)
    raise UsageError(f"threshold {value!r}: expected a finite number between -1 and 1")


class Matcher:
    """Load a model directory (default: the embedded model) and match images with it.

    Decoding runs on a thread pool and overlaps with inference: while the backend embeds one
    batch, the next batch is being decoded.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        backend: str = "auto",
        precision: str = "fp32",
        device: str = "auto",
        threads: int | None = None,
        batch_size: int = 32,
        workers: int | None = None,
        space: str | None = None,
    ) -> None:
        self.model_dir = Path(model) if model is not None else default_model_dir()
        self.manifest = load_manifest(self.model_dir)
        self.spec = self.manifest.preprocess
        self.backend: Backend = open_backend(
            self.model_dir, backend, precision, device=device, threads=threads, manifest=self.manifest
        )
        self.threshold = self.manifest.threshold
        self.batch_size = batch_size
        self.workers = workers
        self.device = device
        # with `space`, embed() returns that attribute space's vectors, and the threshold is its own
        self.space, self._space_index, self._dim = space, None, self.manifest.embedding_dim
        self._space_output = ""  # the graph output `space` reads (runtime.tagging.space_output)
        if space is not None:
            from fashion_match.runtime.tagging import space_of, space_output

            self._space_index, own = space_of(self.manifest, space)
            self._space_output, self._dim = space_output(self.manifest)
            if own is not None:
                self.threshold = own

    @property
    def info(self):  # noqa: ANN201 - BackendInfo
        return self.backend.info

    def __enter__(self) -> Matcher:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.backend.close()

    def embed(self, sources: Sequence[ImageSource]) -> Embeddings:
        """Embed many images; bad ones are reported in `bad`, never silently dropped."""
        if len(sources) <= self.batch_size:  # one batch: no pipeline needed
            b = load_batch(sources, self.spec, workers=self.workers)
            vecs = self.embed_pixels(b.pixels) if len(b.indices) else self._empty()
            return Embeddings(vecs, b.indices, b.bad)
        parts, indices, bad = [], [], []
        for b in iter_batches(sources, self.spec, self.batch_size, workers=self.workers):
            if b.indices:
                parts.append(self.embed_pixels(b.pixels))
                indices += b.indices
            bad += b.bad
        return Embeddings(np.concatenate(parts) if parts else self._empty(), indices, bad)

    @property
    def dim(self) -> int:
        """Width of what `embed` returns: the embedding, or the attribute space's."""
        return int(self._dim)

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Decoded uint8 pixels (N, S, S, 3) -> embeddings (or this matcher's space's vectors)."""
        if self._space_index is None:
            return self.backend.embed(pixels)
        return np.ascontiguousarray(self.backend.outputs(pixels)[self._space_output][:, self._space_index])

    def query_form(self, vectors: np.ndarray) -> np.ndarray:
        """`embed`'s vectors as queries of an index built by this matcher: unchanged, except for
        value posteriors (runtime.tagging.query_form)."""
        from fashion_match.runtime.tagging import POSTERIORS_OUTPUT, query_form

        return query_form(vectors) if self._space_output == POSTERIORS_OUTPUT else vectors

    def _empty(self) -> np.ndarray:
        return np.zeros((0, self._dim), np.float32)

    def embed_strict(self, sources: Sequence[ImageSource]) -> np.ndarray:
        """Embed all `sources` or raise the first `BadImage`."""
        e = self.embed(sources)
        if e.bad:
            raise e.bad[0]
        return e.vectors

    def tag(self, sources: Sequence[ImageSource], top: int = 3) -> tuple[list[dict[str, Any]], list[int], list[Any]]:
        """Attribute values and tags of each readable image (one forward pass, the embedding's), the
        indices they belong to, and the unreadable ones."""
        from fashion_match.runtime.tagging import TAGS_OUTPUT, read_tags, tag_blocks

        blocks = tag_blocks(self.manifest)
        results, indices, bad = [], [], []
        for b in iter_batches(sources, self.spec, self.batch_size, workers=self.workers):
            if b.indices:
                results += read_tags(self.backend.outputs(b.pixels)[TAGS_OUTPUT], blocks, top)
                indices += b.indices
            bad += b.bad
        return results, indices, bad

    def verify_attribute(
        self, a: ImageSource, b: ImageSource, attribute: str, threshold: float | None = None
    ) -> Verdict:
        """Do `a` and `b` share `attribute`'s value? Similarity in that attribute's space (with value
        posteriors: the probability that they share it), verdict at the space's own threshold (or
        `threshold`)."""
        from fashion_match.runtime.tagging import POSTERIORS_OUTPUT, query_form, space_of, space_output

        index, own = space_of(self.manifest, attribute)
        output = space_output(self.manifest)[0]
        t = own if threshold is None else check_threshold(threshold)
        if t is None:
            raise UsageError(f"--attribute {attribute}: the model records no threshold for it; give --threshold")
        b_ = load_batch([a, b], self.spec, workers=self.workers)
        if b_.bad:
            raise b_.bad[0]
        va, vb = self.backend.outputs(b_.pixels)[output][:, index]
        if output == POSTERIORS_OUTPUT:  # the probability that the two share the value
            va, vb = query_form(va), query_form(vb)
        s = float(np.clip(np.dot(va, vb), -1.0, 1.0))
        return Verdict(s, t, s >= t)

    def similarity(self, a: ImageSource, b: ImageSource) -> float:
        va, vb = self.embed_strict([a, b])
        return float(np.clip(np.dot(va, vb), -1.0, 1.0))

    def verify(self, a: ImageSource, b: ImageSource, threshold: float | None = None) -> Verdict:
        t = self.threshold if threshold is None else check_threshold(threshold)
        s = self.similarity(a, b)
        return Verdict(s, t, s >= t)
