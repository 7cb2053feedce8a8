"""Finished runs combined into one model (`ensemble.py`, `soup.py`): loading them, checking
that they can be combined, scoring the combination on their shared validation and test
splits, and its `summary.json`.

Runs can be combined only when they predict the same thing on the same examples: the same
task type, labels and input kind, the same data files and columns, and the same validation
and test examples (their `split.json`). The combination's weights are chosen on the
validation split; its test metrics are measured like a run's, on the test split no choice
has seen.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from warmstart.config import RunConfig
from warmstart.data import load_task
from warmstart.data.base import TaskData
from warmstart.errors import WarmstartError
from warmstart.files import LOCK, atomic_dir, commit_dir
from warmstart.models.base import Adapter
from warmstart.models.ensemble import ENSEMBLE_FILE
from warmstart.ship.predict import load_run, logits_for
from warmstart.summary import (
    ExampleCounts,
    LearningRates,
    Params,
    RunSummary,
    Versions,
    read_summary,
)
from warmstart.tasks import Task, lower_is_better
from warmstart.training.checkpoint import CHECKPOINTS, is_finished
from warmstart.version import __version__

T = TypeVar("T")
SPLIT = "split.json"  # written by every run (`training/run.py`): which examples each split holds
# Data keys that must agree: they decide which examples, read how, the members saw.
SHARED_DATA_KEYS = ("name", "validation", "test", "text_column", "text_pair_column",
                    "label_column", "label_separator")


@dataclass
class Member:
    """One finished run to combine: its folder, config, summary and loaded model."""

    run: Path
    cfg: RunConfig
    summary: RunSummary
    adapter: Adapter
    task: Task


def load_members(runs: list[str | Path], what: str, at_least: int = 2) -> list[Member]:
    """Load the runs and check that they can be combined (see the module docstring).

    Raises:
        WarmstartError: in one line, naming the run and what differs.
    """
    paths = [Path(r) for r in runs]
    if len(paths) < at_least:
        raise WarmstartError(f"{what} needs at least {at_least} runs; {len(paths)} given")
    seen = [p.resolve() for p in paths]
    twice = next((p for p, r in zip(paths, seen) if seen.count(r) > 1), None)
    if twice is not None:
        raise WarmstartError(f"run {str(twice)!r} is listed twice; list each run once")
    members = []
    for run in paths:
        if (run / ENSEMBLE_FILE).is_file():
            raise WarmstartError(f"{str(run)!r} is an ensemble; pass the runs it was built from "
                                 "(its members/ folders are runs)")
        if run.is_dir() and not (run / "config.yaml").is_file():
            raise WarmstartError(f"{str(run)!r} is not a run directory (no config.yaml); "
                                 f"{what} needs the runs `warmstart train` wrote, which know "
                                 "their data")
        adapter, task, cfg = load_run(run)  # refuses unfinished runs and runs without a model
        if not (run / SPLIT).is_file():
            raise WarmstartError(f"{run} has no {SPLIT} (trained by an older warmstart); "
                                 "train it again")
        members.append(Member(run, cfg, read_summary(run), adapter, task))
    check_compatible(members)
    return members


def check_compatible(members: list[Member]) -> None:
    """Refuse members that do not predict the same thing on the same examples."""
    first = members[0]
    split = _held_out(first.run)
    for m in members[1:]:
        where = f"{m.run} and {first.run}"
        if m.task.type != first.task.type:
            raise WarmstartError(f"{where} differ in task ({m.task.type} vs {first.task.type}); "
                                 "combine runs of one task")
        if m.task.label_names != first.task.label_names:
            raise WarmstartError(f"{where} predict different labels; combine runs trained on "
                                 "the same labels")
        if m.adapter.kind != first.adapter.kind:
            raise WarmstartError(f"{where} read different inputs ({m.adapter.kind} vs "
                                 f"{first.adapter.kind}); combine runs of one input kind")
        for key in SHARED_DATA_KEYS:
            a, b = getattr(m.cfg.data, key), getattr(first.cfg.data, key)
            if a != b:
                raise WarmstartError(f"{where} differ in data.{key} ({a!r} vs {b!r}); combine "
                                     "runs trained on the same data")
        if _held_out(m.run) != split:
            raise WarmstartError(f"{where} hold out different validation/test examples (their "
                                 f"{SPLIT}); train them with the same data.split_seed")


def _held_out(run: Path) -> tuple[Any, Any]:
    saved = json.loads((run / SPLIT).read_text(encoding="utf-8"))
    return saved.get("validation"), saved.get("test")


def shared_data(member: Member) -> TaskData:
    """The members' data, read again through the first one's config (split as it was)."""
    cfg = member.cfg
    seed = cfg.data.split_seed if cfg.data.split_seed is not None else cfg.train.seed
    try:
        return load_task(cfg.data, seed, cfg.task)
    except WarmstartError as e:
        raise WarmstartError(f"cannot read the data of {member.run} again ({e}); restore it at "
                             "the path in its config.yaml") from None


def outputs(adapter: Adapter, inputs: list[Any]) -> np.ndarray:
    """A model's logits on the inputs (none: an empty array)."""
    return logits_for(adapter, inputs) if inputs else np.zeros((0, 0), np.float32)


