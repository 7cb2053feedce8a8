"""`discriminative`: per-group learning rates set from data, by parameter importance.

Before the optimizer is built (`Plan.calibrate`), the loss of the new task is back-propagated
on the first `strategy.calibration_batches` training batches, with the model in eval mode and
no optimizer step. For each layer group G with |G| parameter elements, over B batches:

    fisher:     I(G) = 1/(B |G|) * sum_b sum_{theta in G} (dL_b/dtheta)^2
    grad_norm:  I(G) = 1/(B |G|) * sum_b sum_{theta in G} |dL_b/dtheta|

`fisher` is the diagonal empirical Fisher information (batch gradients, not per-example ones:
one backward per batch keeps calibration as cheap as a few training steps), averaged over the
group's elements; `grad_norm` is the mean absolute gradient. Each group then trains at

    lr_scale(G) = max(min_scale, I(G) / max_H I(H))

so the most important group (in practice the new head) runs at the base rate, and **more
important groups get higher rates**. Why this direction: the gradients are those of the *new*
task's loss, so I(G) measures how much the new task asks of G. Surgical fine-tuning's Auto-RGN
(Lee et al., ICLR 2023) does the same with relative gradient norms and recovers the layers that
hand-picked surgical fine-tuning finds best. The opposite rule, EWC's (Kirkpatrick et al.
2017: slow down high-Fisher weights), needs the Fisher of the *pretraining* task, which
measures what the old task relies on; that data is not at hand here. `min_scale` keeps every
group learning. Under AdamW a group's step size is set by its learning rate, not by its
gradient's size, so the scale really is how far each group moves per step. Since `fisher`
squares the gradients, it spreads the scales further apart than `grad_norm`.

The scales are logged (`warmstart` logger) and returned to the run, which trains the plan's
groups at them and reports them in `summary.json` as `lr.groups`.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from warmstart.data.batches import Batches
from warmstart.models.base import Adapter, logits_of
from warmstart.options import check, option
from warmstart.strategies._select import everything, groups_of, mark_trainable
from warmstart.strategies.base import Plan, register_strategy
from warmstart.tensors import move
from warmstart.training import distributed
from warmstart.training.loss import LossFn
from warmstart.training.optim import ParamGroup

log = logging.getLogger("warmstart")


@dataclass
class DiscriminativeOptions:
    """`strategy.*` keys of discriminative."""

    importance: Literal["fisher", "grad_norm"] = option(
        "fisher", "per-group importance measure (diagonal Fisher information or gradient "
        "norm, per parameter)")
    calibration_batches: int = option(
        8, "training batches used to estimate importance before training")
    min_scale: float = option(
        0.1, "smallest lr scale a group can get, so no group stops learning")

    def __post_init__(self) -> None:
        check(self.calibration_batches >= 1, "strategy.calibration_batches", "must be >= 1")
        check(0 < self.min_scale <= 1, "strategy.min_scale", "must be in (0, 1]")


@register_strategy("discriminative", "per-group lr from importance (Fisher or gradient) "
                                     "measured on a few training batches", DiscriminativeOptions)
def discriminative(adapter: Adapter, cfg: DiscriminativeOptions) -> Plan:
    """Train everything; set each group's lr scale from its importance before training."""
    chosen = everything(adapter)
    mark_trainable(adapter, chosen)
    groups = groups_of(adapter, chosen)

    def calibrate(model: nn.Module, batches: Batches, device: torch.device,
                  loss_fn: LossFn) -> list[float]:
        imp = importance(model, groups, batches, device, loss_fn, cfg.importance,
                         cfg.calibration_batches)
        scales = importance_scales(imp, cfg.min_scale)
        log.info("discriminative lr scales (%s on %d batches): %s", cfg.importance,
                 min(cfg.calibration_batches, len(batches)),
                 ", ".join(f"{g.name}={s:.3g}" for g, s in zip(groups, scales)))
        return scales

    return Plan(groups, calibrate=calibrate,
                notes=f"all groups train; lr scales from {cfg.importance} importance on "
                      f"{cfg.calibration_batches} batches (min {cfg.min_scale:g})")


def importance_scales(importance: list[float], min_scale: float) -> list[float]:
    """`max(min_scale, I / max I)` per group; all 1 when no group has any gradient."""
    top = max(importance)
    if top <= 0:
        return [1.0] * len(importance)
    return [max(min_scale, i / top) for i in importance]


def importance(model: nn.Module, groups: list[ParamGroup], batches: Batches,
               device: torch.device, loss_fn: LossFn, measure: str, num_batches: int
               ) -> list[float]:
    """Per-group importance (see the module docstring) on the first `num_batches` batches.

    The model runs in eval mode: no dropout noise, so the estimate depends on the data only,
    and BatchNorm running statistics stay as they are. Gradients are cleared afterwards and
    the mode restored; no weight changes.
    """
    was_training = model.training
    model.eval()
    totals = [0.0] * len(groups)
    seen = 0
    try:
        for _, batch in itertools.islice(batches.epoch(0), num_batches):
            batch = move(batch, device)
            labels = batch.pop("labels")
            model.zero_grad(set_to_none=True)
            loss_fn(logits_of(model(**batch)).float(), {"labels": labels}).backward()
            for k, group in enumerate(groups):
                totals[k] += sum(_per_element(p.grad, measure) for p in group.params
                                 if p.grad is not None)
            seen += 1
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    # Under data parallelism each process saw its share of the batches: pool the sums so
    # every process gets the same scales (a no-op in a one-process run).
    *totals, seen = distributed.sum_all(distributed.current(), [*totals, float(seen)])
    sizes = [sum(p.numel() for p in g.params) for g in groups]
    return [t / (max(seen, 1.0) * max(n, 1)) for t, n in zip(totals, sizes)]


def _per_element(grad: torch.Tensor, measure: str) -> float:
    """Sum over a gradient's elements of the squared (`fisher`) or absolute value."""
    g = grad.detach().float()
    return float(g.pow(2).sum() if measure == "fisher" else g.abs().sum())
