"""The data every reader produces: labelled examples, split three ways, with the label names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from warmstart.registry import Registry
from warmstart.tasks import Task


@dataclass
class Examples:
    """Inputs with their labels as the task encodes them.

    `inputs` holds texts (str) or text pairs ((str, str) tuples) for text data, or images
    for image data: each image a uint8 numpy array (H, W) or (H, W, 3), or a path to an
    image file loaded lazily. `labels` is an array: class indices into
    `TaskData.label_names` (classification, int64), one 0/1 row per example (multilabel,
    float32), or the values (regression, float32).
    """

    inputs: list[Any]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class TaskData:
    """A task's train/validation/test splits, and the task (its label order included)."""

    kind: Literal["text", "image"]
    task: Task
    train: Examples
    validation: Examples
    test: Examples
    source: str  # where it came from, for the model card and logs
    task_reason: str = ""  # why this task type (inferred or given), printed at start
    # Which source examples went into each split (`split_ids`), saved as the run's split.json
    # so held-out rows can be re-evaluated later.
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def label_names(self) -> list[str]:
        return self.task.label_names


@dataclass
class RawSet:
    """A whole built-in dataset before splitting: inputs and their label names (strings)."""

    kind: Literal["text", "image"]
    inputs: list[Any]
    labels: list[str]
    source: str
    # Each example's row in its file (the header is row 1); for a built-in set, the
    # example's index in it (0-based), so a split can name the examples it holds.
    rows: list[int] | None = None


def split_ids(raw: RawSet, source: str, builtin: bool) -> dict[str, Any]:
    """The examples of one split, as `split.json` records them: the source (`data.name` or
    the split's own file), and the file's row numbers (tables), the image files (image
    folders) or the indices (built-in sets)."""
    if raw.kind == "image" and not builtin and all(isinstance(x, str) for x in raw.inputs):
        return {"source": source, "files": list(raw.inputs)}
    return {"source": source, "indices" if builtin else "rows": list(raw.rows or [])}


# Built-in datasets: a loader taking no arguments and returning the whole set.
DATASETS: Registry[Callable[[], RawSet]] = Registry("dataset")
