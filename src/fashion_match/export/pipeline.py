"""What `fm-export` does, in order: FP32 ONNX -> FP16 / INT8 ONNX -> gated executions (bf16) ->
TensorRT engines -> Triton.

Every derived artifact is written under a temporary name, passes the accuracy gate, and only
then takes its real name and its manifest entry (sha256, what it was made from, the gate's
figures, the quantisation flavour). An execution-only precision (bf16: another backend running the
FP32 file with coarser arithmetic) makes no file: its gate figures go into the FP32 file's entry, under
`execution_gates`, and the runtime runs it only once they are there. The manifest is rewritten after
each artifact, so an interrupted export leaves a directory the runtime still accepts.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fashion_match.errors import UsageError
from fashion_match.export import executions
from fashion_match.export import gate as gates
from fashion_match.export.gate_session import GateSession
from fashion_match.fileio import check_output_dir, make_temp, sha256_file
from fashion_match.formats import EXECUTIONS, FP32_ONNX, PRECISION_TABLE, REDUCED, lookup
from fashion_match.formats import precision as precision_row
from fashion_match.progress import say as say_progress
from fashion_match.progress import stage
from fashion_match.runtime.manifest import MANIFEST, Manifest, default_model_dir, load_manifest, write_manifest

log = logging.getLogger(__name__)
# symmetric Q/DQ: the INT8 engine's source, recorded under engine_sources, never an ONNX Runtime artifact
TRT_INT8_SOURCE = precision_row("int8").engine_source


@dataclass
class ExportOptions:
    precisions: tuple[str, ...] = ()  # formats.REDUCED to make and formats.EXECUTIONS to gate, in table order
    calib: str | None = None
    calib_images: int = 128
    calib_method: str = "percentile"
    target: str | None = None  # int8 flavour; default: tensorrt with --trt, else onnxruntime
    trt: bool = False
    batch: tuple[int, int, int] = (1, 32, 128)
    timing_cache: Path | None = None
    triton: Path | None = None
    allow_accuracy_drop: float | None = None
    gate_data: str = gates.DEFAULT_RETRIEVAL
    gate_queries: int = 1000
    gate_gallery: int = 5000
    gate_verification: str | None = gates.DEFAULT_VERIFICATION
    gate_pairs: int = 1000
    gate_instance_gallery: int = 3000  # the pairs' shop photos plus others: instance Recall@1
    gate_mode: str = "full"  # "quick": a small gate set for trying things, labelled so in the manifest
    int8_max_drop: float | None = None  # points: keep the most sensitive units FP32 until within (mixed_int8)
    int8_quantizer: str = "auto"  # who places the Q/DQ pairs (modelopt_int8.QUANTIZERS)


# --gate quick: how many images it uses (queries, gallery, verification pairs)
QUICK_GATE = (250, 1000, 100)  # instance gallery: 3x the pairs


@dataclass
class ExportResult:
    out: Path
    made: list[dict[str, Any]] = field(default_factory=list)
    triton: list[Path] = field(default_factory=list)


def is_run_dir(path: Path) -> bool:
    return (path / "best" / "state.json").is_file() or (path / "latest" / "state.json").is_file()


def resolve(source: Path | None, out: Path | None) -> tuple[Path, Path | None, str]:
    """(model dir to start from, fm-train run or None, out dir) from the CLI's SOURCE and --out."""
    if source is None:
        if out is None:
            raise UsageError(
                "exporting the embedded default model needs --out DIR (the package's own copy is read-only)"
            )
        return default_model_dir(), None, str(out)
    if not source.exists():
        raise UsageError(f"{source}: no such file or directory")
    if is_run_dir(source):
        return source, source, str(out or source / "export")
    if (source / MANIFEST).is_file():
        return source, None, str(out or source)
    raise UsageError(f"{source}: neither a model directory (no {MANIFEST}) nor an fm-train output (no best/state.json)")


