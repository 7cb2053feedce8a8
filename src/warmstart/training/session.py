"""`setup(cfg) -> Session`: a config turned into everything a training run needs.

Data read and split, model built, the strategy's plan (calibrated where it measures its lr
scales), the loss, the batches, device and precision: one function, used by `run.train`, the
benchmarks and the tests, so none of them rebuilds the pipeline by hand. It writes nothing:
every check a user can fail (names, files, columns, labels, options) runs here, before a
run directory is touched.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from warmstart.config import RunConfig
from warmstart.data import load_task
from warmstart.data.augment import Augment, make_augment
from warmstart.data.base import Examples, TaskData
from warmstart.data.batches import Batches
from warmstart.errors import WarmstartError, did_you_mean
from warmstart.models import build_model
from warmstart.models.base import Adapter, start_head_bias
from warmstart.strategies import STRATEGIES, STRATEGY_DEFAULTS, Plan
from warmstart.tasks import Task
from warmstart.training import distributed
from warmstart.training.cache import head_only
from warmstart.training.checkpoint import Resume
from warmstart.training.distill_loss import distill_loss
from warmstart.training.evaluate import evaluate, predict_logits
from warmstart.training.loop import FitSettings
from warmstart.training.loss import LossFn, make_loss
from warmstart.training.regularize import make_penalty

log = logging.getLogger("warmstart")


# Epochs when neither the config nor the strategy says: 2-4 is the usual fine-tuning range,
# and 2 keeps the default job (full fine-tuning of minilm-l6 on bbc-news) within minutes.
EPOCHS = 2


class Teacher(Protocol):
    """What a distillation adds to a run (`warmstart.distillation` builds it from a teacher run,
    which this layer cannot read): the student, and the teacher's outputs as soft targets."""

    def student(self, task: Task) -> Adapter | None:
        """A student made from the teacher (a layer-dropped copy), or None: build
        `model.name` as usual."""

    def targets(self, data: TaskData, device: torch.device) -> tuple[Examples, np.ndarray]:
        """The examples to train on (the training split, then any unlabelled ones) and their
        `targets` rows (`distill_loss.pack_targets`)."""


@dataclass(frozen=True)
class Chosen:
    """The learning rate and epochs a run uses, and where each came from (printed at start)."""

    lr: float
    lr_from: str
    epochs: int
    epochs_from: str
    head_lr: float | None = None
    head_lr_from: str = ""

    def describe(self) -> str:
        head = (f" | head lr {self.head_lr:g} ({self.head_lr_from})"
                if self.head_lr is not None else "")
        return (f"lr {self.lr:g} ({self.lr_from}){head} | epochs {self.epochs} "
                f"({self.epochs_from})")


def choose(cfg: RunConfig, kind: str, model_lr: float, model_head_lr: float | None = None
           ) -> Chosen:
    """`optim.lr` and `train.epochs` as given, else the strategy's defaults for this kind of
    model (`register_strategy(defaults=...)`), else the model's lr and `EPOCHS`; the head's
    lr as given, else the model's own for its head (a bi-encoder's two-weight head)."""
    mine = STRATEGY_DEFAULTS.get(cfg.strategy.name, {}).get(kind)
    name = cfg.strategy.name
    why = f"; {mine.why}" if mine is not None and mine.why else ""
    if cfg.optim.lr is not None:
        lr, lr_from = cfg.optim.lr, "optim.lr"
    elif mine is not None and mine.lr is not None:
        lr, lr_from = mine.lr, f"{name}'s default for {kind} models{why}"
    else:
        lr, lr_from = model_lr, f"the model's default for {name}"
    if cfg.train.epochs is not None:
        epochs, epochs_from = cfg.train.epochs, "train.epochs"
    elif mine is not None and mine.epochs is not None:
        epochs, epochs_from = mine.epochs, f"{name}'s default for {kind} models"
    else:
        epochs, epochs_from = EPOCHS, "the default"
    # No strategy declares a head lr of its own: on banking77 a head at 1e-3 beside a backbone
    # at 5e-5 scored 0.799 against 0.858 at one shared lr (bench/README.md).
    head_lr, head_lr_from = cfg.optim.head_lr, "optim.head_lr"
    if head_lr is None and model_head_lr is not None:
        head_lr, head_lr_from = model_head_lr, "the model's default for its head"
    return Chosen(lr, lr_from, epochs, epochs_from, head_lr, head_lr_from)


