"""`warmstart compare`: several strategies on the same data, split and seeds, then one report.

    warmstart compare -c base.yaml --strategies full,partial:k=2,head,llrd:decay=0.9 --seeds 3

A strategy spec is `name[:key=value]...`: a bare key is a `strategy.*` option (`partial:k=2`
sets strategy.k), a dotted key any other config key for that strategy only
(`head:optim.lr=1e-3`). Everything else comes from the base config and overrides, so every
strategy sees the same data and seeds; the split follows `train.seed`, so at each seed every
strategy trains and is tested on the same examples (and the spread over seeds includes the
split's).

Each run is its own `warmstart train` process, started by a map function over the planned
runs: one after another here (`serial_map`), or in parallel as tasks on a Ray cluster
(`raysweep.ray_map`, which the command line passes in with `--ray`). Own processes because:

- peak memory is the process's peak RSS, which only ever grows within a process: runs sharing
  one process would each report the largest so far;
- a comparison killed part-way leaves finished runs (their `summary.json`) that the next
  `warmstart compare` with the same arguments reuses, and continues an unfinished run from its
  last checkpoint (`warmstart train --resume`).

Output: `<output.dir>/compare-<name>/` with `results.csv`, `report.md`, `report.html`, one
run directory per strategy and seed (`<spec-slug>-seed<k>`, each with a model card) and the
runs' console logs under `logs/` and the configs they were started with under `configs/`; with
two seeds or more, the ensemble of the best strategy's seeds (`seed_ensemble.py`) as one more row.
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from warmstart.choose.seed_ensemble import add_seed_ensemble
from warmstart.choose.specs import StrategySpec, parse_seeds, parse_spec
from warmstart.config import (
    RunConfig,
    build_config,
    dump_config,
    read_run_config,
    read_tree,
    with_overrides,
)
from warmstart.errors import WarmstartError
from warmstart.files import FolderLock, atomic_write_text
from warmstart.options import own_options_only
from warmstart.report.build import Groups, recommendation, write_reports
from warmstart.report.card import write_model_card
from warmstart.report.table import Row
from warmstart.summary import RunSummary, read_summary
from warmstart.training.checkpoint import CHECKPOINTS, is_finished
from warmstart.training.run import changed_data

# What training (or reusing) one run gives: its summary, whether it was trained now, seconds.
RunResult = tuple[RunSummary, bool, float]
# A map function runs `work` on every planned run and returns the results in run order,
# calling `done(index, result)` as each finishes (in any order). `serial_map` is the local
# one; `raysweep.ray_map` runs the same work as Ray tasks.
Work = Callable[["PlannedRun"], RunResult]
Done = Callable[[int, RunResult], None]
MapFn = Callable[[Work, Sequence["PlannedRun"], Done], list[RunResult]]

@dataclass(frozen=True)
class PlannedRun:
    """One strategy at one seed: its resolved config and how to launch it."""

    spec: StrategySpec
    seed: int
    cfg: RunConfig
    config_file: Path  # the run's resolved config, which `warmstart train -c` is given

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.output.dir) / str(self.cfg.output.name)


def compare_dir_of(cfg: RunConfig, name: str | None) -> Path:
    """`<output.dir>/compare-<name>`; name defaults to output.name, else `<model>-<data>`."""
    if not name:
        name = cfg.output.name or "-".join(Path(x).stem or x
                                           for x in (cfg.model.name, cfg.data.name))
    return Path(cfg.output.dir) / f"compare-{re.sub(r'[^A-Za-z0-9._+-]+', '_', name)}"


def shared_config(base: dict[str, Any]) -> RunConfig:
    """The base config tree every run starts from, typed (other strategies' options in it
    are dropped: each strategy takes only its own)."""
    return build_config(own_options_only(base))


def plan_runs(config: str | None, overrides: list[str], specs: list[StrategySpec],
              seeds: list[int], out: Path, *, overwrite: bool = False) -> list[PlannedRun]:
    """Resolve every run's config before any training, so a bad spec fails in seconds.

    The base config (file and overrides) is shared: each strategy takes from it its own
    `strategy.*` options and ignores the others' (a base holding `strategy.k=1` compares
    `full` too), then its spec's options apply, checked strictly. Runs go seed by seed (all
    strategies at the first seed, then the next), so an interrupted comparison already holds
    one complete round.
    """
    base = with_overrides(read_tree(config), overrides)
    base_cfg = shared_config(base)
    # One split for every strategy and seed: the spread over seeds is then the training's
    # own (initialisation, order, dropout), not the luck of the split.
    split = (base_cfg.data.split_seed if base_cfg.data.split_seed is not None
             else base_cfg.train.seed)
    runs = []
    for seed in seeds:
        for spec in specs:
            name = f"{spec.slug}-seed{seed}"
            tree = own_options_only(with_overrides(base, [f"strategy.name={spec.name}"]))
            extra = [*spec.overrides, f"train.seed={seed}", f"data.split_seed={split}",
                     f"output.dir={out}", f"output.name={name}",
                     *(["output.overwrite=true"] if overwrite else [])]
            try:
                cfg = build_config(with_overrides(tree, extra))
            except WarmstartError as e:
                raise WarmstartError(f"--strategies {spec.text!r}: {e}") from None
            runs.append(PlannedRun(spec, seed, cfg, out / "configs" / f"{name}.yaml"))
    return runs


def _differing_key(saved: dict[str, Any], planned: dict[str, Any], prefix: str = "") -> str:
    """The first dotted key whose value differs between two config dicts ('' if none)."""
    for key in planned:
        a, b = saved.get(key), planned[key]
        if isinstance(a, dict) and isinstance(b, dict):
            found = _differing_key(a, b, f"{prefix}{key}.")
            if found:
                return found
        elif a != b:
            return f"{prefix}{key}"
    return ""


def _config_mismatch(run: PlannedRun) -> str:
    """'' if the run directory's saved config is the planned one, else the first differing key.

    `log` and `output.overwrite` say how a run is shown or replaced, not what it trains.
    """
    try:
        saved = read_run_config(run.run_dir / "config.yaml").to_dict()
    except WarmstartError:
        return "config.yaml"
    planned = run.cfg.to_dict()
    for tree in (saved, planned):
        tree.pop("log")
        tree["output"].pop("overwrite")
    return _differing_key(saved, planned)


def _launch(run: PlannedRun, argv: list[str], log_file: Path) -> None:
    """Run `warmstart <argv>` in a fresh process, its console output going to `log_file`."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("w", encoding="utf-8") as log:
        log.write("$ warmstart " + " ".join(argv) + "\n")
        log.flush()
        code = subprocess.run([sys.executable, "-m", "warmstart", *argv], stdout=log,
                              stderr=subprocess.STDOUT, check=False).returncode
    if code == 130:
        raise KeyboardInterrupt
    if code != 0:
        lines = [x for x in log_file.read_text(encoding="utf-8").splitlines() if x.strip()]
        last = lines[-1].removeprefix("warmstart: error: ") if lines else "no output"
        raise WarmstartError(f"run {run.run_dir.name} failed (exit {code}): {last} "
                             f"(full log: {log_file}); fix it and run the same compare again")


