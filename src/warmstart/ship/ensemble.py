"""`warmstart ensemble`: finished runs averaged into one model, weights chosen on validation.

    warmstart ensemble runs/a runs/b runs/c --out runs/abc [--weights greedy|equal]

The members' probabilities (scores, for regression) are averaged (`models/ensemble.py`), with

- `equal` weights, or
- `greedy` forward selection with replacement (Caruana et al. 2004, "Ensemble selection from
  libraries of models"): start from nothing, add in each round the member (again, if it is
  already in) whose addition scores best on validation, stop after `PATIENCE` rounds without
  a better score; the weights are how often each member was added, at the best round. Where
  equal weights score better on validation still, they are kept (and the note says so).

The selection metric is the one the members picked their best epoch by (`train.metric`),
ties broken by the validation loss. Multilabel thresholds are tuned again for the average, on
validation. Validation scores are then optimistic (the weights were chosen on them): the test
split, which no choice has seen, is the one to read.

The ensemble folder is one unit: `predict`, `evaluate`, `serve`, `export` and
`warmstart.load` take it wherever they take a run. Every member with a weight is *copied*
into it (`members/<run name>/`, a run folder without checkpoints), so it keeps working when
the original runs are deleted; `summary.json` holds its metrics, and as costs the members'
summed training.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from warmstart.config import dump_config
from warmstart.errors import WarmstartError
from warmstart.files import atomic_write_json, atomic_write_text
from warmstart.models.base import write_model_file
from warmstart.models.ensemble import ENSEMBLE_FILE, MEMBERS, averaged, combine
from warmstart.ship.members import (
    Member,
    combined_summary,
    copy_run,
    load_members,
    outputs,
    score_key,
    selection_metric,
    shared_data,
    write_folder,
)
from warmstart.summary import SUMMARY, Params, RunSummary
from warmstart.tasks import Multilabel, Regression, Task

WEIGHTS = ("greedy", "equal")
# Caruana et al. run 100 rounds over libraries of ~2,000 models; a handful of runs settles in
# a few rounds, and more rounds only fit the validation split's noise.
MAX_ROUNDS = 25
PATIENCE = 5  # rounds without a better validation score before the selection stops


@dataclass
class Ensemble:
    """What `ensemble` wrote: the folder, the runs with their weights, and the metrics."""

    dir: Path
    runs: list[Path]
    weights: list[float]
    method: str
    summary: RunSummary
    note: str


Score = Callable[[np.ndarray], tuple[float, float]]


def greedy_weights(score: Score, n: int) -> tuple[np.ndarray, int]:
    """Caruana's forward selection with replacement over `n` members: (weights, rounds run).

    `score(weights)` is the validation score of an average (higher is better); ties go to the
    member listed first.
    """
    counts = np.zeros(n, dtype=np.int64)
    best: tuple[tuple[float, float], np.ndarray] | None = None
    stale = rounds = 0
    while rounds < MAX_ROUNDS and stale < PATIENCE:
        rounds += 1
        trials = []
        for j in range(n):
            trial = counts.copy()
            trial[j] += 1
            trials.append((score(trial / trial.sum()), trial))
        key, counts = max(trials, key=lambda t: t[0])  # max keeps the first of equal keys
        if best is None or key > best[0]:
            best, stale = (key, counts), 0
        else:
            stale += 1
    assert best is not None
    return best[1] / best[1].sum(), rounds


def choose_weights(how: str, score: Score, n: int) -> tuple[np.ndarray, str]:
    """The weights `how` asks for, and a line saying how they were found."""
    equal = np.full(n, 1.0 / n)
    if how == "equal":
        return equal, "equal weights"
    weights, rounds = greedy_weights(score, n)
    if score(equal) > score(weights):
        return equal, (f"greedy selection ({rounds} rounds) scored below equal weights on "
                       "validation: equal weights kept")
    return weights, f"greedy forward selection with replacement, {rounds} rounds"


def plain_task(task: Task) -> Task:
    """The members' task before anything was fitted for one of them: the average's own
    multilabel thresholds are tuned later; averaged regression outputs are the values."""
    if isinstance(task, Multilabel):
        return replace(task, thresholds=())
    if isinstance(task, Regression):
        return Regression(task.label_names)
    return task


def ensemble(runs: list[str | Path], out: str | Path, weights: str = "greedy", *,
             overwrite: bool = False) -> Ensemble:
    """Average finished runs into the ensemble folder `out`.

    Args:
        runs: run directories trained on the same data and split (e.g. the seeds of one
            strategy in a `warmstart compare` folder).
        out: the folder to write; it must not exist yet, or be empty (with `overwrite`: an
            earlier ensemble there is replaced).
        weights: `greedy` (Caruana's selection on validation) or `equal`.

    Raises:
        WarmstartError: fewer than two runs, runs that cannot be combined (one line naming
            them), an `out` that holds files.
    """
    if weights not in WEIGHTS:
        raise WarmstartError(f"--weights {weights!r}: use one of {', '.join(WEIGHTS)}")
    out = Path(out)
    members = load_members(runs, "an ensemble")
    return write_folder(out, overwrite, ENSEMBLE_FILE,
                        lambda tmp: _build(members, out, tmp, weights))


def _build(members: list[Member], out: Path, tmp: Path, how: str) -> Ensemble:
    data = shared_data(members[0])
    val, test = data.validation, data.test
    parts = {name: [averaged(m.task, torch.from_numpy(outputs(m.adapter, split.inputs)))
                    for m in members]
             for name, split in (("validation", val), ("test", test)) if len(split)}
    metric = selection_metric(members)
    base = plain_task(members[0].task)

    def logits(split: str, w: np.ndarray) -> np.ndarray:
        return combine(base.type, parts[split], w.tolist()).numpy()

    def score(w: np.ndarray) -> tuple[float, float]:
        z = logits("validation", w)
        return score_key(base.tuned(z, val.labels).metrics(z, val.labels), metric)

    w, note = choose_weights(how, score, len(members))
    task = base.tuned(logits("validation", w), val.labels)
    validation = task.metrics(logits("validation", w), val.labels, full=True)
    test_metrics = task.metrics(logits("test", w), test.labels, full=True) if len(test) else {}

    kept = [(m, float(x)) for m, x in zip(members, w) if x > 0]
    names = _member_names([m.run for m, _ in kept])
    for (m, _), name in zip(kept, names):
        copy_run(m.run, tmp / MEMBERS / name)
    params = Params(trainable=sum(m.summary.params.trainable for m, _ in kept),
                    total=sum(m.summary.params.total for m, _ in kept), fraction=0.0)
    params.fraction = params.trainable / max(params.total, 1)
    summary = combined_summary(out, [m for m, _ in kept], f"ensemble:{how}", validation,
                               test_metrics, metric, params)
    first = members[0]
    write_model_file(tmp, {"source": "ensemble", "name": f"ensemble of {len(kept)}",
                           "kind": first.adapter.kind, "labels": task.label_names,
                           "task": task.to_dict(),
                           "pairs": bool(first.cfg.data.text_pair_column)})
    atomic_write_json(tmp / ENSEMBLE_FILE, {
        "method": how, "selection": note, "metric": metric,
        "members": [{"path": f"{MEMBERS}/{name}", "run": str(m.run), "weight": x,
                     "validation": m.summary.validation.get(metric),
                     "test": m.summary.test.get(metric)}
                    for (m, x), name in zip(kept, names)],
        "left_out": [str(m.run) for m, x in zip(members, w) if x == 0],
        "validation": _headline(validation), "test": _headline(test_metrics)})
    # The first member's config: the data columns `predict --input` and `evaluate` read.
    atomic_write_text(tmp / "config.yaml", dump_config(first.cfg))
    atomic_write_json(tmp / SUMMARY, summary.to_dict())
    return Ensemble(out, [m.run for m in members], [float(x) for x in w], how, summary, note)


def _member_names(runs: list[Path]) -> list[str]:
    """Each run's folder name, numbered where two runs share one."""
    names: list[str] = []
    for run in runs:
        name, k = run.resolve().name, 2
        while name in names:
            name, k = f"{run.resolve().name}-{k}", k + 1
        names.append(name)
    return names


def _headline(metrics: dict) -> dict:
    """The scalar metrics (the per-class report stays in summary.json)."""
    return {k: v for k, v in metrics.items() if isinstance(v, float)}
