"""Reading label cells: which task they hold (`infer_type`), a regression cell as a number,
a multilabel cell as its names. The task objects themselves are in `warmstart.tasks`."""

from __future__ import annotations

import math

from warmstart.errors import WarmstartError


def infer_type(labels: list[str], separator: str) -> tuple[str, str]:
    """The task type the label cells suggest, and why (printed at start).

    Cells holding `separator` mean several labels: multilabel. Numbers written with a
    decimal point or exponent mean a score: regression. Anything else, including integer
    labels such as 0/1 or star ratings, is classification (set `task.type=regression` to
    treat integers as scores).
    """
    cells = [c for c in labels if c]
    several = sum(separator in c for c in cells)
    if separator and several:
        return "multilabel", (f"{several} label cells hold several labels joined by "
                              f"{separator!r} (data.label_separator)")
    numbers = [_number(c) for c in cells]
    if cells and all(v is not None for v in numbers) and any(
            not c.strip().lstrip("+-").isdigit() for c in cells):
        return "regression", "every label is a number and some are not integers"
    return "classification", "labels are names or integers (one per example)"


def _number(cell: str) -> float | None:
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_number(cell: str, where: str) -> float:
    """A regression label as a float, or a one-line error naming where it is."""
    value = _number(cell)
    if value is None:
        raise WarmstartError(f"regression label {cell!r} in {where} is not a number; fix the "
                             "cell, or set task.type=classification if the labels are names")
    return value


def split_cell(cell: str, separator: str) -> list[str]:
    """The label names in one multilabel cell (blank: no label), stripped, each once."""
    names = [n.strip() for n in cell.split(separator)] if separator else [cell.strip()]
    return list(dict.fromkeys(n for n in names if n))
