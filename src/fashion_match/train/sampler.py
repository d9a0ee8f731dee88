"""P x K batches: P labels, K images each. Deterministic in (seed, epoch), split across DDP ranks."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from fashion_match.errors import UsageError


class PKBatchSampler:
    """Yields lists of dataset indices. Each rank gets its own disjoint share of every epoch.

    Labels with fewer than K images are sampled with replacement so they still fill K slots;
    labels are drawn without replacement within an epoch until exhausted, then reshuffled.
    """

    def __init__(
        self,
        labels: np.ndarray,
        p: int,
        k: int,
        *,
        seed: int = 0,
        steps: int | None = None,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.labels = np.asarray(labels)
        self.p, self.k, self.seed = p, k, seed
        self.classes, inverse = np.unique(self.labels, return_inverse=True)
        if len(self.classes) < p:
            raise UsageError(
                f"--batch {p}x{k}: {p} classes per batch, but the training data has {len(self.classes)}; "
                "lower P or train on more classes"
            )
        self.by_class = [np.nonzero(inverse == c)[0] for c in range(len(self.classes))]
        self.steps = steps or max(1, len(self.labels) // (p * k * world))
        self.rank, self.world = rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.classes))
        pos = 0
        for step in range(self.steps * self.world):
            if pos + self.p > len(order):
                order, pos = rng.permutation(len(self.classes)), 0
            chosen = order[pos : pos + self.p]
            pos += self.p
            batch: list[int] = []
            for c in chosen:
                pool = self.by_class[c]
                batch += rng.choice(pool, self.k, replace=len(pool) < self.k).tolist()
            if step % self.world == self.rank:  # every rank draws the same stream, keeps its share
                yield batch
