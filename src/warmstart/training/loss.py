"""The loss the loop minimises, built once per run: `loss_fn(logits, batch) -> loss`.

`fit` knows nothing of what the loss is; the run builds it from the task (`tasks.py`:
cross-entropy, BCE with logits, or mean squared error), label smoothing, class weights and
the regularisers (`regularize.py`), so the loop is the same for every task.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from warmstart.tasks import Classification, Task

# (logits as float, the batch with its `labels`) -> the scalar loss to back-propagate.
LossFn = Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]


def make_loss(task: Task | None = None, *, label_smoothing: float = 0.0,
              class_weights: torch.Tensor | None = None,
              penalty: Callable[[], torch.Tensor] | None = None) -> LossFn:
    """The task's loss on the batch's `labels`, plus an optional penalty on the weights.

    Args:
        task: what is predicted (default: classification, whatever its classes).
        label_smoothing: label smoothing (classification and multilabel).
        class_weights: optional loss weights per class (multilabel: BCE's pos_weight per
            label), moved to the logits' device once.
        penalty: optional regulariser of the current weights (L1, L2-SP), added every step.
    """
    task = task or Classification([])
    moved: dict[torch.device, torch.Tensor] = {}

    def loss_fn(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        weight = None
        if class_weights is not None:
            weight = moved.setdefault(logits.device, class_weights.to(logits.device))
        loss = task.loss(logits, batch["labels"], label_smoothing=label_smoothing,
                         weight=weight)
        return loss + penalty() if penalty is not None else loss

    return loss_fn