@dataclass
class Session:
    """A run put together, nothing trained or written yet.

    Attributes:
        cfg: the run's config, with `optim.lr` and `train.epochs` as chosen (never null).
        place: this process's rank among the run's processes.
        device, precision: where and in what precision it trains.
        data: the task's splits and label names.
        adapter: the adapter the plan trains (for lora/ia3 the peft-wrapped one).
        plan: the strategy's plan, lr scales final (calibrated unless resuming).
        lr: the base learning rate.
        chosen: the learning rate and epochs, and where they came from.
        loss_fn: the loss `fit` minimises (task loss, label smoothing, class weights,
            regularisers).
        train, val, test: the batches of each split (test None when it is empty).
        accumulate: micro-batches per optimizer step.
        class_weights: the loss weight of each class (`train.class_weights`), or None.
        notes: warnings about the setup to print at start (a max_length cut to the model's
            limit, an input column that names the label).
        augment: what changes the training batches (`augment.*`), or None.
    """

    cfg: RunConfig
    place: distributed.Dist
    device: torch.device
    precision: str
    data: TaskData
    adapter: Adapter
    plan: Plan
    lr: float
    chosen: Chosen
    loss_fn: LossFn
    train: Batches
    val: Batches
    test: Batches | None
    accumulate: int
    class_weights: torch.Tensor | None = None
    notes: list[str] = dataclasses.field(default_factory=list)
    augment: Augment | None = None

    @property
    def model(self) -> nn.Module:
        return self.adapter.module

    @property
    def settings(self) -> FitSettings:
        return FitSettings(self.cfg.optim, self.cfg.train, self.lr, self.device, self.precision)

    @property
    def task(self) -> Task:
        return self.data.task

    def score(self, model: nn.Module, batches: Batches, full: bool = False) -> dict[str, Any]:
        """The metrics of `model` on `batches` (with `full`, the per-class report too).

        Multilabel thresholds are those fitted by `final_validation` (0.5 before); validation
        during training is scored through `validation_score`, which fits them first.
        """
        return evaluate(model, batches, self.device, self.task, full=full)

    def validation_score(self, model: nn.Module, batches: Batches) -> dict[str, Any]:
        """The per-epoch validation metrics, at the decision rule fitted on that validation
        split (multilabel thresholds; the same rule the final model will use)."""
        logits, labels = predict_logits(model, batches, self.device)
        return self.task.tuned(logits, labels).metrics(logits, labels)

    def final_validation(self, model: nn.Module) -> dict[str, Any]:
        """Fit the task's decision rule on the validation split for `model` (the kept
        weights), keep it for test scoring and saving, and return the full validation
        metrics at it (one pass over the split for both)."""
        logits, labels = predict_logits(model, self.val, self.device)
        self.data.task = self.task.tuned(logits, labels)
        return self.task.metrics(logits, labels, full=True)

    def batches(self, split: Examples) -> Batches:
        """Evaluation batches of any examples of this task."""
        return batches_for(self.adapter, split, self.cfg, train=False, place=self.place)