def ensure_run(run: PlannedRun, log_dir: Path) -> tuple[RunSummary, bool]:
    """The run's summary, training it first unless it has finished; (summary, was it trained).

    A finished run is reused only if it was trained with the planned config; an unfinished
    one with the planned config continues from its last checkpoint; one with checkpoints and
    another config is refused unless overwriting (its checkpoints are work); anything else
    starts over.
    """
    finished = is_finished(run.run_dir)
    if finished and not run.cfg.output.overwrite:
        mismatch = _config_mismatch(run)
        if mismatch:
            raise WarmstartError(
                f"{run.run_dir} holds a finished run with a different {mismatch}; pass "
                "--overwrite to redo it, or --name to compare in a new folder")
        changed = changed_data(run.run_dir, run.cfg)
        if changed:  # same config, other data: its numbers are not this data's
            raise WarmstartError(
                f"{run.run_dir} was trained on other data ({changed} has changed since); "
                "pass --overwrite to redo the runs, or --name to compare in a new folder")
        return read_summary(run.run_dir), False
    started = not finished and (run.run_dir / "config.yaml").is_file()
    mismatch = (_config_mismatch(run) or changed_data(run.run_dir, run.cfg)) if started else ""
    if (mismatch and not run.cfg.output.overwrite
            and (run.run_dir / CHECKPOINTS).is_dir()):  # its checkpoints are work to keep
        raise WarmstartError(
            f"{run.run_dir} holds an unfinished run with a different {mismatch}; pass "
            "--overwrite to redo it, or --name to compare in a new folder")
    if started and not mismatch:
        argv = ["train", "--quiet", "--resume", str(run.run_dir)]
    else:
        # The planned config, written whole: the run trains exactly what was planned.
        run.config_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.config_file, dump_config(run.cfg))
        argv = ["train", "--quiet", "-c", str(run.config_file)]
    _launch(run, argv, log_dir / f"{run.run_dir.name}.log")
    return read_summary(run.run_dir), True


