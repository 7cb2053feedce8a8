"""The data every reader produces: labelled examples, split three ways, with the label names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from warmstart.registry import Registry


@dataclass
class Examples:
    """Inputs with integer labels.

    `inputs` holds texts (str) for text data, or images for image data: each image a
    uint8 numpy array (H, W) or (H, W, 3), or a path to an image file loaded lazily.
    `labels[i]` indexes `TaskData.label_names`.
    """

    inputs: list[Any]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class TaskData:
    """A classification task: train/validation/test splits and the label order."""

    kind: Literal["text", "image"]
    label_names: list[str]
    train: Examples
    validation: Examples
    test: Examples
    source: str  # where it came from, for the model card and logs


@dataclass
class RawSet:
    """A whole built-in dataset before splitting: inputs and their label names (strings)."""

    kind: Literal["text", "image"]
    inputs: list[Any]
    labels: list[str]
    source: str


# Built-in datasets: a loader taking no arguments and returning the whole set.
DATASETS: Registry[Callable[[], RawSet]] = Registry("dataset")
