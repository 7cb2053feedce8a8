"""Per-example tensors kept in one file on disk (a cache bigger than its memory budget).

Written by hand because it is twenty lines over numpy's memory map, and rows of different
shapes (one per example, e.g. one vector per token) need offsets that no array format keeps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


class DiskRows(Sequence[torch.Tensor]):
    """Cached rows in one file, read back through a memory map (caches over the budget).

    The operating system keeps what fits in its page cache, so a cache slightly too big for
    the budget costs little, and one far too big still beats recomputing the frozen layers.
    """

    def __init__(self, path: Path, shapes: list[tuple[int, ...]]) -> None:
        self.shapes = shapes
        sizes = [math.prod(shape) for shape in shapes]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.data = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32,
                                              shape=(int(self.offsets[-1]),))

    def put(self, i: int, row: torch.Tensor) -> None:
        """Write example `i`'s row (of the shape given for it)."""
        assert tuple(row.shape) == self.shapes[i], (row.shape, self.shapes[i])
        self.data[self.offsets[i]:self.offsets[i + 1]] = row.float().reshape(-1).numpy()

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, i: int) -> torch.Tensor:  # type: ignore[override]
        start, end = self.offsets[i], self.offsets[i + 1]
        return torch.from_numpy(np.array(self.data[start:end])).reshape(self.shapes[i])
