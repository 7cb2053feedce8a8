"""One training run, from a config to a finished run directory.

`session.setup` puts the run together; this module adds the run directory, checkpoints and
logs around `fit` (or a closed-form `solve`), then evaluates, saves and reports.

Order matters for failures: every check a user can fail (names, files, columns, labels) runs
in `setup`, before the run directory is touched, and `summary.json` is written last, so a
failed run never leaves a directory that looks complete.
"""

from __future__ import annotations

import json
import os
import platform
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

from warmstart.config import RunConfig, config_changes, dump_config
from warmstart.data.base import DATASETS, Examples
from warmstart.errors import WarmstartError
from warmstart.files import (
    CACHES,
    LOCK,
    FolderLock,
    atomic_dir,
    atomic_write_json,
    atomic_write_text,
    clear_folder,
    commit_dir,
    fingerprint,
    same_content,
)
from warmstart.models.base import record_task
from warmstart.report.card import write_model_card
from warmstart.summary import SUMMARY, ExampleCounts, LearningRates, Params, RunSummary, Versions
from warmstart.tasks import TASKS
from warmstart.training import distributed
from warmstart.training.cache import HeadOnly, head_features, prepare
from warmstart.training.callbacks import Callbacks, MetricsLog, ProgressDisplay, log_sinks
from warmstart.training.checkpoint import (
    Checkpointer,
    Resume,
    check_fits,
    is_finished,
    load_best,
    load_checkpoint,
)
from warmstart.training.distributed import Dist
from warmstart.training.loop import fit
from warmstart.training.session import Teacher, setup
from warmstart.training.solve import solve
from warmstart.training.transfer import logme
from warmstart.version import __version__


def run_dir_of(cfg: RunConfig) -> Path:
    """`<output.dir>/<output.name or model-data-strategy>`."""
    if cfg.output.name:
        return Path(cfg.output.dir) / cfg.output.name
    slug = "-".join(Path(x).stem or x for x in (cfg.model.name, cfg.data.name, cfg.strategy.name))
    return Path(cfg.output.dir) / slug.replace(":", "_").replace("/", "_")


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


def _resume_point(run_dir: Path) -> Resume | None:
    """The latest checkpoint of a run, if it has one."""
    checkpoint = Checkpointer(run_dir, 0, 1).latest()
    return None if checkpoint is None else load_checkpoint(checkpoint, load_best(run_dir))


def _start_run_dir(cfg: RunConfig, run_dir: Path, point: Resume | None,
                   splits: dict[str, Any]) -> None:
    """Create (or, resuming from `point`, reopen) the run directory."""
    if point is not None:
        metrics = run_dir / "metrics.jsonl"
        if metrics.exists():  # drop lines logged after the checkpoint: they are replayed
            with metrics.open("r+b") as f:
                f.truncate(point.metrics_bytes)
        return
    # A failed or overwritten run, or nothing to resume: start clean (the lock stays).
    run_dir.mkdir(parents=True, exist_ok=True)
    clear_folder(run_dir)
    atomic_write_text(run_dir / "config.yaml", dump_config(cfg))
    atomic_write_json(run_dir / "environment.json", environment(cfg.train.seed))
    atomic_write_json(run_dir / DATA_FILES, {key: {"path": path, **fingerprint(Path(path))}
                                             for key, path in data_files(cfg).items()})
    # Which examples each split holds, so held-out rows can be re-evaluated later.
    atomic_write_json(run_dir / SPLIT, {"note": SPLIT_NOTE, **splits})


SPLIT = "split.json"
SPLIT_NOTE = ("the examples of each split: `rows` are row numbers in the source file (the "
              "header is row 1, as a spreadsheet shows it), `files` image paths, `indices` "
              "0-based positions in a built-in dataset; train is after data.limit")


DATA_FILES = "data_files.json"  # the data a run read: path, size, mtime, SHA-256 per key


