"""THE training loop: forward, loss, backward, clip, step, schedule; evaluate each epoch.

Every strategy runs through `fit`. A strategy's only levers are the `Plan` it returns (which
parameters train, at what lr scale) and its per-epoch hook; nothing here branches on its
name. The loss is the run's (`loss.py`), so nothing here knows what the task is either.

Resuming is exact because every input to the future is either saved in the checkpoint
(weights, optimizer, `LoopState`, RNG) or a pure function of saved counters (the data order
of an epoch, the lr of a step, the strategy's per-epoch state).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from warmstart.config import OptimConfig, TrainConfig
from warmstart.data.augment import Augment
from warmstart.data.batches import TARGET_KEYS, Batches
from warmstart.errors import WarmstartError
from warmstart.models.base import logits_of
from warmstart.strategies.base import Plan, train_mode
from warmstart.tasks import lower_is_better
from warmstart.tensors import move
from warmstart.training import distributed
from warmstart.training.callbacks import Callbacks, State
from warmstart.training.checkpoint import Checkpointer, LoopState, Resume, restore_rng
from warmstart.training.loss import LossFn
from warmstart.training.optim import (
    ParamGroup,
    build_optimizer,
    group_lrs,
    make_schedule,
    set_lr,
)


@dataclass
class FitResult:
    """What a finished fit hands back."""

    best_epoch: int  # 1-based
    best_metrics: dict[str, Any]  # validation metrics of the best epoch
    history: list[dict[str, Any]]  # one row per epoch: train loss, validation metrics
    steps: int
    train_seconds: float  # time inside training epochs (evaluation excluded)
    train_samples: int
    best_state: dict[str, torch.Tensor] = field(repr=False)
    lrs: dict[str, float] = field(default_factory=dict)  # peak lr of each strategy group
    stopped_early: bool = False
    note: str = ""  # one line about how it was fitted (a closed-form solver's choice)


@dataclass(frozen=True)
class FitSettings:
    """How to train, as the run resolved it."""

    optim: OptimConfig
    train: TrainConfig
    lr: float  # the base learning rate (each group runs at lr * lr_scale * schedule)
    device: torch.device
    precision: str = "fp32"  # "fp32", "bf16" or "fp16" (fp16 uses loss scaling)


# (model, batches) -> validation metrics; the loop reads `train.metric` from them.
Score = Callable[[nn.Module, Batches], dict[str, Any]]


def is_better(value: float, best: float | None, metric: str, min_delta: float = 0.0) -> bool:
    """Whether `value` improves on `best` by more than `min_delta` (loss, mse, mae down; the
    rest up)."""
    if best is None:
        return True
    return value < best - min_delta if lower_is_better(metric) else value > best + min_delta


def should_stop(history: list[dict[str, Any]], cfg: TrainConfig) -> bool:
    """Early stopping as a pure function of the validation history (so it survives resume):
    stop once `train.early_stopping` epochs in a row have not improved on the best by
    `train.min_delta`."""
    values = [h[f"val_{cfg.metric}"] for h in history]
    if cfg.early_stopping is None or not values:
        return False
    best, since = values[0], 0
    for v in values[1:]:
        if is_better(v, best, cfg.metric, cfg.min_delta):
            best, since = v, 0
        else:
            since += 1
    return since >= cfg.early_stopping


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context for `precision` (fp32: none)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def fit(model: nn.Module, plan: Plan, train: Batches, val: Batches, loss_fn: LossFn,
        score: Score, settings: FitSettings, *, eval_modules: Sequence[nn.Module] = (),
        callbacks: Callbacks | None = None, checkpointer: Checkpointer | None = None,
        resume: Resume | None = None, augment: Augment | None = None) -> FitResult:
    """Train `model` with the strategy's `plan`; keep the weights of the best validation epoch.

    Args:
        model: the network; `model(**inputs)` gives logits (or an object with `.logits`).
        plan: the strategy's parameter groups (lr scales final) and per-epoch hook.
        train, val: batches of the training and validation splits.
        loss_fn: `loss_fn(logits, batch)`, the loss to minimise (task, regularisers).
        score: the validation metrics of the model (`train.metric` picks the best epoch).
        settings: optimizer, schedule and training settings, base lr, device, precision.
        eval_modules: modules kept in eval mode while training (a frozen prefix).
        callbacks: progress display, metric logging and the like (read-only observers).
        checkpointer: writes checkpoints every N steps and at each epoch end (every process
            holds one so all join the collective parts; only the main one writes).
        resume: continue from a checkpoint instead of starting fresh.
        augment: changes each training batch (on the device) as a function of its examples
            and the epoch alone; evaluation batches never pass through it.
    """
    cfg, device = settings.train, settings.device
    assert cfg.metric != "auto", "resolve train.metric for the task first (session.metric_for)"
    callbacks = callbacks or Callbacks([])
    place = distributed.current()
    if resume is not None:
        model.load_state_dict(resume.model_state)  # before any sharded copy is made of it
    trainee, groups = _sharded(model, plan, cfg, place)
    optimizer = build_optimizer(groups, settings.optim, settings.lr)
    schedule = make_schedule(settings.optim, len(train) * cfg.epochs)
    scaler = torch.amp.GradScaler(device.type, enabled=settings.precision == "fp16")
    params = [p for g in groups for p in g.params]
    loop = LoopState(step_size=train.step_size)
    best_state: dict[str, torch.Tensor] = {}
    if resume is not None:
        loop, best_state = _restore(resume, optimizer, scaler, train.step_size, place)
    else:
        torch.manual_seed(cfg.seed)  # one seed drives dropout inside the model
    lrs = group_lrs(optimizer, settings.lr)  # after a resume: the checkpoint's scales

    def checkpoint() -> None:
        # Collective calls first (every rank takes part), then the main rank writes.
        sums = distributed.sum_all(place, [loop.loss_sum, loop.loss_count, loop.correct])
        saved = dataclasses.replace(loop, loss_sum=sums[0], loss_count=sums[1], correct=sums[2])
        rngs = distributed.gather_all(place, torch.get_rng_state())
        weights = distributed.full_state(trainee)
        optimizer_state = distributed.full_optimizer_state(optimizer)
        if checkpointer is not None:
            checkpointer.save(weights, optimizer_state, saved, rngs, scaler.state_dict())

    state = State(epochs=cfg.epochs, total_steps=len(train) * cfg.epochs,
                  steps_per_epoch=len(train), metric=cfg.metric, step=loop.step,
                  best_value=loop.best_value, best_epoch=loop.best_epoch)
    callbacks.fire("on_fit_start", state)
    stopped = should_stop(loop.history, cfg)
    ddp: DistributedDataParallel | None = None
    ddp_trainable: set[int] = set()

    while loop.epoch < cfg.epochs and not stopped:
        epoch = loop.epoch
        if plan.on_epoch_start is not None:
            plan.on_epoch_start(epoch)
        train_mode(trainee, _counterparts(eval_modules, model, trainee))
        if place.active and trainee is model:  # a sharded copy averages its own gradients
            ddp, ddp_trainable = _data_parallel(model, ddp, ddp_trainable, device)
        runner = ddp if ddp is not None else trainee
        state = state.update(epoch=epoch + 1)
        epoch_start, seconds_before = time.perf_counter(), loop.train_seconds
        for step_size, micros in train.steps(epoch, skip=loop.epoch_step):
            value = _accumulate(runner, micros, loss_fn, settings, scaler, loop, augment)
            scaler.unscale_(optimizer)
            _clip(params, settings.optim)
            factor = schedule(loop.step)
            set_lr(optimizer, settings.lr, factor)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            loop.step, loop.epoch_step = loop.step + 1, loop.epoch_step + 1
            loop.samples += step_size
            loop.train_seconds = seconds_before + time.perf_counter() - epoch_start
            state = state.update(step=loop.step, loss=value, lr=settings.lr * factor,
                                 samples=loop.samples, train_seconds=loop.train_seconds)
            callbacks.fire("on_step_end", state)
            every = checkpointer.every_steps if checkpointer is not None else 0
            if every and loop.step % every == 0 and loop.epoch_step < len(train):
                checkpoint()

        row = _epoch_row(loop, score(trainee, val), place)
        if is_better(row[f"val_{cfg.metric}"], loop.best_value, cfg.metric):
            # CPU copies: the best epoch's weights survive later, worse epochs.
            best_state = {k: v.detach().to("cpu", copy=True)
                          for k, v in distributed.full_state(trainee).items()}
            loop.best_value, loop.best_epoch = row[f"val_{cfg.metric}"], epoch + 1
            if checkpointer is not None:
                checkpointer.save_best(best_state)
        loop = dataclasses.replace(loop, epoch=epoch + 1, epoch_step=0, loss_sum=0.0,
                                   loss_count=0, correct=0)
        stopped = should_stop(loop.history, cfg)
        state = state.update(epoch_metrics=row, best_value=loop.best_value,
                             best_epoch=loop.best_epoch)
        callbacks.fire("on_epoch_end", state)
        checkpoint()

    callbacks.fire("on_fit_end", state)
    model.to(device)  # back from the CPU if a sharded copy trained (the caller loads best_state)
    return FitResult(
        best_epoch=loop.best_epoch, best_metrics=_best_row(loop), history=loop.history,
        steps=loop.step, train_seconds=loop.train_seconds, train_samples=loop.samples,
        best_state=best_state, lrs=lrs, stopped_early=stopped,
    )


def _restore(resume: Resume, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
             step_size: int, place: distributed.Dist
             ) -> tuple[LoopState, dict[str, torch.Tensor]]:
    """Put optimizer, loss scaler and RNG where the checkpoint left them; its loop state."""
    optimizer.load_state_dict(distributed.shard_optimizer_state(optimizer, resume.optimizer))
    if resume.scaler:
        scaler.load_state_dict(resume.scaler)
    loop = dataclasses.replace(resume.loop, step_size=step_size)
    if not place.is_main:  # the checkpoint holds the sums of all ranks; count them once
        loop = dataclasses.replace(loop, loss_sum=0.0, loss_count=0, correct=0)
    restore_rng(resume, place)
    return loop, resume.best_state or {}


def _accumulate(runner: nn.Module, micros: list[tuple[Any, dict[str, torch.Tensor]]],
                loss_fn: LossFn, settings: FitSettings, scaler: torch.amp.GradScaler,
                loop: LoopState, augment: Augment | None = None) -> float:
    """Forward and backward every micro-batch of one step; the last one's loss value.

    `augment` changes each micro-batch after it is on the device (mixup may turn the labels
    into soft targets; the running accuracy counts hits on the original labels).

    Gradients are averaged across processes once per step, on the last micro-batch.
    """
    value = float("nan")
    for j, (ids, batch) in enumerate(micros):
        last = j == len(micros) - 1
        sync = contextlib.nullcontext() if last else distributed.no_sync(runner)
        batch = move(batch, settings.device)
        labels = batch["labels"]
        if augment is not None:
            batch = augment(batch, ids, loop.epoch)
        inputs = {k: v for k, v in batch.items() if k not in TARGET_KEYS}
        with sync:
            with autocast(settings.device, settings.precision):
                logits = logits_of(runner(**inputs))
            loss = loss_fn(logits.float(), batch)
            value = loss.item()
            if not math.isfinite(value):
                raise WarmstartError(
                    f"the loss became {value} at step {loop.step + 1} (epoch {loop.epoch + 1}); "
                    "the last good checkpoint is kept; lower optim.lr or set optim.clip_norm")
            scaler.scale(loss / len(micros)).backward()
        loop.loss_sum += value * len(labels)
        loop.loss_count += len(labels)
        if labels.dtype == torch.long and logits.dim() == 2:  # class ids: count the hits
            loop.correct += (logits.argmax(dim=1) == labels).sum().item()
    return value


def _clip(params: list[nn.Parameter], cfg: OptimConfig) -> None:
    """Clip the (unscaled) gradients by value, then by global norm, as configured."""
    grads = [p for p in params if p.grad is not None]
    if cfg.clip_value is not None:
        torch.nn.utils.clip_grad_value_(grads, cfg.clip_value, foreach=True)
    if cfg.clip_norm is not None:
        torch.nn.utils.clip_grad_norm_(grads, cfg.clip_norm, foreach=True)


def _epoch_row(loop: LoopState, metrics: dict[str, Any], place: distributed.Dist
               ) -> dict[str, Any]:
    """The epoch's history row (appended to `loop.history`): train loss and accuracy summed
    over all processes, and the validation metrics."""
    loss_sum, count, correct = distributed.sum_all(
        place, [loop.loss_sum, loop.loss_count, loop.correct])
    row = {"epoch": loop.epoch + 1, "step": loop.step,
           "train_loss": loss_sum / max(1, count),
           # Running accuracy over the epoch's batches (dropout on, weights moving): a
           # cheap proxy for training-set fit that needs no extra pass over the data.
           "train_accuracy": correct / max(1, count),
           **{f"val_{k}": v for k, v in metrics.items()}}
    loop.history.append(row)
    return row


def _sharded(model: nn.Module, plan: Plan, train_cfg: TrainConfig, place: distributed.Dist
             ) -> tuple[nn.Module, list[ParamGroup]]:
    """The module that trains and its parameter groups: `model` itself, or under
    `train.parallel=fsdp` on several processes a copy sharded with FSDP2 (`distributed.shard`).

    FSDP2 builds its sharded parameters once, from what trains at that moment, so a strategy
    that changes what trains mid-run is refused, on one process too (the same command must
    work on 1 or N processes).
    """
    if train_cfg.parallel != "fsdp":
        return model, plan.groups
    if plan.on_epoch_start is not None:
        raise WarmstartError("train.parallel=fsdp cannot run a strategy that changes what "
                             "trains mid-run (gradual; lp-ft with strategy.probe=epochs); use "
                             "train.parallel=ddp")
    if not place.active:
        return model, plan.groups
    return distributed.shard(model, plan.groups)


def _counterparts(modules: Sequence[nn.Module], model: nn.Module, trainee: nn.Module
                  ) -> Sequence[nn.Module]:
    """`modules` of `model` as the same-named modules of `trainee` (its sharded copy)."""
    if trainee is model:
        return modules
    names = {id(m): n for n, m in model.named_modules()}
    theirs = dict(trainee.named_modules())
    return [theirs[names[id(m)]] for m in modules if id(m) in names]


def _data_parallel(
    model: nn.Module, ddp: DistributedDataParallel | None, wrapped_ids: set[int],
    device: torch.device,
) -> tuple[DistributedDataParallel, set[int]]:
    """Wrap `model` in DDP, again whenever the set of trainable parameters changed.

    DDP registers the parameters that require grad when it is built: frozen ones (and the
    frozen parts of staged strategies) are never expected to get gradients, so no
    "unused parameters" error (Lightning #17212); gradual unfreezing and LP-FT get a fresh
    wrapper at the epoch that changes what trains.
    """
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    if ddp is not None and trainable == wrapped_ids:
        return ddp, wrapped_ids
    wrapped = DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None)
    return wrapped, trainable


def _best_row(loop: LoopState) -> dict[str, Any]:
    row = loop.history[loop.best_epoch - 1]
    return {k.removeprefix("val_"): v for k, v in row.items() if k.startswith("val_")}