def prepare_out(model_dir: Path, run: Path | None, out: Path) -> Manifest:
    """A model directory at `out` holding at least the verified FP32 ONNX."""
    out.mkdir(parents=True, exist_ok=True)
    if run is not None:
        from fashion_match.export.torch2onnx import torch2onnx
        from fashion_match.train.checkpoint import load_for_export

        which = "best" if (run / "best" / "state.json").is_file() else "latest"
        model, info = load_for_export(run, which)
        epoch = info.get("epoch")
        said = f"{which}, epoch {epoch + 1}" if isinstance(epoch, int) else which
        say_progress(f"exporting {run} ({said} checkpoint)")
        threshold = info.get("threshold")
        torch2onnx(
            model,
            out,
            threshold=threshold,
            threshold_rule=f"the fm-train run's own, from its evaluation at the {said} checkpoint"
            if threshold is not None
            else None,
            display_name=info.get("name") or f"{model.name}-{run.name}",
            source={"fm_train_run": str(run), "checkpoint": which, "epoch": epoch, "metrics": info.get("metrics")},
        )
        return load_manifest(out)
    src = load_manifest(model_dir)
    if out.resolve() != model_dir.resolve():
        for name in [n for n, e in src.artifacts.items() if e.get("precision") == "fp32"]:
            src.artifact(src.artifacts[name]["backend"], "fp32")  # hash check before copying
            shutil.copyfile(model_dir / name, out / name)
        data = dict(src.data)
        data["artifacts"] = {n: e for n, e in src.artifacts.items() if e.get("precision") == "fp32"}
        data.pop("engine_sources", None)  # not copied: remade on request
        write_manifest(out, data)
    manifest = load_manifest(out)
    manifest.artifact("onnxruntime", "fp32")
    return manifest


def _entry(path: Path, fp32: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "made_from": {"file": FP32_ONNX, "sha256": fp32["sha256"]},
        "input": fp32.get("input"),
        "output": fp32.get("output"),
        **extra,
    }


def _record(manifest: Manifest, name: str, entry: dict[str, Any], key: str = "artifacts") -> None:
    manifest.data.setdefault(key, {})[name] = entry
    write_manifest(manifest.folder, manifest.data)


def _make_onnx(
    manifest: Manifest, name: str, precision: str, convert: Callable[[Path], dict[str, Any]], gate: GateSession
) -> tuple[dict[str, Any], dict[str, Any]]:
    out = manifest.folder
    tmp = make_temp(out, name)
    try:
        with stage(f"{precision}: converting to {name}"):
            summary = convert(tmp)
        figures = gate.check(tmp, precision, name)
        tmp.replace(out / name)
    finally:
        tmp.unlink(missing_ok=True)
    return summary, figures


@dataclass
class _Made:
    file: str
    entry: dict[str, Any]
    label: str  # how the output line names it
    key: str = "artifacts"  # manifest section: an engine source is listed apart from runtime artifacts


class _Context:
    """What every converter step needs: the model directory, its FP32 file, the gate, the options."""

    def __init__(
        self, manifest: Manifest, opts: ExportOptions, gate: GateSession, calib: tuple[list[Any], str] | None
    ) -> None:
        from fashion_match.export.onnx2int8 import decode_calibration

        self.manifest, self.opts, self.gate = manifest, opts, gate
        self.fp32_path, self.fp32 = manifest.artifact("onnxruntime", "fp32")
        # decoded once, before any conversion: unreadable calibration images stop the export first
        self.calib = (decode_calibration(calib[0], manifest.preprocess), calib[1]) if calib else None


def _make_fp16(ctx: _Context) -> _Made:
    from fashion_match.export.onnx2fp16 import onnx2fp16

    name = lookup("onnxruntime", "fp16").artifact
    summary, figures = _make_onnx(ctx.manifest, name, "fp16", lambda p: onnx2fp16(ctx.fp32_path, p), ctx.gate)
    entry = _entry(
        ctx.manifest.folder / name, ctx.fp32, backend="onnxruntime", precision="fp16", fp16=summary, gate=figures
    )
    return _Made(name, entry, "fp16")


