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
from dataclasses import dataclass, field
from typing import Literal

from rich.table import Table

from warmstart.summary import RunSummary, Split

NAN = float("nan")


def _metric(split: Split, key: str) -> Callable[[RunSummary], float]:
    def get(s: RunSummary) -> float:
        metrics = s.metrics(split)
        return float(metrics[key]) if metrics else NAN  # no test split: no number
    return get


def overfit_gap(s: RunSummary, metric: str = "accuracy") -> float:
    """Train minus validation `metric`, both of the best epoch's weights (NaN if unknown)."""
    train, val = s.train.get(metric), s.validation.get(metric)
    return NAN if train is None or val is None else float(train) - float(val)


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


# The two quality columns of each task type (the first is its headline and picks the best),
# with their long and short titles.
QUALITY = {"classification": ("accuracy", "f1_macro"), "multilabel": ("f1_macro", "f1_micro"),
           "regression": ("spearman", "pearson")}
TITLES = {"accuracy": ("accuracy", "acc"), "f1_macro": ("macro-F1", "F1"),
          "f1_micro": ("micro-F1", "microF1"), "spearman": ("Spearman", "Spearman"),
          "pearson": ("Pearson", "Pearson")}

COSTS = [
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
]


def columns_for(task: str) -> list[Column]:
    """The table's columns for a task type: its two quality metrics on test, the costs, and
    the overfit gap of its headline metric."""
    head, second = QUALITY[task]
    quality = [Column(f"test_{m}", f"test {TITLES[m][0]}", f"test {TITLES[m][1]}",
                      _metric("test", m), "high", ".4f") for m in (head, second)]
    # Negative gaps (validation above train, common with dropout in short runs) are not
    # "better" than zero, so the best gap is the one nearest zero.
    gap = Column("overfit_gap", f"overfit gap (train - val {TITLES[head][0]})", "gap",
                 lambda s: overfit_gap(s, head), "near_zero", "+.4f")
    return [*quality, *COSTS, gap]


COLUMNS = columns_for("classification")


@dataclass
class Row:
    """One strategy: its runs and, per column key, the mean and spread over seeds."""

    strategy: str
    runs: list[str]
    mean: dict[str, float]
    std: dict[str, float]
    columns: list[Column] = field(default_factory=lambda: COLUMNS)

    @property
    def quality(self) -> Column:
        """The headline quality column (the task's first metric on test)."""
        return self.columns[0]


def columns_of(rows: list[Row]) -> list[Column]:
    return rows[0].columns if rows else COLUMNS


def _mean_std(values: list[float]) -> tuple[float, float]:
    known = [v for v in values if not math.isnan(v)]
    if not known:
        return NAN, NAN
    return statistics.fmean(known), statistics.stdev(known) if len(known) > 1 else NAN


def summarize(groups: dict[str, list[tuple[str, RunSummary]]]) -> list[Row]:
    """Rows in the order given, from {strategy: [(run name, summary), ...]}."""
    rows = []
    for strategy, runs in groups.items():
        columns = columns_for(runs[0][1].task)
        row = Row(strategy, [name for name, _ in runs], {}, {}, columns)
        for col in columns:
            row.mean[col.key], row.std[col.key] = _mean_std([col.value(s) for _, s in runs])
        rows.append(row)
    return rows


def best_of(rows: list[Row]) -> dict[str, set[str]]:
    """{column key: strategies with the best mean} (ties all marked; NaN never best)."""
    best: dict[str, set[str]] = {}
    for col in columns_of(rows):
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
    columns = columns_of(rows)
    header = ["strategy", "runs"] + [f"{c.key}_{s}" for c in columns for s in ("mean", "std")]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*header, "best"])
    for r in rows:
        numbers = [_csv_number(v) for c in columns for v in (r.mean[c.key], r.std[c.key])]
        wins = " ".join(c.key for c in columns if r.strategy in best.get(c.key, ()))
        writer.writerow([r.strategy, len(r.runs), *numbers, wins])
    return buf.getvalue()


def _csv_number(value: float) -> str:
    return "" if math.isnan(value) else repr(value)  # repr: the shortest exact round trip


def markdown_table(rows: list[Row], best: dict[str, set[str]]) -> str:
    """A GitHub-flavoured Markdown table, best values in bold."""
    columns = columns_of(rows)
    lines = ["| strategy | runs | " + " | ".join(c.title for c in columns) + " |",
             "|---|---:|" + "---:|" * len(columns)]
    for r in rows:
        cells = [f"**{cell(r, c)}**" if r.strategy in best.get(c.key, ()) else cell(r, c)
                 for c in columns]
        lines.append(f"| {r.strategy} | {len(r.runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rich_table(rows: list[Row], best: dict[str, set[str]], title: str) -> Table:
    """The table for the terminal (short headers, see LEGEND), best values bold green."""
    columns = columns_of(rows)
    metric = columns[0].title.removeprefix("test ")
    table = Table(title=title, caption="± = standard deviation over seeds; gap = train minus "
                  f"validation {metric}; best values in bold green")
    table.add_column("strategy")
    table.add_column("runs", justify="right")
    for c in columns:
        table.add_column(c.short, justify="right")
    for r in rows:
        table.add_row(r.strategy, str(len(r.runs)), *[
            f"[bold green]{cell(r, c)}[/]" if r.strategy in best.get(c.key, ()) else cell(r, c)
            for c in columns])
    return table


LEGEND = ("mean ± sample standard deviation over seeds; best values marked (highest quality "
          "metrics and samples/s; fewest trainable parameters; lowest time and memory; overfit "
          "gap nearest zero). Overfit gap: training minus validation headline metric (the "
          "first column) of the best epoch's weights. Peak memory: the training process's "
          "peak RSS on CPU, peak allocated GPU memory on CUDA.")
