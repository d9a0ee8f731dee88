"""Robust image decoding, used by every stage: training, calibration, runtime and index.

Anything that is not a usable image becomes a `BadImage` naming the file and the reason;
every odd-but-valid mode becomes RGB uint8. Nothing is unpickled or executed.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from PIL import (
    BmpImagePlugin,
    GifImagePlugin,
    Image,
    ImageOps,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    UnidentifiedImageError,
    WebPImagePlugin,
)

from fashion_match.data.preprocess import PreprocessSpec
from fashion_match.errors import BadImage

# A source is a path, encoded bytes, a decoded array, or a zero-argument callable returning
# one of those (datasets that synthesise images lazily).
ImageSource = str | os.PathLike | bytes | np.ndarray | Callable[[], object]

DEFAULT_MAX_PIXELS = 64_000_000  # 8000 x 8000; larger files are refused as decompression bombs
# Largest intermediate image a resize may allocate: 64 shorter sides of 256 px side by side
# (an aspect ratio of 64:1 at the default spec), 12.6 MB of RGB. Clothing photos and their
# bounding boxes are nowhere near; an 8000x1 strip (2 GB at that scale) is.
MAX_RESIZE_PIXELS = 64 * 256 * 256
_DRAFT_FACTOR = 2  # use JPEG draft decoding only when the photo is >= 2x the size we need
# The only decoders an untrusted file may reach. Pillow would otherwise pick a plugin by content,
# and its EPS plugin runs Ghostscript: code execution on a file named .jpg. (Camera JPEGs that
# Pillow opens as MPO come through the JPEG decoder.)
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
# Importing a plugin registers it; Image.open(formats=...) finds only registered ones.
_DECODERS = (JpegImagePlugin, PngImagePlugin, WebPImagePlugin, GifImagePlugin, BmpImagePlugin, TiffImagePlugin)


def source_name(src: ImageSource, fallback: str = "<image>") -> str:
    if isinstance(src, (str, os.PathLike)):
        return os.fspath(src)
    if isinstance(src, (bytes, bytearray)):
        return "<bytes>"
    if isinstance(src, np.ndarray):
        return f"<array {'x'.join(map(str, src.shape))}>"
    return getattr(src, "name", fallback)


def decode_image(
    src: ImageSource,
    *,
    min_side: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str | None = None,
    spec: PreprocessSpec | None = None,
) -> Image.Image:
    """Decode `src` into an RGB PIL image with EXIF orientation applied.

    `min_side` lets JPEG decoding skip work: the decoder may shrink the photo by 2/4/8 in the
    DCT domain as long as both sides stay >= min_side (phone photos decode ~5x faster).
    With `spec`, an image whose resize for that spec would allocate too much (a thin 8000x1
    strip scaled to a 256-px shorter side) is refused from its header, before any decoding.

    Whatever the imaging library or numpy raise for one input becomes a `BadImage` naming it:
    a batch job loses that file, never the batch.
    """
    name = name or source_name(src)
    try:
        return _decode(src, name, min_side, max_pixels, spec)
    except BadImage:
        raise
    except MemoryError:
        raise BadImage(name, "out of memory while decoding") from None
    except Exception as e:  # noqa: BLE001 - any library failure on one file is that file's fault
        raise BadImage(name, f"corrupt image ({type(e).__name__}: {_one_line(e)})") from None


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:200]


def _decode(
    src: ImageSource, name: str, min_side: int | None, max_pixels: int, spec: PreprocessSpec | None
) -> Image.Image:
    if callable(src) and not isinstance(src, np.ndarray):
        try:
            src = src()  # type: ignore[assignment]
        except BadImage:
            raise
        except Exception as e:  # a generator that fails is a bad image, not a crash
            raise BadImage(name, f"could not be produced: {e}") from e
    if isinstance(src, np.ndarray):
        return _from_array(src, name, max_pixels, spec)
    if isinstance(src, (bytes, bytearray)):
        if not src:
            raise BadImage(name, "empty data")
        return _open(io.BytesIO(src), name, min_side, max_pixels, spec)
    if isinstance(src, Image.Image):
        check_geometry(name, src.width, src.height, max_pixels, spec)
        return _to_rgb(ImageOps.exif_transpose(src) or src, name)
    if not isinstance(src, (str, os.PathLike)):
        raise BadImage(name, f"unsupported source type {type(src).__name__}")
    path = Path(src)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise BadImage(name, "no such file") from None
    except OSError as e:
        raise BadImage(name, f"cannot read ({e.strerror or e})") from None
    except ValueError:  # os.stat's word for a NUL byte in the path
        raise BadImage(name, "not a valid file name (it holds a NUL byte)") from None
    if stat.S_ISDIR(st.st_mode):
        raise BadImage(name, "is a directory, not an image file")
    if not stat.S_ISREG(st.st_mode):  # a FIFO would block the reader, /dev/zero never ends
        raise BadImage(name, "not a regular file (a device, FIFO or socket)")
    if st.st_size == 0:
        raise BadImage(name, "empty file (0 bytes)")
    try:
        fh = open(path, "rb")
    except OSError as e:
        raise BadImage(name, f"cannot open ({e.strerror or e})") from None
    with fh:
        return _open(fh, name, min_side, max_pixels, spec)


def check_geometry(name: str, w: int, h: int, max_pixels: int, spec: PreprocessSpec | None) -> None:
    """Refuse sizes that would make decoding or resizing allocate without bound."""
    if w < 1 or h < 1:
        raise BadImage(name, f"image has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise BadImage(
            name,
            f"{w}x{h} = {w * h:,} pixels exceeds the limit of {max_pixels:,} "
            "(decompression bomb guard; raise max_pixels if the file is trusted)",
        )
    if spec is not None and spec.resize_pixels(w, h) > MAX_RESIZE_PIXELS:
        raise BadImage(
            name,
            f"{w}x{h} is too thin to resize: {spec.resize} to {spec.size} px would allocate "
            f"{spec.resize_pixels(w, h):,} pixels (limit {MAX_RESIZE_PIXELS:,}; aspect ratio "
            f"{max(w, h) / min(w, h):.0f}:1)",
        )


def _open(fh: IO[bytes], name: str, min_side: int | None, max_pixels: int, spec: PreprocessSpec | None) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(fh, formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        kind = _sniff(fh)
        if kind:  # looks like an image but Pillow cannot parse it
            raise BadImage(name, f"corrupt {kind} image (unreadable header)") from None
        raise BadImage(name, f"not an image in an accepted format ({', '.join(ALLOWED_FORMATS)})") from None
    except Image.DecompressionBombError as e:
        raise BadImage(name, f"refused as a decompression bomb ({e})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise BadImage(name, _reason(e)) from None
    # No `with im:`: closing would discard the pixels; the caller closes the file handle.
    w, h = im.size
    check_geometry(name, w, h, max_pixels, spec)
    try:
        if getattr(im, "n_frames", 1) > 1:
            im.seek(0)  # animated GIF/WebP/TIFF: first frame
        if im.format in ("JPEG", "MPO") and min_side and min(w, h) >= _DRAFT_FACTOR * min_side:
            im.draft("RGB", (min_side, min_side))
        im.load()
        rotated = ImageOps.exif_transpose(im)
        out = rotated if rotated is not None else im
        check_geometry(name, out.width, out.height, max_pixels, spec)  # a TIFF's frame can differ from its header
        return _to_rgb(out, name)
    except BadImage:
        raise
    except Image.DecompressionBombError as e:
        raise BadImage(name, f"refused as a decompression bomb ({e})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise BadImage(name, _reason(e)) from None


def _reason(e: BaseException) -> str:
    return "truncated image" if "truncated" in str(e).lower() else f"corrupt image ({e})"


_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF8", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def _sniff(fh: IO[bytes]) -> str | None:
    try:
        fh.seek(0)
        head = fh.read(12)
    except OSError:
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return next((kind for sig, kind in _SIGNATURES if head.startswith(sig)), None)


def _composite_on_white(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")
    bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(bg, rgba).convert("RGB")


def _to_rgb(im: Image.Image, name: str) -> Image.Image:
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        return _composite_on_white(im)
    if mode == "P":
        return _composite_on_white(im) if "transparency" in im.info else im.convert("RGB")
    if mode in ("1", "L", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        return im.convert("RGB")
    if mode.startswith("I") or mode == "F":  # I;16, I;16B, I;16L, I, F: scale to 8 bits
        return Image.fromarray(_scale_to_u8(np.asarray(im))).convert("RGB")
    try:
        return im.convert("RGB")
    except (ValueError, OSError) as e:
        raise BadImage(name, f"unsupported image mode {mode} ({e})") from None


def _scale_to_u8(a: np.ndarray) -> np.ndarray:
    """High-bit-depth or float pixels -> uint8, by the range their dtype implies."""
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.floating):
        a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        hi = float(a.max(initial=0.0))
        scale = 255.0 if hi <= 1.0 else (255.0 / 65535.0 if hi > 255.0 else 1.0)
        return np.clip(np.rint(a * scale), 0, 255).astype(np.uint8)
    hi = int(a.max(initial=0))
    if hi > 255:  # 16-bit data (also 16-bit PNGs that Pillow opens as mode "I")
        return np.clip(a.astype(np.int64) >> 8, 0, 255).astype(np.uint8)
    return np.clip(a, 0, 255).astype(np.uint8)


def _from_array(a: np.ndarray, name: str, max_pixels: int, spec: PreprocessSpec | None) -> Image.Image:
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise BadImage(name, f"array of shape {a.shape} is not HxW, HxWx1, HxWx3 or HxWx4")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise BadImage(name, f"array of shape {a.shape} has no pixels")
    check_geometry(name, a.shape[1], a.shape[0], max_pixels, spec)
    a = _scale_to_u8(np.ascontiguousarray(a))
    if a.ndim == 2:
        return Image.fromarray(a, "L").convert("RGB")
    if a.shape[2] == 4:
        return _composite_on_white(Image.fromarray(a, "RGBA"))
    return Image.fromarray(a, "RGB")


def load_image(
    src: ImageSource,
    spec: PreprocessSpec,
    *,
    bbox: tuple[int, int, int, int] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str | None = None,
) -> np.ndarray:
    """Decode and resize one image for `spec`: uint8 (size, size, 3) RGB.

    Like `decode_image`, any failure for this one input is a `BadImage` naming it."""
    name = name or source_name(src)
    # With a bbox the crop may be small, so draft decoding could lose the detail we need.
    # The geometry guard waits for the crop when there is a box: the crop is what gets resized.
    hint, guard = (None, None) if bbox else (spec.decode_hint(), spec)
    im = decode_image(src, min_side=hint, max_pixels=max_pixels, name=name, spec=guard)
    try:
        if bbox is not None:
            x1, y1, x2, y2 = bbox
            x1, y1 = max(0, x1), max(0, y1)
            x2, y2 = min(im.width, x2), min(im.height, y2)
            if x2 - x1 >= 2 and y2 - y1 >= 2:  # a degenerate box keeps the whole image
                im = im.crop((x1, y1, x2, y2))
            check_geometry(name, im.width, im.height, max_pixels, spec)
        return np.asarray(spec.resize_image(im), dtype=np.uint8)
    except BadImage:
        raise
    except MemoryError:
        raise BadImage(name, "out of memory while resizing") from None
    except Exception as e:  # noqa: BLE001 - as in decode_image: this input's failure, not the batch's
        raise BadImage(name, f"cannot be resized ({type(e).__name__}: {_one_line(e)})") from None


@dataclass
class Batch:
    """Decoded images in input order, with the inputs that failed listed, not dropped silently."""

    pixels: np.ndarray  # uint8 (n_ok, size, size, 3)
    indices: list[int]  # positions in the input sequence of each row of `pixels`
    bad: list[BadImage]


def _safe_load(
    args: tuple[ImageSource, PreprocessSpec, tuple[int, int, int, int] | None, int],
) -> np.ndarray | BadImage:
    src, spec, bbox, max_pixels = args
    try:
        return load_image(src, spec, bbox=bbox, max_pixels=max_pixels)  # any failure arrives as BadImage
    except BadImage as e:
        return e


def load_batch(
    sources: Sequence[ImageSource],
    spec: PreprocessSpec,
    *,
    bboxes: Sequence[tuple[int, int, int, int] | None] | None = None,
    workers: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    pool: ThreadPoolExecutor | None = None,
) -> Batch:
    """Decode many images on a thread pool (Pillow releases the GIL), keeping input order."""
    boxes = bboxes if bboxes is not None else [None] * len(sources)
    jobs = [(s, spec, b, max_pixels) for s, b in zip(sources, boxes, strict=True)]
    if pool is not None:
        results = list(pool.map(_safe_load, jobs))
    elif len(jobs) <= 1 or workers == 1:
        results = [_safe_load(j) for j in jobs]
    else:
        with ThreadPoolExecutor(max_workers=workers or default_workers()) as ex:
            results = list(ex.map(_safe_load, jobs))
    ok = [(i, r) for i, r in enumerate(results) if isinstance(r, np.ndarray)]
    pixels = np.stack([r for _, r in ok]) if ok else np.zeros((0, spec.size, spec.size, 3), np.uint8)
    return Batch(pixels, [i for i, _ in ok], [r for r in results if isinstance(r, BadImage)])


def iter_batches(
    sources: Sequence[ImageSource],
    spec: PreprocessSpec,
    batch_size: int,
    *,
    bboxes: Sequence[tuple[int, int, int, int] | None] | None = None,
    workers: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Iterator[Batch]:
    """Yield decoded batches while the next one decodes in the background.

    The consumer (inference) runs while the pool decodes batch i+1, so decode and compute
    overlap. `Batch.indices` are positions in `sources`.
    """
    n = len(sources)
    starts: Iterable[int] = range(0, n, batch_size)
    boxes = list(bboxes) if bboxes is not None else [None] * n
    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool, ThreadPoolExecutor(1) as ahead:

        def submit(start: int):  # type: ignore[no-untyped-def]
            sl = slice(start, min(n, start + batch_size))
            return ahead.submit(
                load_batch, sources[sl], spec, bboxes=boxes[sl], max_pixels=max_pixels, pool=pool
            ), start

        it = iter(starts)
        pending = [submit(s) for s in (next(it, None),) if s is not None]
        while pending:
            fut, start = pending.pop()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(submit(nxt))
            b = fut.result()
            yield Batch(b.pixels, [start + i for i in b.indices], b.bad)


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))
