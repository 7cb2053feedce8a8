"""The strategy hook: what trains, at what learning-rate scale, on what schedule.

A strategy is a small registered function `(adapter, options) -> Plan`. It marks parameters
trainable or frozen (`requires_grad`) and returns parameter groups, each with an `lr_scale`
that the schedule multiplies. The one training loop knows nothing else about strategies.
Its options are its own dataclass, registered with it (`register_strategy`), so adding a
strategy with an option touches its file and the import list in `__init__.py`, nothing else.

The plan lists every parameter that may train at any point of the run, even ones frozen at
the start (gradual unfreezing), so the optimizer's groups never change shape mid-run and a
resumed run restores the same optimizer state (the failure in Lightning #6891).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from warmstart.data.batches import Batches
from warmstart.models.base import Adapter
from warmstart.options import STRATEGY_OPTIONS, NoOptions
from warmstart.registry import Registry
from warmstart.training.loss import LossFn
from warmstart.training.optim import ParamGroup

# Calibration: given the model, the training batches, the device and the task's loss, the lr
# scale of each of the plan's groups (in order), measured from data.
Calibrate = Callable[[nn.Module, Batches, torch.device, LossFn], list[float]]


@dataclass(frozen=True)
class SolveData:
    """What a closed-form solver fits on: the head's input features (examples x features)
    and labels of the training and validation splits, and the loss weight of each class
    (`train.class_weights`; None: all equal)."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    class_weights: np.ndarray | None = None


# A closed-form fit of the head; returns one line for the log saying what it chose.
Solver = Callable[[SolveData], str]
# (model, training batches, validation batches, device, the task's plain loss) -> a note
Prefit = Callable[[nn.Module, Batches, Batches, torch.device, LossFn], str]


@dataclass
class Plan:
    """What a strategy decided: what trains, at what lr scale, and when.

    The plan says nothing about how the run executes it: what can be cached follows from the
    groups (`training/cache.py`), what runs in eval mode is handed to `fit` by the run.

    Attributes:
        groups: every parameter that may train during the run, with its lr scale.
        on_epoch_start: optional hook for staged strategies (called with the 0-based epoch
            before it starts); it may change `requires_grad`, never the groups.
        notes: one line for the log saying what the strategy chose (e.g. "top 2 of 7 groups").
        calibrate: optional measurement run once before training (not on resume: the
            checkpoint's optimizer holds the scales); it returns each group's `lr_scale`
            (discriminative learning rates) and must leave the weights unchanged.
        solver: optional closed-form fit used instead of gradient steps (scikit-learn's
            logistic regression): given the head's input features and labels of the
            training and validation splits as arrays (`SolveData`), it sets the head's
            weights. Only for plans in which the head alone trains (its inputs are then
            fixed and computed once).
        adapter: the adapter the plan trains when the strategy transformed the model (LoRA
            wraps it with peft); None: the adapter it was given.
        prefit: optional fit of part of the model run once before training (not on resume:
            the checkpoint holds what it fitted), e.g. LP-FT's probe fitting the head on the
            frozen features; it returns a line for the log.
    """

    groups: list[ParamGroup]
    on_epoch_start: Callable[[int], None] | None = None
    notes: str = ""
    calibrate: Calibrate | None = None
    solver: Solver | None = None
    adapter: Adapter | None = None
    prefit: Prefit | None = None

    def with_scales(self, scales: list[float]) -> Plan:
        """The same plan with new lr scales, one per group (from `calibrate`)."""
        groups = [ParamGroup(g.name, g.params, s) for g, s in zip(self.groups, scales)]
        return dataclasses.replace(self, groups=groups)

    def trains_only(self, module: nn.Module) -> bool:
        """Whether every parameter the plan may train belongs to `module` (e.g. the head)."""
        inside = {id(p) for p in module.parameters()}
        return all(id(p) in inside for g in self.groups for p in g.params)

    def with_head_scale(self, scale: float) -> Plan:
        """The same plan with the `head` group at lr scale `scale` (its own learning rate)."""
        return self.with_scales([scale if g.name == "head" else g.lr_scale
                                 for g in self.groups])


# (adapter, the strategy's options dataclass) -> Plan
Strategy = Callable[[Adapter, Any], Plan]
STRATEGIES: Registry[Strategy] = Registry("strategy")


@dataclass(frozen=True)
class Defaults:
    """A strategy's own training defaults for one kind of model (`text` or `image`), used
    where the config leaves `optim.lr` / `train.epochs` null; `why` is printed with them."""

    lr: float | None = None
    epochs: int | None = None
    why: str = ""


# strategy name -> model kind -> Defaults (filled by `register_strategy`)
STRATEGY_DEFAULTS: dict[str, dict[str, Defaults]] = {}


def register_strategy(name: str, description: str, options: type = NoOptions,
                      defaults: dict[str, Defaults] | None = None
                      ) -> Callable[[Strategy], Strategy]:
    """Decorator: register a strategy function, its options dataclass and its defaults.

    The options dataclass's fields become the `strategy.*` keys of that strategy (typed,
    documented by their help, listed by `warmstart train --help` and the model card); a
    strategy without options leaves `options` out. `defaults` maps a model kind to the
    learning rate and epochs the strategy wants there (measured: `bench/quality.py`'s
    sweeps); a kind it leaves out gets the model's learning rate and 2 epochs.
    """

    def decorate(fn: Strategy) -> Strategy:
        STRATEGY_OPTIONS.register(name, description)(options)
        STRATEGY_DEFAULTS[name] = dict(defaults or {})
        return STRATEGIES.register(name, description)(fn)

    return decorate


_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def train_mode(module: nn.Module, eval_modules: Iterable[nn.Module] = ()) -> None:
    """Put `module` in training mode, but keep frozen BatchNorm layers and `eval_modules`
    (a frozen prefix, `cache.frozen_prefix`) in eval mode.

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
