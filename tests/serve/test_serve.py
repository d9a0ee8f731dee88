"""fm-serve on a real Triton Inference Server (PyTriton, CPU), on loopback, started by the test.

The server runs in .venv-serve (Debian's Python; `bash dev.sh test` sets it up); the client is this
interpreter's tritonclient. The server stops itself at the end (SIGTERM) and must exit 0.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from fashion_match.errors import FmError
from fashion_match.serve.local import LocalServer
from tests.conftest import encode, photo

ROOT = Path(__file__).resolve().parents[2]
SERVE_PY = Path(os.environ.get("FM_SERVE_PYTHON", ROOT / ".venv-serve" / "bin" / "python"))
pytestmark = pytest.mark.skipif(
    not SERVE_PY.exists(), reason=f"needs {SERVE_PY} (bash dev.sh test sets up .venv-serve)"
)


def _bomb() -> bytes:
    """A PNG header claiming 30000 x 30000 pixels (900 M): refused before any pixel is decoded."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + b"\0" * 64


class Server(LocalServer):
    def __init__(self, model: Path, index: Path, tmp: Path, *extra: str) -> None:
        self.model = model
        args = ["--model", str(model), "--index", str(index), *extra]
        try:
            super().__init__(SERVE_PY, args, tmp / "server.log", ("fm_embed", "fm_match", "fm_search"))
        except FmError as e:
            pytest.fail(str(e))

    def metric(self, name: str, model: str) -> float:
        got = self.metrics(model)
        assert name in got, f"no {name} for {model} in the metrics"
        return got[name]

    def settled_metric(self, name: str, model: str, timeout_s: float = 10) -> float:
        """The counter once two reads 0.3 s apart agree: Triton may count a request whose response
        the client already holds a moment later (a fresh clone once read 15 requests for 14)."""
        last, deadline = self.metric(name, model), time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            time.sleep(0.3)
            now = self.metric(name, model)
            if now == last:
                return now
            last = now
        return last


