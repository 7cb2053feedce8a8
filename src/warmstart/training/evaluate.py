"""Run a model over a split: its outputs in example order, and the task's metrics on them.

The metrics themselves are the task's (`tasks.py`: scikit-learn's and scipy's arithmetic).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from warmstart.data.batches import Batches
from warmstart.models.base import logits_of
from warmstart.tasks import Task
from warmstart.tensors import move
from warmstart.training.distributed import current, gather_all


@torch.inference_mode()
def predict_logits(
    model: nn.Module, batches: Batches, device: torch.device,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels (as the task encodes them) for every example, in the examples'
    original order; `on_batch(n)` is told the size of each batch done (a progress display).

    Under data parallelism each process runs its share and the shares are gathered, so every
    process ends with the whole split's logits.
    """
    was_training = model.training
    model.eval()
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for ids, batch in batches.epoch():
        labels = batch.pop("labels")
        logits = logits_of(model(**move(batch, device))).float().cpu().numpy()
        parts.append((ids, logits, labels.numpy()))
        if on_batch is not None:
            on_batch(len(ids))
    model.train(was_training)
    if batches.world > 1:
        parts = [p for rank in gather_all(current(), parts) for p in rank]
    n = batches.num_examples
    if not parts:
        return np.zeros((0, 0), np.float32), batches.labels.numpy()[:0]
    logits_out = np.zeros((n, parts[0][1].shape[1]), dtype=np.float32)
    first = parts[0][2]
    labels_out = np.zeros((n, *first.shape[1:]), dtype=first.dtype)
    for ids, logits, labels in parts:
        logits_out[ids] = logits
        labels_out[ids] = labels
    return logits_out, labels_out


def evaluate(model: nn.Module, batches: Batches, device: torch.device, task: Task, *,
             full: bool = False) -> dict[str, Any]:
    """Run the model over `batches` and compute the task's metrics."""
    logits, labels = predict_logits(model, batches, device)
    return task.metrics(logits, labels, full=full)
