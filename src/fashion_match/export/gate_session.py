"""One export's accuracy gate: the gate set, the FP32 reference and (for a model with tag heads or
attribute spaces) the attribute figures are built once and judge every artifact the export makes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fashion_match.errors import ExportError, FmError, UsageError
from fashion_match.export import gate as gates
from fashion_match.export.attr_gate import AttrGate, Outputs, build_attr_gate, judge, onnx_outputs
from fashion_match.formats import FP32_ONNX
from fashion_match.formats import precision as precision_row
from fashion_match.progress import stage
from fashion_match.runtime.manifest import Manifest
from fashion_match.runtime.tagging import head_data

if TYPE_CHECKING:
    from fashion_match.export.pipeline import ExportOptions

log = logging.getLogger(__name__)


class GateSession:
    """Built on first use: the gate set and the FP32 reference embeddings are shared by all artifacts."""

    def __init__(self, manifest: Manifest, opts: ExportOptions) -> None:
        self.manifest, self.opts = manifest, opts
        self.gs: gates.GateSet | None = None
        self.ref: gates.GateEmbeddings | None = None
        self.attr: AttrGate | None = None  # built on first use for a model with tag heads or spaces

    def check(
        self,
        candidate: Path,
        precision: str,
        name: str,
        embed: Callable[[np.ndarray], np.ndarray] | None = None,
        batch: int = 32,
        outputs: Outputs | None = None,
    ) -> dict:
        """Gate figures for `candidate` (run on ONNX Runtime CPU, or by `embed` and `outputs`, a
        backend's); `GateFailed` when the embedding or, for a model with heads, an attribute fails."""
        figures = self._check_embedding(candidate, precision, name, embed, batch)
        data = head_data(self.manifest)
        if data is None:
            return figures
        if self.attr is None:
            with stage(f"gate: FP32 attribute figures on {data or '(no data recorded)'}"):
                if not data:
                    raise UsageError(
                        f"{self.manifest.folder}: the manifest does not say which data its heads were trained on, "
                        "so the attribute gate cannot judge them; re-attach them with fm-train --tags-for/--spaces-for"
                    )
                self.attr = build_attr_gate(self.manifest, onnx_outputs(self.manifest.folder / FP32_ONNX), data)
        if embed is not None and outputs is None:
            raise ExportError(f"{name}: the backend that runs it does not return the model's tag and space outputs")
        with stage(f"gate: {name} attributes"):
            got = self.attr.figures(outputs or onnx_outputs(candidate), batch)
        figures["attributes"], failures = judge(self.attr, got, figures["allowed_drop_pts"])
        if failures:
            raise gates.GateFailed(
                f"{name}: attribute gate failed on {self.attr.description}: {'; '.join(failures)}. "
                f"To go on: {precision_row(precision).remedy} "
                f"{max(figures['attributes']['drop_pts'].values()) + 0.01:.2f}",
                figures,
            )
        return figures

    def _check_embedding(
        self,
        candidate: Path,
        precision: str,
        name: str,
        embed: Callable[[np.ndarray], np.ndarray] | None,
        batch: int,
    ) -> dict:
        if self.gs is None or self.ref is None:
            o = self.opts
            try:
                self.gs = gates.build_gate_set(
                    self.manifest.preprocess,
                    o.gate_data,
                    o.gate_queries,
                    o.gate_gallery,
                    o.gate_verification,
                    o.gate_pairs,
                    o.gate_instance_gallery,
                )
            except FmError as e:
                raise UsageError(
                    f"the accuracy gate needs its held-out data ({e}); point it at yours with --gate-data SPEC "
                    "and --gate-pairs 0 (or install Fashion-MNIST: apt install dataset-fashion-mnist)"
                ) from None
            with stage(f"gate: FP32 reference on {self.gs.description}"):
                self.ref = gates.embed_gate_set(self.manifest.folder / FP32_ONNX, self.gs)
        allowed = self.opts.allow_accuracy_drop
        why = gates.resolution_warning(
            self.gs, precision, gates.MAX_DROP_PTS[precision] if allowed is None else allowed
        )
        if why and self.opts.gate_mode == "full":
            log.warning("warning: %s", why)
        with stage(f"gate: {name}"):
            return gates.run_gate(
                candidate,
                precision,
                self.gs,
                self.ref,
                self.manifest.threshold,
                allowed,
                embed,
                name,
                batch,
                mode=self.opts.gate_mode,
            )
