"""`fmnist-c2s`: a deterministic shop<->consumer STAND-IN built from Fashion-MNIST.

This is not DeepFashion and not real consumer photography. It exists so instance-level
matching can be trained and measured while DeepFashion is out of reach. Every Fashion-MNIST
image is one item. Its *shop photo* is the clean image; its *consumer photo* is the same item
"re-photographed" by seeded, identity-preserving transforms: scale, rotation, perspective,
placement on real photo backgrounds (CC0/public-domain scikit-image photos shipped with the
package), lighting and colour cast, blur, noise, JPEG re-compression and partial occlusion.
The same (seed, split, index) always gives the same pixels.

Protocol: test consumer photos (queries) rank test shop photos (gallery); a hit shares the item.
"""

from __future__ import annotations

import io
from functools import lru_cache
from importlib import resources

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from fashion_match.data.fashion_mnist import CATEGORIES, load_arrays
from fashion_match.data.fashion_mnist import DEFAULT_DIR as FMNIST_DIR
from fashion_match.data.records import Dataset, Record, RetrievalProtocol

CONSUMER_SIZE = 128  # consumer photos are 128x128 RGB
SEED = 20240611
_SPLIT_CODE = {"train": 1, "test": 2}


@lru_cache(maxsize=1)
def backgrounds() -> tuple[Image.Image, ...]:
    folder = resources.files("fashion_match.data") / "assets" / "backgrounds"
    out = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".jpg"):
            with Image.open(io.BytesIO(entry.read_bytes())) as im:
                out.append(im.convert("RGB"))
    return tuple(out)


def _perspective_coeffs(src: list[tuple[float, float]], dst: list[tuple[float, float]]) -> list[float]:
    """Coefficients for Image.transform(PERSPECTIVE) mapping output `dst` corners to input `src`."""
    a, b = [], []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        b += [u, v]
    return [float(c) for c in np.linalg.solve(np.asarray(a, float), np.asarray(b, float))]


