"""A closed-form fit in place of the loop: the plan's `solver` on the head's cached inputs.

`features` with scikit-learn fits a logistic regression on the frozen features once; there
are no gradient steps, epochs or optimizer, so it does not go through `fit`. The result has
the same shape as a fit's, so the run reports and saves it the same way.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from warmstart.data.batches import Batches
from warmstart.strategies.base import Plan, SolveData
from warmstart.training.cache import head_features
from warmstart.training.loop import FitResult, Score


def solve(model: nn.Module, plan: Plan, train: Batches, val: Batches, score: Score,
          class_weights: torch.Tensor | None = None) -> FitResult:
    """Fit the head with `plan.solver` on cached head inputs, then score it once.

    Args:
        model: what `cache.prepare` made of the network (`HeadOnly` on cached inputs).
        plan: a plan with a `solver`.
        train, val: the cached batches of the training and validation splits.
        score: the validation metrics of the model.
        class_weights: the loss weight of each class (`train.class_weights`), if any.
    """
    assert plan.solver is not None, "solve() needs a plan with a solver"
    start = time.perf_counter()
    weights = None if class_weights is None else class_weights.cpu().numpy()
    note = plan.solver(SolveData(*head_features(train), *head_features(val), weights))
    seconds = time.perf_counter() - start
    metrics = score(model, val)
    row = {"epoch": 1, "step": 0, "train_loss": float("nan"),
           **{f"val_{k}": v for k, v in metrics.items()}}
    state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    # No optimizer ran: every group's learning rate was 0.
    return FitResult(best_epoch=1, best_metrics=metrics, history=[row], steps=0,
                     train_seconds=seconds, train_samples=train.num_examples, best_state=state,
                     lrs={g.name: 0.0 for g in plan.groups}, note=note)