def train_or_reuse(run: PlannedRun, log_dir: Path) -> RunResult:
    """`ensure_run`, timed: the work a map function does for each planned run."""
    started = time.perf_counter()
    summary, trained = ensure_run(run, log_dir)
    return summary, trained, time.perf_counter() - started


def serial_map(work: Work, runs: Sequence[PlannedRun], done: Done) -> list[RunResult]:
    """The local map: one run after another in this machine."""
    results = []
    for i, run in enumerate(runs):
        results.append(work(run))
        done(i, results[-1])
    return results


def run_comparison(runs: list[PlannedRun], out: Path, console: Console,
                   map_fn: MapFn = serial_map) -> Groups:
    """Train (or reuse) every planned run through `map_fn`; {spec text: [(run name, summary),
    ...]}."""
    finished = 0

    def done(i: int, result: RunResult) -> None:
        nonlocal finished
        finished += 1
        summary, trained, seconds = result
        console.print(f"[{finished}/{len(runs)}] {runs[i].run_dir.name} "
                      + (f"trained in {seconds:.0f}s" if trained else "finished earlier, reused")
                      + f" | {summary.metric} {summary.headline or float('nan'):.4f}",
                      highlight=False)

    results = map_fn(functools.partial(train_or_reuse, log_dir=out / "logs"), runs, done)
    groups: Groups = {}
    for run, (summary, _, _) in zip(runs, results):
        # A run trained before model cards existed gets one now.
        if run.run_dir.is_dir() and not (run.run_dir / "README.md").exists():
            write_model_card(run.run_dir, summary, run.cfg)
        groups.setdefault(run.spec.text, []).append((run.run_dir.name, summary))
    return groups


@dataclass
class Comparison:
    """What `compare` produced: its folder, each strategy's run summaries (one per seed),
    the table's rows (mean and spread per column) and the pick."""

    dir: Path
    runs: dict[str, list[RunSummary]]
    rows: list[Row]
    pick: str


def compare(config: str | None, overrides: list[str], strategies: list[str], seeds: str,
            *, name: str | None = None, overwrite: bool = False, quiet: bool = False,
            map_fn: MapFn = serial_map) -> Comparison:
    """Run every strategy at every seed (reusing finished runs) and write the reports.

    Args:
        config: base YAML config (or None for the defaults).
        overrides: dotted `key=value` overrides applied to every run.
        strategies: strategy specs, `name[:key=value]...`.
        seeds: a count (`3`: train.seed, +1, +2) or a comma-separated list of seeds.
        name: the comparison's folder name (`compare-<name>`); None: output.name or
            `<model>-<data>`.
        overwrite: redo finished runs too.
        quiet: print only the final table.
        map_fn: how the runs are trained: `serial_map` (one after another here) or
            `raysweep.ray_map(...)` (parallel tasks on a Ray cluster).

    Returns:
        The comparison: its folder, summaries, table rows and pick.
    """
    console = Console(stderr=True, quiet=quiet)
    specs = [parse_spec(s) for s in strategies]
    if not specs:
        raise WarmstartError("--strategies is empty; list at least one, e.g. head,full")
    for field, values in (("strategy", [s.text for s in specs]), ("slug", [s.slug for s in specs])):
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:
            raise WarmstartError(f"--strategies lists {twice[0]!r} twice (same {field}); "
                                 "list each strategy once")
    base = shared_config(with_overrides(read_tree(config), overrides))
    out = compare_dir_of(base, name)
    runs = plan_runs(config, overrides, specs, parse_seeds(seeds, base.train.seed), out,
                     overwrite=overwrite)
    # Held until the reports are written: a second compare into this folder fails at once.
    with FolderLock(out, "warmstart compare", "wait for it to finish, or pass --name"):
        console.print(f"[bold]warmstart compare[/] -> {out}: {len(specs)} strategies x "
                      f"{len(runs) // len(specs)} seeds = {len(runs)} runs")
        groups = run_comparison(runs, out, console, map_fn)
        add_seed_ensemble(out, groups, console)  # one more row, with 2 seeds or more
        table_console = Console()
        if not table_console.is_terminal:  # a log file or pipe: wide beats wrapped cells
            table_console = Console(width=200)
        rows = write_reports(out, groups, runs[0].cfg, table_console)
    return Comparison(out, {k: [s for _, s in v] for k, v in groups.items()}, rows,
                      recommendation(rows))
