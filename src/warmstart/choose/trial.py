"""One trial of `warmstart search`: ask the study, train the sampled config, watch, tell.

Everything here works against the study's storage (SQLite in the search folder), so a trial
runs the same in this process or as a Ray task elsewhere: `run_trial` loads the study, asks
for a trial, starts `warmstart train -c <the trial's config>` as its own process (a crash is
one failed trial, not a failed search) and polls the run's `metrics.jsonl` while it trains.
Each epoch's validation metric is reported to the study; when the pruner says so, or the
budget is spent, the process is killed and its run directory stays, marked in `trial.json`.
A trial that ends normally is scored by its summary's validation metric, which is that of
the best epoch: the weights `fit` kept and that `predict` will use.

optuna is imported only in functions called with it already installed (`search.py` checks).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from warmstart.choose.space import parse_space, sample, trial_tree
from warmstart.config import build_config, dump_config, with_overrides
from warmstart.errors import WarmstartError
from warmstart.files import atomic_write_text
from warmstart.summary import read_summary
from warmstart.tasks import TASKS

STUDY = "warmstart-search"  # the study's name within study.db
POLL_SECONDS = 0.5  # how often a running trial's metrics.jsonl is read
# Outcomes that count towards --trials; an interrupted trial does not (it is tried again).
COUNTED = ("complete", "pruned", "failed", "budget")


@dataclass(frozen=True)
class SearchContext:
    """What every trial needs, picklable (Ray ships it to workers)."""

    out: Path  # the search folder (absolute)
    storage: str  # sqlite:///<out>/study.db
    base: dict[str, Any]  # the base config tree, overrides applied
    space: Any  # the space file's raw tree (parsed again where the trial runs)
    metric: str  # train.metric as configured (auto: the task's own, read from the run)
    split_seed: int  # one split for every trial
    deadline: float | None  # time.time() after which no trial starts and a running one stops
    sampler: str  # tpe, random or grid
    pruner: str  # median, hyperband, halving or none
    seed: int  # train.seed: with the number of the trial, the seed of its sampler


# The median pruner waits for this many complete trials before it prunes: trials cost minutes
# and searches are tens of trials, so optuna's 5 would leave a quarter of a 20-trial search
# unpruned; two full curves already say where a diverging trial stands.
MEDIAN_STARTUP = 2


def make_sampler(kind: str, seed: int) -> Any:
    """The study's sampler. optuna keeps no sampler in the storage, so each trial (here or on
    a Ray worker) makes it again, seeded with the seed plus the trials so far: a fixed seed
    alone would draw the same values every time.

    A grid is not sampled: `search` enqueues every point when the study starts, and each
    `ask` takes the next one atomically from the storage (optuna's GridSampler hands the same
    point to trials that ask at once, and stops the study in a way only `optimize` allows).
    """
    import optuna

    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def make_pruner(kind: str) -> Any:
    """The study's pruner (likewise not kept in the storage)."""
    import optuna

    if kind == "median":  # from the first epoch on: runs are a few epochs long
        return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP, n_warmup_steps=0)
    if kind == "halving":  # successive halving: keep the best 1/2 at epochs 1, 2, 4, ...
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()


def metric_of(row: dict[str, Any], configured: str) -> str | None:
    """The validation metric an epoch row is judged by (auto: the natural metric of the task
    whose metrics the row holds)."""
    if configured != "auto":
        return configured
    for task in TASKS.values():
        if all(f"val_{m}" in row for m in task.metric_names):
            return task.natural_metric
    return None


def epoch_rows(run_dir: Path) -> list[dict[str, Any]]:
    """The epoch rows of a run's metrics.jsonl so far (a half-written last line is skipped)."""
    path = run_dir / "metrics.jsonl"
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if row.get("kind") == "epoch":
                rows.append(row)
    return rows


def stop(proc: subprocess.Popen) -> None:
    """Kill a trial's training process (its checkpoints and logs stay where they are)."""
    proc.kill()
    proc.wait()


def _last_line(log: Path) -> str:
    lines = [x for x in log.read_text(encoding="utf-8", errors="replace").splitlines() if x.strip()]
    return lines[-1].removeprefix("warmstart: error: ") if lines else "no output"