def setup(cfg: RunConfig, *, place: distributed.Dist | None = None,
          device_name: str | None = None, resume: Resume | None = None,
          teacher: Teacher | None = None) -> Session:
    """Put the run `cfg` describes together.

    Args:
        cfg: the run's config.
        place: this process's place among several (default: the current one, or a single
            process outside torchrun).
        device_name: the device to use (default `train.device`; `distributed.setup` picks
            each process's GPU under torchrun).
        resume: the checkpoint the run continues, if any: its global batch is kept, and a
            strategy's calibration is skipped (the checkpoint's optimizer has the scales).
        teacher: a distillation's teacher (`distill.teacher`): the student and soft targets.

    Raises:
        WarmstartError: anything the user can get wrong: names, files, columns, options.
    """
    if (teacher is None) != (cfg.distill.teacher is None):
        raise WarmstartError("config key 'distill.teacher' is set: run the config with "
                             "`warmstart distill`, or set distill.teacher=null to train")
    place = place or distributed.current()
    device = resolve_device(device_name or cfg.train.device)
    precision = resolve_precision(cfg.train.precision, device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.train.seed)
    split_seed = cfg.data.split_seed if cfg.data.split_seed is not None else cfg.train.seed
    data = load_task(cfg.data, split_seed, cfg.task)
    metric = metric_for(cfg, data.task)
    seed_everything(cfg.train.seed)  # the new head's initialisation follows the seed
    adapter = teacher.student(data.task) if teacher is not None else None
    if adapter is not None:
        adapter.seed = cfg.train.seed
    if adapter is None:  # a new head starts at the training labels' rates
        adapter = build_model(cfg.model, data.task.num_outputs, seed=cfg.train.seed)
        start_head_bias(adapter, data.task.head_bias(data.train.labels))
        if hasattr(adapter.module, "start_score"):  # a bi-encoder's head reads a cosine
            adapter.module.start_score(data.task.cosine_head())
    if adapter.kind != data.kind:
        raise WarmstartError(f"model {cfg.model.name!r} reads {adapter.kind} but data "
                             f"{cfg.data.name!r} holds {data.kind}; pick a matching pair")
    notes = [note for note in (_length_note(cfg, adapter), _leak_note(cfg, data)) if note]
    used = adapter.extra.get("max_length")
    if used is not None and used != cfg.model.max_length:  # the value used is the one recorded
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, max_length=used))
    plan = STRATEGIES.get(cfg.strategy.name)(adapter, cfg.strategy.options)
    if teacher is None and plan.trains_only(adapter.head) and hasattr(adapter.module,
                                                                       "plain_start"):
        adapter.module.plain_start()  # a probe: see PooledClassifier.plain_start
    adapter = plan.adapter or adapter
    adapter.module.to(device)
    chosen = choose(cfg, adapter.kind, adapter.default_lr, adapter.extra.get("head_lr"))
    lr = chosen.lr
    cfg = dataclasses.replace(
        cfg, optim=dataclasses.replace(cfg.optim, lr=chosen.lr, head_lr=chosen.head_lr),
        train=dataclasses.replace(cfg.train, epochs=chosen.epochs, metric=metric))
    weights = data.task.class_weights(data.train.labels, cfg.train.class_weights)
    # Anchored to the pretrained weights, before any checkpoint is loaded.
    penalty = make_penalty(plan, adapter.head, cfg.regularize)
    loss_fn = make_loss(data.task, label_smoothing=cfg.regularize.label_smoothing,
                        class_weights=weights, penalty=None if teacher else penalty)
    examples, targets = data.train, None
    if teacher is not None:
        if plan.solver is not None:  # a closed-form fit reads labels, never a loss
            raise WarmstartError(f"strategy {cfg.strategy.name!r} fits the head in closed "
                                 "form on the labels and cannot learn from a teacher; pick a "
                                 "strategy trained by gradient (e.g. full, head, lora)")
        loss_fn = distill_loss(data.task, loss_fn, temperature=cfg.distill.temperature,
                               alpha=cfg.distill.alpha, penalty=penalty)
        examples, targets = teacher.targets(data, device)
    accumulate = accumulation_for(cfg, place, resume)
    train = batches_for(adapter, examples, cfg, train=True, place=place, accumulate=accumulate,
                        targets=targets)
    val = batches_for(adapter, data.validation, cfg, train=False, place=place)
    plain = make_loss(data.task)  # no penalty, no teacher: what a strategy measures with
    if plan.prefit is not None and resume is None:  # the checkpoint holds what it fitted
        notes.append(plan.prefit(adapter.module, train, val, device, plain))
    if plan.calibrate is not None and resume is None:  # how much the task asks of each group
        plan = plan.with_scales(plan.calibrate(adapter.module, train, device, plain))
    if chosen.head_lr is not None:
        plan = plan.with_head_scale(chosen.head_lr / lr)
    augment = make_augment(cfg.augment, adapter, data.task.num_outputs, cfg.train.seed,
                           backbone_trains=not head_only(adapter, plan))
    if augment is not None and plan.solver is not None:
        raise WarmstartError(f"strategy {cfg.strategy.name!r} fits its classifier in closed "
                             "form on features computed once, so augment.* cannot apply; "
                             "set augment.recipe=none and leave the other augment keys unset")
    return Session(
        cfg=cfg, place=place, device=device, precision=precision, data=data, adapter=adapter,
        plan=plan, lr=lr, chosen=chosen, loss_fn=loss_fn, train=train,
        val=val,
        test=batches_for(adapter, data.test, cfg, train=False, place=place)
        if len(data.test) else None,
        accumulate=accumulate, class_weights=weights, notes=notes, augment=augment,
    )


