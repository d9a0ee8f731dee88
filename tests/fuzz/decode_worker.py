"""Decode N seeded mutants in this process and report, as one JSON line, what happened.

Run by test_fuzz_images in a fresh interpreter, so its peak memory and its stderr are its own.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fashion_match.cli.common import _configure_logging
from fashion_match.data.images import load_image
from fashion_match.data.preprocess import IMAGENET
from fashion_match.errors import BadImage
from tests.fuzz.mutate import base_images, mutate_image


def main(n: int) -> None:
    _configure_logging(debug=False)  # exactly what every fm-* command does before its work
    bases = base_images()
    names = sorted(bases)
    counts: dict[str, int] = {}
    unexpected: list[str] = []
    for seed in range(n):
        name = names[seed % len(names)]
        kind, data = mutate_image(name, bases[name], seed)
        try:
            px = load_image(data, IMAGENET, name=f"{name}#{seed}")
            ok = px.shape == (224, 224, 3) and str(px.dtype) == "uint8"
            outcome = "ok" if ok else "wrong shape"
        except BadImage:
            outcome = "bad"
        except BaseException as e:  # noqa: BLE001 - exactly what the test is looking for
            outcome = "unexpected"
            unexpected.append(f"{name} seed {seed} ({kind}): {type(e).__name__}: {e}"[:200])
        key = f"{name}/{kind}/{outcome}"
        counts[key] = counts.get(key, 0) + 1
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent that forked us (pytest, large)
    hwm = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmHWM:"))
    rss_mb = int(hwm.split()[1]) // 1024
    print(json.dumps({"n": n, "counts": counts, "unexpected": unexpected, "peak_rss_mb": rss_mb}))


if __name__ == "__main__":
    main(int(sys.argv[1]))
