"""`warmstart auto --budget 10m`: pick the strategy and its learning rate within a hard budget.

    warmstart auto -c base.yaml --budget 10m [--name NAME]

1. Probe: the `features` strategy (frozen model, one pass, a logistic regression fitted by
   scikit-learn) is trained first. Its run is the first candidate and the fallback result;
   its pass over the data measures this machine's forward throughput.
   The probe's run also scores its frozen features with LogME (`training/transfer.py`), the
   estimate the report sets beside the final scores.
2. Plan: `plan()` picks the candidates from the data size, the examples per class and the
   probe's validation score by the rules in `RULES` (also in the README). Each candidate's
   training throughput on this machine is then measured (`measure`: a one-epoch run on a
   few batches, samples/s of its training); the budget left, divided by those, sets the
   epochs each trial may train, and how many rounds of lr variants the race keeps
   (`race_plan`). When the budget is too short to spend on measuring, the probe's forward
   throughput times `COST` estimates them instead, and the report says so.
3. Race: every (strategy, learning rate) pair is a trial of a `warmstart search` in
   `<auto>/race`, every candidate's default lr first, then the lr variants round by round,
   those of the strategy that scored best at its default first; pruned by successive halving
   on the validation metric (the best half survives each of epochs 1, 2, 4, ...), stopped at
   the budget. A `train.epochs` set in the base config is what every trial trains (the plan
   drops lr rounds to fit it); unset, the budget sizes the epochs.
4. Finish: if budget remains, a greedy soup of the race's best runs (`warmstart soup`: it
   keeps a run only while the average does not lose on validation; runs that cannot be
   averaged are refused in one line, quoted in the report). The best validation score among
   the probe, the race's trials and the soup wins; its run directory is the result
   (`auto.json`: `best`), nothing is retrained; `report.md` says what was tried, what each
   scored and cost, why it stopped, and why the winner won. Rounds the plan dropped and
   the rule's reserve candidates race after the soup, in the same study, while the time
   left holds a pair's expected cost (pruning often leaves time over); their runs are
   candidates too, and a second soup averages the best runs again if they changed.

The budget is a hard limit: the race gets what the probe left less a reserve for the reports,
a trial is killed at the limit, and Ctrl-C leaves `auto.json` naming the best finished run.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from warmstart.choose.auto_plan import (
    RULES,
    Probe,
    later_pairs,
    pair_seconds,
    pairs_of,
    plan,
    race_plan,
    strategy_scores,
)
from warmstart.choose.auto_report import SOUPS, finish
from warmstart.choose.search import MapFn, optuna_module, parse_budget, search
from warmstart.choose.trial import launch, stop
from warmstart.config import RunConfig, build_config, dump_config, read_tree, with_overrides
from warmstart.errors import WarmstartError
from warmstart.files import FolderLock, atomic_write_text
from warmstart.options import own_options_only
from warmstart.ship.soup import SOUP_FILE
from warmstart.summary import RunSummary, read_summary
from warmstart.tasks import lower_is_better

# Time kept back from the race for writing the reports, as a share of the budget (at most
# REPORT_SECONDS): the budget is the whole command's, reports included.
REPORT_SHARE, REPORT_SECONDS = 0.03, 20.0
# The soup averages at most this many of the race's best runs, when the budget left holds
# SOUP_ROOM times the probe's overhead (its process start, loading and evaluation).
SOUP_RUNS, SOUP_ROOM = 3, 4.0
# Measuring costs a process start and a model load per candidate (about 10 s for minilm-l6
# here): done when the race keeps at least this many times that for training.
MEASURE_BATCHES, MEASURE_ROOM = 4, 10.0


def measure(base: dict[str, Any], specs: list[str], out: Path, deadline: float,
            probe: Probe) -> dict[str, RunSummary]:
    """Each candidate's run of one epoch of `MEASURE_BATCHES` batches in its own `warmstart
    train` (caching included, as a trial pays it): its samples/s on this machine and the lr
    it chose. Skipped ({}) when the budget left is under `MEASURE_ROOM` times the probe's
    own overhead per candidate; a measurement that fails or runs out of time is left out."""
    if deadline - time.time() < MEASURE_ROOM * probe.overhead * len(specs):
        return {}
    batch = int(probe.summary.global_batch or 16)
    found = {}
    for spec in specs:
        name, _, option = spec.partition(":")
        extra = [f"strategy.{option}"] if option else []
        label = "measure-" + spec.replace(":", "-").replace("=", "")
        summary = _run(base, [f"strategy.name={name}"], [
            *extra, "train.epochs=1", f"data.limit={MEASURE_BATCHES * batch}",
            "output.save_model=false", "train.early_stopping=null"], out, label, deadline)
        if summary is not None and summary.samples_per_second > 0:
            found[spec] = summary
    return found


def seconds_per_example(measured: dict[str, RunSummary]) -> dict[str, float]:
    return {spec: 1.0 / summary.samples_per_second for spec, summary in measured.items()}


def _run_probe(base: dict[str, Any], out: Path, deadline: float) -> Probe | None:
    """Train the features probe (sklearn's logistic regression); None if out of time."""
    summary = _run(base, ["strategy.name=features"], ["strategy.classifier=sklearn"], out,
                   "probe-features", deadline, required=True)
    if summary is None:
        return None
    run = out / "probe-features"
    meta = json.loads((run / "model" / "warmstart_model.json").read_text(encoding="utf-8"))
    return Probe(run, summary, meta.get("kind", "text"))


def _run(base: dict[str, Any], strategy: list[str], options: list[str], out: Path, label: str,
         deadline: float, *, required: bool = False) -> RunSummary | None:
    """One `warmstart train` of `base` with a strategy and its options into `out/label`; its
    summary, or None when the deadline came first (or it failed, unless `required`)."""
    cfg = build_config(with_overrides(own_options_only(with_overrides(base, strategy)), [
        *options, f"output.dir={out}", f"output.name={label}"]))
    cfg_file = out / "configs" / f"{label}.yaml"
    cfg_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cfg_file, dump_config(cfg))
    log = out / "logs" / f"{label}.log"
    proc = launch(cfg_file, log)
    if not _finished(proc, deadline):
        return None
    if proc.returncode != 0:
        if not required:
            return None
        last = log.read_text(encoding="utf-8").strip().splitlines()[-1]
        raise WarmstartError(f"the features probe failed: {last.removeprefix('warmstart: error: ')}"
                             f" (log: {log}); fix the base config and run auto again")
    return read_summary(out / label)


def _finished(proc: subprocess.Popen, deadline: float) -> bool:
    """Wait for `proc`; stop it at the deadline (False) or on Ctrl-C (re-raised)."""
    try:
        while proc.poll() is None:
            if time.time() >= deadline:
                stop(proc)
                return False
            time.sleep(0.5)
    except KeyboardInterrupt:
        stop(proc)
        raise
    return True


def _soup(out: Path, deadline: float, facts: dict[str, Any], console: Console,
          key: str = "soup") -> None:
    """A greedy soup of the race's best finished runs (`warmstart soup`, which keeps a run
    only if the soup's validation score does not drop), within the deadline, into the auto
    folder's `SOUPS[key]`; its outcome goes into `facts[key]`, and `auto_report.finish`
    counts it as one more candidate. The later soup (`final_soup`) is skipped when the best
    runs are those the first one averaged.

    Runs of one model fine-tuned from the same weights often average into a model as good as
    their ensemble at the cost of one (Wortsman et al. 2022). Race runs of different
    strategies (a LoRA run is merged first) or of other models are refused by `soup` with
    one line, which the report quotes.
    """
    race = out / "race" / "search.json"
    trials = json.loads(race.read_text(encoding="utf-8"))["trials"] if race.is_file() else []
    sign = -1 if lower_is_better(facts["probe"]["metric"]) else 1
    done = sorted((t for t in trials if t["outcome"] == "complete"
                   and isinstance(t.get("score"), float) and math.isfinite(t["score"])),
                  key=lambda t: -sign * t["score"])[:SOUP_RUNS]
    runs = [t["run"] for t in done]
    if len(done) < 2:
        facts[key] = {"outcome": "not tried: fewer than two finished race runs"}
        return
    if key != "soup" and runs == facts.get("soup", {}).get("runs"):
        facts[key] = {"outcome": "not tried: the best runs are those of the first soup"}
        return
    # Each run and each soup tried is scored on validation: a few evaluation passes.
    if deadline - time.time() < SOUP_ROOM * facts["probe"]["overhead"]:
        facts[key] = {"outcome": "not tried: too little budget left"}
        return
    console.print(f"{key}: averaging the best {len(done)} race runs", highlight=False)
    log = out / "logs" / f"{SOUPS[key]}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w", encoding="utf-8") as handle:
        proc = subprocess.Popen([sys.executable, "-m", "warmstart", "soup",
                                 *runs, "--out", str(out / SOUPS[key]), "--how", "greedy"],
                                stdout=handle, stderr=subprocess.STDOUT)
    if not _finished(proc, deadline):
        facts[key] = {"outcome": "stopped at the budget", "runs": runs}
    elif proc.returncode != 0:
        last = log.read_text(encoding="utf-8").strip().splitlines()[-1:] or ["(no output)"]
        facts[key] = {"outcome": "refused: " + last[0].removeprefix("warmstart: error: "),
                      "runs": runs}
    else:
        summary = read_summary(out / SOUPS[key])
        kept = json.loads((out / SOUPS[key] / SOUP_FILE).read_text(encoding="utf-8"))["kept"]
        facts[key] = {"outcome": "made", "runs": runs, "kept": kept,
                      "score": summary.validation.get(facts["probe"]["metric"])}


def auto_dir_of(cfg: RunConfig, name: str | None) -> Path:
    if not name:
        name = cfg.output.name or "-".join(Path(x).stem or x
                                           for x in (cfg.model.name, cfg.data.name))
    return (Path(cfg.output.dir) / f"auto-{re.sub(r'[^A-Za-z0-9._+-]+', '_', name)}").resolve()


def auto(config: str | None, overrides: list[str], budget: str, *, name: str | None = None,
         quiet: bool = False, map_fn: MapFn | None = None) -> Path:
    """Probe, plan, race within `budget`; write auto.json and report.md; the auto folder.

    `map_fn` runs the race's trials (e.g. in parallel as Ray tasks, `raysweep.ray_map`);
    None: one after the other here.
    """
    started = time.time()
    seconds = parse_budget(budget)
    optuna_module()
    console = Console(stderr=True, quiet=quiet)
    base = with_overrides(read_tree(config), overrides)
    cfg = build_config(own_options_only(base))
    out = auto_dir_of(cfg, name)
    deadline = started + seconds - min(REPORT_SHARE * seconds, REPORT_SECONDS)
    with FolderLock(out, "warmstart auto", "wait for it to finish, or pass --name"):
        if (out / "probe-features").exists():
            raise WarmstartError(f"{out} holds an earlier auto run; pass --name NAME for a new "
                                 "one (or delete the folder)")
        facts: dict[str, Any] = {"budget_seconds": seconds,
                                 "rules": [f"{why} (reserve: {', '.join(reserve)})"
                                           for why, _, reserve in RULES]}
        try:
            _auto(base, out, deadline, facts, console, map_fn, cfg.train.epochs)
        finally:  # also after Ctrl-C: the best finished run is named
            facts["seconds"] = round(time.time() - started, 1)
            finish(out, facts, console)
    return out


def _auto(base: dict[str, Any], out: Path, deadline: float, facts: dict[str, Any],
          console: Console, map_fn: MapFn | None = None, asked: int | None = None) -> None:
    """Probe, plan, race, soup into `out` (see the module's docstring); `asked`: the
    `train.epochs` the user set, which every trial then trains (a value you set wins)."""
    console.print(f"[bold]warmstart auto[/] -> {out}: probing with features", highlight=False)
    probe = _run_probe(base, out, deadline)
    if probe is None:
        facts["stopped"] = "the budget ran out during the probe"
        return
    facts["probe"] = {"run": str(probe.run), "score": probe.score,
                      "metric": probe.summary.metric, "seconds": probe.summary.wall_seconds,
                      "train_examples": probe.summary.examples.train,
                      "classes": len(probe.summary.labels),
                      "logme": probe.summary.transferability.get("logme"),
                      "overhead": probe.overhead}
    specs, reserve, why = plan(probe)
    runs = measure(base, specs, out, deadline, probe)
    measured = seconds_per_example(runs)
    space, _ = pairs_of(specs + reserve, probe.kind, runs)
    rounds, spare = pairs_of(specs, probe.kind, runs)[1], pairs_of(reserve, probe.kind, runs)[1]
    left = deadline - time.time()
    pairs, epochs = race_plan(probe, specs, rounds, left, measured, asked)
    kept = sum(1 for r in rounds if r[0] in pairs)
    facts["plan"] = {"candidates": specs, "reserve": reserve, "why": why, "pairs": len(pairs),
                     "epochs": epochs, "epochs_from": "train.epochs" if asked else "the budget",
                     "lr_rounds": f"{kept} of {len(rounds)} (default, 3x, 1/3)",
                     "seconds_left": round(left, 1),
                     "samples_per_second": {s: round(1 / v, 1) for s, v in measured.items()},
                     "throughput": "measured" if measured else
                     "estimated from the probe (the budget was too short to measure)"}
    console.print(f"probe: validation {probe.summary.metric} {probe.score:.4f} on "
                  f"{probe.summary.examples.train} examples; candidates {', '.join(specs)} "
                  f"({why.split(':')[0]}); {len(pairs)} (strategy, lr) pairs, {epochs} "
                  f"epoch(s) each, {left:.0f}s left", highlight=False)
    if left < 1:
        facts["stopped"] = "no time left after the probe"
        return
    space_file = out / "race-space.yaml"
    atomic_write_text(space_file, yaml.safe_dump(space, sort_keys=False))
    race = out / "race"
    facts["race"] = str(race)

    trials: list[dict[str, Any]] = []

    def run_race(seconds: float, more: list[dict[str, Any]]) -> list[str]:
        """Race `more` in the study (new or resumed); the outcomes of those that ran."""
        before = len(trials)
        search(None, [*_as_overrides(base), f"train.epochs={epochs}"], str(space_file),
               before + len(more), budget=f"{seconds:.1f}s", sampler="random",
               pruner="halving", quiet=console.quiet, out=race, more=more,
               resume=before > 0, map_fn=map_fn)
        trials[:] = json.loads((race / "search.json").read_text(encoding="utf-8"))["trials"]
        return [t["outcome"] for t in trials[before:]]

    def planned(stage: list[dict[str, Any]]) -> bool:
        """Race part of the plan; False (and why, in facts) if the budget ran out."""
        outcomes = run_race(deadline - time.time(), stage)
        if "budget" not in outcomes and len(outcomes) == len(stage):
            return True
        done = [t["outcome"] for t in trials]
        facts["stopped"] = (f"the budget ran out after {done.count('complete')} complete "
                            f"and {done.count('pruned')} pruned of {len(pairs)} pairs")
        return False

    # Every candidate at its default lr first; then the planned lr variants round by round,
    # those of the strategies that did best at their default first (the best strategy's
    # variants are the likelier winners, and the budget may end mid-way).
    metric = probe.summary.metric
    if not planned(rounds[0]):
        return
    rest = later_pairs(rounds[:kept], [], rounds[0], strategy_scores(trials, metric))
    if rest and not planned(rest):
        return
    # The soup comes first: it is cheap and was the winner on TREC-2k, and after rounds that
    # run to the budget too little time was left for it.
    _soup(out, deadline, facts, console)
    # Pruning often ends trials early, so the time left may hold the rounds of lr variants
    # the plan dropped (not sure to fit) and the rule's reserve candidates. They race in the
    # same study (the pruner measures them against the first rounds), round by round (each
    # round's dropped pairs best strategy first, then its reserve), while a pair's expected
    # cost still fits.
    later = later_pairs(rounds, spare, pairs, strategy_scores(trials, metric))
    room = deadline - time.time()
    cost = pair_seconds(probe, specs + reserve, epochs, measured)
    if later:
        facts["plan"]["later_rounds"] = {"pairs": len(later), "seconds_left": round(room, 1),
                                         "seconds_per_pair": round(cost, 1)}
    if later and room >= cost:
        console.print(f"race: {room:.0f}s left for {len(later)} more pairs: the lrs the plan "
                      f"dropped and the reserve {', '.join(reserve) or '(none)'} (about "
                      f"{cost:.0f}s each)", highlight=False)
        ended = run_race(room, later)
        facts["plan"]["later_rounds"]["outcomes"] = {o: ended.count(o) for o in set(ended)}
        # The later runs may have displaced the first soup's: average the best ones again.
        _soup(out, deadline, facts, console, "final_soup")


def _as_overrides(tree: dict[str, Any], prefix: str = "") -> list[str]:
    """A config tree as dotted key=value overrides (the race's base)."""
    out = []
    for key, value in tree.items():
        if isinstance(value, dict):
            out += _as_overrides(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={json.dumps(value)}")
    return out
