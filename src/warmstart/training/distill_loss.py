"""The loss of a distillation run: the task's loss on the labels plus a soft part that pulls the
student's outputs toward the teacher's (Hinton et al. 2015, "Distilling the Knowledge in a
Neural Network").

The teacher's outputs ride along in each training batch as `targets` (`data/batches.py`):
one row per example, the teacher's outputs followed by a 1/0 flag saying whether the example
has a label (`pack_targets`). Examples from `distill.unlabelled` carry 0 there: only the soft
part counts for them. So distillation is a loss, not a second training loop: `fit` runs it
like any other.

Per example, with `a = distill.alpha` and `T = distill.temperature`:

| task | soft part |
|---|---|
| classification | T^2 * KL(softmax(teacher / T) \\|\\| softmax(student / T)) |
| multilabel | T^2 * mean over labels of BCE(sigmoid(student / T), sigmoid(teacher / T)) |
| regression | the task's squared error against the teacher's score (T does not apply) |

and the batch loss is `(1 - a) * hard * (share of labelled examples) + a * mean(soft)`, where
`hard` is the run's own task loss (label smoothing, class weights) over the labelled examples:
every example weighs the same, and `a = 0` is exactly the task loss. The T^2 keeps the soft
part's gradients the size of the hard part's whatever T is (they shrink as 1/T^2 otherwise).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from warmstart.tasks import Regression, Task
from warmstart.training.loss import LossFn


def pack_targets(outputs: np.ndarray, labelled: np.ndarray) -> np.ndarray:
    """The `targets` rows of a distillation: the teacher's outputs, then the labelled flag.

    Args:
        outputs: the teacher's output per example, (n, k): logits (classification,
            multilabel) or the score (regression, k = 1).
        labelled: whether each example has a label (n,).
    """
    outputs = np.asarray(outputs, dtype=np.float32).reshape(len(labelled), -1)
    return np.concatenate([outputs, np.asarray(labelled, np.float32)[:, None]], axis=1)


def soft_loss(task: Task, logits: torch.Tensor, teacher: torch.Tensor,
              temperature: float) -> torch.Tensor:
    """The soft part per example (n,): how far the student's outputs are from the teacher's.

    Args:
        task: the run's task (its type picks the formula; regression standardises the
            teacher's score as it does the labels).
        logits: the student's outputs (n, k).
        teacher: the teacher's outputs (n, k): logits, or the score for regression.
        temperature: softens both distributions (classification, multilabel).
    """
    if isinstance(task, Regression):
        target = (teacher[:, 0] - task.mean) / task.scale
        return (logits[:, 0] - target) ** 2
    t = temperature
    if task.type == "multilabel":
        bce = F.binary_cross_entropy_with_logits(logits / t, torch.sigmoid(teacher / t),
                                                 reduction="none")
        return bce.mean(dim=1) * t * t
    kl = F.kl_div(F.log_softmax(logits / t, dim=1), F.log_softmax(teacher / t, dim=1),
                  reduction="none", log_target=True)
    return kl.sum(dim=1) * t * t


def distill_loss(task: Task, hard: LossFn, *, temperature: float, alpha: float,
                 penalty: Callable[[], torch.Tensor] | None = None) -> LossFn:
    """`loss_fn(logits, batch)` for `fit`: the hard task loss and the soft part, mixed by
    `alpha` (see the module docstring), plus an optional penalty on the weights.

    Args:
        task: the run's task.
        hard: the run's task loss on labels (`make_loss` without a penalty).
        temperature: the softmax/sigmoid temperature of the soft part.
        alpha: the soft part's weight; the hard part gets 1 - alpha.
        penalty: optional regulariser of the current weights, added once.
    """

    def loss_fn(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        targets = batch["targets"].to(logits.device, torch.float32)
        teacher, labelled = targets[:, :-1], targets[:, -1] > 0.5
        loss = alpha * soft_loss(task, logits, teacher, temperature).mean()
        if alpha < 1 and bool(labelled.any()):
            share = labelled.float().mean()
            loss = loss + (1 - alpha) * share * hard(logits[labelled],
                                                     {"labels": batch["labels"][labelled]})
        return loss + penalty() if penalty is not None else loss

    return loss_fn
