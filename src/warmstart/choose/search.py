"""`warmstart search`: an optuna study over a space of config keys that returns the best model.

    warmstart search -c base.yaml --space space.yaml --trials 20 [--budget 20m]
                     [--sampler tpe|random|grid] [--pruner median|hyperband|none]
                     [--name NAME] [--resume] [--ray ADDRESS]

The space file says which keys vary and how (`space.py`). Each trial is one `warmstart train`
process in `<output.dir>/search-<name>/trial-NNNN` (`trial.py`), scored by the validation
metric of its best epoch, the weights it kept; bad trials are pruned on their per-epoch
validation metric. The best trial's run directory is the result: `search.json` names it
(`best`), and `predict`, `evaluate` and `export` take it as it is: nothing is retrained.

The study lives in `study.db` (optuna's SQLite storage) next to the runs, so a killed search
continues with `--resume`: finished trials (complete, pruned, failed) are kept and counted
towards `--trials`; a trial that was running when the search stopped is tried again with the
same values in a new run directory. `--budget` stops starting trials once spent and kills a
running one at the limit.

optuna is an optional extra (`pip install 'warmstart[search]'`), imported only in this module
and `trial.py`.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from warmstart.choose.search_report import write_search_reports
from warmstart.choose.space import check_space, grid_of, read_space
from warmstart.choose.trial import (
    COUNTED,
    STUDY,
    SearchContext,
    make_pruner,
    make_sampler,
    run_trial,
)
from warmstart.config import RunConfig, read_tree, with_overrides
from warmstart.errors import WarmstartError
from warmstart.files import FolderLock, atomic_write_text
from warmstart.tasks import lower_is_better

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "hyperband", "halving", "none")
MapFn = Callable[[Callable[[int], dict], Sequence[int], Callable[[int, dict], None]], list[dict]]


def optuna_module() -> Any:
    """optuna, or the one-line error saying how to install it."""
    try:
        import optuna
    except ImportError:
        raise WarmstartError("warmstart search needs optuna, an optional extra: pip install "
                             "'warmstart[search]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def parse_budget(text: str) -> float:
    """`90s`, `20m`, `1h30m` or plain seconds -> seconds."""
    parts = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*"
                         r"(?:(\d+(?:\.\d+)?)s?)?\s*", text or "")
    if not parts or not any(parts.groups()):
        raise WarmstartError(f"--budget {text!r}: give a duration such as 90s, 20m or 1h30m")
    h, m, s = (float(x) if x else 0.0 for x in parts.groups())
    seconds = h * 3600 + m * 60 + s
    if seconds <= 0:
        raise WarmstartError(f"--budget {text!r} must be longer than zero")
    return seconds


def search_dir_of(cfg: RunConfig, name: str | None) -> Path:
    """`<output.dir>/search-<name>`; name defaults to output.name, else `<model>-<data>`."""
    if not name:
        name = cfg.output.name or "-".join(Path(x).stem or x
                                           for x in (cfg.model.name, cfg.data.name))
    return (Path(cfg.output.dir) / f"search-{re.sub(r'[^A-Za-z0-9._+-]+', '_', name)}").resolve()


def counted(study: Any) -> int:
    """Trials that ended (complete, pruned, failed, out of budget): those --trials counts."""
    return sum(t.user_attrs.get("outcome") in COUNTED for t in study.trials)


def _requeue_interrupted(study: Any, optuna: Any) -> int:
    """Trials left running by a killed search: failed now, their values asked again."""
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for t in running:
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial(t.params)
    return len(running)


def _check_same(out: Path, settings: dict[str, Any], resume: bool) -> None:
    """A search folder holds one study: resuming needs the same base, space and sampler."""
    saved_file = out / "search-settings.json"
    if (out / "study.db").exists() and not resume:
        raise WarmstartError(f"{out} already holds a search; pass --resume to continue it, or "
                             "--name NAME for a new one")
    if resume and not (out / "study.db").exists():
        raise WarmstartError(f"--resume: {out} holds no search to continue; drop --resume to "
                             "start one")
    if resume and saved_file.is_file():
        saved = json.loads(saved_file.read_text(encoding="utf-8"))
        for key in ("base", "space", "sampler", "pruner"):
            if saved.get(key) != settings[key]:
                raise WarmstartError(f"--resume: the {key} differs from the one {out} was "
                                     f"started with ({saved_file}); continue with the same "
                                     "one, or pass --name NAME for a new search")


def search(config: str | None, overrides: list[str], space_file: str, trials: int | None, *,
           budget: str | None = None, sampler: str = "tpe", pruner: str = "median",
           name: str | None = None, resume: bool = False, quiet: bool = False,
           map_fn: MapFn | None = None, out: Path | None = None,
           enqueue: Sequence[dict[str, Any]] = (), more: Sequence[dict[str, Any]] = ()
           ) -> Path:
    """Run (or continue) a search and write its reports; returns the search folder.

    Args:
        config: base YAML config every trial starts from (None: the defaults).
        overrides: dotted `key=value` overrides of the base.
        space_file: the YAML space (see `space.py`).
        trials: how many trials the study should hold when done (counted over resumes);
            None: until the budget is spent (grid: the whole grid).
        budget: wall-clock limit of this session, e.g. `20m`.
        sampler, pruner: see SAMPLERS, PRUNERS.
        name: the folder `<output.dir>/search-<name>`.
        resume: continue the study in that folder.
        quiet: print only the final table.
        map_fn: None to run trials one after another here, or a map function such as
            `raysweep.ray_map(...)` to run them in parallel (each loads the shared study).
        out: the search folder, instead of `<output.dir>/search-<name>` (`warmstart auto`).
        enqueue: optuna params of trials to run first, in order, when the study is new.
        more: optuna params of trials added to the study now, new or resumed, and run first
            (`warmstart auto`'s later lr rounds, raced in the same study so that the pruner
            compares them with the first rounds); count them in `trials`.
    """
    console = Console(stderr=True, quiet=quiet)
    optuna = optuna_module()
    started = time.time()
    seconds = parse_budget(budget) if budget is not None else None
    if sampler not in SAMPLERS or pruner not in PRUNERS:
        raise WarmstartError(f"--sampler must be one of {', '.join(SAMPLERS)} and --pruner one "
                             f"of {', '.join(PRUNERS)}")
    if trials is not None and trials < 1:
        raise WarmstartError(f"--trials {trials}: must be >= 1")
    base = with_overrides(read_tree(config), overrides)
    space, space_tree = read_space(space_file)
    where = f"space file {space_file!r}"
    first = check_space(space, base, where)
    if sampler == "grid":  # every point enqueued, in order (see trial.make_sampler)
        grid = grid_of(space, where)
        enqueue = [dict(zip(grid, point)) for point in itertools.product(*grid.values())]
        trials = len(enqueue) if trials is None else min(trials, len(enqueue))
    if trials is None and seconds is None:
        raise WarmstartError("say how long to search: --trials N, --budget 20m, or both")
    out = out.resolve() if out is not None else search_dir_of(first, name)
    settings = {"base": base, "space": space_tree, "sampler": sampler, "pruner": pruner}
    metric = first.train.metric
    with FolderLock(out, "warmstart search", "wait for it to finish, or pass --name"):
        _check_same(out, settings, resume)
        atomic_write_text(out / "search-settings.json",
                          json.dumps(settings, indent=1, default=str) + "\n")
        study = optuna.create_study(
            storage=f"sqlite:///{out / 'study.db'}", study_name=STUDY, load_if_exists=True,
            direction="minimize" if metric != "auto" and lower_is_better(metric) else "maximize",
            sampler=make_sampler(sampler, first.train.seed),
            pruner=make_pruner(pruner))
        if not study.trials:
            for params in enqueue:
                study.enqueue_trial(params)
        for params in more:
            study.enqueue_trial(params)
        again = _requeue_interrupted(study, optuna)
        done_before = counted(study)
        wanted = (trials - done_before) if trials is not None else 10**9
        console.print(f"[bold]warmstart search[/] -> {out}: "
                      + (f"{done_before} trial(s) done before, " if resume else "")
                      + (f"{again} interrupted one(s) to try again, " if again else "")
                      + (f"{max(wanted, 0)} to run" if trials is not None else "trials")
                      + (f" within {budget}" if budget else ""), highlight=False)
        split = first.data.split_seed if first.data.split_seed is not None else first.train.seed
        ctx = SearchContext(out, f"sqlite:///{out / 'study.db'}", base, space_tree, metric,
                            split, None if seconds is None else started + seconds,
                            sampler, pruner, first.train.seed)
        try:
            _run(ctx, max(wanted, 0), console, map_fn)
        finally:
            # Also after Ctrl-C: what finished is reported and the best so far is named.
            study = optuna.load_study(study_name=STUDY, storage=ctx.storage)
            table_console = Console(quiet=quiet)
            if not table_console.is_terminal:  # a log file or pipe: wide beats wrapped cells
                table_console = Console(width=200, quiet=quiet)
            best = write_search_reports(out, study, optuna, metric, table_console)
        console.print(f"best: {best}" if best else "best: none (no trial finished)",
                      highlight=False)
    return out


def _run(ctx: SearchContext, wanted: int, console: Console, map_fn: MapFn | None) -> None:
    """Run `wanted` trials (fewer if the budget runs out), printing one line per trial."""
    ended = 0

    def done(_i: int, facts: dict[str, Any]) -> None:
        nonlocal ended
        if not facts:
            return
        ended += 1
        score = f" | {facts['metric']} {facts['score']:.4f}" if "score" in facts else ""
        values = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in facts.get("values", {}).items())
        why = f" ({facts['why']})" if facts.get("why") and facts["outcome"] != "complete" else ""
        console.print(f"[{ended}] trial {facts['trial']} {facts['outcome']}{score} | "
                      f"{facts['seconds']:.0f}s | {values}{why}", highlight=False)

    if map_fn is not None:
        map_fn(functools.partial(run_trial, ctx), list(range(wanted)), done)
        return
    for i in range(wanted):
        facts = run_trial(ctx, i)
        if not facts:  # the budget is spent
            console.print("budget spent: no further trials", highlight=False)
            return
        done(i, facts)
