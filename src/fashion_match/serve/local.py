"""An fm-serve process on free loopback ports, started and stopped by its caller (tests, benchmarks)."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from fashion_match.errors import FmError

MAIN = "import sys; from fashion_match.cli.serve import main; sys.exit(main(sys.argv[1:]))"


def free_ports(n: int) -> list[int]:
    """`n` TCP ports free on 127.0.0.1 just now (held together while chosen, so distinct)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class LocalServer:
    """`python -c MAIN ARGS` with HTTP, gRPC and metrics on free ports; ready when `models` are loaded."""

    def __init__(
        self, python: Path, args: list[str], log: Path, models: tuple[str, ...] = ("fm_embed", "fm_match")
    ) -> None:
        from fashion_match.serve.client import Client

        self.http, self.grpc, self.metrics_port = free_ports(3)
        ports = ["--http-port", str(self.http), "--grpc-port", str(self.grpc), "--metrics-port", str(self.metrics_port)]
        self.log_path = log
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            [str(python), "-c", MAIN, *args, *ports], stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 180
        with Client(f"http://127.0.0.1:{self.http}") as c:
            while not c.ready(models):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise FmError(f"fm-serve did not start: {log.read_text()[-3000:]}")
                time.sleep(0.5)

    def metrics(self, model: str) -> dict[str, float]:
        """Triton's own Prometheus counters for `model`."""
        import urllib.request

        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).read().decode()
        return {
            line.split("{", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if f'model="{model}"' in line and not line.startswith("#")
        }

    def stop(self, timeout_s: float = 90) -> int:
        """SIGTERM, then the exit code (the server finishes what is in flight first)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        finally:
            self._log.close()

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.proc.poll() is None:
            self.stop()