def _length_note(cfg: RunConfig, adapter: Adapter) -> str:
    """A warning when `model.max_length` is above what the model can read."""
    used = adapter.extra.get("max_length")
    if used is None or used >= cfg.model.max_length:
        return ""
    return (f"warning: model.max_length {cfg.model.max_length} is above {cfg.model.name}'s "
            f"limit of {used} tokens; texts are cut to {used} (the value recorded in the model "
            "card and saved model)")


def _leak_note(cfg: RunConfig, data: TaskData) -> str:
    """A warning when the input column names the label: one distinct text per class."""
    if data.kind != "text" or data.task.type != "classification":
        return ""
    seen: dict[Any, int] = {}
    for text, label in zip(data.train.inputs, data.train.labels):
        if seen.setdefault(text, int(label)) != label or len(seen) > len(data.label_names):
            return ""
    return (f"warning: every text in data.text_column {cfg.data.text_column!r} is one of "
            f"{len(seen)} values, each always with the same label: that column names the "
            "label rather than describing the example; check data.text_column")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) from the run's one seed."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """`auto` -> cuda when present, else cpu; anything else as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise WarmstartError(f"config key 'train.device': {name!r} is not a device "
                             "(use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise WarmstartError("config key 'train.device': cuda was asked for but no GPU is "
                             "visible; use train.device=cpu")
    return device


def resolve_precision(name: str, device: torch.device) -> str:
    """`auto` -> bf16 on a GPU that supports it, else fp32; warn where bf16 will crawl."""
    if name == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return "bf16" if cuda_bf16 else "fp32"
    if name in ("bf16", "fp16") and device.type == "cpu" and not cpu_has_native_bf16():
        log.warning("train.precision=%s on a CPU without native bf16/fp16 support: matmuls "
                    "run far slower than fp32 here (use train.precision=fp32)", name)
    return name


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def batches_for(adapter: Adapter, split: Examples, cfg: RunConfig, *, train: bool,
                place: distributed.Dist, accumulate: int = 1,
                targets: np.ndarray | None = None) -> Batches:
    """Encode a split once and serve it in batches (length-grouped for text training), with
    per-example soft `targets` for the loss where given (distillation)."""
    encoded = adapter.encode(split.inputs)
    lengths = adapter.lengths(encoded) if adapter.lengths is not None else None
    if train and not cfg.train.group_by_length:
        lengths = None
    return Batches(encoded, split.labels, adapter.collate,
                   cfg.train.batch_size if train else cfg.train.eval_batch_size,
                   shuffle=train, seed=cfg.train.seed, lengths=lengths,
                   accumulate=accumulate if train else 1, rank=place.rank, world=place.world,
                   targets=targets)


def accumulation_for(cfg: RunConfig, place: distributed.Dist, resume: Resume | None) -> int:
    """Micro-batches per step; a resumed run keeps the checkpoint's global batch even when
    it runs on another number of processes (so it sees the same step batches)."""
    if resume is None:
        return cfg.train.accumulate
    step_size = resume.loop.step_size
    per_step = cfg.train.batch_size * place.world
    if not step_size or step_size == per_step * cfg.train.accumulate:
        return cfg.train.accumulate
    if step_size % per_step:
        raise WarmstartError(
            f"the checkpoint's global batch of {step_size} cannot be split into {place.world} "
            f"processes x train.batch_size {cfg.train.batch_size}; resume with a process "
            "count that divides it")
    log.warning("resuming on %d processes: train.accumulate %d -> %d keeps the global batch "
                "of %d", place.world, cfg.train.accumulate, step_size // per_step, step_size)
    return step_size // per_step


def metric_for(cfg: RunConfig, task: Task) -> str:
    """`train.metric` checked against the task's metrics (auto: the task's natural one)."""
    if cfg.train.metric == "auto":
        return task.natural_metric
    if cfg.train.metric not in task.metric_names:
        raise WarmstartError(
            f"config key 'train.metric': {cfg.train.metric!r} is not a {task.type} metric"
            f"{did_you_mean(cfg.train.metric, list(task.metric_names))}; use one of "
            f"{', '.join(task.metric_names)} (or auto: {task.natural_metric})")
    if task.type == "regression" and cfg.regularize.label_smoothing:
        raise WarmstartError("regularize.label_smoothing does not apply to regression; "
                             "set it to 0")
    return cfg.train.metric
