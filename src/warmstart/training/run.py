"""One training run, from a config to a finished run directory.

Order matters for failures: every check a user can fail (names, files, columns, labels) runs
before the run directory is touched, and `summary.json` is written last, so a failed run never
leaves a directory that looks complete.
"""

from __future__ import annotations

import logging
import os
import platform
import random
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

import warmstart
from warmstart.config import RunConfig, dump_config
from warmstart.data import load_task
from warmstart.data.base import Examples
from warmstart.data.batches import Batches
from warmstart.errors import WarmstartError
from warmstart.files import atomic_dir, atomic_write_json, atomic_write_text, commit_dir
from warmstart.models import build_model
from warmstart.models.base import Adapter
from warmstart.report.card import write_model_card
from warmstart.strategies import STRATEGIES
from warmstart.training import distributed
from warmstart.training.cache import prepare
from warmstart.training.callbacks import Callbacks, MetricsLog, ProgressDisplay, log_sinks
from warmstart.training.checkpoint import (
    SUMMARY,
    Checkpointer,
    is_finished,
    load_best,
    load_checkpoint,
)
from warmstart.training.distributed import Dist
from warmstart.training.evaluate import evaluate
from warmstart.training.loop import Resume, fit
from warmstart.training.optim import group_lrs
from warmstart.training.regularize import make_penalty

log = logging.getLogger("warmstart")


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


def run_dir_of(cfg: RunConfig) -> Path:
    """`<output.dir>/<output.name or model-data-strategy>`."""
    if cfg.output.name:
        return Path(cfg.output.dir) / cfg.output.name
    slug = "-".join(Path(x).stem or x for x in (cfg.model.name, cfg.data.name, cfg.strategy.name))
    return Path(cfg.output.dir) / slug.replace(":", "_").replace("/", "_")


def batches_for(adapter: Adapter, split: Examples, cfg: RunConfig, *, train: bool,
                place: Dist, accumulate: int = 1) -> Batches:
    """Encode a split once and serve it in batches (length-grouped for text training)."""
    encoded = adapter.encode(split.inputs)
    lengths = adapter.lengths(encoded) if adapter.lengths is not None else None
    if train and not cfg.train.group_by_length:
        lengths = None
    return Batches(encoded, split.labels, adapter.collate,
                   cfg.train.batch_size if train else cfg.train.eval_batch_size,
                   shuffle=train, seed=cfg.train.seed, lengths=lengths,
                   accumulate=accumulate if train else 1, rank=place.rank, world=place.world)


