"""What the served models compute, without Triton: per-image errors, the base64 form, index snapshots."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest

from fashion_match.serve.handlers import Service, unwrap
from tests.conftest import encode, photo


def _req(*blobs: bytes, name: str = "image") -> dict[str, np.ndarray]:
    return {name: np.array([[b] for b in blobs], dtype=object)}


def test_unwrap_tells_base64_from_raw_bytes() -> None:
    png = encode(photo(20, 20, seed=1), "PNG")
    jpg = encode(photo(20, 20, seed=1), "JPEG")
    assert unwrap(png) == png and unwrap(jpg) == jpg  # raw image bytes never start with a base64 character
    assert unwrap(base64.b64encode(png)) == png and unwrap(base64.b64encode(jpg) + b"\n") == jpg
    assert unwrap(b"/etc/passwd") == b"/etc/passwd"  # not base64 either: left for the decoder to refuse


def test_rows_fail_alone_and_requests_keep_their_sizes(tiny_model_dir: Path) -> None:
    from fashion_match.runtime.matcher import Matcher

    good = encode(photo(40, 30, seed=2), "PNG")
    with Matcher(tiny_model_dir) as m:
        svc = Service(m, workers=2, max_image_bytes=10_000)
        try:
            ref = m.embed_strict([good])[0]
            out = svc.embed([_req(good, b"junk"), _req(base64.b64encode(good)), _req(b"", b"\xff" * 20_000, good)])
            assert [len(o["embedding"]) for o in out] == [2, 1, 3]
            errors = [[e.decode() for e in o["error"][:, 0]] for o in out]
            assert errors[0][0] == "" and "not an image" in errors[0][1]
            assert errors[1] == [""] and errors[2][0].endswith("empty") and "over the 10,000-byte limit" in errors[2][1]
            assert np.allclose(out[0]["embedding"][0], ref, atol=1e-5) and np.allclose(
                out[2]["embedding"][2], ref, atol=1e-5
            )
            assert not out[0]["embedding"][1].any()
            pairs = svc.match([_req(good, good, name="image_a") | _req(good, b"x", name="image_b")])[0]
            assert pairs["similarity"][0, 0] == pytest.approx(1.0, abs=1e-5) and bool(pairs["match"][0, 0])
            assert pairs["error"][1, 0] and not bool(pairs["match"][1, 0]) and pairs["similarity"][1, 0] == 0.0
        finally:
            svc.close()


def test_a_batch_answers_from_one_index_snapshot(tiny_model_dir: Path, tmp_path: Path) -> None:
    from fashion_match.runtime.index import Index
    from fashion_match.runtime.matcher import Matcher
    from fashion_match.serve.handlers import ResidentIndex

    shop = tmp_path / "shop"
    for i in range(3):
        (shop / f"s{i}").mkdir(parents=True)
        photo(40, 30, seed=i).save(shop / f"s{i}" / "a.png")
    Index.build(shop, tmp_path / "i.idx", model=tiny_model_dir)
    with Matcher(tiny_model_dir) as m:
        ri = ResidentIndex(tmp_path / "i.idx", m, "exact")
        before = ri.current()
        assert ri.current() is before  # nothing changed: no reload
        (tmp_path / "new" / "s9").mkdir(parents=True)
        photo(40, 30, seed=9).save(tmp_path / "new" / "s9" / "a.png")
        Index.open(tmp_path / "i.idx").add(tmp_path / "new", model=tiny_model_dir)
        after = ri.current()
        assert after is not before and len(after.index) == 4 and len(before.index) == 3  # the old one intact
        q = m.embed_strict([tmp_path / "new" / "s9" / "a.png"])
        assert after.engine.search(q, 1)[1][0, 0] == 3 and before.engine.search(q, 1)[1][0, 0] < 3


def test_fm_tag_answers_what_matcher_tag_does() -> None:
    """The embedded model has tag heads: fm_tag's JSON per image is Matcher.tag's, bad rows aside."""
    import json

    from fashion_match.runtime.matcher import Matcher

    shop = Path(__file__).resolve().parents[2] / "examples" / "sample" / "01-pullover" / "shop.png"
    with Matcher() as m:
        svc = Service(m, workers=2)
        try:
            out = svc.tag([_req(shop.read_bytes(), b"junk") | {"top": np.array([[2], [2]], np.int32)}])[0]
            want, _, _ = m.tag([shop], top=2)
        finally:
            svc.close()
    assert json.loads(out["tags"][0, 0]) == json.loads(json.dumps(want[0]))
    assert out["tags"][1, 0] == b"" and out["error"][1, 0] and not out["error"][0, 0]


def test_fm_search_scores_a_posterior_space_index_as_the_probability_of_sharing_the_value(tmp_path: Path) -> None:
    """The embedded model's spaces have value readouts: a colour index served answers what
    Index.search does, each score the dot product of the query's and the hit's colour posteriors."""
    import shutil

    from fashion_match.runtime.index import Index
    from fashion_match.runtime.matcher import Matcher

    sample = Path(__file__).resolve().parents[2] / "examples" / "sample"
    shop = tmp_path / "shop"
    for name in ("00-ankle-boot", "01-pullover", "02-trouser"):
        (shop / name).mkdir(parents=True)
        shutil.copy(sample / name / "shop.png", shop / name / "shop.png")
    query = sample / "01-pullover" / "consumer.jpg"
    with Matcher(space="colour") as sm:
        Index.build(shop, tmp_path / "c.idx", matcher=sm, progress=False)
        rows = sm.embed_strict(sorted(shop.glob("*/shop.png")))
        q = sm.embed_strict([query])[0]
    want = rows[:, :-1] @ q[:-1]  # the posteriors, without the completion coordinate
    with Matcher() as m:
        svc = Service(m, workers=1, index=tmp_path / "c.idx")
        try:
            out = svc.search([_req(query.read_bytes()) | {"k": np.array([[3]], np.int32)}])[0]
        finally:
            svc.close()
    with Matcher(space="colour") as sm:
        results, _ = Index.open(tmp_path / "c.idx").search([query], 3, matcher=sm)
    order = np.argsort(-want, kind="stable")
    assert [r["id"] for r in results[0].matches] == [
        f"{p.parent.name}/shop.png" for p in np.array(sorted(shop.glob("*/shop.png")))[order]
    ]
    assert np.allclose(out["scores"][0], want[order], atol=1e-4)
    assert np.allclose([r["similarity"] for r in results[0].matches], want[order], atol=1e-4)
