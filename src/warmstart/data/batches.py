"""Batches of encoded examples: a seeded order per epoch, optionally grouped by length.

Length grouping (as in the HF Trainer's `group_by_length`): shuffle, cut into mega-batches of
50 batches, sort each mega-batch by length, cut into batches, shuffle the batches. Examples of
similar length share a batch, so dynamic padding wastes little compute, while every epoch
still sees a fresh random order. The order depends only on (seed, epoch), so a resumed run
replays exactly the batches of an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

MEGA_BATCH = 50  # batches per mega-batch: big enough to group lengths, small enough to mix


class Batches:
    """One split's examples, served as collated batches with a `labels` tensor."""

    def __init__(
        self,
        encoded: list[Any],
        labels: np.ndarray,
        collate: Callable[[list[Any]], dict[str, torch.Tensor]],
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        lengths: list[int] | None = None,
    ) -> None:
        self.encoded = encoded
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        self.collate = collate
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.lengths = np.asarray(lengths) if lengths is not None else None

    def __len__(self) -> int:
        """Number of batches per epoch."""
        return -(-len(self.encoded) // self.batch_size)

    @property
    def num_examples(self) -> int:
        return len(self.encoded)

    def order(self, epoch: int) -> list[np.ndarray]:
        """The index batches of `epoch`, a pure function of (seed, epoch)."""
        n, bs = len(self.encoded), self.batch_size
        if not self.shuffle:
            idx = np.arange(n)
            if self.lengths is not None:  # evaluation: sort by length, the least padding
                idx = np.argsort(-self.lengths, kind="stable")
            return [idx[i : i + bs] for i in range(0, n, bs)]
        rng = np.random.default_rng([self.seed, epoch])
        idx = rng.permutation(n)
        if self.lengths is None:
            return [idx[i : i + bs] for i in range(0, n, bs)]
        batches = []
        for m in range(0, n, bs * MEGA_BATCH):
            mega = idx[m : m + bs * MEGA_BATCH]
            mega = mega[np.argsort(-self.lengths[mega], kind="stable")]
            batches += [mega[i : i + bs] for i in range(0, len(mega), bs)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def epoch(
        self, epoch: int = 0, skip: int = 0
    ) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
        """Yield (indices, batch) for `epoch`, skipping its first `skip` batches (resume)."""
        for ids in self.order(epoch)[skip:]:
            batch = self.collate([self.encoded[i] for i in ids])
            batch["labels"] = self.labels[ids]
            yield ids, batch