def _make_int8(ctx: _Context) -> _Made:
    from fashion_match.export import sensitivity
    from fashion_match.export.mixed_int8 import make_mixed
    from fashion_match.export.modelopt_int8 import onnx2int8_modelopt
    from fashion_match.export.onnx2int8 import onnx2int8

    assert ctx.calib is not None  # listed and decoded before any work (run_export, _Context)
    pixels, described = ctx.calib
    target = ctx.opts.target or ("tensorrt" if ctx.opts.trt else "onnxruntime")
    name = lookup("onnxruntime", "int8").artifact if target == "onnxruntime" else TRT_INT8_SOURCE

    quantizer = ctx.opts.int8_quantizer  # settled by run_export: never "auto" here

    def quantise(p: Path) -> dict[str, Any]:
        if quantizer == "modelopt":
            return onnx2int8_modelopt(ctx.fp32_path, p, pixels, method=ctx.opts.calib_method)
        return onnx2int8(ctx.fp32_path, p, pixels, target=target, method=ctx.opts.calib_method)

    if ctx.opts.int8_max_drop is None:
        summary, figures = _make_onnx(ctx.manifest, name, "int8", quantise, ctx.gate)
    else:  # fashion-match's own quantizer (run_export refused ModelOpt with --int8-max-drop)

        def scan_data() -> Any:
            return sensitivity.scan_set(ctx.manifest.preprocess, ctx.opts.gate_data)

        def timing_pixels() -> Any:
            assert ctx.gate.gs is not None  # the gate ran on the first candidate
            return ctx.gate.gs.q_pixels[:128]

        drop, method = ctx.opts.int8_max_drop, ctx.opts.calib_method
        check = lambda p: ctx.gate.check(p, "int8", name)  # noqa: E731
        dst = ctx.manifest.folder / name
        summary, figures = make_mixed(
            ctx.fp32_path, dst, pixels, check, drop, target=target, method=method, scan_data=scan_data,
            timing_pixels=timing_pixels,
        )  # fmt: skip
    summary["calibration_data"] = described
    if target == "onnxruntime":
        entry = _entry(ctx.manifest.folder / name, ctx.fp32, backend="onnxruntime", precision="int8", int8=summary)
        entry["gate"] = figures
        return _Made(name, entry, f"int8 ({target})")
    # an engine source: listed apart, so no runtime mistakes it for an ONNX Runtime artifact
    entry = _entry(ctx.manifest.folder / name, ctx.fp32, precision="int8", int8=summary, gate=figures)
    return _Made(name, entry, f"int8 ({target})", key="engine_sources")


# precision -> the step that makes its ONNX from FP32 (a new precision: a table row plus one entry here)
CONVERTERS: dict[str, Callable[[_Context], _Made]] = {"fp16": _make_fp16, "int8": _make_int8}


def run_export(source: Path | None, out: Path | None, opts: ExportOptions, say: Callable[[str], None]) -> ExportResult:
    from fashion_match.export.onnx2int8 import DEFAULT_CALIB, calibration_sources

    unknown = [p for p in opts.precisions if p not in CONVERTERS and p not in EXECUTIONS]
    if unknown:
        raise UsageError(
            f"no converter for {unknown}; fm-export makes {', '.join(CONVERTERS)} and gates {', '.join(EXECUTIONS)}"
        )
    for p in EXECUTIONS:  # a backend or CPU that cannot run it: said before minutes of other work
        if p in opts.precisions:
            executions.check_runnable(executions.row(p))
    if "int8" in opts.precisions:  # who places the Q/DQ pairs: settled (and said) before any work
        from fashion_match.export.modelopt_int8 import choose_quantizer

        target = opts.target or ("tensorrt" if opts.trt else "onnxruntime")
        opts = replace(opts, int8_quantizer=choose_quantizer(opts.int8_quantizer, target))
        if opts.int8_max_drop is not None and opts.int8_quantizer == "modelopt":
            raise UsageError(
                "--int8-max-drop keeps units FP32 with fashion-match's quantizer: add --int8-quantizer fashion-match"
            )
    if opts.trt and opts.triton and opts.batch[0] > 1:  # the engines could not serve Triton's small batches
        raise UsageError(
            f"--batch {','.join(map(str, opts.batch))} with --triton: Triton also sends batches below "
            f"{opts.batch[0]}, which no profile would hold; use --batch 1,{opts.batch[1]},{opts.batch[2]}"
        )
    if opts.trt:  # before minutes of FP16/INT8 work, not after it
        from fashion_match.runtime.backend import unavailable_reason

        why = unavailable_reason("tensorrt", "cuda")
        if why:
            raise UsageError(f"--trt: {why}")
    # a wrong --calib fails here too, before the copy and the FP16 work
    calib = calibration_sources(opts.calib or DEFAULT_CALIB, opts.calib_images) if "int8" in opts.precisions else None
    model_dir, run, out_text = resolve(source, out)
    # a file, /proc or a read-only disk: refused now, not after minutes of work
    check_output_dir(Path(out_text), "model directory (--out)")
    if opts.triton:
        check_output_dir(opts.triton, "Triton repository (--triton)")
    manifest = prepare_out(model_dir, run, Path(out_text))
    result = ExportResult(manifest.folder)
    ctx = _Context(manifest, opts, GateSession(manifest, opts), calib)
    say(f"fp32   {ctx.fp32_path}")
    for row in PRECISION_TABLE:  # in table order, whatever order the options came in
        if row.name in opts.precisions and row.name in CONVERTERS:
            made = CONVERTERS[row.name](ctx)
            _record(manifest, made.file, made.entry, key=made.key)
            result.made.append({"file": made.file, **made.entry})
            say(_gate_line(made.label, made.file, made.entry["gate"]))
    for name in EXECUTIONS:
        if name in opts.precisions:
            fmt = executions.row(name)
            path, figures = executions.gate_execution(manifest, fmt, ctx.gate)
            entry = dict(manifest.artifacts[path.name])
            entry["execution_gates"] = {**entry.get("execution_gates", {}), fmt.gate_key: figures}
            _record(manifest, path.name, entry)
            result.made.append({"file": path.name, "execution": fmt.gate_key, "gate": figures})
            say(_gate_line(name, f"{path.name} on {fmt.backend}", figures))

    if opts.trt:
        _build_engines(manifest, opts, ctx.gate, result, say)

    if opts.triton:
        from fashion_match.export.triton import write_repository

        result.triton = write_repository(load_manifest(manifest.folder), opts.triton, max_batch=opts.batch[2])
        say(f"triton {opts.triton}: {', '.join(p.name for p in result.triton)}")
    return result


