"""Stratified, seeded splits: held-out validation/test sets and the `data.limit` subset.

Stratifying keeps every class's share the same in each split, so a rare class is neither
missing from the test set nor over-represented in it; the seed makes a run repeatable.
All functions work on positions and return index arrays in ascending order, so each split
keeps the file's row order (the training loop shuffles on its own).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from warmstart.errors import WarmstartError

FRACTION_KEYS = "data.val_fraction / data.test_fraction"


def held_out_size(fraction: float, n_whole: int, n_classes: int) -> int:
    """How many examples a held-out split of `fraction` of the whole set gets.

    Args:
        fraction: share of the whole main set (`data.val_fraction` or `data.test_fraction`).
        n_whole: size of the whole main set, before anything was split off.
        n_classes: number of classes in it.

    Returns:
        0 for a fraction of 0; else round(fraction * n_whole), raised to at least one example
        per class so every class is evaluated (this only matters for tiny data sets).
    """
    if fraction <= 0:
        return 0
    return max(round(fraction * n_whole), n_classes)


def split_off(
    labels: Sequence[str], size: int, seed: int, *, source: str, split: str,
    stratify: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Split `size` examples off, stratified by label (plain random without `stratify`:
    multilabel and regression, whose label cells are not classes).

    Args:
        labels: the label of every example in the set being split.
        size: how many examples to hold out (> 0).
        seed: random seed; the same seed gives the same split.
        source: where the examples came from, for messages.
        split: "validation" or "test", for messages.

    Returns:
        (kept positions, held-out positions), each sorted.

    Raises:
        WarmstartError: a class has too few examples to appear on both sides, or the split
            would leave fewer examples than classes on one side.
    """
    # Imported here: scikit-learn takes ~1.5 s to import, and `warmstart ls` should not wait.
    from sklearn.model_selection import train_test_split

    positions = np.arange(len(labels))
    try:
        kept, held = train_test_split(
            positions, test_size=size, random_state=seed,
            stratify=list(labels) if stratify else None,
        )
    except ValueError:
        raise WarmstartError(_split_problem(labels, size, source, split)) from None
    return np.sort(kept), np.sort(held)


def stratified_subset(labels: Sequence[str], limit: int, seed: int, *,
                      stratify: bool = True) -> np.ndarray:
    """Pick at most `limit` examples keeping the class proportions (`data.limit`); without
    `stratify`, a plain random subset.

    Every class keeps at least one example, so the label set does not change with the limit;
    the remaining places are shared in proportion to class size (largest remainders).

    Args:
        labels: the label of every training example.
        limit: how many examples to keep.
        seed: random seed; the same seed picks the same examples.

    Returns:
        The kept positions, sorted (all of them when `limit` >= len(labels)).

    Raises:
        WarmstartError: `limit` is smaller than the number of classes.
    """
    y = np.asarray(labels, dtype=object)
    if limit >= len(y):
        return np.arange(len(y))
    if not stratify:
        return np.sort(np.random.default_rng(seed).permutation(len(y))[:limit])
    classes, counts = np.unique(y, return_counts=True)
    if limit < len(classes):
        raise WarmstartError(
            f"data.limit={limit} is smaller than the {len(classes)} classes in the training "
            f"data; set it to at least {len(classes)}, or to null to keep every example"
        )
    # One per class first; the rest in proportion to what each class has beyond that one.
    share = (limit - len(classes)) * (counts - 1) / (counts - 1).sum()
    quota = 1 + np.floor(share).astype(int)
    by_remainder = np.argsort(-(share - np.floor(share)), kind="stable")
    quota[by_remainder[: limit - quota.sum()]] += 1
    rng = np.random.default_rng(seed)
    picks = [
        rng.permutation(np.flatnonzero(y == c))[:q]
        for c, q in zip(classes, quota, strict=True)
    ]
    return np.sort(np.concatenate(picks))


def _split_problem(labels: Sequence[str], size: int, source: str, split: str) -> str:
    """Explain why sklearn refused a stratified split, in terms of the user's data."""
    counts = Counter(labels)
    rarest, fewest = min(counts.items(), key=lambda kv: (kv[1], kv[0]))
    if fewest < 2:
        return (
            f"cannot split a stratified {split} set off {source!r}: class {rarest!r} has only "
            f"{fewest} example, and each class needs at least 2 to appear on both sides; add "
            "examples of it, remove it, or give explicit data.validation and data.test files"
        )
    return (
        f"cannot split a stratified {split} set of {size} examples off {source!r}: that leaves "
        f"{len(labels) - size} of {len(labels)} examples for {len(counts)} classes (the "
        f"smallest, {rarest!r}, has {fewest}); lower {FRACTION_KEYS} or give explicit "
        "data.validation and data.test files"
    )