def watch(proc: subprocess.Popen, trial: Any, run_dir: Path, ctx: SearchContext,
          log: Path) -> tuple[str, dict[str, Any]]:
    """Follow a training process to its end: (outcome, facts for the results table)."""
    reported = 0
    while True:
        ended = proc.poll() is not None
        rows = epoch_rows(run_dir)
        for row in rows[reported:]:
            metric = metric_of(row, ctx.metric)
            value = row.get(f"val_{metric}")
            if isinstance(value, (int, float)):  # NaN too: the pruners prune on it
                trial.report(float(value), int(row["epoch"]))
            reported += 1
            if not ended and trial.should_prune():
                stop(proc)
                return "pruned", {"epochs": reported,
                                  "why": f"validation {metric} {value:.4f} at epoch "
                                         f"{row['epoch']} below the pruner's bar"}
        if ended:
            break
        if ctx.deadline is not None and time.time() >= ctx.deadline:
            stop(proc)
            return "budget", {"epochs": reported, "why": "the budget ran out while training"}
        time.sleep(POLL_SECONDS)
    if proc.returncode != 0:
        return "failed", {"epochs": reported,
                          "why": f"exit {proc.returncode}: {_last_line(log)} (log: {log})"}
    summary = read_summary(run_dir)
    score = summary.validation.get(summary.metric)
    if not isinstance(score, (int, float)) or not math.isfinite(score):
        return "failed", {"epochs": summary.epochs,
                          "why": f"validation {summary.metric} is {score!r}"}
    return "complete", {"epochs": summary.epochs, "best_epoch": summary.best_epoch,
                        "score": float(score), "metric": summary.metric,
                        "test": summary.headline if summary.test else None}


def launch(cfg_file: Path, log: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    handle = log.open("w", encoding="utf-8")
    handle.write(f"$ warmstart train --quiet -c {cfg_file}\n")
    handle.flush()
    try:
        return subprocess.Popen([sys.executable, "-m", "warmstart", "train", "--quiet", "-c",
                                 str(cfg_file)], stdout=handle, stderr=subprocess.STDOUT)
    finally:
        handle.close()  # the child holds its own copy


def run_trial(ctx: SearchContext, index: int = 0) -> dict[str, Any]:
    """Ask the study for one trial, train it, tell the study; the trial's row of facts.

    Returns {} without asking when the budget is already spent.
    """
    import optuna

    if ctx.deadline is not None and time.time() >= ctx.deadline:
        return {}
    study = optuna.load_study(study_name=STUDY, storage=ctx.storage,
                              pruner=make_pruner(ctx.pruner))
    # The trials so far and this trial's index in the batch: trials that ask at once (Ray)
    # draw with different seeds.
    study.sampler = make_sampler(ctx.sampler, ctx.seed * 100_003 + len(study.trials) * 1_009
                                 + index)
    trial = study.ask()
    name = f"trial-{trial.number:04d}"
    run_dir = ctx.out / name
    log = ctx.out / "logs" / f"{name}.log"
    started = time.time()
    facts: dict[str, Any] = {"trial": trial.number, "run": str(run_dir)}
    proc = None
    try:
        values = sample(parse_space(ctx.space, "space file"), trial)
        cfg = build_config(with_overrides(trial_tree(ctx.base, values), [
            f"output.dir={ctx.out}", f"output.name={name}", f"data.split_seed={ctx.split_seed}"]))
        cfg_file = ctx.out / "configs" / f"{name}.yaml"
        cfg_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cfg_file, dump_config(cfg))
        trial.set_user_attr("values", {k: v for k, v in values.items()})
        trial.set_user_attr("run", str(run_dir))
        proc = launch(cfg_file, log)
        outcome, more = watch(proc, trial, run_dir, ctx, log)
    except KeyboardInterrupt:
        if proc is not None and proc.poll() is None:
            stop(proc)
        trial.set_user_attr("outcome", "interrupted")
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial(trial.params)  # the next session tries these values again
        raise
    except WarmstartError as e:
        outcome, more = "failed", {"why": str(e)}
    facts |= more | {"outcome": outcome, "seconds": round(time.time() - started, 1),
                     "values": trial.user_attrs.get("values", {})}
    for key in ("outcome", "seconds", "epochs", "best_epoch", "why", "test", "metric"):
        if key in facts:
            trial.set_user_attr(key, facts[key])
    if outcome != "complete" and run_dir.is_dir():  # the partial run says why it stopped
        atomic_write_text(run_dir / "trial.json", json.dumps(
            {"outcome": outcome, "why": facts.get("why", ""), "epochs": facts.get("epochs", 0)},
            indent=1) + "\n")
    state = optuna.trial.TrialState
    if outcome == "complete":
        study.tell(trial, facts["score"])
    else:
        study.tell(trial, state=state.PRUNED if outcome == "pruned" else state.FAIL)
    return facts