def _engine_source(manifest: Manifest, precision: str) -> Path:
    source = precision_row(precision).engine_source
    if source != lookup("onnxruntime", precision).artifact:  # a file made for TensorRT alone
        entry = manifest.data.get("engine_sources", {}).get(source)
        if entry is None:
            raise UsageError(
                f"--trt --{precision} needs its TensorRT source {source}: add --{precision} "
                "(its --target defaults to tensorrt with --trt)"
            )
        from fashion_match.runtime.manifest import verify_file

        verify_file(manifest.folder / source, entry)
        return manifest.folder / source
    return manifest.artifact("onnxruntime", precision)[0]


def _build_engines(
    manifest: Manifest, opts: ExportOptions, gate: GateSession, result: ExportResult, say: Callable[[str], None]
) -> None:
    from fashion_match.export.onnx2engine import build_engine
    from fashion_match.runtime.backend import open_backend

    precisions = ["fp32", *(p for p in REDUCED if p in opts.precisions)]
    fp32 = manifest.artifacts[FP32_ONNX]
    for precision in precisions:
        src = _engine_source(manifest, precision)
        name = lookup("tensorrt", precision).artifact
        tmp = make_temp(manifest.folder, name)
        try:
            with stage(f"trt {precision}: building {name} from {src.name}"):
                info = build_engine(
                    src, tmp, opts.batch, timing_cache=opts.timing_cache or manifest.folder / "timing.cache"
                )
            entry = _entry(tmp, fp32, backend="tensorrt", precision=precision, **info)
            _record(manifest, name, entry)  # provisional: the backend opens engines through the manifest
            tmp.replace(manifest.folder / name)
            with open_backend(manifest.folder, "tensorrt", precision, device="cuda") as be:
                step = min(32, be.info.max_batch or 32)  # stay inside the engine's profiles
                outputs = be.outputs if be.reads_outputs else None
                entry["gate"] = gate.check(
                    manifest.folder / name, precision, name, embed=be.embed, batch=step, outputs=outputs
                )
        except BaseException:
            manifest.data["artifacts"].pop(name, None)
            write_manifest(manifest.folder, manifest.data)
            (manifest.folder / name).unlink(missing_ok=True)
            raise
        finally:
            tmp.unlink(missing_ok=True)
        _record(manifest, name, entry)
        result.made.append({"file": name, **entry})
        say(_gate_line(f"trt {precision}", name, entry["gate"]))


def _gate_line(what: str, name: str, g: dict[str, Any]) -> str:
    line = (
        f"{what:<6} {name}: R@1 {g['recall_at_1']:.4f} (fp32 {g['recall_at_1_fp32']:.4f}, "
        f"{-g['recall_at_1_drop_pts']:+.2f} pts, allowed -{g['allowed_drop_pts']}), "
        f"cosine min {g['min_cosine']:.4f} mean {g['mean_cosine']:.5f}"
        + (f" (floor {g['min_mean_cosine']})" if g.get("min_mean_cosine") is not None else " (floor waived)")
    )
    if "instance_recall_at_1" in g:
        line += (
            f", instance R@1 {g['instance_recall_at_1']:.4f} ({-g['instance_recall_at_1_drop_pts']:+.2f} pts"
            f" \u00b1{g['standard_error_pts']['instance_recall_at_1_drop']:.2f})"
        )
    if "verification_accuracy" in g:
        line += f", verification acc {g['verification_accuracy']:.4f} ({-g['verification_accuracy_drop_pts']:+.2f} pts)"
    if "attributes" in g:  # the tag and space figures: the one that moved most
        worst = max(g["attributes"]["drop_pts"].items(), key=lambda kv: kv[1])
        line += f", attributes: largest drop {worst[1]:.2f} pts ({worst[0]}) of {len(g['attributes']['drop_pts'])}"
    return line
