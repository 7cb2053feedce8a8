"""Data: read a built-in set or the user's files, split it, and hand the trainer a `TaskData`.

`load_task(cfg.data, seed)` is the one entry point. In order, it:

1. reads `data.name`: a built-in dataset (`warmstart ls datasets`), a table file or an image
   folder (`readers.py`);
2. reads `data.validation` / `data.test` where given, and splits whatever is not given off the
   main set, stratified and seeded (`split.py`): test first, then validation, each a fraction
   of the *whole* main set;
3. orders the label names of the training split (numerically when every label is an integer)
   and turns labels into indices into that list;
4. keeps at most `data.limit` training examples, stratified, at least one per class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from warmstart.config import DataConfig
from warmstart.data import builtin  # noqa: F401  (importing it fills DATASETS)
from warmstart.data.base import DATASETS, Examples, RawSet, TaskData
from warmstart.data.readers import TABLE_FORMATS, read_image_folder, read_path, read_table
from warmstart.data.split import held_out_size, split_off, stratified_subset
from warmstart.errors import WarmstartError, did_you_mean

__all__ = [
    "DATASETS",
    "Examples",
    "RawSet",
    "TaskData",
    "held_out_size",
    "load_task",
    "read_image_folder",
    "read_path",
    "read_table",
    "split_off",
    "stratified_subset",
]


def load_task(cfg: DataConfig, seed: int) -> TaskData:
    """Read, split and encode the data a run trains and is evaluated on.

    Args:
        cfg: the `data` section of the run config.
        seed: drives the stratified splits and the `limit` subset (`train.seed`).

    Returns:
        Train/validation/test examples with integer labels, the label names they index, the
        kind ("text" or "image") and where the data came from. The test split may be empty
        (`data.test_fraction: 0` and no test file); validation never is.

    Raises:
        WarmstartError: any problem with the data or these settings, in one line.
    """
    if cfg.validation is None and cfg.val_fraction <= 0:
        raise WarmstartError(
            "data.val_fraction is 0 and no data.validation file is given, but the trainer "
            "needs a validation set to pick the best epoch; set data.val_fraction (e.g. 0.1) "
            "or data.validation"
        )
    main = _read_main(cfg)
    classes = set(main.labels)
    if len(classes) < 2:
        raise WarmstartError(
            f"training data in {cfg.name!r} has only one class {classes.pop()!r}; "
            "a classifier needs at least two"
        )
    given = {
        "test": _read_given(cfg, "test", cfg.test, main.kind),
        "validation": _read_given(cfg, "validation", cfg.validation, main.kind),
    }
    fractions = {"test": cfg.test_fraction, "validation": cfg.val_fraction}

    # Hold out test first, then validation, each sized as a fraction of the whole main set.
    rest = np.arange(len(main.labels))
    held: dict[str, tuple[list[Any], list[str], str]] = {}  # split -> inputs, labels, where
    for split in ("test", "validation"):
        raw = given[split]
        if raw is not None:
            held[split] = (raw.inputs, raw.labels, f"{getattr(cfg, split)!r} ({split})")
            continue
        size = held_out_size(fractions[split], len(main.labels), len(classes))
        if size == 0:
            out = np.arange(0)
        else:
            kept, out = split_off(
                [main.labels[i] for i in rest], size, seed, source=cfg.name, split=split
            )
            rest, out = rest[kept], rest[out]
        held[split] = (*_take(main, out), f"{cfg.name!r} ({split} split)")

    train_inputs, train_labels = _take(main, rest)
    label_names = _label_order(train_labels)
    for _, labels, where in held.values():
        _check_seen(labels, set(label_names), where)
    if cfg.limit is not None:
        keep = stratified_subset(train_labels, cfg.limit, seed)
        train_inputs = [train_inputs[i] for i in keep]
        train_labels = [train_labels[i] for i in keep]

    index = {name: i for i, name in enumerate(label_names)}
    return TaskData(
        kind=main.kind,
        label_names=label_names,
        train=_examples(train_inputs, train_labels, index),
        validation=_examples(*held["validation"][:2], index),
        test=_examples(*held["test"][:2], index),
        source=_describe(main, given),
    )


# --------------------------------------------------------------------------- helpers

def _read_main(cfg: DataConfig) -> RawSet:
    """`data.name`: a registered built-in dataset, else a path."""
    if cfg.name in DATASETS:
        return DATASETS.get(cfg.name)()
    path = Path(cfg.name).expanduser()
    looks_like_path = path.suffix.lower() in TABLE_FORMATS or len(path.parts) > 1
    if not path.exists() and not looks_like_path:
        hint = did_you_mean(cfg.name, DATASETS.names()) or (
            "; run `warmstart ls datasets`, or give a path to a CSV/TSV/JSONL/Parquet file "
            "or an image folder"
        )
        raise WarmstartError(
            f"data.name {cfg.name!r} is neither a built-in dataset nor an existing file{hint}"
        )
    return read_path(path, cfg.text_column, cfg.label_column, "data.name")


def _read_given(cfg: DataConfig, split: str, name: str | None, kind: str) -> RawSet | None:
    """An explicit validation/test file or folder, which must hold the same kind of data."""
    if name is None:
        return None
    raw = read_path(Path(name).expanduser(), cfg.text_column, cfg.label_column, f"data.{split}")
    if raw.kind != kind:
        raise WarmstartError(
            f"data.{split} {name!r} holds {raw.kind} data but data.name {cfg.name!r} holds "
            f"{kind} data; give a {split} set of the same kind"
        )
    return raw


def _take(raw: RawSet, positions: np.ndarray) -> tuple[list[Any], list[str]]:
    return [raw.inputs[i] for i in positions], [raw.labels[i] for i in positions]


def _label_order(labels: list[str]) -> list[str]:
    """Sorted unique labels: 2 before 10 when all are integers, else alphabetical."""
    names = set(labels)
    try:
        return sorted(names, key=lambda s: (int(s), s))  # (.., s): "01" and "1" stay ordered
    except ValueError:
        return sorted(names)


def _check_seen(labels: list[str], known: set[str], where: str) -> None:
    """Every validation/test label must be one the classifier can predict."""
    unseen = sorted(set(labels) - known)
    if not unseen:
        return
    if len(unseen) == 1:
        what, verb, them = f"label {unseen[0]!r}", "appears", "it"
    else:
        more = f" (+{len(unseen) - 3} more)" if len(unseen) > 3 else ""
        what, verb, them = f"labels {', '.join(map(repr, unseen[:3]))}{more}", "appear", "them"
    raise WarmstartError(
        f"{what} in {where} never {verb} in the training data; add training examples of "
        f"{them} or remove those rows"
    )


def _examples(inputs: list[Any], labels: list[str], index: dict[str, int]) -> Examples:
    return Examples(inputs, np.array([index[s] for s in labels], dtype=np.int64))


def _describe(main: RawSet, given: dict[str, RawSet | None]) -> str:
    """Where the data came from, for logs and the model card."""
    extra = [f"{split}: {raw.source}" for split, raw in given.items() if raw is not None]
    return main.source + (f" ({'; '.join(extra)})" if extra else "")
