"""Data: read a built-in set or the user's files, split it, and hand the trainer a `TaskData`.

`load_task(cfg.data, seed)` is the one entry point. In order, it:

1. reads `data.name`: a built-in dataset (`warmstart ls datasets`), a table file or an image
   folder (`readers.py`);
2. reads `data.validation` / `data.test` where given, and splits whatever is not given off the
   main set, stratified and seeded (`split.py`): test first, then validation, each a fraction
   of the *whole* main set;
3. decides the task (`task.type`, else inferred from the label cells: `labels.infer_type`);
4. orders the label names of the training split (numerically when every label is an integer)
   and encodes the labels for the task (class indices, 0/1 rows, or numbers);
5. keeps at most `data.limit` training examples, stratified for classification.

Splits and the limit are stratified by class for classification and plain random for
multilabel and regression.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from warmstart.config import DataConfig, TaskConfig
from warmstart.data import builtin  # noqa: F401  (importing it fills DATASETS)
from warmstart.data.base import DATASETS, Examples, RawSet, TaskData, split_ids
from warmstart.data.labels import infer_type, parse_number, split_cell
from warmstart.data.readers import TABLE_FORMATS, read_image_folder, read_path, read_table
from warmstart.data.split import held_out_size, split_off, stratified_subset
from warmstart.errors import WarmstartError, did_you_mean
from warmstart.tasks import Regression, make_task

__all__ = [
    "DATASETS",
    "Examples",
    "LabelCoder",
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


def load_task(cfg: DataConfig, seed: int, task_cfg: TaskConfig | None = None) -> TaskData:
    """Read, split and encode the data a run trains and is evaluated on.

    Args:
        cfg: the `data` section of the run config.
        seed: drives the splits and the `limit` subset (`train.seed`).
        task_cfg: the `task` section (default: the type inferred from the labels).

    Returns:
        Train/validation/test examples with labels encoded for the task, the task (its label
        names in output order), the kind ("text" or "image") and where the data came from.
        The test split may be empty (`data.test_fraction: 0` and no test file); validation
        never is.

    Raises:
        WarmstartError: any problem with the data or these settings, in one line.
    """
    task_cfg = task_cfg or TaskConfig()
    if cfg.validation is None and cfg.val_fraction <= 0:
        raise WarmstartError(
            "data.val_fraction is 0 and no data.validation file is given, but the trainer "
            "needs a validation set to pick the best epoch; set data.val_fraction (e.g. 0.1) "
            "or data.validation"
        )
    main = _read_main(cfg)
    is_builtin = cfg.name in DATASETS
    if main.rows is None:  # a built-in set: its examples are named by their index
        main = replace(main, rows=list(range(len(main.labels))))
    kind, reason = _task_type(main, cfg, task_cfg)
    given = {
        "test": _read_given(cfg, "test", cfg.test, main.kind),
        "validation": _read_given(cfg, "validation", cfg.validation, main.kind),
    }
    if kind != "multilabel":  # a blank label is "no label" only for multilabel
        main = _without_blank_labels(main)
        given = {k: _without_blank_labels(v) if v else v for k, v in given.items()}
    encode = LabelCoder(kind, cfg.label_separator)
    stratify = kind == "classification"
    classes = set(main.labels) if stratify else {""}
    if stratify and len(classes) < 2:
        raise WarmstartError(
            f"training data in {cfg.name!r} has only one class {classes.pop()!r}; "
            "a classifier needs at least two"
        )
    fractions = {"test": cfg.test_fraction, "validation": cfg.val_fraction}

    # Hold out test first, then validation, each sized as a fraction of the whole main set.
    rest = np.arange(len(main.labels))
    held: dict[str, tuple[RawSet, str]] = {}  # split -> examples, where they came from
    for split in ("test", "validation"):
        raw = given[split]
        if raw is not None:
            held[split] = (raw, f"{getattr(cfg, split)!r} ({split})")
            continue
        size = held_out_size(fractions[split], len(main.labels), len(classes))
        if size == 0:
            out = np.arange(0)
        else:
            kept, out = split_off(
                [main.labels[i] for i in rest], size, seed, source=cfg.name, split=split,
                stratify=stratify,
            )
            rest, out = rest[kept], rest[out]
        held[split] = (_take(main, out), f"{cfg.name!r} ({split} split)")

    train = _take(main, rest)
    names = encode.names(train)
    for raw, where in held.values():
        _check_seen(encode.names(raw), set(names), where)
    if cfg.limit is not None:
        train = _take(train, stratified_subset(train.labels, cfg.limit, seed, stratify=stratify))
    train_examples = encode.examples(train, names)
    task = (Regression.fitted(names, train_examples.labels) if kind == "regression"
            else make_task(kind, names, per_label=task_cfg.thresholds == "per_label"))
    return TaskData(
        kind=main.kind,
        task=task,
        train=train_examples,
        validation=encode.examples(held["validation"][0], names),
        test=encode.examples(held["test"][0], names),
        source=_describe(main, given),
        task_reason=reason,
        splits={"train": split_ids(train, cfg.name, is_builtin),
                **{split: split_ids(raw, getattr(cfg, split) or cfg.name,
                                    is_builtin and given[split] is None)
                   for split, (raw, _) in held.items()}},
    )


# --------------------------------------------------------------------------- helpers

def _read_main(cfg: DataConfig) -> RawSet:
    """`data.name`: a registered built-in dataset, else a path."""
    if cfg.name in DATASETS:
        if cfg.text_pair_column:
            raise WarmstartError(f"data.text_pair_column is set but data.name {cfg.name!r} is "
                                 "a built-in set of single examples; give a table file")
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
    return _read(cfg, path, "data.name")


def _read(cfg: DataConfig, path: Path, key: str) -> RawSet:
    return read_path(path, cfg.text_column, cfg.label_column, key,
                     pair_column=cfg.text_pair_column, blank_labels=True)


def _read_given(cfg: DataConfig, split: str, name: str | None, kind: str) -> RawSet | None:
    """An explicit validation/test file or folder, which must hold the same kind of data."""
    if name is None:
        return None
    raw = _read(cfg, Path(name).expanduser(), f"data.{split}")
    if raw.kind != kind:
        raise WarmstartError(
            f"data.{split} {name!r} holds {raw.kind} data but data.name {cfg.name!r} holds "
            f"{kind} data; give a {split} set of the same kind"
        )
    return raw


def _task_type(main: RawSet, cfg: DataConfig, task_cfg: TaskConfig) -> tuple[str, str]:
    """`task.type` as given (checked against the data), else inferred from the labels."""
    if main.kind == "image" and task_cfg.type not in ("auto", "classification"):
        raise WarmstartError(
            f"task.type={task_cfg.type} but {cfg.name!r} is an image set with one class per "
            "folder; use task.type=auto, or a table of image paths and labels")
    if task_cfg.type == "multilabel":
        _check_separator(main, cfg)
    if task_cfg.type != "auto":
        return task_cfg.type, "task.type"
    kind, why = infer_type(main.labels, cfg.label_separator)
    return kind, f"inferred: {why}; set task.type to override"


# Characters users join labels with, for a hint when data.label_separator is another one.
SEPARATORS = (";", ",", "|", "/", "+")


def _check_separator(main: RawSet, cfg: DataConfig) -> None:
    """task.type=multilabel, but no cell holds data.label_separator while many hold another
    common separator: the labels would be read as one odd name per cell."""
    cells = [c for c in main.labels if c]
    if not cells or any(cfg.label_separator in c for c in cells):
        return
    for sep in SEPARATORS:
        joined = sum(sep in c for c in cells)
        if sep != cfg.label_separator and joined >= max(1, len(cells) // 20):
            raise WarmstartError(
                f"task.type=multilabel but no label cell in {cfg.name!r} holds "
                f"data.label_separator {cfg.label_separator!r}, while {joined} hold "
                f"{sep!r}; set data.label_separator={sep!r} (quoted in YAML)")


def _without_blank_labels(raw: RawSet) -> RawSet:
    """The examples that have a label; the source says how many had none."""
    keep = [i for i, label in enumerate(raw.labels) if label]
    if len(keep) == len(raw.labels):
        return raw
    if not keep:
        raise WarmstartError(f"data file {raw.source} has rows but none with both a text "
                             "and a label; fill those columns in")
    out = _take(raw, np.asarray(keep, dtype=np.int64))
    out.source += (f" ({len(raw.labels) - len(keep)} rows without a label dropped; NaN, NA, "
                   "null and the other pandas missing-value strings count as no label)")
    return out


@dataclass(frozen=True)
class LabelCoder:
    """Turns a task type's label cells into label names and label arrays (for training, and
    for `evaluate` on a file of a finished run)."""

    kind: str
    separator: str

    def names(self, raw: RawSet) -> list[str]:
        """The label names in `raw` in output order (regression: the one output's name)."""
        if self.kind == "regression":
            return ["score"]
        if self.kind == "multilabel":
            return _label_order([n for cell in raw.labels
                                 for n in split_cell(cell, self.separator)])
        return _label_order(raw.labels)

    def examples(self, raw: RawSet, names: list[str]) -> Examples:
        if self.kind == "regression":
            values = [parse_number(cell, _where(raw, i)) for i, cell in enumerate(raw.labels)]
            return Examples(raw.inputs, np.asarray(values, dtype=np.float32).reshape(-1))
        index = {name: i for i, name in enumerate(names)}
        if self.kind == "multilabel":
            hot = np.zeros((len(raw.labels), len(names)), dtype=np.float32)
            for row, cell in enumerate(raw.labels):
                hot[row, [index[n] for n in split_cell(cell, self.separator)]] = 1.0
            return Examples(raw.inputs, hot)
        return Examples(raw.inputs, np.array([index[s] for s in raw.labels], dtype=np.int64))


def _where(raw: RawSet, i: int) -> str:
    return f"{raw.source!r} row {raw.rows[i]}" if raw.rows else f"{raw.source!r} example {i + 1}"


def _take(raw: RawSet, positions: np.ndarray) -> RawSet:
    return RawSet(raw.kind, [raw.inputs[i] for i in positions],
                  [raw.labels[i] for i in positions], raw.source,
                  rows=[raw.rows[i] for i in positions] if raw.rows else None)


def _label_order(labels: list[str]) -> list[str]:
    """Sorted unique labels: 2 before 10 when all are integers, else alphabetical."""
    names = set(labels)
    try:
        return sorted(names, key=lambda s: (int(s), s))  # (.., s): "01" and "1" stay ordered
    except ValueError:
        return sorted(names)


def _check_seen(labels: list[str], known: set[str], where: str) -> None:
    """Every validation/test label must be one the model can predict."""
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


def _describe(main: RawSet, given: dict[str, RawSet | None]) -> str:
    """Where the data came from, for logs and the model card."""
    extra = [f"{split}: {raw.source}" for split, raw in given.items() if raw is not None]
    return main.source + (f" ({'; '.join(extra)})" if extra else "")