def accumulation_for(cfg: RunConfig, place: Dist, resume: Resume | None) -> int:
    """Micro-batches per step; a resumed run keeps the checkpoint's global batch even when
    it runs on another number of processes (so it sees the same step batches)."""
    if resume is None:
        return cfg.train.accumulate
    step_size = resume.state["loop"].get("step_size")
    per_step = cfg.train.batch_size * place.world
    if step_size is None or step_size == per_step * cfg.train.accumulate:
        return cfg.train.accumulate
    if step_size % per_step:
        raise WarmstartError(
            f"the checkpoint's global batch of {step_size} cannot be split into {place.world} "
            f"processes x train.batch_size {cfg.train.batch_size}; resume with a process "
            "count that divides it")
    log.warning("resuming on %d processes: train.accumulate %d -> %d keeps the global batch "
                "of %d", place.world, cfg.train.accumulate, step_size // per_step, step_size)
    return step_size // per_step


TRAIN_SAMPLE_NOTE = "a seeded sample of the training split, as large as the validation split"


def train_sample(split: Examples, size: int, seed: int) -> Examples:
    """A seeded sample of the training split for measuring fit with the best weights.

    As large as the validation split (at least 256): the train-minus-validation gap then
    compares like with like, at a fraction of the cost of a pass over all training data.
    """
    size = min(len(split), max(size, 256))
    keep = np.sort(np.random.default_rng(seed).choice(len(split), size, replace=False))
    return Examples([split.inputs[i] for i in keep], split.labels[keep])


def count_params(module: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return trainable, total


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this run: GPU allocations on CUDA, else the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


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


def class_weights_for(cfg: RunConfig, labels: np.ndarray, n: int) -> torch.Tensor | None:
    """Loss weights per class: none, `balanced` (n / (k * count), as scikit-learn), or given."""
    spec = cfg.train.class_weights
    if spec == "none":
        return None
    if spec == "balanced":
        counts = np.bincount(labels, minlength=n).astype(np.float64)
        return torch.tensor(len(labels) / (n * np.maximum(counts, 1)), dtype=torch.float32)
    if len(spec) != n:
        raise WarmstartError(f"config key 'train.class_weights': {len(spec)} weights given for "
                             f"{n} classes; give one per class in label order")
    return torch.tensor(spec, dtype=torch.float32)


def _resume_point(run_dir: Path) -> Resume | None:
    """The latest checkpoint of a run, if it has one."""
    checkpoint = Checkpointer(run_dir, 0, 1).latest()
    if checkpoint is None:
        return None
    weights, state = load_checkpoint(checkpoint)
    return Resume(weights, state, load_best(run_dir))


def _start_run_dir(cfg: RunConfig, run_dir: Path, resume: bool) -> Resume | None:
    """Create (or, resuming, reopen) the run directory; return what to resume from."""
    point = _resume_point(run_dir) if resume else None
    if point is not None:
        metrics = run_dir / "metrics.jsonl"
        if metrics.exists():  # drop lines logged after the checkpoint: they are replayed
            with metrics.open("r+b") as f:
                f.truncate(point.state["metrics_bytes"])
        return point
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a failed or overwritten run, or nothing to resume: start clean
    run_dir.mkdir(parents=True)
    atomic_write_text(run_dir / "config.yaml", dump_config(cfg))
    atomic_write_json(run_dir / "environment.json", environment(cfg.train.seed))
    return None


def environment(seed: int) -> dict[str, Any]:
    """Seed, library versions and machine, stored with every run for reproducibility."""
    import sklearn
    import transformers

    return {"seed": seed, "warmstart": warmstart.__version__, "torch": torch.__version__,
            "transformers": transformers.__version__, "scikit-learn": sklearn.__version__,
            "numpy": np.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "processor": platform.processor(),
            "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def train(cfg: RunConfig, *, quiet: bool = False, resume: bool = False) -> dict[str, Any]:
    """Fine-tune as `cfg` says; write the run directory; return the summary.

    With `resume`, continue the run directory's latest checkpoint exactly (a run with no
    checkpoint yet starts over with the same config).
    """
    place, device_name = distributed.setup(cfg.train.device)
    try:
        return _train(cfg, place, device_name, quiet=quiet, resume=resume)
    finally:
        distributed.teardown()


def _train(cfg: RunConfig, place: Dist, device_name: str, *, quiet: bool,
           resume: bool) -> dict[str, Any]:
    quiet = quiet or not place.is_main  # one voice: only the main process talks and writes
    console = Console(stderr=True, quiet=quiet)
    strategy = STRATEGIES.get(cfg.strategy.name)  # fail fast on a bad name
    run_dir = run_dir_of(cfg)
    if is_finished(run_dir) and (resume or not cfg.output.overwrite):
        raise WarmstartError(f"{run_dir} already holds a finished run; pass --overwrite "
                             "(or output.overwrite=true) or choose output.name")
    device = resolve_device(device_name)
    precision = resolve_precision(cfg.train.precision, device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.train.seed)
    started = time.perf_counter()

    split_seed = cfg.data.split_seed if cfg.data.split_seed is not None else cfg.train.seed
    data = load_task(cfg.data, split_seed)
    seed_everything(cfg.train.seed)  # the new head's initialisation follows the seed
    adapter = build_model(cfg.model, len(data.label_names))
    if adapter.kind != data.kind:
        raise WarmstartError(f"model {cfg.model.name!r} reads {adapter.kind} but data "
                             f"{cfg.data.name!r} holds {data.kind}; pick a matching pair")
    plan = strategy(adapter, cfg.strategy)
    model = adapter.module.to(device)
    lr = cfg.optim.lr if cfg.optim.lr is not None else adapter.default_lr
    weights = class_weights_for(cfg, data.train.labels, len(data.label_names))
    # Anchored to the pretrained weights, before any checkpoint is loaded.
    penalty = make_penalty(plan, adapter.head, cfg.regularize)

    # Everything the user could get wrong has been checked: now the run directory.
    if place.is_main:
        resume_from = _start_run_dir(cfg, run_dir, resume)
    distributed.barrier(place)  # the run directory is ready (and truncated on resume)
    if not place.is_main:
        resume_from = _resume_point(run_dir) if resume else None
    accumulate = accumulation_for(cfg, place, resume_from)
    console.print(f"[bold]warmstart {warmstart.__version__}[/] -> {run_dir}"
                  + (f" (resuming at step {resume_from.state['loop']['step']})"
                     if resume_from else ""))
    console.print(dump_config(cfg), highlight=False, markup=False)

    train_b = batches_for(adapter, data.train, cfg, train=True, place=place,
                          accumulate=accumulate)
    val_b = batches_for(adapter, data.validation, cfg, train=False, place=place)
    test_b = (batches_for(adapter, data.test, cfg, train=False, place=place)
              if len(data.test) else None)
    trainable, total = count_params(model)
    console.print(
        f"data {data.source}: {len(data.train)} train / {len(data.validation)} val / "
        f"{len(data.test)} test, {len(data.label_names)} classes | strategy {cfg.strategy.name}: "
        f"{plan.notes} | trainable {trainable:,} of {total:,} ({trainable / total:.1%}) | "
        f"global batch {train_b.step_size} = {cfg.train.batch_size} x {accumulate} accumulated "
        f"x {place.world} processes | {device} {precision}"
    )
    console.print("peak lr per group: " + ", ".join(
        f"{g.name} {lr * g.lr_scale:.2e}" for g in plan.groups)
        + (" (discriminative scales follow after calibration)" if plan.calibrate else ""),
        highlight=False)

    observers: list[Any] = []
    if place.is_main:
        observers += [MetricsLog(run_dir / "metrics.jsonl", cfg.log.every),
                      *log_sinks(cfg.log.to, run_dir, cfg)]
    if not (quiet or cfg.log.quiet):
        observers.append(ProgressDisplay(console))
    spill_dir = run_dir / "cache"
    try:
        ready = prepare(adapter, plan, train_b, val_b, device, cfg.train, spill_dir)
        if ready.notes:
            console.print(ready.notes, highlight=False)
        with ready.replay:
            result = fit(ready.model, plan, ready.train, ready.val, optim_cfg=cfg.optim,
                         train_cfg=cfg.train, lr=lr, device=device, label_names=data.label_names,
                         callbacks=Callbacks(observers), penalty=penalty,
                         label_smoothing=cfg.regularize.label_smoothing, class_weights=weights,
                         precision=precision, resume=resume_from,
                         checkpointer=Checkpointer(run_dir, cfg.checkpoint.every_steps,
                                                   cfg.checkpoint.keep_last,
                                                   write=place.is_main))
    finally:
        shutil.rmtree(spill_dir, ignore_errors=True)
    lrs = group_lrs(result.optimizer, lr)
    cache_seconds = ready.seconds

    ready.model.load_state_dict(result.best_state)  # report and save the best epoch
    val_metrics = evaluate(model, val_b, device, data.label_names, full=True)
    test_metrics = (evaluate(model, test_b, device, data.label_names, full=True)
                    if test_b is not None else {})
    train_metrics = evaluate(model, batches_for(adapter, train_sample(data.train, len(
        data.validation), cfg.train.seed), cfg, train=False, place=place), device,
        data.label_names)
    train_seconds = result.train_seconds + cache_seconds  # caching is part of training
    if not place.is_main:
        return {}
    if cfg.output.save_model:
        tmp = atomic_dir(run_dir / "model")
        adapter.save(tmp, data.label_names)
        commit_dir(tmp, run_dir / "model")

    summary = {
        "run": str(run_dir),
        "model": cfg.model.name, "data": data.source, "strategy": cfg.strategy.name,
        "labels": data.label_names,
        "examples": {"train": len(data.train), "validation": len(data.validation),
                     "test": len(data.test)},
        "best_epoch": result.best_epoch, "epochs": len(result.history),
        "stopped_early": result.stopped_early, "steps": result.steps,
        "validation": val_metrics, "test": test_metrics,
        "train": {**train_metrics, "examples": TRAIN_SAMPLE_NOTE},
        "final_epoch": result.history[-1],
        "history": result.history,
        "params": {"trainable": trainable, "total": total, "fraction": trainable / total},
        "lr": {"base": lr, "groups": lrs},
        "train_seconds": train_seconds, "cache_seconds": cache_seconds,
        "wall_seconds": time.perf_counter() - started,
        "samples_per_second": result.train_samples / max(train_seconds, 1e-9),
        "peak_memory_mb": peak_memory_mb(device),
        "device": str(device), "precision": precision, "processes": place.world,
        "global_batch": train_b.step_size, "threads": torch.get_num_threads(),
        "seed": cfg.train.seed,
        "versions": {"warmstart": warmstart.__version__, "torch": torch.__version__,
                     "python": platform.python_version()},
    }
    write_model_card(run_dir, summary, cfg)
    atomic_write_json(run_dir / SUMMARY, summary)  # last: marks the run finished
    print_summary(summary, Console(quiet=quiet))
    return summary


def print_summary(summary: dict[str, Any], console: Console) -> None:
    """The final metrics table."""
    table = Table(title=f"{summary['run']}  (best epoch {summary['best_epoch']})")
    table.add_column("metric")
    table.add_column("validation", justify="right")
    table.add_column("test", justify="right")
    for key in ("accuracy", "f1_macro", "precision_macro", "recall_macro", "loss"):
        v, t = summary["validation"].get(key), summary["test"].get(key)
        table.add_row(key, f"{v:.4f}" if v is not None else "-",
                      f"{t:.4f}" if t is not None else "-")
    p = summary["params"]
    console.print(table)
    console.print(
        f"trainable params {p['trainable']:,} / {p['total']:,} ({p['fraction']:.1%}) | "
        f"train {summary['train_seconds']:.0f}s, {summary['samples_per_second']:.1f} samples/s | "
        f"peak memory {summary['peak_memory_mb']:.0f} MB"
    )
    if sys.stdout is not None:
        sys.stdout.flush()
