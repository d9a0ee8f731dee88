"""Search results to look at: each query beside its top-k thumbnails, as a PNG grid or an HTML page.

Every thumbnail is captioned with its rank and similarity and framed by the verdict at the
model's threshold (green: match, grey: no match). When the query's item id is known (a dataset
with item ids), each hit is also marked as the same item or another one. Images are decoded with
the runtime's own guarded decoder: a file that cannot be read becomes a labelled blank tile.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont, ImageOps

from fashion_match.data.images import ImageSource, decode_image
from fashion_match.errors import BadImage
from fashion_match.fileio import atomic_open

THUMB = 128  # pixels per tile side
CAPTION = 34  # pixels of text under each tile
PAD = 6
MATCH, NO_MATCH = (22, 150, 60), (150, 150, 150)
RIGHT, WRONG = (22, 150, 60), (200, 40, 40)


@dataclass
class GridRow:
    """One query and its matches (`Index.results` dicts); `item_id` when the truth is known."""

    query: ImageSource
    label: str
    matches: list[dict[str, Any]] = field(default_factory=list)
    item_id: str | None = None
    error: str | None = None  # the query could not be read: the row says why
    sources: list[ImageSource] = field(default_factory=list)  # each match's image, when not its path
    key_name: str = "item"  # what item_id means here: "item", or "category" for category retrieval


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def thumbnail(src: ImageSource) -> tuple[Image.Image, str | None]:
    """A THUMB x THUMB tile of `src` (aspect kept, white margins), or a blank one and the reason."""
    try:
        im = decode_image(src, min_side=THUMB)
    except BadImage as e:
        return Image.new("RGB", (THUMB, THUMB), (235, 235, 235)), e.reason
    return ImageOps.pad(im, (THUMB, THUMB), color=(255, 255, 255)), None


def _source(row: GridRow, c: int) -> ImageSource:
    if c < len(row.sources):
        return row.sources[c]
    m = row.matches[c]
    return m.get("path") or m.get("id") or ""


def _verdicts(row: GridRow, m: dict[str, Any]) -> tuple[str, str | None]:
    """The caption's verdict at the threshold, and 'same item' / 'other item' when known."""
    verdict = "match" if m.get("match") else "no match"
    if row.item_id is None or not m.get("item_id"):
        return verdict, None
    return verdict, f"same {row.key_name}" if m["item_id"] == row.item_id else f"other {row.key_name}"


def draw_grid(rows: Sequence[GridRow], threshold: float, out: str | Path, *, title: str | None = None) -> Path:
    """Write the PNG grid of `rows` to `out` (atomically) and return its path."""
    k = max([len(r.matches) for r in rows] + [1])
    tile_w, tile_h = THUMB + PAD, THUMB + CAPTION + PAD
    head = 26 if title else 0
    label_h = 16
    width = PAD + (k + 1) * tile_w + PAD
    height = head + len(rows) * (tile_h + label_h) + PAD
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    small, big = _font(11), _font(14)
    if title:
        draw.text((PAD, 6), f"{title}  (match: similarity >= {threshold:.3f})", fill="black", font=big)
    for r, row in enumerate(rows):
        y = head + r * (tile_h + label_h)
        draw.text((PAD, y + 1), row.label[-110:], fill="black", font=small)
        y += label_h
        tile, why = thumbnail(row.query)
        canvas.paste(tile, (PAD, y))
        draw.rectangle((PAD - 2, y - 2, PAD + THUMB + 1, y + THUMB + 1), outline=(40, 90, 200), width=2)
        note = row.error or why
        draw.text((PAD, y + THUMB + 3), "query" + (f": {note[:24]}" if note else ""), fill="black", font=small)
        for c, m in enumerate(row.matches):
            x = PAD + (c + 1) * tile_w
            tile, why = thumbnail(_source(row, c))
            canvas.paste(tile, (x, y))
            verdict, truth = _verdicts(row, m)
            draw.rectangle(
                (x - 2, y - 2, x + THUMB + 1, y + THUMB + 1), outline=MATCH if m.get("match") else NO_MATCH, width=3
            )
            draw.text((x, y + THUMB + 3), f"#{m['rank']}  {m['similarity']:.3f}  {verdict}", fill="black", font=small)
            if truth or why:
                colour = RIGHT if truth and truth.startswith("same") else WRONG
                draw.text((x, y + THUMB + 17), (truth or "")[:20] if not why else why[:22], fill=colour, font=small)
    out = Path(out)
    with atomic_open(out, "wb") as f:
        canvas.save(f, "PNG")
    return out


