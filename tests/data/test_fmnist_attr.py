"""The fmnist-attr stand-in: reproducible, attributes visible in both renders, tags as skewed as real ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fashion_match.data import fmnist_attr as fa
from fashion_match.data.attributes import positives
from fashion_match.data.spec import load_dataset


def test_frequencies_are_skewed_and_the_tags_span_over_100_to_1() -> None:
    draws = [fa.assign(seed) for seed in range(20_000)]
    colours = np.array([list(fa.COLOURS).index(c) for c, _ in draws])
    share = np.bincount(colours, minlength=len(fa.COLOURS)) / len(draws)
    assert abs(share[0] - 0.26) < 0.02 and abs(share[-1] - 0.02) < 0.01  # black common, purple rare
    # tag rates over a uniform category mix, as Fashion-MNIST's is
    rules = fa._tag_rules()
    cats = [fa.CATEGORIES[i % 10] for i in range(len(draws))]
    rates = np.array(
        [[rule(c, col, p) for rule in rules.values()] for c, (col, p) in zip(cats, draws, strict=True)]
    ).mean(0)
    assert len(fa.TAGS) >= 12 and rates.min() > 0 and rates.max() / rates.min() > 100


def test_renders_are_reproducible_and_show_their_colour(tiny_fmnist: Path) -> None:
    ds = load_dataset(f"fmnist-attr:{tiny_fmnist}")
    again = load_dataset(f"fmnist-attr:{tiny_fmnist}")
    assert [a.name for a in ds.attributes] == ["category", "colour", "pattern", "tags"]
    shop, consumer = ds.records[0], ds.records[1]
    assert shop.domain == "shop" and consumer.domain == "consumer" and shop.item_id == consumer.item_id
    np.testing.assert_array_equal(shop.source(), again.records[0].source())
    np.testing.assert_array_equal(consumer.source(), again.records[1].source())
    assert shop.source().shape == (fa.SHOP_SIZE, fa.SHOP_SIZE, 3)
    assert consumer.source().shape == (fa.CONSUMER_SIZE, fa.CONSUMER_SIZE, 3)
    for r in ds.records[::2][:6]:  # on the garment, the plain parts carry the item's colour
        img, alpha = fa.render(r.source._images[r.source.index], r.source.colour, "plain")
        a, rgb = np.asarray(alpha) > 200, np.asarray(img, np.float32)
        if a.sum() < 50:
            continue
        base = np.asarray(fa.COLOURS[r.source.colour][0], np.float32)
        mean = rgb[a].mean(0)
        # shading scales the colour: its direction stays the item's colour
        cos = float(mean @ base / (np.linalg.norm(mean) * np.linalg.norm(base) + 1e-6))
        assert cos > 0.97, (r.source.colour, mean)
    tags = ds.attributes[3]
    counts = positives([r for r in ds.records if r.domain == "shop"], tags)
    assert counts[fa.TAGS.index("monochrome")] + counts[fa.TAGS.index("patterned")] == len(ds.records) // 2


def test_a_red_item_stays_red_in_its_consumer_photo(tiny_fmnist: Path) -> None:
    """No grayscale or hue rotation: the colour that defines the attribute survives re-photographing."""
    item = np.zeros((28, 28), np.uint8)
    item[4:24, 6:22] = 200  # a solid garment
    rng_seed = 7
    rgb, alpha = fa.render(item, "red", "plain", size=80)
    photo = fa.rephotograph(rgb, alpha, np.random.default_rng(rng_seed))
    px = photo.reshape(-1, 3).astype(int)
    reddish = (px[:, 0] > 1.6 * px[:, 1]) & (px[:, 0] > 1.6 * px[:, 2]) & (px[:, 0] > 80)
    assert reddish.mean() > 0.05  # a visible share of the frame is still clearly red
