"""THE training loop: forward, loss, backward, clip, step, schedule; evaluate each epoch.

Every strategy runs through `fit`. A strategy's only levers are the `Plan` it returns (which
parameters train, at what lr scale) and its hooks; nothing here branches on its name.

Resuming is exact because every input to the future is either saved in the checkpoint
(weights, optimizer, counters, history, RNG) or a pure function of saved counters (the data
order of an epoch, the lr of a step, the strategy's per-epoch state).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from warmstart.config import OptimConfig, TrainConfig
from warmstart.data.batches import Batches
from warmstart.errors import WarmstartError
from warmstart.models.base import logits_of
from warmstart.strategies.base import ParamGroup, Plan, train_mode
from warmstart.tensors import move
from warmstart.training import distributed
from warmstart.training.callbacks import Callbacks, State
from warmstart.training.checkpoint import Checkpointer, restore_rng
from warmstart.training.evaluate import evaluate
from warmstart.training.optim import build_optimizer, make_schedule, set_lr


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
    optimizer: torch.optim.Optimizer = field(repr=False)
    stopped_early: bool = False


@dataclass
class Resume:
    """Where a checkpoint left the loop (see `checkpoint.py`)."""

    model_state: dict[str, torch.Tensor]
    state: dict[str, Any]  # optimizer, rng, loop counters
    best_state: dict[str, torch.Tensor] | None


def is_better(value: float, best: float | None, metric: str, min_delta: float = 0.0) -> bool:
    """Whether `value` improves on `best` by more than `min_delta` (loss down, the rest up)."""
    if best is None:
        return True
    return value < best - min_delta if metric == "loss" else value > best + min_delta


def should_stop(values: list[float], metric: str, patience: int | None,
                min_delta: float) -> bool:
    """Early stopping as a pure function of the validation history (so it survives resume):
    stop once `patience` epochs in a row have not improved on the best by `min_delta`."""
    if patience is None or not values:
        return False
    best, since = values[0], 0
    for v in values[1:]:
        if is_better(v, best, metric, min_delta):
            best, since = v, 0
        else:
            since += 1
    return since >= patience


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context for `precision` (fp32: none)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def fit(
    model: nn.Module,
    plan: Plan,
    train: Batches,
    val: Batches,
    *,
    optim_cfg: OptimConfig,
    train_cfg: TrainConfig,
    lr: float,
    device: torch.device,
    label_names: list[str],
    callbacks: Callbacks | None = None,
    penalty: Callable[[], torch.Tensor] | None = None,
    label_smoothing: float = 0.0,
    class_weights: torch.Tensor | None = None,
    precision: str = "fp32",
    checkpointer: Checkpointer | None = None,
    resume: Resume | None = None,
) -> FitResult:
    """Train `model` with the strategy's `plan`; keep the weights of the best validation epoch.

    Args:
        model: the network; `model(**inputs)` gives logits (or an object with `.logits`).
        plan: the strategy's parameter groups and hooks.
        train, val: batches of the training and validation splits.
        optim_cfg, train_cfg: optimizer/schedule and training settings.
        lr: the base learning rate (each group runs at lr * its lr_scale * schedule).
        device: where to train.
        label_names: class names, for the metrics.
        callbacks: progress display, metric logging and the like (read-only observers).
        penalty: optional regulariser added to the loss at each step.
        label_smoothing: cross-entropy label smoothing.
        class_weights: optional per-class loss weights.
        precision: "fp32", "bf16" or "fp16" (resolved by the caller; fp16 uses loss scaling).
        checkpointer: writes checkpoints every N steps and at each epoch end (every process
            holds one so all join the collective parts; only the main one writes).
        resume: continue from a checkpoint instead of starting fresh.
    """
    callbacks = callbacks or Callbacks([])
    place = distributed.current()
    if plan.solve is not None:
        return _solve(model, plan, train, val, device, label_names)
    if plan.calibrate is not None and resume is None:  # on resume the optimizer has the scales
        plan.calibrate(train, device)
    if resume is not None:
        model.load_state_dict(resume.model_state)  # before any sharded copy is made of it
    trainee, groups = _sharded(model, plan, train_cfg, place)
    optimizer = build_optimizer(groups, optim_cfg, lr)
    steps_per_epoch = len(train)
    total_steps = steps_per_epoch * train_cfg.epochs
    schedule = make_schedule(optim_cfg, total_steps)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    params = [p for g in groups for p in g.params]
    weight = class_weights.to(device) if class_weights is not None else None

    # Loop state: everything a checkpoint must carry besides weights, optimizer and RNG.
    loop: dict[str, Any] = {"epoch": 0, "epoch_step": 0, "step": 0, "history": [],
                            "best_value": None, "best_epoch": 0, "train_seconds": 0.0,
                            "samples": 0, "loss_sum": 0.0, "loss_count": 0, "correct": 0,
                            "step_size": train.step_size}
    best_state: dict[str, torch.Tensor] = {}
    if resume is not None:
        optimizer.load_state_dict(
            distributed.shard_optimizer_state(optimizer, resume.state["optimizer"]))
        if "scaler" in resume.state:
            scaler.load_state_dict(resume.state["scaler"])
        loop.update(resume.state["loop"], step_size=train.step_size)
        if not place.is_main:  # the checkpoint holds the sums of all ranks; count them once
            loop.update(loss_sum=0.0, loss_count=0, correct=0)
        best_state = resume.best_state or {}
        restore_rng(resume.state, place)
    else:
        torch.manual_seed(train_cfg.seed)  # one seed drives dropout inside the model

    def checkpoint() -> None:
        # Collective calls first (every rank takes part), then the main rank writes.
        saved = dict(loop)
        saved["loss_sum"], saved["loss_count"], saved["correct"] = distributed.sum_all(
            place, [loop["loss_sum"], loop["loss_count"], loop["correct"]])
        rngs = distributed.gather_all(place, torch.get_rng_state())
        weights = distributed.full_state(trainee)
        optimizer_state = distributed.full_optimizer_state(optimizer)
        if checkpointer is not None:
            checkpointer.save(loop["step"], weights, optimizer_state, saved,
                              {"scaler": scaler.state_dict(), "rng_by_rank": rngs})

    state = State(epochs=train_cfg.epochs, total_steps=total_steps,
                  steps_per_epoch=steps_per_epoch, metric=train_cfg.metric,
                  step=loop["step"], best_value=loop["best_value"],
                  best_epoch=loop["best_epoch"])
    callbacks.fire("on_fit_start", state)
    stopped = should_stop([h[f"val_{train_cfg.metric}"] for h in loop["history"]],
                          train_cfg.metric, train_cfg.early_stopping, train_cfg.min_delta)
    ddp: DistributedDataParallel | None = None
    ddp_trainable: set[int] = set()

    while loop["epoch"] < train_cfg.epochs and not stopped:
        epoch = loop["epoch"]
        if plan.on_epoch_start is not None:
            plan.on_epoch_start(epoch)
        train_mode(trainee, _counterparts(plan.eval_modules, model, trainee))
        if place.active and trainee is model:  # a sharded copy averages its own gradients
            ddp, ddp_trainable = _data_parallel(model, ddp, ddp_trainable, device)
        runner = ddp if ddp is not None else trainee
        state = state.update(epoch=epoch + 1)
        epoch_start, seconds_before = time.perf_counter(), loop["train_seconds"]
        for step_size, micros in train.steps(epoch, skip=loop["epoch_step"]):
            for j, (_, batch) in enumerate(micros):
                # Gradients are averaged across processes once per step, on the last micro.
                last = j == len(micros) - 1
                sync = contextlib.nullcontext() if last else distributed.no_sync(runner)
                batch = move(batch, device)
                labels = batch.pop("labels")
                with sync:
                    with autocast(device, precision):
                        logits = logits_of(runner(**batch))
                    loss = F.cross_entropy(logits.float(), labels, weight=weight,
                                           label_smoothing=label_smoothing)
                    if penalty is not None:
                        loss = loss + penalty()
                    value = loss.item()
                    if not math.isfinite(value):
                        raise WarmstartError(
                            f"the loss became {value} at step {loop['step'] + 1} (epoch "
                            f"{epoch + 1}); the last good checkpoint is kept; lower optim.lr "
                            "or set optim.clip_norm")
                    scaler.scale(loss / len(micros)).backward()
                loop["loss_sum"] += value * len(labels)
                loop["loss_count"] += len(labels)
                loop["correct"] += (logits.argmax(dim=1) == labels).sum().item()
            scaler.unscale_(optimizer)
            grads = [p for p in params if p.grad is not None]
            if optim_cfg.clip_value is not None:
                torch.nn.utils.clip_grad_value_(grads, optim_cfg.clip_value, foreach=True)
            if optim_cfg.clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(grads, optim_cfg.clip_norm, foreach=True)
            factor = schedule(loop["step"])
            set_lr(optimizer, lr, factor)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            loop["step"] += 1
            loop["epoch_step"] += 1
            loop["samples"] += step_size
            loop["train_seconds"] = seconds_before + time.perf_counter() - epoch_start
            state = state.update(step=loop["step"], loss=value, lr=lr * factor,
                                 samples=loop["samples"], train_seconds=loop["train_seconds"])
            callbacks.fire("on_step_end", state)
            every = checkpointer.every_steps if checkpointer is not None else 0
            if every and loop["step"] % every == 0 and loop["epoch_step"] < steps_per_epoch:
                checkpoint()

        metrics = evaluate(trainee, val, device, label_names)
        loss_sum, count, correct = distributed.sum_all(
            place, [loop["loss_sum"], loop["loss_count"], loop["correct"]])
        row = {"epoch": epoch + 1, "step": loop["step"],
               "train_loss": loss_sum / max(1, count),
               # Running accuracy over the epoch's batches (dropout on, weights moving): a
               # cheap proxy for training-set fit that needs no extra pass over the data.
               "train_accuracy": correct / max(1, count),
               **{f"val_{k}": v for k, v in metrics.items()}}
        loop["history"].append(row)
        if is_better(metrics[train_cfg.metric], loop["best_value"], train_cfg.metric):
            # CPU copies: the best epoch's weights survive later, worse epochs.
            best_state = {k: v.detach().to("cpu", copy=True)
                          for k, v in distributed.full_state(trainee).items()}
            loop["best_value"], loop["best_epoch"] = metrics[train_cfg.metric], epoch + 1
            if checkpointer is not None:
                checkpointer.save_best(best_state)
        loop.update(epoch=epoch + 1, epoch_step=0, loss_sum=0.0, loss_count=0, correct=0)
        stopped = should_stop([h[f"val_{train_cfg.metric}"] for h in loop["history"]],
                              train_cfg.metric, train_cfg.early_stopping, train_cfg.min_delta)
        state = state.update(epoch_metrics=row, best_value=loop["best_value"],
                             best_epoch=loop["best_epoch"])
        callbacks.fire("on_epoch_end", state)
        checkpoint()

    callbacks.fire("on_fit_end", state)
    model.to(device)  # back from the CPU if a sharded copy trained (the caller loads best_state)
    return FitResult(
        best_epoch=loop["best_epoch"], best_metrics=_best_row(loop), history=loop["history"],
        steps=loop["step"], train_seconds=loop["train_seconds"], train_samples=loop["samples"],
        best_state=best_state, optimizer=optimizer, stopped_early=stopped,
    )


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
                             "trains mid-run (gradual, lp-ft); use train.parallel=ddp")
    if not place.active:
        return model, plan.groups
    return distributed.shard(model, plan.groups)


def _counterparts(modules: list[nn.Module], model: nn.Module, trainee: nn.Module
                  ) -> list[nn.Module]:
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


def _best_row(loop: dict[str, Any]) -> dict[str, Any]:
    row = loop["history"][loop["best_epoch"] - 1]
    return {k.removeprefix("val_"): v for k, v in row.items() if k.startswith("val_")}


def _solve(model: nn.Module, plan: Plan, train: Batches, val: Batches, device: torch.device,
           label_names: list[str]) -> FitResult:
    """A closed-form fit (the plan's `solve`) in place of epochs of gradient steps."""
    start = time.perf_counter()
    plan.solve(train, device)  # type: ignore[misc]
    seconds = time.perf_counter() - start
    metrics = evaluate(model, val, device, label_names)
    row = {"epoch": 1, "step": 0, "train_loss": float("nan"),
           **{f"val_{k}": v for k, v in metrics.items()}}
    state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    return FitResult(best_epoch=1, best_metrics=metrics, history=[row], steps=0,
                     train_seconds=seconds, train_samples=train.num_examples, best_state=state,
                     optimizer=build_optimizer(plan.groups, OptimConfig(), 0.0))