@pytest.fixture(scope="module")
def served(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from fashion_match.runtime.index import Index

    tmp = tmp_path_factory.mktemp("serve")
    shop = tmp / "shop"
    for i in range(6):
        (shop / f"sku{i}").mkdir(parents=True)
        photo(48, 40, seed=i).save(shop / f"sku{i}" / "front.png")
    index = tmp / "shop.idx"
    Index.build(shop, index, model=tiny_model_dir)
    # a long queue delay, so that concurrent requests surely meet in one dynamic batch
    server = Server(tiny_model_dir, index, tmp, "--queue-delay-us", "300000", "--max-image-mb", "0.5")
    yield server, shop, index
    assert server.stop() == 0, server.log_path.read_text()[-2000:]


def test_answers_over_http_and_grpc_are_the_in_process_ones(served, tiny_model_dir: Path) -> None:  # noqa: ANN001
    from fashion_match.runtime.index import Index
    from fashion_match.runtime.matcher import Matcher
    from fashion_match.serve import Client

    server, shop, index = served
    a, b = shop / "sku1" / "front.png", shop / "sku2" / "front.png"
    with Matcher(tiny_model_dir) as m:
        want = m.verify(a, b)
        emb = m.embed_strict([a, b])
        hits, _ = Index.open(index).search([str(a)], k=3, matcher=m)
    for url in (f"http://127.0.0.1:{server.http}", f"grpc://127.0.0.1:{server.grpc}"):
        with Client(url) as c:
            got = c.match(a, b)
            assert got.similarity == pytest.approx(want.similarity, abs=1e-5) and got.match == want.match
            assert got.threshold == pytest.approx(want.threshold)
            assert np.allclose(c.embed([a, b]), emb, atol=1e-5)
            found = c.search(a, k=3)["matches"]
            assert [h["id"] for h in found] == [h["id"] for h in hits[0].matches]
            assert found[0]["item_id"] == "sku1" and found[0]["similarity"] <= 1.0
    # the README's curl: KServe v2 JSON, images base64-encoded
    import base64
    import json

    body = {
        "inputs": [
            {"name": n, "shape": [1, 1], "datatype": "BYTES", "data": [base64.b64encode(p.read_bytes()).decode()]}
            for n, p in (("image_a", a), ("image_b", b))
        ]
    }
    req = urllib.request.Request(
        f"http://127.0.0.1:{server.http}/v2/models/fm_match/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    outs = {o["name"]: o["data"] for o in json.loads(urllib.request.urlopen(req, timeout=30).read())["outputs"]}
    assert outs["similarity"][0] == pytest.approx(want.similarity, abs=1e-5) and outs["error"] == [""]


def test_a_bad_image_fails_alone_in_a_merged_batch(served) -> None:  # noqa: ANN001
    from fashion_match.serve import Client
    from fashion_match.serve.client import ServerImageError

    server, shop, _ = served
    good = (shop / "sku3" / "front.png").read_bytes()
    bad = [b"", os.urandom(500), good[: len(good) // 3], b"\xff" * 600_000, b"/etc/passwd", str(shop).encode()]
    with Client(f"http://127.0.0.1:{server.http}") as c:
        ref = c.embed([good])[0]
        # one request holding good and bad images: rows answered or refused one by one
        out = c._infer("fm_embed", {"image": c._blobs([good, bad[1], good])}, ["embedding", "error"])
        assert [bool(e) for e in out["error"][:, 0]] == [False, True, False]
        assert np.allclose(out["embedding"][[0, 2]], ref, atol=1e-5) and not out["embedding"][1].any()
    before = server.settled_metric("nv_inference_exec_count", "fm_embed")
    requests_before = server.settled_metric("nv_inference_request_success", "fm_embed")
    results: dict[int, object] = {}

    def call(i: int) -> None:
        blob = bad[(i // 2) % len(bad)] if i % 2 else good
        with Client(f"http://127.0.0.1:{server.http}") as c:
            try:
                results[i] = c.embed([blob])[0]
            except ServerImageError as e:
                results[i] = e

    threads = [threading.Thread(target=call, args=(i,)) for i in range(14)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for i in range(14):
        if i % 2:
            assert isinstance(results[i], ServerImageError), (i, results[i])
        else:
            assert np.allclose(results[i], ref, atol=1e-5), i  # type: ignore[arg-type]
    ran = server.settled_metric("nv_inference_exec_count", "fm_embed") - before
    served_requests = server.settled_metric("nv_inference_request_success", "fm_embed") - requests_before
    assert served_requests == 14 and ran < 14  # requests were merged, and the bad ones failed no one else
    reasons = {str(results[i]) for i in range(1, 14, 2)}
    assert any("over the 524,288-byte limit" in r for r in reasons) and any("empty" in r for r in reasons)
    assert all("root:" not in r for r in reasons)  # a path is bytes to decode, never a file to open
    # an absurdly thin image and a decompression bomb: the server's verdict is the local decoder's
    from fashion_match.data.images import load_image
    from fashion_match.errors import BadImage
    from fashion_match.runtime.manifest import load_manifest

    spec = load_manifest(Path(server.model)).preprocess
    for blob in (encode(photo(8000, 1, seed=1), "PNG"), _bomb()):
        try:
            load_image(blob, spec)
            local = None
        except BadImage as e:
            local = e.reason
        with Client(f"http://127.0.0.1:{server.http}") as c:
            err = c._infer("fm_embed", {"image": c._blobs([blob])}, ["error"])["error"][0, 0].decode()
        assert (err.split(": ", 1)[-1] or None) == local


def test_an_added_image_is_served_without_a_restart(served, tiny_model_dir: Path) -> None:  # noqa: ANN001
    from fashion_match.runtime.index import Index
    from fashion_match.serve import Client

    server, shop, index = served
    new = shop.parent / "new"
    (new / "sku9").mkdir(parents=True)
    photo(48, 40, seed=99).save(new / "sku9" / "front.png")
    q = new / "sku9" / "front.png"
    with Client(f"http://127.0.0.1:{server.http}") as c:
        old = [h["id"] for h in c.search(q, k=3)["matches"]]
    seen: list[list[str]] = []
    stop = threading.Event()

    def search_meanwhile() -> None:  # load while the index changes under the server
        with Client(f"http://127.0.0.1:{server.http}") as c:
            while not stop.is_set():
                seen.append([h["id"] for h in c.search(q, k=3)["matches"]])

    threads = [threading.Thread(target=search_meanwhile) for _ in range(3)]
    for t in threads:
        t.start()
    Index.open(index).add(new, model=tiny_model_dir)
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    with Client(f"http://127.0.0.1:{server.http}") as c:
        hits = c.search(q, k=3)["matches"]
    assert hits[0]["item_id"] == "sku9" and hits[0]["similarity"] == pytest.approx(1.0, abs=1e-5)
    new_ids = [h["id"] for h in hits]
    assert seen and all(s in (old, new_ids) for s in seen)  # each answer from one index, never a mix


def test_fm_match_and_fm_search_ask_the_server(served, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    import json

    from fashion_match.cli.search import main as fm_search
    from tests.cli.test_fm_match import fm_match
    from tests.conftest import run_cli

    server, shop, _ = served
    url = f"http://127.0.0.1:{server.http}"
    a = str(shop / "sku4" / "front.png")
    r = fm_match(a, a, "--server", url, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["similarity"] == pytest.approx(1.0, abs=1e-5), r.stderr
    r = fm_match(a, str(shop / "nothing.jpg"), "--server", url)
    assert r.returncode == 2 and "cannot read it" in r.stderr and r.stderr.count("\n") == 1
    code, out, err = run_cli(
        capsys, fm_search, a, str(shop / "sku4"), "--server", f"grpc://127.0.0.1:{server.grpc}", "--json"
    )
    assert code == 0, err
    res = json.loads(out)
    assert res["results"][0]["matches"][0]["item_id"] == "sku4" and res["bad"][0]["path"].endswith("sku4")
    code, _, err = run_cli(capsys, fm_search, a, "--server", url, "--index", str(shop))
    assert code == 2 and "--server searches the index fm-serve holds" in err
    r = fm_match(a, a, "--server", "http://127.0.0.1:9")  # nothing listens there
    assert r.returncode == 2 and "127.0.0.1:9" in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_sigterm_under_load_finishes_what_is_in_flight(served) -> None:  # noqa: ANN001
    from fashion_match.serve import Client

    server, shop, _ = served
    a = shop / "sku0" / "front.png"
    answers: list[object] = []

    def call() -> None:
        with Client(f"http://127.0.0.1:{server.http}") as c:
            try:
                answers.append(c.match(a, a).similarity)
            except Exception as e:  # noqa: BLE001 - recorded and judged below
                answers.append(e)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.1)  # inside the 300 ms queue delay: the requests are waiting for their batch
    server.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(timeout=120)
    assert server.proc.wait(timeout=90) == 0
    assert len(answers) == 6 and all(x == pytest.approx(1.0, abs=1e-5) for x in answers), answers


def test_this_interpreter_is_refused_with_the_fix() -> None:
    """The test suite's own Python (pyenv) cannot host the stub; fm-serve says so and how to fix it."""
    from fashion_match.serve.interpreter import interpreter_problem

    why = interpreter_problem()
    if sys.prefix.startswith("/usr") or why is None:
        pytest.skip("this interpreter can host Triton's Python backend")
    assert "another build" in why or "no shared libpython" in why
