"""The comparison's charts, drawn with matplotlib and returned as base64 PNG for the HTML report.

Figures are built with matplotlib's object API (`Figure`), never `pyplot`: pyplot keeps global
state and picks a GUI backend, neither of which a library should touch in its caller's process.
"""

from __future__ import annotations

import base64
import io
import math
from collections import defaultdict

import numpy as np
from matplotlib.figure import Figure

from warmstart.report.table import Row
from warmstart.summary import RunSummary

Curve = list[tuple[float, float]]  # (epoch, value) points; fractional epochs within an epoch


def png_base64(fig: Figure) -> str:
    """The figure as a base64 PNG (100 dpi: sharp on screen, small in the file)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _colors(names: list[str]) -> dict[str, tuple[float, ...]]:
    """One colour per strategy, the same in every chart."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {name: cmap(i % 10) for i, name in enumerate(names)}


def _mean_curve(curves: list[Curve]) -> Curve:
    """Mean over seeds at each x that any seed has (seeds share steps: same data and batch)."""
    at: dict[float, list[float]] = defaultdict(list)
    for curve in curves:
        for x, y in curve:
            at[round(x, 6)].append(y)
    return [(x, float(np.mean(ys))) for x, ys in sorted(at.items())]


def _plot(ax, curve: Curve, color, label: str) -> None:
    xs, ys = zip(*curve) if curve else ((), ())
    # Markers too: a one-epoch run has a single validation point, which a bare line hides.
    ax.plot(xs, ys, color=color, label=label, marker="o" if len(xs) < 20 else None,
            markersize=4)


def learning_curves(train_loss: dict[str, list[Curve]], validation: dict[str, list[Curve]],
                    metric: str) -> Figure:
    """Training loss (left) and the validation metric (right) per epoch, one line a strategy.

    Args:
        train_loss: {strategy: one curve per seed} of the logged training loss.
        validation: {strategy: one curve per seed} of the validation metric at epoch ends.
        metric: the validation metric's name, for the axis label.
    """
    colors = _colors(list(train_loss))
    fig = Figure(figsize=(11, 4), layout="constrained")
    ax_loss, ax_val = fig.subplots(1, 2)
    for name, color in colors.items():
        _plot(ax_loss, _mean_curve(train_loss[name]), color, name)
        _plot(ax_val, _mean_curve(validation.get(name, [])), color, name)
    ax_loss.set(title="training loss", xlabel="epoch", ylabel="loss")
    ax_val.set(title=f"validation {metric}", xlabel="epoch", ylabel=metric)
    for ax in (ax_loss, ax_val):
        ax.grid(alpha=0.3)
    ax_val.legend(fontsize="small")
    fig.suptitle("Learning curves (mean over seeds)")
    return fig


def quality_vs(rows: list[Row], x_key: str, x_label: str, *, log_x: bool) -> Figure:
    """Mean headline quality (error bars: spread over seeds) against a cost column."""
    colors = _colors([r.strategy for r in rows])
    fig = Figure(figsize=(6.5, 4.5), layout="constrained")
    ax = fig.subplots()
    quality = rows[0].quality if rows else None
    for r in rows:
        x, y = r.mean[x_key], r.mean[r.quality.key]
        if math.isnan(x) or math.isnan(y):
            continue
        ax.errorbar(x, y, xerr=_spread(r.std[x_key]), yerr=_spread(r.std[r.quality.key]),
                    fmt="o", color=colors[r.strategy], capsize=3, label=r.strategy)
        ax.annotate(r.strategy, (x, y), textcoords="offset points", xytext=(6, 4),
                    fontsize="small")
    if log_x:
        ax.set_xscale("log")
    label = quality.title if quality else "test quality"
    ax.set(xlabel=x_label, ylabel=label, title=f"{label.capitalize()} vs {x_label}")
    ax.grid(alpha=0.3)
    ax.margins(x=0.15, y=0.15)  # room for the point labels
    return fig


def _spread(std: float) -> float | None:
    return None if math.isnan(std) else std


def confusion(matrix: list[list[int]], labels: list[str], title: str) -> Figure:
    """Counts in each cell, coloured by the share of the true class (row) they hold."""
    counts = np.asarray(matrix, dtype=float)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    side = min(3 + 0.5 * len(labels), 12)
    fig = Figure(figsize=(side + 1.5, side), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    if len(labels) <= 30:  # beyond that the numbers would be unreadable anyway
        for (i, j), n in np.ndenumerate(counts):
            ax.text(j, i, f"{n:.0f}", ha="center", va="center", fontsize="small",
                    color="white" if shares[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.colorbar(image, ax=ax, label="share of the true class")
    return fig


def scatter(pairs: list[list[float]], title: str) -> Figure:
    """Predicted against true values (regression), with the line of perfect prediction."""
    points = np.asarray(pairs, dtype=float).reshape(-1, 2)
    fig = Figure(figsize=(5.5, 5), layout="constrained")
    ax = fig.subplots()
    ax.scatter(points[:, 0], points[:, 1], s=8, alpha=0.5)
    if len(points):
        low, high = float(points.min()), float(points.max())
        ax.plot([low, high], [low, high], color="grey", linewidth=1)
    ax.set(xlabel="true", ylabel="predicted", title=title)
    ax.grid(alpha=0.3)
    return fig


def per_label_f1(report: dict[str, dict[str, float]], labels: list[str], title: str) -> Figure:
    """F1 of each label (multilabel), lowest first, with its support in the label."""
    shown = sorted((lab for lab in labels if lab in report), key=lambda n: report[n]["f1-score"])
    fig = Figure(figsize=(6.5, max(2.5, 0.28 * len(shown) + 1)), layout="constrained")
    ax = fig.subplots()
    ax.barh([f"{n} ({report[n]['support']:.0f})" for n in shown],
            [report[n]["f1-score"] for n in shown])
    ax.set(xlabel="F1", xlim=(0, 1), title=title)
    ax.grid(alpha=0.3, axis="x")
    return fig


def step_curve(summary: RunSummary, steps: list[dict]) -> Curve:
    """Training loss against (fractional) epochs, from `metrics.jsonl` step rows.

    Falls back to the per-epoch mean training loss of the summary's history when no step was
    logged (e.g. an older run without metrics.jsonl).
    """
    history = summary.history
    per_epoch = history[0]["step"] if history and history[0].get("step") else 0
    if steps and per_epoch:
        return [(row["step"] / per_epoch, float(row["loss"])) for row in steps]
    return [(h["epoch"], float(h["train_loss"])) for h in history if "train_loss" in h]


def validation_curve(summary: RunSummary, metric: str) -> Curve:
    """The validation metric at each epoch end, from the summary's history."""
    key = f"val_{metric}"
    return [(h["epoch"], float(h[key])) for h in summary.history if key in h]
