"""Writing a dataset's images to a folder (`fm-data export SPEC DIR`), to try the folder workflows
(`folder:DIR`, `fm-index build DIR`, `fm-search DIR/...`) on real images.

Layout: `DIR/<split>/<item_id>/<name>` — what `folder:DIR` reads back, splits and items intact.
Image files are copied byte for byte; in-memory images (Fashion-MNIST arrays, fmnist-c2s consumer
photos made on demand) are written as PNG. `limit` keeps whole items: the first items in dataset
order until N images, so items with several photos keep all of them. Files are written atomically;
an image that cannot be read is listed and left out.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

from fashion_match.data.images import decode_image
from fashion_match.data.records import Dataset, Record
from fashion_match.errors import BadImage, FmError
from fashion_match.fileio import atomic_open


def _safe(part: str) -> str:
    """A path component from a dataset name: no separators, no dot-only names, no control characters."""
    s = re.sub(r"[^\w.\-]+", "_", part).strip("._") or "_"
    return s[:120]


def pick(ds: Dataset, limit: int | None) -> list[Record]:
    """Whole items, in dataset order, until `limit` images (all of them without a limit)."""
    if limit is None:
        return list(ds.records)
    by_item: dict[tuple[str, str], list[Record]] = {}
    for r in ds.records:
        by_item.setdefault((r.split, r.item_id), []).append(r)
    out: list[Record] = []
    for recs in by_item.values():
        if len(out) >= limit:
            break
        out += recs  # whole items: a limit never splits one
    return out


def export_folder(ds: Dataset, out: Path, *, limit: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Write the images of `ds` (or `limit` of them) under `out`, which must be new or empty."""
    from fashion_match.progress import Bar

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FmError(f"{out}: exists and is not an empty folder; choose another DIR (nothing is merged into it)")
    records = pick(ds, limit)
    written, bad, used = 0, [], set[Path]()
    with Bar(len(records), f"writing {out}", enabled=progress) as bar:
        for r in records:
            bar.update()
            src = r.source
            file = Path(os.fspath(src)) if isinstance(src, str | os.PathLike) else None
            is_file = file is not None and bool(file.suffix)
            # a file keeps its name; an in-memory image is named by the end of its record name
            stem = file.name if file is not None and is_file else "_".join(Path(r.name).parts[-2:])
            target = out / _safe(r.split) / _safe(r.item_id) / _safe(stem)
            try:
                if file is not None and is_file:
                    if not file.is_file():
                        raise BadImage(str(file), "no such file")
                    with atomic_open(_unique(target, used), "wb") as f, open(file, "rb") as s:
                        shutil.copyfileobj(s, f)
                else:
                    im = decode_image(src, name=r.name)
                    with atomic_open(_unique(target.with_suffix(".png"), used), "wb") as f:
                        im.save(f, "PNG")
                written += 1
            except BadImage as e:
                bad.append({"path": e.name, "reason": e.reason})
    return {"out": str(out), "images": written, "items": len({(r.split, r.item_id) for r in records}), "bad": bad}


def _unique(path: Path, used: set[Path]) -> Path:
    """`path`, or `path` with -2, -3 ... when two records would land on one file name."""
    n, p = 1, path
    while p in used:
        n += 1
        p = path.with_name(f"{path.stem}-{n}{path.suffix}")
    used.add(p)
    return p
