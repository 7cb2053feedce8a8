"""The reports of `warmstart search`, from the study: results.csv, results.md, report.html,
and `search.json` naming the best trial's run directory.

Every trial is a row: its values, outcome (complete, pruned, failed, budget, interrupted),
score (validation metric at its best epoch), test metric, epochs run, best epoch and time. The
HTML page (the comparison report's page, `report/html.py`) adds optuna's parameter importances
(when at least two trials completed and a value varied) and a parallel-coordinates chart drawn
with matplotlib.
"""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table

from warmstart.files import atomic_write_text
from warmstart.report.charts import png_base64
from warmstart.report.html import Chart, page

FIXED = ("trial", "outcome", "score", "test", "epochs", "best_epoch", "seconds")
LEGEND = ("score: the validation metric of the trial's best epoch (the weights its run kept); "
          "test: the same weights on the test split, shown for information only (the search "
          "never looks at it). Pruned trials stopped after the epochs shown; their run "
          "directories hold trial.json saying why.")


def trial_rows(study: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per trial that started training, in trial order; and the value columns."""
    rows, keys = [], []
    for t in study.trials:
        values = t.user_attrs.get("values", {})
        if "outcome" not in t.user_attrs and not values:
            continue  # asked but never started (a search stopped in between)
        keys += [k for k in values if k not in keys]
        rows.append({"trial": t.number, "outcome": t.user_attrs.get("outcome", "interrupted"),
                     "score": t.value if t.state.name == "COMPLETE" else None,
                     "test": t.user_attrs.get("test"), "epochs": t.user_attrs.get("epochs"),
                     "best_epoch": t.user_attrs.get("best_epoch"),
                     "seconds": round(t.user_attrs.get("seconds") or 0),
                     "run": t.user_attrs.get("run"), "why": t.user_attrs.get("why"),
                     **{f"value:{k}": v for k, v in values.items()}})
    return rows, keys


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.4f}"
    return str(value)


def _table(rows: list[dict[str, Any]], keys: list[str]) -> tuple[list[str], list[list[str]]]:
    header = [*FIXED, *keys]
    body = [[_text(r.get(c)) for c in FIXED] + [_text(r.get(f"value:{k}")) for k in keys]
            for r in rows]
    return header, body


def importances(study: Any, optuna: Any) -> tuple[dict[str, float], str]:
    """optuna's parameter importances, or ({}, why there are none)."""
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if len(complete) < 2:
        return {}, f"{len(complete)} trial(s) completed; importances need at least 2"
    if len({t.value for t in complete}) < 2:
        return {}, "every complete trial scored the same; nothing to attribute"
    try:
        with warnings.catch_warnings():  # few trials: optuna warns that they are few
            warnings.simplefilter("ignore")
            return dict(optuna.importance.get_param_importances(study)), ""
    except (ValueError, RuntimeError, ZeroDivisionError) as e:
        return {}, f"not computed: {str(e).splitlines()[0] if str(e) else type(e).__name__}"


def importance_chart(values: dict[str, float]) -> Figure:
    fig = Figure(figsize=(7, 0.5 + 0.45 * len(values)), layout="constrained")
    ax = fig.subplots()
    names = list(values)[::-1]
    ax.barh(names, [values[n] for n in names], color="#3d6fb6")
    ax.set(xlabel="importance (optuna's default evaluator; shares sum to 1)", xlim=(0, 1))
    ax.grid(alpha=0.3, axis="x")
    return fig


def _axis(trials: list[Any], name: str) -> tuple[list[float | None], list[tuple[float, str]]]:
    """Each trial's position on one axis in [0, 1] (None: not sampled) and the axis's labels
    (position, text): every choice of a categorical, the two ends of a range."""
    dist = next(t.distributions[name] for t in trials if name in t.distributions)
    raw = [t.params.get(name, math.nan) for t in trials]
    if hasattr(dist, "choices"):
        choices = list(dist.choices)
        n = max(len(choices) - 1, 1)
        pos = [None if v is not None and isinstance(v, float) and math.isnan(v)
               else choices.index(v) / n for v in raw]
        return pos, [(i / n, _text(c) or "null") for i, c in enumerate(choices)]
    low, high = float(dist.low), float(dist.high)
    log = getattr(dist, "log", False)
    f = (lambda v: math.log(v)) if log else float
    span = (f(high) - f(low)) or 1.0
    return ([None if math.isnan(v) else (f(v) - f(low)) / span for v in raw],
            [(0.0, _text(low)), (1.0, _text(high))])


def parallel_chart(study: Any, metric: str) -> Figure | None:
    """One line per trial across the sampled values and the score; colour: score (pruned and
    failed trials grey)."""
    trials = [t for t in study.trials if t.params]
    names = sorted({p for t in trials for p in t.params}, key=lambda p: (":" in p, p))
    if not trials or not names:
        return None
    axes = [_axis(trials, n) for n in names]
    scores = [t.value if t.state.name == "COMPLETE" else None for t in trials]
    done = [s for s in scores if s is not None]
    lo, hi = (min(done), max(done)) if done else (0.0, 1.0)
    fig = Figure(figsize=(max(6, 1.8 * (len(names) + 1)), 4.5), layout="constrained")
    ax = fig.subplots()
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    for i, score in enumerate(scores):
        xs, ys = [], []
        for j, (pos, _) in enumerate(axes):
            if pos[i] is not None:
                xs.append(j)
                ys.append(pos[i])
        if score is None:
            ax.plot(xs, ys, color="0.7", linestyle="--", linewidth=1)
            continue
        shade = (score - lo) / ((hi - lo) or 1.0)
        ax.plot([*xs, len(names)], [*ys, shade], color=cmap(shade), linewidth=2, marker="o")
    for j, (_, labels) in enumerate(axes):
        ax.axvline(j, color="0.3", linewidth=0.8)
        for y, text in labels:
            ax.annotate(text, (j, y), xytext=(3, 3), textcoords="offset points", fontsize=7)
    ax.axvline(len(names), color="0.3", linewidth=0.8)
    ax.set_xticks(range(len(names) + 1), [*names, f"validation {metric}"], rotation=20,
                  fontsize=8)
    ax.set_yticks([])
    ax.set_ylim(-0.1, 1.1)
    ax.set_title(f"Trials across the space (score axis: {_text(lo)} to {_text(hi)}; grey "
                 "dashed: pruned or failed)", fontsize=9)
    return fig


def write_search_reports(out: Path, study: Any, optuna: Any, metric: str,
                         console: Console) -> str | None:
    """Write the reports and search.json; print the table; the best run directory or None."""
    rows, keys = trial_rows(study)
    header, body = _table(rows, keys)
    buf = io.StringIO()
    csv.writer(buf).writerows([[*header, "run"], *[[*b, r.get("run") or ""]
                                                   for b, r in zip(body, rows)]])
    atomic_write_text(out / "results.csv", buf.getvalue())
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    best = study.best_trial if complete else None
    shown = metric if metric != "auto" else (best.user_attrs.get("metric", "the task's metric")
                                             if best else "the task's metric")
    context = {
        "search": str(out), "trials": f"{len(rows)} ({sum(r['outcome'] == 'pruned' for r in rows)}"
                                      " pruned)",
        "score": f"validation {shown} at each trial's best epoch "
                 f"({study.direction.name.lower()})",
        "best": (f"trial {best.number}: {_text(best.value)} -> {best.user_attrs.get('run')}"
                 if best else "none yet"),
        "written": datetime.now().strftime("%Y-%m-%d %H:%M"),
    }
    facts = "\n".join(f"- **{k}**: {v}" for k, v in context.items())
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(b) + " |" for b in body]
    atomic_write_text(out / "results.md", f"# warmstart search: {out.name}\n\n{facts}\n\n"
                      + "\n".join(md) + f"\n\n{LEGEND}\n")
    imp, why = importances(study, optuna)
    charts = []
    if imp:
        charts.append(Chart("importances", "Parameter importances",
                            "How much each sampled value mattered for the score "
                            "(optuna.importance.get_param_importances).",
                            png_base64(importance_chart(imp))))
    else:
        context["importances"] = why
    fig = parallel_chart(study, shown)
    if fig is not None:
        charts.append(Chart("parallel", "Trials across the space",
                            "Each trial as a line through its sampled values (each axis from "
                            "its range's low end at the bottom to its high end at the top) to "
                            "its score.", png_base64(fig)))
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    cells = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in b) + "</tr>" for b in body)
    table = f'<table id="results"><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>'
    atomic_write_text(out / "report.html", page(f"warmstart search: {out.name}", context,
                                                 table, charts, legend=LEGEND))
    result = {"best": best.user_attrs.get("run") if best else None,
              "score": best.value if best else None, "metric": shown,
              "trial": best.number if best else None,
              "values": best.user_attrs.get("values") if best else None,
              "importances": imp, "trials": rows}
    atomic_write_text(out / "search.json", json.dumps(result, indent=1, default=str) + "\n")
    rich = Table(title=f"warmstart search: {out.name}")
    for h in header:
        rich.add_column(h, overflow="fold")
    for b in body:
        rich.add_row(*b)
    console.print(rich)
    console.print(f"written: {out / 'results.csv'}, {out / 'results.md'}, "
                  f"{out / 'report.html'}, {out / 'search.json'}", highlight=False)
    return result["best"]
