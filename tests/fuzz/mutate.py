"""Seeded mutations of images and of the project's own files, for the fuzz tests.

Every mutant is a pure function of (seed, base): a failure names its seed and can be replayed.
"""

from __future__ import annotations

import json
import random
import struct
import zlib
from typing import Any

from tests.conftest import encode, photo

KINDS = ("flip", "truncate", "header", "dimensions")


def base_images() -> dict[str, bytes]:
    """One small real-looking image per decoder family we accept (and the TIFF codecs libtiff runs)."""
    im = photo(64, 48, seed=3)
    return {
        "png": encode(im, "PNG"),
        "png-rgba": encode(im.convert("RGBA"), "PNG"),
        "jpeg": encode(im, "JPEG", quality=85),
        "jpeg-progressive": encode(im, "JPEG", progressive=True),
        "tiff": encode(im, "TIFF"),
        "tiff-lzw": encode(im, "TIFF", compression="tiff_lzw"),
        "tiff-deflate": encode(im, "TIFF", compression="tiff_adobe_deflate"),
        "gif": encode(im.convert("P"), "GIF"),
        "webp": encode(im, "WEBP", quality=80),
        "bmp": encode(im, "BMP"),
    }


def _png_with_dims(data: bytes, w: int, h: int) -> bytes:
    """Rewrite IHDR's width and height and fix its CRC, so the decoder believes them."""
    ihdr = bytearray(data[12:29])  # type(4) + 13 bytes of fields
    ihdr[4:12] = struct.pack(">II", w, h)
    crc = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    return data[:12] + bytes(ihdr) + crc + data[33:]


def _jpeg_with_dims(data: bytes, w: int, h: int) -> bytes:
    for marker in (b"\xff\xc0", b"\xff\xc2"):  # baseline or progressive start of frame
        at = data.find(marker)
        if at >= 0:
            return data[: at + 5] + struct.pack(">HH", h, w) + data[at + 9 :]
    return data


def _dims(name: str, data: bytes, rng: random.Random) -> bytes:
    w, h = rng.choice([(8000, 1), (1, 60000), (65000, 2), (0, 10), (65535, 65535), (9000, 9000), (3, 3)])
    if name.startswith("png"):
        return _png_with_dims(data, w, h)
    if name.startswith("jpeg"):
        return _jpeg_with_dims(data, min(w, 65535), min(h, 65535))
    if name == "gif":
        return data[:6] + struct.pack("<HH", w & 0xFFFF, h & 0xFFFF) + data[10:]
    if name == "bmp":
        return data[:18] + struct.pack("<ii", w, h) + data[26:]
    return _flip(data, rng, head=64)  # TIFF and WebP: their size fields move; edit the header bytes


def _flip(data: bytes, rng: random.Random, head: int | None = None) -> bytes:
    d = bytearray(data)
    span = min(len(d), head) if head else len(d)
    for _ in range(rng.randint(1, 6)):
        d[rng.randrange(span)] ^= 1 << rng.randrange(8)
    return bytes(d)


def mutate_image(name: str, data: bytes, seed: int) -> tuple[str, bytes]:
    rng = random.Random(seed)
    kind = KINDS[seed % len(KINDS)]
    if kind == "flip":
        return kind, _flip(data, rng)
    if kind == "truncate":
        return kind, data[: rng.randrange(len(data))]
    if kind == "header":
        d = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            d[rng.randrange(min(len(d), 64))] = rng.randrange(256)
        return kind, bytes(d)
    return kind, _dims(name, data, rng)


# --- JSON files ---------------------------------------------------------------------------------
_ODD_VALUES: list[Any] = [
    None,
    "",
    "x",
    [],
    {},
    -1,
    0,
    1.5,
    10**12,
    True,
    [None],
    {"a": 1},
    "../../etc/passwd",
    "0" * 64,
]


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:4]):
            out += _paths(v, (*prefix, i))
    return out


def mutate_json(text: str, seed: int) -> str:
    """A structural edit (drop a key, change a value's type) or a textual one (flip, truncate)."""
    rng = random.Random(seed)
    if seed % 4 == 3:  # textual: bytes as a careless editor or a bad disk leaves them
        b = bytearray(text.encode())
        if rng.random() < 0.5:
            return bytes(b[: rng.randrange(len(b))]).decode("utf-8", "replace")
        for _ in range(rng.randint(1, 3)):
            b[rng.randrange(len(b))] = rng.randrange(32, 127)
        return bytes(b).decode("utf-8", "replace")
    obj = json.loads(text)
    paths = _paths(obj)
    path = rng.choice(paths)
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if seed % 4 == 0 and isinstance(parent, dict):
        del parent[last]
    else:
        parent[last] = rng.choice(_ODD_VALUES)
    return json.dumps(obj)


def mutate_lines(text: str, seed: int) -> str:
    """A list file (DeepFashion or CSV) with a line dropped, doubled, split or garbled."""
    rng = random.Random(seed)
    lines = text.splitlines()
    i = rng.randrange(len(lines))
    op = seed % 5
    if op == 0:
        del lines[i]
    elif op == 1:
        lines.insert(i, lines[i])
    elif op == 2:
        lines[i] = lines[i].replace(" ", "", 1).replace(",", "", 1)
    elif op == 3:
        lines[i] = lines[i] + rng.choice([" extra", ",extra", "\x00", " " * 3, "\t"])
    else:
        lines[i] = "".join(rng.choice("abc ,0123\t\"'") for _ in range(rng.randint(0, 30)))
    return "\n".join(lines) + "\n"
