"""Does an INT8 file score the same on an x86 CPU without VNNI? Full-range vs 7-bit weights, native and emulated.

    python benchmarks/int8_saturation.py [--model DIR] [--queries 40 --gallery 60] [--out FILE]

Quantises the model's FP32 ONNX with the onnxruntime flavour twice from one calibration: weights to
+-127 (what fm-export writes) and to +-64 (7 bits, which no U8S8 kernel can saturate). Each file is embedded on
Fashion-MNIST test queries and train gallery images with ONNX Runtime's default CPU kernels, and the
full-range one also with its exact kernels (`session.x64quantprecision`). Then the same runs again
under `qemu-x86_64 -cpu Haswell` (apt install qemu-user): an emulated AVX2 CPU without VNNI, whose
U8S8 kernels add pairs of products in 16 bits. Recorded per run: cosine to the native FP32 embeddings and
category Recall@1; for the emulated runs, how far each embedding is from the native one. Emulation
is slow (seconds per image), hence the small default sets; its timings mean nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

KERNELS = {"default": {}, "exact": {"session.x64quantprecision": "1"}}
NO_VNNI = ("Haswell", "Broadwell", "Skylake-Client", "Skylake-Server", "EPYC", "EPYC-Rome", "EPYC-Milan")
RUNS = (("fp32", "default"), ("int8-full-range", "default"), ("int8-full-range", "exact"), ("int8-7bit", "default"))


def _embedder(path: Path, kernels: str) -> Any:
    """`embed` for the gate helpers: one CPU session with the kernels asked for."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    for k, v in KERNELS[kernels].items():
        opts.add_session_config_entry(k, v)
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda pixels: np.asarray(sess.run(["embedding"], {name: pixels})[0], np.float32)


def measure(work: Path) -> dict[str, Any]:
    """Every INT8 run on this machine against the native FP32 embeddings (FP32 has no integer kernels to
    differ in); embeddings saved beside the files for the native side to compare."""
    from fashion_match.bench.machine import cpu_model, has_vnni
    from fashion_match.export import gate as gates

    with np.load(work / "gate.npz", allow_pickle=False) as z:
        gs = gates.GateSet("int8_saturation", z["q"], z["q_keys"], z["g"], z["g_keys"])
    emulated = (work / "emulated").exists()
    tag = "emulated" if emulated else "native"
    rows = []
    for file, kernels in RUNS[1:] if emulated else RUNS:
        t0 = time.perf_counter()
        path = work / f"{file}.onnx"
        e = gates.embed_gate_set(path, gs, embed=_embedder(path, kernels))
        np.save(work / f"{tag}-{file}-{kernels}.npy", np.concatenate([e.q, e.g]), allow_pickle=False)
        if file == "fp32":
            ref = e
        else:
            both = np.load(work / "native-fp32-default.npy")
            ref = gates.GateEmbeddings(both[: len(e.q)], both[len(e.q) :], None, None)
        cos = gates.compare(ref, e)
        rows.append(
            {
                "file": file,
                "kernels": kernels,
                "mean_cosine_to_fp32": round(cos["mean_cosine"], 6),
                "min_cosine_to_fp32": round(cos["min_cosine"], 6),
                "recall_at_1": round(float(gates.hits(e, gs)["recall_at_1"].mean()), 4),
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr)
    # under qemu-user /proc/cpuinfo is the host's: the emulated CPU's flags are the model's (parent)
    return {"cpu": cpu_model(), **({} if emulated else {"vnni": has_vnni()}), "runs": rows}


def prepare(model: Path, work: Path, queries: int, gallery: int, calib_images: int) -> str:
    from fashion_match.data.evalset import load_eval_set
    from fashion_match.export.onnx2int8 import (
        DEFAULT_CALIB,
        FLAVOURS,
        Int8Quantiser,
        calibration_sources,
        decode_calibration,
    )
    from fashion_match.formats import FP32_ONNX
    from fashion_match.runtime.manifest import load_manifest

    spec = load_manifest(model).preprocess
    es = load_eval_set("fashion-mnist", spec, (queries, gallery), (queries, gallery))
    np.savez(work / "gate.npz", q=es.q_pixels, g=es.g_pixels, q_keys=es.q_keys, g_keys=es.g_keys)
    shutil.copy(model / FP32_ONNX, work / "fp32.onnx")
    sources, described = calibration_sources(DEFAULT_CALIB, calib_images)
    with Int8Quantiser(model / FP32_ONNX, decode_calibration(sources, spec)) as quantiser:
        quantiser.flavour = dataclasses.replace(FLAVOURS["onnxruntime"], weight_max=127)
        quantiser.quantise(work / "int8-full-range.onnx")
        quantiser.flavour = dataclasses.replace(FLAVOURS["onnxruntime"], weight_max=64)
        quantiser.quantise(work / "int8-7bit.onnx")
    return described


def weight_max(path: Path) -> int:
    """The largest |int8 weight| the file holds: what its name says, read back."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    int8 = {t.name: t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8}
    weights = [numpy_helper.to_array(int8[n.input[0]]) for n in graph.node if n.input and n.input[0] in int8]
    return max(int(np.abs(w.astype(np.int32)).max()) for w in weights)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, help="a model directory (default: the embedded default model)")
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--gallery", type=int, default=60)
    ap.add_argument("--calib-images", type=int, default=128)
    ap.add_argument("--cpu", default="Haswell", help="the CPU qemu emulates (qemu-x86_64 -cpu help)")
    ap.add_argument("--out", type=Path, help="write the record here (default: print only)")
    ap.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the emulated child's work folder
    args = ap.parse_args()
    if args.measure:
        json.dump(measure(args.measure), sys.stdout)
        return
    from fashion_match.bench.machine import machine_info
    from fashion_match.runtime.manifest import default_model_dir, load_manifest

    model = args.model or default_model_dir()
    qemu = shutil.which("qemu-x86_64")
    if not qemu:
        sys.exit("qemu-x86_64 is missing: apt install qemu-user")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fm-saturation-") as tmp:
        work = Path(tmp)
        described = prepare(model, work, args.queries, args.gallery, args.calib_images)
        held = {name: weight_max(work / f"{name}.onnx") for name in ("int8-full-range", "int8-7bit")}
        native = measure(work)
        (work / "emulated").touch()
        cmd = [qemu, "-cpu", args.cpu, sys.executable, __file__, "--measure", str(work)]
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, check=True)
        emulated = json.loads(done.stdout)
        emulated["cpu"] = f"qemu-x86_64 -cpu {args.cpu} (TCG) on {native['cpu']}"
        emulated["vnni"] = False if args.cpu in NO_VNNI else None
        for row in emulated["runs"]:
            a = np.load(work / f"native-{row['file']}-{row['kernels']}.npy")
            b = np.load(work / f"emulated-{row['file']}-{row['kernels']}.npy")
            row["max_abs_diff_to_native"] = float(np.abs(a - b).max())
    record = {
        "what": "one model's INT8 files, full-range vs 7-bit weights, on a VNNI CPU and an emulated AVX2 CPU",
        "command": "python benchmarks/int8_saturation.py " + " ".join(sys.argv[1:]),
        "model": load_manifest(model).data.get("model"),
        "data": f"fashion-mnist: {args.queries} test queries x {args.gallery} train gallery (category match)",
        "calibration": described,
        "weight_max_held": held,
        "quantised": "the whole backbone (no block kept FP32), ONNX Runtime flavour, percentile 99.99",
        "native": native,
        "emulated": emulated,
        "seconds": round(time.perf_counter() - t0, 1),
        "machine": machine_info(),
    }
    text = json.dumps(record, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
