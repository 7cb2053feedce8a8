"""Batches of encoded examples: a seeded order per epoch, optionally grouped by length.

The order is defined over *step batches*: the examples of one optimizer step across all
processes, `batch_size x accumulate x world` of them. Each process takes an interleaved
slice of every step batch (`[rank::world]`) and splits it into `accumulate` micro-batches.
So one process with accumulation and N processes without it see the very same step batches,
and a checkpoint can resume on another number of processes without changing the data order.

Length grouping (as in the HF Trainer's `group_by_length`): shuffle, cut into mega-batches of
50 step batches, sort each mega-batch by length, cut into step batches, shuffle those. Examples
of similar length share a batch, so dynamic padding wastes little compute, while every epoch
still sees a fresh random order. The order depends only on (seed, epoch), so a resumed run
replays exactly the batches of an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

MEGA_BATCH = 50  # step batches per mega-batch: big enough to group lengths, small enough to mix
# The batch keys the loss reads and the model does not: the labels, and per-example soft
# targets (distillation: the teacher's outputs), which only training batches carry.
TARGET_KEYS = ("labels", "targets")

Batch = dict[str, torch.Tensor]


class Batches:
    """One split's examples, served as collated batches with a `labels` tensor."""

    def __init__(
        self,
        encoded: list[Any],
        labels: np.ndarray,
        collate: Callable[[list[Any]], Batch],
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        lengths: list[int] | None = None,
        accumulate: int = 1,
        rank: int = 0,
        world: int = 1,
        targets: np.ndarray | torch.Tensor | None = None,
    ) -> None:
        self.encoded = encoded
        # As the task encodes them: class indices (int64), 0/1 rows or values (float32).
        self.labels = torch.as_tensor(np.asarray(labels))
        self.collate = collate
        self.batch_size = batch_size  # per process, per micro-batch
        self.shuffle = shuffle
        self.seed = seed
        self.lengths = np.asarray(lengths) if lengths is not None else None
        self.accumulate = accumulate
        self.rank, self.world = rank, world
        self.step_size = batch_size * accumulate * world
        # One row per example that training batches carry as `targets` for the loss (the
        # teacher's outputs of a distillation); evaluation batches leave it out.
        self.targets = torch.as_tensor(np.asarray(targets)) if targets is not None else None

    def __len__(self) -> int:
        """Number of step batches (optimizer steps) per epoch."""
        return len(self.order(0))

    @property
    def num_examples(self) -> int:
        return len(self.encoded)

    def order(self, epoch: int) -> list[np.ndarray]:
        """The step batches of `epoch` (all processes'), a pure function of (seed, epoch)."""
        n, size = len(self.encoded), self.step_size
        if not self.shuffle:
            idx = np.arange(n)
            if self.lengths is not None:  # evaluation: sort by length, the least padding
                idx = np.argsort(-self.lengths, kind="stable")
            batches = [idx[i : i + size] for i in range(0, n, size)]
        else:
            rng = np.random.default_rng([self.seed, epoch])
            idx = rng.permutation(n)
            if self.lengths is None:
                batches = [idx[i : i + size] for i in range(0, n, size)]
            else:
                batches = []
                for m in range(0, n, size * MEGA_BATCH):
                    mega = idx[m : m + size * MEGA_BATCH]
                    mega = mega[np.argsort(-self.lengths[mega], kind="stable")]
                    batches += [mega[i : i + size] for i in range(0, len(mega), size)]
                batches = [batches[i] for i in rng.permutation(len(batches))]
        if self.shuffle:  # training: every process needs an example in every step
            batches = [b for b in batches if len(b) >= self.world]
        return batches

    def _collate(self, ids: np.ndarray, targets: bool = False) -> Batch:
        batch = self.collate([self.encoded[i] for i in ids])
        batch["labels"] = self.labels[ids]
        if targets and self.targets is not None:
            batch["targets"] = self.targets[ids]
        return batch

    def steps(
        self, epoch: int, skip: int = 0
    ) -> Iterator[tuple[int, list[tuple[np.ndarray, Batch]]]]:
        """Yield (step batch size, this process's micro-batches) for each optimizer step of
        `epoch`, skipping its first `skip` steps (resume)."""
        for step_ids in self.order(epoch)[skip:]:
            mine = step_ids[self.rank :: self.world]
            micro = [mine[j :: self.accumulate] for j in range(self.accumulate)]
            yield len(step_ids), [(ids, self._collate(ids, targets=True))
                                  for ids in micro if len(ids)]

    def epoch(self, epoch: int = 0, skip: int = 0) -> Iterator[tuple[np.ndarray, Batch]]:
        """Yield (indices, batch) of this process's share of each step batch of `epoch`
        (evaluation and feature caching: no accumulation needed)."""
        for step_ids in self.order(epoch)[skip:]:
            ids = step_ids[self.rank :: self.world]
            if len(ids):
                yield ids, self._collate(ids)
