"""The sensitivity scan as a user reads it: a text table, the JSON record, a bar plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fashion_match.fileio import write_bytes_atomic

HEADER = (
    f"{'unit':<22} {'ops':<26} {'drift alone':>11} {'inst dR@1':>9} {'cat dR@1':>8} "
    f"{'drift w/o':>9} {'inst gain':>9} {'fp32 time':>9} {'int8 time':>9}"
)


def table(record: dict[str, Any]) -> str:
    """Rows in ranking order; dR@1: points lost by quantising the unit alone; gain: points won back
    by keeping it FP32 with everything else INT8; time: share of ONNX Runtime's CPU time."""
    rows = {r["unit"]: r for r in record["rows"]}
    i8, f32 = record["int8"], record["fp32"]
    lines = [
        f"INT8 sensitivity ({record['granularity']}s) on {record['data']}",
        f"FP32: category R@1 {f32['recall_at_1']:.4f}, instance R@1 {f32.get('instance_recall_at_1', float('nan')):.4f}"
        f"; all INT8: drift {i8['drift']:.5f}, category R@1 {i8['recall_at_1']:.4f}, "
        f"instance R@1 {i8.get('instance_recall_at_1', float('nan')):.4f}",
        HEADER,
    ]
    for name in record["ranking"]:
        r = rows[name]
        a, w = r["alone"], r["all_but"]
        lines.append(
            f"{name:<22} {r['ops'][:26]:<26} {a['drift']:>11.6f} {a.get('instance_recall_at_1_drop_pts', 0):>+9.2f} "
            f"{a['recall_at_1_drop_pts']:>+8.2f} {w['drift']:>9.6f} {w.get('instance_recall_at_1_gain_pts', 0):>+9.2f} "
            f"{100 * r['time_share_fp32']:>8.1f}% {100 * r['time_share_int8']:>8.1f}%"
        )
    return "\n".join(lines) + "\n"


def plot(record: dict[str, Any], path: Path) -> None:
    """Horizontal bars: drift alone per unit (ranking order), with the INT8 time share beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {r["unit"]: r for r in record["rows"]}
    names = record["ranking"][::-1]
    fig, (ax, bx) = plt.subplots(1, 2, sharey=True, figsize=(10, 0.28 * len(names) + 1.5))
    ax.barh(names, [1e3 * rows[n]["alone"]["drift"] for n in names], color="#c0392b")
    ax.set_xlabel("embedding drift, this unit alone INT8 (1 - mean cosine, x 1e-3)")
    bx.barh(names, [100 * rows[n]["time_share_int8"] for n in names], color="#2c7fb8")
    bx.set_xlabel("share of INT8 CPU time (%)")
    fig.suptitle(f"INT8 sensitivity per {record['granularity']}", fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def write(record: dict[str, Any], out: Path) -> list[Path]:
    """sensitivity.txt, sensitivity.json and sensitivity.png in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "sensitivity.txt", out / "sensitivity.json", out / "sensitivity.png"]
    write_bytes_atomic(paths[0], table(record).encode())
    write_bytes_atomic(paths[1], (json.dumps(record, indent=2) + "\n").encode())
    plot(record, paths[2])
    return paths