def consumer_photo(item: np.ndarray, seed: int) -> np.ndarray:
    """Re-photograph one 28x28 item: uint8 (128, 128, 3) RGB, deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    s = CONSUMER_SIZE
    # 1. scale: the item covers 45-85% of the frame
    side = int(rng.integers(int(0.45 * s), int(0.85 * s)))
    gray = Image.fromarray(item, "L").resize((side, side), Image.Resampling.BICUBIC)
    # Fashion-MNIST items sit on black: their own intensity is the alpha mask
    alpha = gray.point(lambda p: 255 if p > 12 else p * 20)
    rgb = Image.merge("RGB", (gray, gray, gray))
    return rephotograph(rgb, alpha, rng)


def rephotograph(rgb: Image.Image, alpha: Image.Image, rng: np.random.Generator) -> np.ndarray:
    """Steps 2-9 of a consumer photo for an item already scaled to its side (RGB + alpha mask):
    perspective, rotation, a real background, placement, occlusion, lighting and a mild colour
    cast, blur, noise, JPEG. No hue rotation or grayscale: an item's colour stays visible."""
    s = CONSUMER_SIZE
    side = rgb.width
    # 2. perspective: move each corner by up to 10% of the side
    j = 0.10 * side
    corners = [(0.0, 0.0), (side, 0.0), (side, side), (0.0, side)]
    moved = [(x + rng.uniform(-j, j), y + rng.uniform(-j, j)) for x, y in corners]
    coeffs = _perspective_coeffs(corners, moved)
    rgb = rgb.transform((side, side), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR)
    alpha = alpha.transform((side, side), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR)
    # 3. rotation up to 20 degrees
    angle = float(rng.uniform(-20, 20))
    rgb = rgb.rotate(angle, Image.Resampling.BILINEAR, expand=True)
    alpha = alpha.rotate(angle, Image.Resampling.BILINEAR, expand=True)
    # 4. a real photo background: random crop, flip, scale
    bgs = backgrounds()
    bg = bgs[int(rng.integers(len(bgs)))]
    crop = int(rng.integers(bg.width // 2, bg.width + 1))
    x0, y0 = int(rng.integers(0, bg.width - crop + 1)), int(rng.integers(0, bg.height - crop + 1))
    canvas = bg.crop((x0, y0, x0 + crop, y0 + crop)).resize((s, s), Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        canvas = canvas.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    # 5. placement: the item stays mostly inside the frame
    w, h = rgb.size
    px = int(rng.integers(min(0, s - w), max(0, s - w) + 1))
    py = int(rng.integers(min(0, s - h), max(0, s - h) + 1))
    canvas.paste(rgb, (px, py), alpha)
    # 6. partial occlusion (30% of photos): a patch of another background over part of the item
    if rng.random() < 0.3:
        ow, oh = int(rng.integers(s // 8, s // 3)), int(rng.integers(s // 8, s // 3))
        ox = int(rng.integers(max(0, px), max(1, min(s - ow, px + w - ow // 2))))
        oy = int(rng.integers(max(0, py), max(1, min(s - oh, py + h - oh // 2))))
        patch = bgs[int(rng.integers(len(bgs)))].resize((ow, oh), Image.Resampling.BILINEAR)
        canvas.paste(patch, (ox, oy))
    # 7. lighting and colour cast
    canvas = ImageEnhance.Brightness(canvas).enhance(float(rng.uniform(0.7, 1.3)))
    canvas = ImageEnhance.Contrast(canvas).enhance(float(rng.uniform(0.7, 1.3)))
    arr = np.asarray(canvas, np.float32) * rng.uniform(0.85, 1.15, size=3).astype(np.float32)
    # 8. blur (half the photos) and sensor noise
    canvas = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if rng.random() < 0.5:
        canvas = canvas.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.2))))
    arr = np.asarray(canvas, np.float32) + rng.normal(0, rng.uniform(0, 8), size=(s, s, 3)).astype(np.float32)
    canvas = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    # 9. JPEG re-compression, as a phone or a messaging app would
    buf = io.BytesIO()
    canvas.save(buf, "JPEG", quality=int(rng.integers(30, 86)))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


class ConsumerPhoto:
    """Lazy image source: the consumer photo of one item, synthesised on demand."""

    __slots__ = ("_images", "index", "seed", "name")

    def __init__(self, images: np.ndarray, index: int, seed: int, name: str) -> None:
        self._images, self.index, self.seed, self.name = images, index, seed, name

    def __call__(self) -> np.ndarray:
        return consumer_photo(self._images[self.index], self.seed)


def consumer_to_shop_protocol(records: list[Record], description: str) -> RetrievalProtocol:
    """The stand-ins' protocol: test consumer photos query test shop photos; a hit shares the item."""
    return RetrievalProtocol(
        queries=[i for i, r in enumerate(records) if r.split == "test" and r.domain == "consumer"],
        gallery=[i for i, r in enumerate(records) if r.split == "test" and r.domain == "shop"],
        match_on="item_id",
        description=description,
    )


def load_fmnist_c2s(root: str | None) -> Dataset:
    root = root or FMNIST_DIR
    records: list[Record] = []
    for split in ("train", "test"):
        images, labels = load_arrays(root, split)
        for i in range(len(images)):
            item = f"c2s-{split}-{i:05d}"
            cat = CATEGORIES[labels[i]]
            records.append(Record(images[i], f"fmnist-c2s/{split}/shop/{i:05d}", item, split, cat, "shop"))
            name = f"fmnist-c2s/{split}/consumer/{i:05d}"
            seed = SEED * 1_000_003 + _SPLIT_CODE[split] * 100_000 + i
            records.append(Record(ConsumerPhoto(images, i, seed, name), name, item, split, cat, "consumer"))
    protocol = consumer_to_shop_protocol(
        records, "STAND-IN for DeepFashion C2S: test consumer photos rank test shop photos"
    )
    return Dataset(
        "fmnist-c2s",
        str(root),
        records,
        protocol,
        categories=list(CATEGORIES),
        notes="synthetic stand-in built from Fashion-MNIST; not real consumer photos",
    )
