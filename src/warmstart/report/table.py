"""The comparison table: one row per strategy, mean and spread over seeds of each column.

Every number comes from the runs' `summary.json` files (nothing is re-measured), so the table
can always be checked against them. The spread is the sample standard deviation (n - 1) over
seeds; with one seed there is none and the table shows the mean alone.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from rich.table import Table

from warmstart.summary import RunSummary, Split

NAN = float("nan")


def _metric(split: Split, key: str) -> Callable[[RunSummary], float]:
    def get(s: RunSummary) -> float:
        metrics = s.metrics(split)
        return float(metrics[key]) if metrics else NAN  # no test split: no number
    return get


def overfit_gap(s: RunSummary) -> float:
    """Train minus validation accuracy, both of the best epoch's weights (NaN if unknown)."""
    train = s.train.get("accuracy")
    return NAN if train is None else float(train) - float(s.validation["accuracy"])


@dataclass(frozen=True)
class Column:
    """One measured quantity: where it comes from in a summary and which way is better."""

    key: str  # results.csv has `<key>_mean` and `<key>_std`
    title: str
    short: str  # header in the terminal, where width is scarce
    value: Callable[[RunSummary], float]
    better: Literal["high", "low", "near_zero"] | None
    fmt: str  # format spec of the mean and the spread
    spread: bool = True  # False: the same at every seed by construction (parameter counts)


COLUMNS = [
    Column("test_accuracy", "test accuracy", "test acc", _metric("test", "accuracy"), "high",
           ".4f"),
    Column("test_f1_macro", "test macro-F1", "test F1", _metric("test", "f1_macro"), "high",
           ".4f"),
    Column("trainable_params", "trainable params", "trainable",
           lambda s: float(s.params.trainable), "low", ",.0f", spread=False),
    Column("train_seconds", "train time (s)", "train s", lambda s: float(s.train_seconds),
           "low", ".1f"),
    Column("samples_per_second", "samples/s", "samples/s",
           lambda s: float(s.samples_per_second), "high", ".1f"),
    Column("peak_memory_mb", "peak memory (MB)", "peak MB",
           lambda s: float(s.peak_memory_mb), "low", ".0f"),
    # Which epoch was best says how long a strategy needs, not how good it is: never marked.
    Column("best_epoch", "best epoch", "best ep", lambda s: float(s.best_epoch), None, ".1f"),
    # Negative gaps (validation above train, common with dropout in short runs) are not
    # "better" than zero, so the best gap is the one nearest zero.
    Column("overfit_gap", "overfit gap (train - val acc)", "gap", overfit_gap, "near_zero",
           "+.4f"),
]


@dataclass
class Row:
    """One strategy: its runs and, per column key, the mean and spread over seeds."""

    strategy: str
    runs: list[str]
    mean: dict[str, float]
    std: dict[str, float]


def _mean_std(values: list[float]) -> tuple[float, float]:
    known = [v for v in values if not math.isnan(v)]
    if not known:
        return NAN, NAN
    return statistics.fmean(known), statistics.stdev(known) if len(known) > 1 else NAN


def summarize(groups: dict[str, list[tuple[str, RunSummary]]]) -> list[Row]:
    """Rows in the order given, from {strategy: [(run name, summary), ...]}."""
    rows = []
    for strategy, runs in groups.items():
        row = Row(strategy, [name for name, _ in runs], {}, {})
        for col in COLUMNS:
            row.mean[col.key], row.std[col.key] = _mean_std([col.value(s) for _, s in runs])
        rows.append(row)
    return rows


def best_of(rows: list[Row]) -> dict[str, set[str]]:
    """{column key: strategies with the best mean} (ties all marked; NaN never best)."""
    best: dict[str, set[str]] = {}
    for col in COLUMNS:
        if col.better is None:
            continue
        score = {r.strategy: r.mean[col.key] for r in rows if not math.isnan(r.mean[col.key])}
        if col.better == "near_zero":
            score = {k: -abs(v) for k, v in score.items()}
        elif col.better == "low":
            score = {k: -v for k, v in score.items()}
        if score:
            top = max(score.values())
            best[col.key] = {k for k, v in score.items() if math.isclose(v, top, rel_tol=1e-12)}
    return best


def cell(row: Row, col: Column) -> str:
    """`mean ± std` as the column formats it; `-` where nothing was measured."""
    mean, std = row.mean[col.key], row.std[col.key]
    if math.isnan(mean):
        return "-"
    text = format(mean, col.fmt)
    if math.isnan(std) or not col.spread:
        return text
    return f"{text} ± {format(std, col.fmt.lstrip('+'))}"


def csv_text(rows: list[Row], best: dict[str, set[str]]) -> str:
    """results.csv: full-precision numbers, one row per strategy; `best` lists the columns it
    wins. A spread that does not exist (one seed) is left empty."""
    header = ["strategy", "runs"] + [f"{c.key}_{s}" for c in COLUMNS for s in ("mean", "std")]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*header, "best"])
    for r in rows:
        numbers = [_csv_number(v) for c in COLUMNS for v in (r.mean[c.key], r.std[c.key])]
        wins = " ".join(c.key for c in COLUMNS if r.strategy in best.get(c.key, ()))
        writer.writerow([r.strategy, len(r.runs), *numbers, wins])
    return buf.getvalue()


def _csv_number(value: float) -> str:
    return "" if math.isnan(value) else repr(value)  # repr: the shortest exact round trip


def markdown_table(rows: list[Row], best: dict[str, set[str]]) -> str:
    """A GitHub-flavoured Markdown table, best values in bold."""
    lines = ["| strategy | runs | " + " | ".join(c.title for c in COLUMNS) + " |",
             "|---|---:|" + "---:|" * len(COLUMNS)]
    for r in rows:
        cells = [f"**{cell(r, c)}**" if r.strategy in best.get(c.key, ()) else cell(r, c)
                 for c in COLUMNS]
        lines.append(f"| {r.strategy} | {len(r.runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rich_table(rows: list[Row], best: dict[str, set[str]], title: str) -> Table:
    """The table for the terminal (short headers, see LEGEND), best values bold green."""
    table = Table(title=title, caption="± = standard deviation over seeds; gap = train minus "
                  "validation accuracy; best values in bold green")
    table.add_column("strategy")
    table.add_column("runs", justify="right")
    for c in COLUMNS:
        table.add_column(c.short, justify="right")
    for r in rows:
        table.add_row(r.strategy, str(len(r.runs)), *[
            f"[bold green]{cell(r, c)}[/]" if r.strategy in best.get(c.key, ()) else cell(r, c)
            for c in COLUMNS])
    return table


LEGEND = ("mean ± sample standard deviation over seeds; best values marked (highest accuracy, "
          "macro-F1 and samples/s; fewest trainable parameters; lowest time and memory; overfit "
          "gap nearest zero). Overfit gap: training minus validation accuracy of the best "
          "epoch's weights. Peak memory: the training process's peak RSS on CPU, peak "
          "allocated GPU memory on CUDA.")