def _data_uri(tile: Image.Image) -> str:
    buf = io.BytesIO()
    tile.save(buf, "JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def write_html(rows: Sequence[GridRow], threshold: float, out: str | Path, *, title: str = "fm-search") -> Path:
    """The same grid as one self-contained HTML page (thumbnails inlined), written atomically."""
    e = html.escape
    parts = [
        "<!doctype html><meta charset='utf-8'>",
        f"<title>{e(title)}</title>",
        "<style>body{font:13px sans-serif} td{vertical-align:top;padding:4px;text-align:center}"
        "img{border:3px solid #999} .match img{border-color:#169c3c} .query img{border-color:#285ac8}"
        ".same{color:#169c3c} .other{color:#c82828}</style>",
        f"<h3>{e(title)} <small>(match: similarity &ge; {threshold:.3f})</small></h3>",
    ]
    for row in rows:
        tile, why = thumbnail(row.query)
        note = row.error or why
        parts.append(f"<p>{e(row.label)}</p><table><tr><td class='query'><img src='{_data_uri(tile)}'><br>query")
        parts.append(f"<br>{e(note)}</td>" if note else "</td>")
        for c, m in enumerate(row.matches):
            tile, why = thumbnail(_source(row, c))
            verdict, truth = _verdicts(row, m)
            cls = "match" if m.get("match") else ""
            cell = f"<td class='{cls}'><img src='{_data_uri(tile)}' title='{e(str(m.get('path') or m.get('id')))}'>"
            cell += f"<br>#{m['rank']} {m['similarity']:.3f} {verdict}"
            if truth:
                cell += f"<br><span class='{truth.split()[0]}'>{truth}</span>"
            if why:
                cell += f"<br>{e(why)}"
            parts.append(cell + "</td>")
        parts.append("</tr></table>")
    out = Path(out)
    with atomic_open(out, "wb") as f:
        f.write(("\n".join(parts) + "\n").encode("utf-8"))
    return out


def rows_for(
    queries: Sequence[ImageSource],
    results: Sequence[Any],
    skipped: Sequence[tuple[str, str]],
    *,
    labels: Sequence[str] | None = None,
    item_ids: Sequence[str | None] | None = None,
    gallery: dict[str, ImageSource] | None = None,
) -> list[GridRow]:
    """Grid rows in the order the queries were given: searched ones with their matches (by
    `SearchResult.position`), unreadable ones with their reason, so a batch with bad files still
    gets its picture. `item_ids`, when known, let the grid mark each hit right or wrong; `gallery`
    maps the ids of in-memory gallery images (an index built from a dataset spec) to their images."""
    from fashion_match.data.images import source_name

    found = {r.position: r for r in results}
    reasons = iter(reason for _, reason in skipped)  # the unreadable queries, in the order given
    rows = []
    for i, q in enumerate(queries):
        label = labels[i] if labels is not None else source_name(q)
        item = item_ids[i] if item_ids is not None else None
        if i in found:
            ms = found[i].matches
            srcs = [m["path"] or (gallery or {}).get(m["id"], m["id"]) for m in ms]
            rows.append(GridRow(q, label, ms, item_id=item, sources=srcs))
        else:
            rows.append(GridRow(q, label, item_id=item, error=next(reasons, "not searched")))
    return rows


def spec_gallery(index_sources: Sequence[str]) -> dict[str, ImageSource]:
    """Images of an index's in-memory entries, by id: the galleries of the dataset specs it was
    built from (their records are rebuilt from the spec, never stored in the index)."""
    from fashion_match.data.spec import load_dataset
    from fashion_match.runtime.index_sources import GALLERY_SUFFIX

    out: dict[str, ImageSource] = {}
    for s in index_sources:
        if s.endswith(GALLERY_SUFFIX):
            ds = load_dataset(s.removesuffix(GALLERY_SUFFIX))
            out |= {ds.records[i].name: ds.records[i].source for i in ds.protocol.gallery}
    return out
