"""Every report file of a comparison, from its runs' summaries: results.csv, report.md, report.html.

The terminal gets the same table. Files are written atomically, so a comparison interrupted
while reporting never leaves half a report.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from warmstart.config import RunConfig
from warmstart.files import atomic_write_text
from warmstart.report import charts
from warmstart.report.html import Chart, page, results_table
from warmstart.report.table import (
    LEGEND,
    Row,
    best_of,
    csv_text,
    markdown_table,
    rich_table,
    summarize,
)
from warmstart.summary import RunSummary, Split

Groups = dict[str, list[tuple[str, RunSummary]]]  # strategy spec -> [(run name, summary), ...]


def best_strategy(rows: list[Row]) -> Row:
    """Highest mean headline metric on test (accuracy, macro-F1 or Spearman by task), ties
    broken by the second quality column (NaN counts as worst)."""
    def key(r: Row) -> tuple[float, float]:
        first, second = (r.mean[c.key] for c in r.columns[:2])
        return (-math.inf if math.isnan(first) else first,
                -math.inf if math.isnan(second) else second)
    return max(rows, key=key)


# "Within a point" of the best: about the standard error of one accuracy on a test split of
# a few thousand examples, so a cheaper strategy this close is not measurably worse.
CLOSE_ENOUGH = 0.01


def recommendation(rows: list[Row]) -> str:
    """Which strategy to pick for this data, and why: the best mean headline metric on test,
    and the cheapest strategy (training time) within `CLOSE_ENOUGH` of it when that is
    another one."""
    best = best_strategy(rows)
    key, title = best.quality.key, best.quality.title
    top, secs = best.mean[key], best.mean["train_seconds"]
    if math.isnan(top):
        return "no pick: no run has test metrics"
    text = f"{best.strategy}: the highest mean {title} ({top:.4f}, {secs:.0f} s training)"
    close = [r for r in rows if r is not best
             and r.mean[key] >= top - CLOSE_ENOUGH
             and r.mean["train_seconds"] < secs]
    if not close:
        return text + "; nothing cheaper comes within a point of it"
    cheap = min(close, key=lambda r: r.mean["train_seconds"])
    ratio = secs / max(cheap.mean["train_seconds"], 1e-9)
    return (text + f"; for {ratio:.1f}x less training time, {cheap.strategy} comes within a "
            f"point ({cheap.mean[key]:.4f}, {cheap.mean['train_seconds']:.0f} s)")


def context_of(groups: Groups, cfg: RunConfig) -> dict[str, str]:
    """What was compared, for the top of the reports."""
    first = next(iter(groups.values()))[0][1]
    seeds = sorted({s.seed for runs in groups.values() for _, s in runs})
    ex = first.examples
    return {
        "base model": cfg.model.name,
        "data": f"{first.data} ({ex.train} train / {ex.validation} validation / "
                f"{ex.test} test, {first.task}"
                + (f", {len(first.labels)} labels)" if first.task != "regression" else ")"),
        "strategies": ", ".join(groups),
        "seeds": ", ".join(map(str, seeds)),
        "training": (f"{cfg.train.epochs} epoch(s) max" if cfg.train.epochs is not None else
                     "each strategy's default epochs")
                    + f", batch {cfg.train.batch_size}, "
                    f"{cfg.optim.schedule} schedule, best epoch by validation "
                    f"{first.metric}",
        "hardware": f"{first.device} ({first.precision}, {first.threads} threads)",
        "written": datetime.now().strftime("%Y-%m-%d %H:%M"),
    }


def _step_rows(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [r for r in rows if r.get("kind") == "step"]


def make_charts(out: Path, groups: Groups, rows: list[Row], metric: str) -> list[Chart]:
    """Learning curves, quality vs trainable parameters and vs time, best confusion matrix."""
    train_loss = {k: [charts.step_curve(s, _step_rows(out / n)) for n, s in runs]
                  for k, runs in groups.items()}
    validation = {k: [charts.validation_curve(s, metric) for _, s in runs]
                  for k, runs in groups.items()}
    best = best_strategy(rows)
    quality = best.quality.title
    spec = [
        ("learning-curves", "Learning curves",
         charts.learning_curves(train_loss, validation, metric),
         f"Training loss as logged during training, and validation {metric} at each epoch "
         "end; mean over seeds."),
        ("quality-vs-params", "Quality vs trainable parameters",
         charts.quality_vs(rows, "trainable_params", "trainable parameters", log_x=True),
         f"Mean {quality} against trainable parameters (log scale); bars: spread over seeds."),
        ("quality-vs-time", "Quality vs training time",
         charts.quality_vs(rows, "train_seconds", "training time (s)", log_x=False),
         f"Mean {quality} against training time; bars: spread over seeds."),
        _best_chart(best, groups[best.strategy]),
    ]
    return [Chart(id_, title, caption, charts.png_base64(fig))
            for id_, title, fig, caption in spec]


def _best_chart(best: Row, runs: list[tuple[str, RunSummary]]
                ) -> tuple[str, str, Any, str]:
    """The best strategy up close, by task: its confusion matrix (classification, summed over
    seeds), predicted vs true values (regression, first seed) or per-label F1 (multilabel,
    first seed)."""
    split: Split = "test" if all(s.test for _, s in runs) else "validation"
    first = runs[0][1]
    why = f"{split.capitalize()} predictions of {best.strategy} (highest mean " \
          f"{best.quality.title})"
    if first.task == "regression":
        return ("predicted-vs-true", f"Predicted vs true: {best.strategy}",
                charts.scatter(first.metrics(split).get("pairs", []),
                               f"{best.strategy} ({split})"),
                f"{why}, first seed; up to 500 evenly spaced examples; grey: perfect.")
    if first.task == "multilabel":
        return ("per-label-f1", f"F1 per label: {best.strategy}",
                charts.per_label_f1(first.metrics(split).get("per_label", {}), first.labels,
                                    f"{best.strategy} ({split})"),
                f"{why}, first seed; support in brackets.")
    matrix = [[sum(cells) for cells in zip(*rows_)]  # summed over seeds, cell by cell
              for rows_ in zip(*[s.metrics(split)["confusion_matrix"] for _, s in runs])]
    return ("confusion-matrix", f"Confusion matrix of the best strategy: {best.strategy}",
            charts.confusion(matrix, first.labels,
                             f"{best.strategy} ({split}, {len(runs)} seed(s))"),
            f"{why}, counts summed over seeds; colour: share of the true class.")


def write_reports(out: Path, groups: Groups, cfg: RunConfig, console: Console) -> list[Row]:
    """Write results.csv, report.md and report.html into `out`; print the table.

    Args:
        out: the comparison folder (run directories are `out / run name`).
        groups: {strategy spec: [(run name, summary), ...]} in display order.
        cfg: the config of one of the runs (everything but strategy and seed is shared).
        console: where the table is printed.

    Returns:
        The table's rows.
    """
    rows = summarize(groups)
    best = best_of(rows)
    context = {**context_of(groups, cfg), "pick": recommendation(rows)}
    title = f"warmstart compare: {out.name.removeprefix('compare-')}"

    atomic_write_text(out / "results.csv", csv_text(rows, best))
    facts = "\n".join(f"- **{k}**: {v}" for k, v in context.items())
    atomic_write_text(out / "report.md", f"# {title}\n\n{facts}\n\n"
                      f"{markdown_table(rows, best)}\n\n{LEGEND}\n\n"
                      "Charts and per-class results: report.html and each run's README.md.\n")
    figures = make_charts(out, groups, rows, next(iter(groups.values()))[0][1].metric)
    atomic_write_text(out / "report.html",
                      page(title, context, results_table(rows, best), figures))
    console.print(rich_table(rows, best, title))
    console.print(f"pick: {context['pick']}", highlight=False)
    console.print(f"written: {out / 'results.csv'}, {out / 'report.md'}, {out / 'report.html'}",
                  highlight=False)
    return rows
