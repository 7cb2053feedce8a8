"""The loss the loop minimises, built once per run: `loss_fn(logits, batch) -> loss`.

`fit` knows nothing of what the loss is; the run builds it from the task (today single-label
classification: cross-entropy), label smoothing, class weights and the regularisers
(`regularize.py`), so a new kind of task brings its loss here and the loop stays the same.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

# (logits as float, the batch with its `labels`) -> the scalar loss to back-propagate.
LossFn = Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]


def make_loss(*, label_smoothing: float = 0.0, class_weights: torch.Tensor | None = None,
              penalty: Callable[[], torch.Tensor] | None = None) -> LossFn:
    """Cross-entropy on the batch's `labels`, plus an optional penalty on the weights.

    Args:
        label_smoothing: cross-entropy label smoothing.
        class_weights: optional per-class loss weights (moved to the logits' device once).
        penalty: optional regulariser of the current weights (L1, L2-SP), added every step.
    """
    moved: dict[torch.device, torch.Tensor] = {}

    def loss_fn(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        weight = None
        if class_weights is not None:
            weight = moved.setdefault(logits.device, class_weights.to(logits.device))
        loss = F.cross_entropy(logits, batch["labels"], weight=weight,
                               label_smoothing=label_smoothing)
        return loss + penalty() if penalty is not None else loss

    return loss_fn