def data_files(cfg: RunConfig) -> dict[str, str]:
    """The user's data files/folders a run reads, by config key (built-in sets have none)."""
    out = {}
    for key in ("name", "validation", "test"):
        value = getattr(cfg.data, key)
        if value is None or (key == "name" and value in DATASETS):
            continue
        path = Path(value).expanduser()
        if path.exists():
            out[f"data.{key}"] = str(path)
    return out


def changed_data(run_dir: Path, cfg: RunConfig) -> str:
    """'' if the data files read by the run in `run_dir` still hold what they held when it
    started; else the first one that changed, as `key path`. A run that recorded nothing
    (older warmstart) counts as unchanged."""
    saved_path = run_dir / DATA_FILES
    if not saved_path.is_file():
        return ""
    try:
        saved = json.loads(saved_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return DATA_FILES
    for key, path in data_files(cfg).items():
        if not isinstance(saved.get(key), dict) or not same_content(saved[key], Path(path)):
            return f"{key} {path}"
    return ""


def environment(seed: int) -> dict[str, Any]:
    """Seed, library versions and machine, stored with every run for reproducibility."""
    import sklearn
    import transformers

    return {"seed": seed, "warmstart": __version__, "torch": torch.__version__,
            "transformers": transformers.__version__, "scikit-learn": sklearn.__version__,
            "numpy": np.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "processor": platform.processor(),
            "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def train(cfg: RunConfig, *, quiet: bool = False, resume: bool = False,
          teacher: Teacher | None = None) -> RunSummary:
    """Fine-tune as `cfg` says; write the run directory; return the summary.

    With `resume`, continue the run directory's latest checkpoint exactly (a run with no
    checkpoint yet starts over with the same config). A distillation passes its `teacher`
    (`warmstart.distillation`).
    """
    place, device_name = distributed.setup(cfg.train.device)
    try:
        if not place.is_main:  # only the main process writes the run directory
            return _train(cfg, place, device_name, quiet=quiet, resume=resume, teacher=teacher)
        # Held until the run ends: a second run into this directory fails at once, naming us.
        with FolderLock(run_dir_of(cfg), "warmstart train",
                        "wait for it to finish, or choose another output.name"):
            return _train(cfg, place, device_name, quiet=quiet, resume=resume, teacher=teacher)
    finally:
        distributed.teardown()


def check_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to start where work would be lost: a finished run, an unfinished run with
    checkpoints (unless `overwrite`), or a folder that is not a run directory at all.

    Raises:
        WarmstartError: naming the folder and the flag that says what to do.
    """
    if is_finished(run_dir):
        if resume:
            raise WarmstartError(
                f"{run_dir} has finished: there is nothing to resume; to train it again from "
                f"the start, run `warmstart train -c {run_dir / 'config.yaml'} --overwrite`")
        if not overwrite:
            raise WarmstartError(f"{run_dir} already holds a finished run; pass --overwrite "
                                 "(or output.overwrite=true) or choose output.name")
        return
    if resume or not run_dir.is_dir():
        return
    latest = Checkpointer(run_dir, 0, 1).latest()
    if latest is not None and not overwrite:
        step = int(latest.name.removeprefix("step-"))
        raise WarmstartError(
            f"{run_dir} holds an unfinished run (checkpoint at step {step}); continue it with "
            f"`warmstart train --resume {run_dir}`, or start over with --overwrite "
            "(or choose output.name)")
    others = [p.name for p in run_dir.iterdir() if p.name not in (LOCK, CACHES)]
    if others and not (run_dir / "config.yaml").is_file():
        # Starting clean deletes the folder's contents: only ever a run directory's.
        raise WarmstartError(
            f"{run_dir} exists and is not a warmstart run directory (it holds "
            f"{', '.join(sorted(others)[:3])}{', ...' if len(others) > 3 else ''}); choose "
            "another output.name or output.dir")


def _train(cfg: RunConfig, place: Dist, device_name: str, *, quiet: bool,
           resume: bool, teacher: Teacher | None) -> RunSummary:
    quiet = quiet or not place.is_main  # one voice: only the main process talks and writes
    console = Console(stderr=True, quiet=quiet)
    run_dir = run_dir_of(cfg)
    if place.is_main:
        check_run_dir(run_dir, resume=resume, overwrite=cfg.output.overwrite)
    started = time.perf_counter()
    changed = changed_data(run_dir, cfg) if resume else ""
    if changed:
        raise WarmstartError(f"{run_dir} started on other data: {changed} has changed since; "
                             "resuming would train on a mix. Start over with `warmstart train "
                             f"-c {run_dir / 'config.yaml'} --overwrite`")
    point = _resume_point(run_dir) if resume else None
    session = setup(cfg, place=place, device_name=device_name, resume=point, teacher=teacher)
    data, plan, model = session.data, session.plan, session.model

    # Everything the user could get wrong has been checked: now the run directory.
    if place.is_main:
        _start_run_dir(cfg, run_dir, point, data.splits)
    distributed.barrier(place)  # the run directory is ready (and truncated on resume)
    console.print(f"[bold]warmstart {__version__}[/] -> {run_dir}"
                  + (f" (resuming at step {point.loop.step})" if point else ""))
    changes = config_changes(cfg)
    console.print(f"config: {' '.join(changes) if changes else 'the defaults'} (the rest as "
                  f"defaults; all of it in {run_dir / 'config.yaml'})", highlight=False,
                  markup=False)
    trainable, total = count_params(model)
    console.print(
        f"data {data.source}: {len(data.train)} train / {len(data.validation)} val / "
        f"{len(data.test)} test | task {data.task.describe()} ({data.task_reason}) | "
        f"strategy {cfg.strategy.name}: "
        f"{plan.notes} | trainable {trainable:,} of {total:,} ({trainable / total:.1%}) | "
        f"global batch {session.train.step_size} = {cfg.train.batch_size} x "
        f"{session.accumulate} accumulated x {place.world} processes | {session.device} "
        f"{session.precision}"
    )
    console.print(session.chosen.describe(), highlight=False)
    warn = Console(stderr=True, quiet=not place.is_main)  # warnings print even with --quiet
    for note in session.notes:
        warn.print(note, highlight=False, markup=False)
    if session.adapter.extra.get("pooling_note"):
        console.print(f"pooling: {session.adapter.extra['pooling_note']}", highlight=False)
    console.print("peak lr per group: " + ", ".join(
        f"{g.name} {session.lr * g.lr_scale:.2e}" for g in plan.groups)
        + (" (the checkpoint's calibrated scales apply)" if plan.calibrate and point else ""),
        highlight=False)
    augmented = session.augment.recipe.describe() if session.augment else "none"
    console.print(f"augmentation: {augmented}", highlight=False)

    observers: list[Any] = []
    if place.is_main:
        observers += [MetricsLog(run_dir / "metrics.jsonl", cfg.log.every),
                      *log_sinks(cfg.log.to, run_dir, session.cfg)]
    if not (quiet or cfg.log.quiet):
        observers.append(ProgressDisplay(console))
    spill_dir = run_dir / "cache"
    try:
        ready = prepare(session.adapter, plan, session.train, session.val, session.device,
                        cfg.train, spill_dir, augmented=session.augment is not None)
        if ready.notes:
            console.print(ready.notes, highlight=False)
        if plan.solver is not None:
            result = solve(ready.model, plan, ready.train, ready.val,
                           session.validation_score, session.class_weights)
        else:
            if point is not None:
                check_fits(ready.model, point, run_dir)
            with ready.replay:
                result = fit(ready.model, plan, ready.train, ready.val, session.loss_fn,
                             session.validation_score, session.settings,
                             eval_modules=ready.eval_modules,
                             callbacks=Callbacks(observers), resume=point,
                             augment=session.augment,
                             checkpointer=Checkpointer(run_dir, cfg.checkpoint.every_steps,
                                                       cfg.checkpoint.keep_last,
                                                       write=place.is_main))
    finally:
        shutil.rmtree(spill_dir, ignore_errors=True)
    cache_seconds = ready.seconds
    # The head's inputs are at hand as arrays: score how well they suit the task, for free.
    transfer = ({"logme": logme(*head_features(ready.train), session.task.type)}
                if isinstance(ready.model, HeadOnly) else {})
    if result.note:
        console.print(result.note, highlight=False)

    ready.model.load_state_dict(result.best_state)  # report and save the best epoch
    val_metrics = session.final_validation(model)  # multilabel: thresholds fitted here
    task = session.task
    test_metrics = session.score(model, session.test, full=True) if session.test else {}
    train_metrics = session.score(model, session.batches(train_sample(
        data.train, len(data.validation), cfg.train.seed)))
    train_seconds = result.train_seconds + cache_seconds  # caching is part of training
    device, precision, lr, adapter = session.device, session.precision, session.lr, session.adapter
    train_b = session.train
    if place.is_main and cfg.output.save_model:
        tmp = atomic_dir(run_dir / "model")
        saved = task.fold_into(adapter.head)  # last use of the weights: changed in place
        adapter.save(tmp, data.label_names)
        record_task(tmp, saved.to_dict())
        commit_dir(tmp, run_dir / "model")

    summary = RunSummary(
        run=str(run_dir),
        model=cfg.model.name, data=data.source, strategy=cfg.strategy.name,
        labels=data.label_names,
        examples=ExampleCounts(train=len(data.train), validation=len(data.validation),
                               test=len(data.test)),
        best_epoch=result.best_epoch, epochs=len(result.history),
        stopped_early=result.stopped_early, steps=result.steps,
        validation=val_metrics, test=test_metrics,
        train={**train_metrics, "examples": TRAIN_SAMPLE_NOTE},
        final_epoch=result.history[-1],
        history=result.history,
        params=Params(trainable=trainable, total=total, fraction=trainable / total),
        lr=LearningRates(base=lr, groups=result.lrs),
        train_seconds=train_seconds, cache_seconds=cache_seconds,
        wall_seconds=time.perf_counter() - started,
        samples_per_second=result.train_samples / max(train_seconds, 1e-9),
        peak_memory_mb=peak_memory_mb(device),
        device=str(device), precision=precision, processes=place.world,
        global_batch=train_b.step_size, threads=torch.get_num_threads(),
        seed=cfg.train.seed,
        versions=Versions(warmstart=__version__, torch=torch.__version__,
                          python=platform.python_version()),
        task=task.type, metric=session.cfg.train.metric, transferability=transfer,
        augment=augmented,
    )
    if not place.is_main:
        return summary  # the same run, measured here; only the main process writes
    write_model_card(run_dir, summary, session.cfg)
    atomic_write_json(run_dir / SUMMARY, summary.to_dict())  # last: marks the run finished
    print_summary(summary, Console())  # the results print even with --quiet
    return summary


def print_summary(summary: RunSummary, console: Console) -> None:
    """The final metrics table."""
    table = Table(title=f"{summary.run}  (best epoch {summary.best_epoch})")
    table.add_column("metric")
    table.add_column("validation", justify="right")
    table.add_column("test", justify="right")
    for key in TASKS[summary.task].metric_names:
        v, t = summary.validation.get(key), summary.test.get(key)
        table.add_row(key, f"{v:.4f}" if v is not None else "-",
                      f"{t:.4f}" if t is not None else "-")
    p = summary.params
    console.print(table)
    console.print(
        f"trainable params {p.trainable:,} / {p.total:,} ({p.fraction:.1%}) | "
        f"train {summary.train_seconds:.0f}s, {summary.samples_per_second:.1f} samples/s | "
        f"peak memory {summary.peak_memory_mb:.0f} MB"
    )
    if "logme" in summary.transferability:
        console.print(f"LogME of the frozen features: {summary.transferability['logme']:.3f} "
                      "(higher suits this task better; compare models on the same data)")
    if sys.stdout is not None:
        sys.stdout.flush()