def score_key(metrics: dict[str, Any], metric: str) -> tuple[float, float]:
    """Higher is better: the selection metric, then the loss (which breaks the many ties an
    accuracy on a few hundred examples has)."""
    value = float(metrics[metric])
    return (-value if lower_is_better(metric) else value, -float(metrics["loss"]))


def selection_metric(members: list[Member]) -> str:
    """The validation metric the members picked their best epoch by, when they agree; else
    the task's own."""
    metrics = {m.summary.metric for m in members}
    return metrics.pop() if len(metrics) == 1 else members[0].task.natural_metric


def combined_summary(out: Path, members: list[Member], strategy: str, validation: dict,
                     test: dict, metric: str, params: Params) -> RunSummary:
    """The `summary.json` of a combination: its metrics, and as costs the members' summed
    training (what it took to make)."""
    first = members[0].summary
    seconds = sum(m.summary.train_seconds for m in members)
    samples = sum(m.summary.samples_per_second * m.summary.train_seconds for m in members)
    return RunSummary(
        run=str(out), model=", ".join(dict.fromkeys(m.summary.model for m in members)),
        data=first.data, strategy=strategy, labels=list(first.labels),
        examples=ExampleCounts(train=first.examples.train, validation=first.examples.validation,
                               test=first.examples.test),
        best_epoch=0, epochs=0, stopped_early=False, steps=0,
        validation=validation, test=test, train={}, final_epoch={}, history=[], params=params,
        lr=LearningRates(base=0.0, groups={}),
        train_seconds=seconds, cache_seconds=sum(m.summary.cache_seconds for m in members),
        wall_seconds=sum(m.summary.wall_seconds for m in members),
        samples_per_second=samples / max(seconds, 1e-9),
        peak_memory_mb=max(m.summary.peak_memory_mb for m in members),
        device=first.device, precision=first.precision, processes=1,
        global_batch=first.global_batch, threads=torch.get_num_threads(), seed=first.seed,
        versions=Versions(warmstart=__version__, torch=torch.__version__,
                          python=first.versions.python),
        task=first.task, metric=metric)


def write_folder(out: Path, overwrite: bool, marker: str, build: Callable[[Path], T]) -> T:
    """`build(tmp)` writes into a temporary sibling of `out`, which then replaces `out`; when
    it fails, nothing is left behind. See `new_folder` for when `out` may be written."""
    tmp = new_folder(out, overwrite, marker)
    try:
        result = build(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    commit_dir(tmp, out)
    return result


def new_folder(out: Path, overwrite: bool, marker: str) -> Path:
    """A temporary sibling of `out` to write into (`files.commit_dir` puts it in place).

    Raises:
        WarmstartError: `out` holds files, and is not (with `overwrite`) an earlier output
            of the same command, recognised by its `marker` file.
    """
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not (overwrite and (out / marker).is_file()):
            raise WarmstartError(f"{str(out)!r} already exists and is not an empty folder; "
                                 "choose a new --out folder" + (" (or --overwrite)" if
                                                                 (out / marker).is_file() else ""))
    try:
        return atomic_dir(out)
    except OSError as e:
        raise WarmstartError(f"cannot write {str(out)!r}: {e.strerror or e}; choose a writable "
                             "place") from None


def copy_run(run: Path, dest: Path) -> None:
    """A finished run's folder without its checkpoints: still a run `load_run` accepts."""
    assert is_finished(run)
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns(CHECKPOINTS, "cache", LOCK))

