"""Regenerate examples/sample from the fmnist-c2s stand-in (the first eight test items)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from fashion_match.data.spec import load_dataset

OUT = Path(__file__).resolve().parents[1] / "examples" / "sample"


def main() -> None:
    ds = load_dataset("fmnist-c2s")
    test = [r for r in ds.records if r.split == "test"]
    for i in range(8):
        shop, consumer = test[2 * i], test[2 * i + 1]
        assert shop.item_id == consumer.item_id and callable(consumer.source)
        category = (shop.category or "item").replace("/", "-").replace(" ", "-").lower()
        folder = OUT / f"{i:02d}-{category}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(shop.source).save(folder / "shop.png")  # type: ignore[arg-type]
        Image.fromarray(consumer.source()).save(folder / "consumer.jpg", quality=92)  # type: ignore[arg-type]
        print(folder)


if __name__ == "__main__":
    main()
