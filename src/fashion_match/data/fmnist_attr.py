"""`fmnist-attr`: a STAND-IN attribute dataset rendered from Fashion-MNIST, seeded and reproducible.

Neither DeepFashion's attribute benchmark nor FashionAI can be downloaded here, so this renders
real Fashion-MNIST items (their shape and shading) as colour product photos whose attributes are
*visible*: each item gets a colour (10 values) and a pattern (plain, stripes, dots, check) drawn
with skewed frequencies, painted over the garment's own shading. Its shop photo is that render on
white (112 px); its consumer photo is the same render re-photographed as in fmnist-c2s (scale,
perspective, rotation, real photo backgrounds, occlusion, lighting, blur, noise, JPEG) but with no
hue rotation or grayscale, so the colour and pattern stay visible. Fourteen multi-label style
tags are derived from what is visible (monochrome, dark, footwear, ... down to purple-check); their
positive rates span more than 100:1, like real tag data. It is not real fashion photography.

Attributes: `category` (10), `colour` (10), `pattern` (4), `tags` (14, multi-label). Protocol: test
consumer photos rank test shop photos (item retrieval); per-attribute retrieval ranks the same
gallery with relevant = the same value.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from fashion_match.data.attributes import Attribute
from fashion_match.data.fashion_mnist import CATEGORIES, load_arrays
from fashion_match.data.fashion_mnist import DEFAULT_DIR as FMNIST_DIR
from fashion_match.data.fmnist_c2s import CONSUMER_SIZE, consumer_to_shop_protocol, rephotograph
from fashion_match.data.records import Dataset, Record

SEED = 20261201
SHOP_SIZE = 112
# value -> (RGB, frequency); frequencies skewed as a shop's catalogue is
COLOURS: dict[str, tuple[tuple[int, int, int], float]] = {
    "black": ((28, 28, 30), 0.26),
    "white": ((236, 236, 232), 0.17),
    "grey": ((128, 128, 132), 0.12),
    "navy": ((28, 40, 110), 0.11),
    "red": ((200, 30, 36), 0.09),
    "beige": ((210, 186, 140), 0.08),
    "green": ((40, 130, 60), 0.06),
    "pink": ((236, 130, 170), 0.05),
    "yellow": ((236, 206, 40), 0.04),
    "purple": ((110, 40, 140), 0.02),
}
PATTERNS: dict[str, float] = {"plain": 0.6, "stripes": 0.2, "dots": 0.12, "check": 0.08}
FOOTWEAR = ("Sandal", "Sneaker", "Ankle boot")
UPPER = ("T-shirt/top", "Pullover", "Coat", "Shirt")
DARK, BRIGHT = ("black", "navy", "purple"), ("red", "yellow", "pink", "green")
NEUTRAL = ("black", "white", "grey", "beige")


def _tag_rules() -> dict[str, object]:
    """tag -> rule(category, colour, pattern): every tag is something one can see in the photo."""
    return {
        "monochrome": lambda c, col, p: p == "plain",
        "patterned": lambda c, col, p: p != "plain",
        "neutral-colour": lambda c, col, p: col in NEUTRAL,
        "dark": lambda c, col, p: col in DARK,
        "bright": lambda c, col, p: col in BRIGHT,
        "upper-body": lambda c, col, p: c in UPPER,
        "footwear": lambda c, col, p: c in FOOTWEAR,
        "bag": lambda c, col, p: c == "Bag",
        "striped-top": lambda c, col, p: p == "stripes" and c in UPPER,
        "white-sneaker": lambda c, col, p: col == "white" and c == "Sneaker",
        "red-footwear": lambda c, col, p: col == "red" and c in FOOTWEAR,
        "dotted-dress": lambda c, col, p: p == "dots" and c == "Dress",
        "yellow-bag": lambda c, col, p: col == "yellow" and c == "Bag",
        "purple-check": lambda c, col, p: col == "purple" and p == "check",
    }


TAGS = tuple(_tag_rules())


def attributes() -> list[Attribute]:
    return [
        Attribute("category", "single", tuple(CATEGORIES)),
        Attribute("colour", "single", tuple(COLOURS)),
        Attribute("pattern", "single", tuple(PATTERNS)),
        Attribute("tags", "multi", TAGS),
    ]


def pattern_mask(pattern: str, size: int) -> np.ndarray:
    """Where the pattern's second colour goes, as a bool (size, size) mask."""
    y, x = np.mgrid[0:size, 0:size]
    if pattern == "stripes":
        return (y // 7) % 2 == 1
    if pattern == "dots":
        return ((x % 14 - 7) ** 2 + (y % 14 - 7) ** 2) <= 9
    if pattern == "check":
        return ((x // 10) + (y // 10)) % 2 == 1
    return np.zeros((size, size), bool)


def render(item: np.ndarray, colour: str, pattern: str, size: int = SHOP_SIZE) -> tuple[Image.Image, Image.Image]:
    """The item painted in `colour` with `pattern` over its own shading: (RGB on white, alpha)."""
    gray = np.asarray(Image.fromarray(item, "L").resize((size, size), Image.Resampling.BICUBIC), np.float32)
    alpha = np.clip(gray * 20, 0, 255).astype(np.uint8)  # Fashion-MNIST items sit on black
    shade = (0.45 + 0.55 * gray / 255.0)[..., None]
    base = np.asarray(COLOURS[colour][0], np.float32)
    second = np.asarray((245, 245, 245) if sum(COLOURS[colour][0]) < 400 else (30, 30, 30), np.float32)
    paint = np.where(pattern_mask(pattern, size)[..., None], second, base) * shade
    a = alpha[..., None].astype(np.float32) / 255.0
    rgb = paint * a + 255.0 * (1 - a)  # a product photo on white
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)), Image.fromarray(alpha, "L")


def assign(seed: int) -> tuple[str, str]:
    """(colour, pattern) of the item with this seed, drawn with the skewed frequencies."""
    rng = np.random.default_rng(seed)
    colours, cp = list(COLOURS), np.array([v[1] for v in COLOURS.values()])
    patterns, pp = list(PATTERNS), np.array(list(PATTERNS.values()))
    return colours[int(rng.choice(len(colours), p=cp / cp.sum()))], patterns[
        int(rng.choice(len(patterns), p=pp / pp.sum()))
    ]


class AttrPhoto:
    """Lazy image source: the shop or consumer render of one item, made on demand."""

    __slots__ = ("_images", "index", "colour", "pattern", "seed", "consumer", "name")

    def __init__(
        self, images: np.ndarray, index: int, colour: str, pattern: str, seed: int, consumer: bool, name: str
    ) -> None:
        self._images, self.index, self.colour, self.pattern = images, index, colour, pattern
        self.seed, self.consumer, self.name = seed, consumer, name

    def __call__(self) -> np.ndarray:
        if not self.consumer:
            return np.asarray(render(self._images[self.index], self.colour, self.pattern)[0])
        rng = np.random.default_rng(self.seed)
        side = int(rng.integers(int(0.45 * CONSUMER_SIZE), int(0.85 * CONSUMER_SIZE)))
        rgb, alpha = render(self._images[self.index], self.colour, self.pattern, size=side)
        return rephotograph(rgb, alpha, rng)


def load_fmnist_attr(root: str | None) -> Dataset:
    root = root or FMNIST_DIR
    rules = _tag_rules()
    records: list[Record] = []
    for code, split in enumerate(("train", "test"), start=1):
        images, labels = load_arrays(root, split)
        for i in range(len(images)):
            item_seed = SEED * 1_000_003 + code * 100_000 + i
            colour, pattern = assign(item_seed)
            cat = CATEGORIES[labels[i]]
            tags = np.array([bool(rule(cat, colour, pattern)) for rule in rules.values()], np.int8)  # type: ignore[operator]
            attrs = {
                "category": int(labels[i]),
                "colour": list(COLOURS).index(colour),
                "pattern": list(PATTERNS).index(pattern),
                "tags": tags,
            }
            item = f"attr-{split}-{i:05d}"
            for domain in ("shop", "consumer"):
                name = f"fmnist-attr/{split}/{domain}/{i:05d}"
                src = AttrPhoto(
                    images, i, colour, pattern, item_seed * 2 + (domain == "consumer"), domain == "consumer", name
                )
                records.append(Record(src, name, item, split, cat, domain, attrs=attrs))
    protocol = consumer_to_shop_protocol(
        records, "STAND-IN attribute data rendered from Fashion-MNIST: test consumer renders rank test shop renders"
    )
    return Dataset(
        "fmnist-attr",
        str(root),
        records,
        protocol,
        categories=list(CATEGORIES),
        notes="synthetic stand-in rendered from Fashion-MNIST (colour, pattern, tags painted on); not real photos",
        attributes=attributes(),
    )
