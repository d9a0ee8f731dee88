"""Where ONNX Runtime's CPU time goes, per node of the file it was given: its own profiler.

ONNX Runtime fuses Q/DQ pairs into QLinearConv and friends, naming the fused node after the
original with `_token_N` suffixes, and its NCHWc layout pass names a fused Conv+Clip after the
Clip's output tensor plus `_nchwc`; both are undone (`book`) so a fused node's time goes to the node
the user's graph has. Time of nodes the optimiser invented (layout reorders) stays under their own
names.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

_SUFFIX = re.compile(r"((_token_\d+)|(_nchwc))+$")


def node_times(path: str | Path, pixels: np.ndarray, runs: int = 3, by: str = "node") -> dict[str, float]:
    """Microseconds per call on `pixels` (mean of `runs` calls after one warm-up call), per original
    node name (`by="node"`) or per kernel ONNX Runtime ran (`by="op"`: QLinearConv, Conv, ...)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="fm-profile-") as d:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(d) / "profile")
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: pixels}
        for _ in range(runs + 1):  # the first call is the warm-up: allocations and first touch
            sess.run(None, feed)
        events = json.loads(Path(sess.end_profiling()).read_text())
    per_run: list[dict[str, float]] = []
    totals: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Session" and e.get("name") == "model_run":
            per_run.append(totals)
            totals = defaultdict(float)
        elif e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"):
            key = str(e.get("args", {}).get("op_name")) if by == "op" else e["name"][: -len("_kernel_time")]
            totals[_SUFFIX.sub("", key)] += float(e.get("dur", 0))
    steady = per_run[1:] or per_run  # model_run closes each call: the first one is the warm-up
    out: dict[str, float] = defaultdict(float)
    for c in steady:
        for k, v in c.items():
            out[k] += v
    return {k: v / len(steady) for k, v in out.items()}


def book(times: dict[str, float], graph: object) -> dict[str, float]:
    """`times` keyed by the nodes of `graph` (an onnx GraphProto): a profiled name that is a tensor
    (the NCHWc pass's naming) goes to the node that produced it."""
    nodes = {n.name for n in graph.node}  # type: ignore[attr-defined]
    by_output = {o: n.name for n in graph.node for o in n.output}  # type: ignore[attr-defined]
    out: dict[str, float] = defaultdict(float)
    for name, t in times.items():
        base = name.split("/")[0].removeprefix("fused ")  # "node_matmul/MatMulScaleFusion/", "fused node_x"
        out[name if name in nodes else base if base in nodes else by_output.get(name, name)] += t
    return dict(out)


def shares(times: dict[str, float], groups: dict[str, list[str]]) -> dict[str, float]:
    """Share of all node time spent in each group of node names."""
    total = sum(times.values()) or 1.0
    return {g: sum(times.get(n, 0.0) for n in names) / total for g, names in groups.items()}
