"""Batching: every example once per epoch, a seeded order, length grouping that cuts padding."""

from __future__ import annotations

import numpy as np
import torch

from warmstart.data.batches import Batches


def _batches(n=230, bs=8, lengths=True, seed=0):
    rng = np.random.default_rng(1)
    lens = rng.integers(3, 120, n).tolist()
    enc = [list(range(k)) for k in lens]

    def collate(items):
        width = max(len(x) for x in items)
        return {"x": torch.tensor([x + [0] * (width - len(x)) for x in items])}

    return Batches(enc, np.arange(n) % 3, collate, bs, shuffle=True, seed=seed,
                   lengths=lens if lengths else None), lens


def test_each_epoch_covers_every_example_once():
    b, _ = _batches()
    for epoch in range(3):
        ids = np.concatenate(b.order(epoch))
        assert sorted(ids.tolist()) == list(range(230))
    assert len(b) == 29


def test_order_depends_only_on_seed_and_epoch():
    a, _ = _batches(seed=3)
    b, _ = _batches(seed=3)
    c, _ = _batches(seed=4)
    same = [np.array_equal(x, y) for x, y in zip(a.order(1), b.order(1))]
    assert all(same)
    assert not all(np.array_equal(x, y) for x, y in zip(a.order(1), a.order(2)))
    assert not all(np.array_equal(x, y) for x, y in zip(a.order(1), c.order(1)))


def test_length_grouping_pads_less_than_random_batches():
    grouped, lens = _batches(lengths=True)
    plain, _ = _batches(lengths=False)

    def padded(b):
        return sum(max(lens[i] for i in ids) * len(ids) for ids in b.order(0))

    assert padded(grouped) < 0.8 * padded(plain)


def test_skip_resumes_inside_an_epoch_and_labels_follow_indices():
    b, _ = _batches()
    full = list(b.epoch(2))
    tail = list(b.epoch(2, skip=5))
    assert len(tail) == len(full) - 5
    assert np.array_equal(tail[0][0], full[5][0])
    ids, batch = full[0]
    assert batch["labels"].tolist() == (ids % 3).tolist()
