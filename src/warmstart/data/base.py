"""The data every reader produces: labelled examples, split three ways, with the label names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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
    rows: list[int] | None = None  # each example's row in its file, for messages


# Built-in datasets: a loader taking no arguments and returning the whole set.
DATASETS: Registry[Callable[[], RawSet]] = Registry("dataset")
