"""The strategy hook: what trains, at what learning-rate scale, on what schedule.

A strategy is a small registered function `(adapter, cfg) -> Plan`. It marks parameters
trainable or frozen (`requires_grad`) and returns parameter groups, each with an `lr_scale`
that the schedule multiplies. The one training loop knows nothing else about strategies.

The plan lists every parameter that may train at any point of the run, even ones frozen at
the start (gradual unfreezing), so the optimizer's groups never change shape mid-run and a
resumed run restores the same optimizer state (the failure in Lightning #6891).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from warmstart.config import StrategyConfig
from warmstart.data.batches import Batches
from warmstart.models.base import Adapter, LayerGroup
from warmstart.registry import Registry
from warmstart.training.optim import ParamGroup


@dataclass
class Plan:
    """What a strategy decided.

    Attributes:
        groups: every parameter that may train during the run, with its lr scale.
        on_epoch_start: optional hook for staged strategies (called with the 0-based epoch
            before it starts); it may change `requires_grad`, never the groups.
        notes: one line for the log saying what the strategy chose (e.g. "top 2 of 7 groups").
        calibrate: optional hook run once before the optimizer is built, given the training
            batches and the device; it may set each group's `lr_scale` from data
            (discriminative learning rates). It must leave the weights unchanged.
        solve: optional closed-form fit used instead of gradient steps (e.g. scikit-learn's
            logistic regression on cached features): given the training batches and the
            device, it sets the trainable parameters; the loop then evaluates once.
        cache_head_inputs: everything below the head stays frozen for the whole run, so the
            run may compute the head's inputs once and train the head on them (`cache.py`).
        eval_modules: modules kept in eval mode while training: the layer groups at the
            input side that never train (set by the run, `cache.frozen_prefix`). Without
            dropout their output is fixed, which is what lets the run cache it.
    """

    groups: list[ParamGroup]
    on_epoch_start: Callable[[int], None] | None = None
    notes: str = ""
    calibrate: Callable[[Batches, torch.device], None] | None = None
    solve: Callable[[Batches, torch.device], None] | None = None
    cache_head_inputs: bool = False
    eval_modules: list[nn.Module] = field(default_factory=list)


Strategy = Callable[[Adapter, StrategyConfig], Plan]
STRATEGIES: Registry[Strategy] = Registry("strategy")


def set_trainable(groups: Iterable[LayerGroup], trainable: bool) -> None:
    """Mark every parameter of `groups` trainable or frozen."""
    for group in groups:
        for p in group.parameters():
            p.requires_grad_(trainable)


def group_plan(adapter: Adapter, scales: list[float] | None = None) -> list[ParamGroup]:
    """One ParamGroup per layer group (input to head), with the given lr scales (default 1)."""
    scales = scales or [1.0] * len(adapter.groups)
    return [
        ParamGroup(g.name, list(g.parameters()), s) for g, s in zip(adapter.groups, scales)
    ]


_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def train_mode(module: nn.Module, eval_modules: Iterable[nn.Module] = ()) -> None:
    """Put `module` in training mode, but keep frozen BatchNorm layers and `eval_modules`
    (a frozen prefix, `Plan.eval_modules`) in eval mode.

    A frozen BatchNorm in train mode still updates its running statistics from the new data
    and normalises with batch statistics: the pretrained layer drifts although "frozen" (the
    Keras `trainable=False` pitfall). Frozen means no parameter of the layer trains.
    """
    module.train()
    for m in eval_modules:
        m.eval()
    for m in module.modules():
        if isinstance(m, _BATCH_NORMS) and not any(p.requires_grad for p in m.parameters()):
            m.eval()
