"""fm-serve under load and faults, on loopback: what a shop's site would see.

    python benchmarks/serve_load.py [--model DIR] [--requests 200] [--levels 1,4,16,64] [--faults 1000] [--record]

Starts fm-serve (.venv-serve) on free 127.0.0.1 ports and, for each protocol (gRPC, HTTP) and
concurrency level, sends `--requests` fm_embed requests of one JPEG each from that many client
threads: throughput, p50/p90/p99 latency, and the batch sizes Triton formed (its own metrics:
inferences per execution). In the same run, the in-process offline throughput of the same
backend and precision at the server's batch size is the ceiling. Then the faults: `--faults`
malformed requests (random bytes, empty, truncated, oversized, a decompression bomb, wrong dtype,
wrong shape) interleaved with good ones, every good answer checked against the in-process one;
client processes killed mid-request; and SIGTERM while loaded (in-flight requests must complete,
the server must exit 0). Bounded in requests and time; nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SERVE_PY = Path(os.environ.get("FM_SERVE_PYTHON", ROOT / ".venv-serve" / "bin" / "python"))


def load_level(url: str, jpeg: bytes, n: int, conc: int, ref: np.ndarray) -> dict[str, float]:
    from fashion_match.serve import Client

    lat: list[float] = []
    wrong = [0]
    lock = threading.Lock()
    todo = iter(range(n))

    def worker() -> None:
        with Client(url) as c:
            while True:
                with lock:
                    if next(todo, None) is None:
                        return
                t = time.perf_counter()
                e = c.embed([jpeg])[0]
                dt = time.perf_counter() - t
                with lock:
                    lat.append(dt)
                    wrong[0] += int(not np.allclose(e, ref, atol=1e-4))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(conc)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = np.array(lat) * 1000
    return {
        "requests": len(lat),
        "throughput_rps": round(len(lat) / wall, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p90_ms": round(float(np.percentile(ms, 90)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "wrong_answers": wrong[0],
    }


_MADE: dict[str, bytes] = {}  # the bomb and the thin image, encoded once


def malformed(rng: np.random.Generator, jpeg: bytes, big: int) -> tuple[str, object]:
    """(kind, payload): a bytes payload goes in as the image; a tuple is (dtype, shape) for a wrong tensor."""
    from PIL import Image

    kinds = ["random", "empty", "truncated", "oversized", "bomb", "thin", "wrong-dtype", "wrong-shape"]
    kind = kinds[int(rng.integers(len(kinds)))]
    if kind == "random":
        return kind, rng.bytes(int(rng.integers(1, 4000)))
    if kind == "empty":
        return kind, b""
    if kind == "truncated":
        return kind, jpeg[: int(rng.integers(1, len(jpeg) - 1))]
    if kind == "oversized":
        return kind, b"\xff" * big
    if kind in ("bomb", "thin") and kind not in _MADE:
        buf = io.BytesIO()
        if kind == "bomb":
            Image.new("L", (20000, 20000)).save(buf, "PNG")  # 400 M pixels, a few hundred KB
        else:
            Image.new("RGB", (30000, 1)).save(buf, "PNG")  # resized to 256 px on the short side: 7.7 G pixels
        _MADE[kind] = buf.getvalue()
    if kind in _MADE:
        return kind, _MADE[kind]
    return kind, ("FP32", (1, 3)) if kind == "wrong-dtype" else ("BYTES", (1, 2))


def faults(url: str, jpeg: bytes, ref: np.ndarray, n: int, big: int, seed: int = 0) -> dict[str, object]:
    from fashion_match.serve import Client
    from fashion_match.serve.client import ServerImageError, ServerUnavailable

    rng = np.random.default_rng(seed)
    counts: dict[str, dict[str, int]] = {}
    good_ok = good_total = 0
    with Client(url) as c:
        for i in range(2 * n):
            if i % 2:  # a good request between every two bad ones
                good_total += 1
                good_ok += int(np.allclose(c.embed([jpeg])[0], ref, atol=1e-4))
                continue
            kind, payload = malformed(rng, jpeg, big)
            row = counts.setdefault(kind, {"sent": 0, "refused_with_a_reason": 0, "answered": 0})
            row["sent"] += 1
            try:
                if isinstance(payload, tuple):
                    dtype, shape = payload
                    arr = np.zeros(shape, np.float32) if dtype == "FP32" else np.array([[b"a", b"b"]], dtype=object)
                    c._infer("fm_embed", {"image": arr}, ["embedding", "error"])
                else:
                    c.embed([payload])
                row["answered"] += 1
            except (ServerImageError, ServerUnavailable) as e:
                row["refused_with_a_reason"] += int(bool(str(e)))
    return {"malformed": counts, "good_requests": good_total, "good_answers_correct": good_ok}


def killed_clients(url: str, jpeg_path: Path, n: int = 8) -> int:
    """Client processes killed while their request is in flight; returns how many were killed."""
    code = (
        f"import sys; from fashion_match.serve import Client\nc = Client({url!r})\nwhile True: c.embed([sys.argv[1]])\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(jpeg_path)]) for _ in range(n)]
    time.sleep(3)
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()
    return n


def main() -> None:
    from fashion_match.bench.machine import machine_info
    from fashion_match.bench.records import add_output_args, write_result
    from fashion_match.runtime.matcher import Matcher

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--levels", default="1,4,16,64")
    ap.add_argument("--faults", type=int, default=1000)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--queue-delay-us", type=int, default=2000)
    add_output_args(ap, "serve_load.json")
    args = ap.parse_args()
    tmp = ROOT / ".tmp" / "serve_load"
    tmp.mkdir(parents=True, exist_ok=True)
    jpeg_path = ROOT / "examples" / "sample" / "01-pullover" / "consumer.jpg"
    jpeg = jpeg_path.read_bytes()
    with Matcher(args.model) as m:
        ref = m.embed_strict([jpeg])[0]
        from fashion_match.data.images import load_batch

        px = np.repeat(load_batch([jpeg], m.spec).pixels, args.max_batch, axis=0)
        m.backend.embed(px)
        t = time.perf_counter()
        for _ in range(5):
            m.backend.embed(px)
        offline = 5 * args.max_batch / (time.perf_counter() - t)
        backend, precision, model_name = m.info.backend, m.info.precision, m.manifest.model
    print(f"offline ceiling: {offline:.1f} images/s at batch {args.max_batch}", flush=True)
    from fashion_match.serve.local import LocalServer

    extra = ["--max-batch", str(args.max_batch), "--queue-delay-us", str(args.queue_delay_us)]
    server = LocalServer(SERVE_PY, extra + (["--model", str(args.model)] if args.model else []), tmp / "server.log")
    proc, http, grpc = server.proc, server.http, server.grpc
    rows = []
    try:
        for proto, url in (("grpc", f"grpc://127.0.0.1:{grpc}"), ("http", f"http://127.0.0.1:{http}")):
            for conc in (int(x) for x in args.levels.split(",")):
                before = server.metrics("fm_embed")
                r = load_level(url, jpeg, args.requests, conc, ref)
                after = server.metrics("fm_embed")
                execs = after["nv_inference_exec_count"] - before["nv_inference_exec_count"]
                images = after["nv_inference_count"] - before["nv_inference_count"]
                r |= {"protocol": proto, "concurrency": conc, "mean_batch": round(images / max(1, execs), 2)}
                rows.append(r)
                print(json.dumps(r), flush=True)
        fault = faults(f"http://127.0.0.1:{http}", jpeg, ref, args.faults, 17 * 1024 * 1024)
        print(json.dumps(fault), flush=True)
        fault["clients_killed_mid_request"] = killed_clients(f"http://127.0.0.1:{http}", jpeg_path)
        from fashion_match.serve import Client

        with Client(f"http://127.0.0.1:{http}") as c:
            fault["answers_after_the_kills_correct"] = bool(np.allclose(c.embed([jpeg])[0], ref, atol=1e-4))
        # SIGTERM while 16 clients wait for answers
        answers: list[object] = []

        def call() -> None:
            with Client(f"grpc://127.0.0.1:{grpc}") as c:
                try:
                    answers.append(bool(np.allclose(c.embed([jpeg])[0], ref, atol=1e-4)))
                except Exception as e:  # noqa: BLE001 - counted below
                    answers.append(repr(e)[:120])

        threads = [threading.Thread(target=call) for _ in range(16)]
        for t in threads:
            t.start()
        time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(timeout=120)
        code = proc.wait(timeout=120)
        fault["sigterm"] = {
            "in_flight": 16,
            "answered_correctly": sum(1 for a in answers if a is True),
            "refused": [a for a in answers if a is not True][:3],
            "exit_code": code,
        }
        print(json.dumps(fault["sigterm"]), flush=True)
    finally:
        if proc.poll() is None:
            proc.kill()
    result = {
        "benchmark": "fm-serve (Triton via PyTriton, CPU) under load and faults, loopback",
        "model": model_name,
        "backend": backend,
        "precision": precision,
        "request": "fm_embed, one JPEG (examples/sample/01-pullover/consumer.jpg) per request",
        "server": {"max_batch": args.max_batch, "queue_delay_us": args.queue_delay_us, "instances": 1},
        "offline_ceiling_images_per_s": round(offline, 1),
        "rows": rows,
        "faults": fault,
        "command": " ".join(["python", "benchmarks/serve_load.py", *sys.argv[1:]]),
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d"),
    }
    write_result(args, ROOT / "benchmarks" / "results" / "serve_load.json", result)


if __name__ == "__main__":
    main()
