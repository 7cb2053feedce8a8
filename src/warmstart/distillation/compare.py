"""Teacher and student side by side: quality on the run's test split, parameters, and
inference throughput, measured in one process on the same examples, batch size and threads.

Throughput is end to end as `warmstart predict` runs a model (tokenising included, the same
for both): examples per second of `logits_for`, best of a few alternating rounds after a
warm-up, so a neighbour's burst of load on a shared machine hurts both models alike.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from warmstart.config import RunConfig, parse_layers
from warmstart.distillation.teacher import RunTeacher
from warmstart.models.base import Adapter
from warmstart.models.layerdrop import blocks_of, chosen_blocks
from warmstart.ship.predict import load_run, logits_for
from warmstart.tasks import TASKS

ROUNDS = 3  # timed passes per model, alternating; the best counts


def timed(adapter: Adapter, inputs: list[Any], batch_size: int) -> tuple[np.ndarray, float]:
    """The model's logits for `inputs` and its examples per second on them."""
    start = time.perf_counter()
    logits = logits_for(adapter, inputs, batch_size)
    return logits, len(inputs) / max(time.perf_counter() - start, 1e-9)


def side_by_side(teacher: RunTeacher, run_dir: str, cfg: RunConfig,
                 rounds: int = ROUNDS) -> dict[str, Any]:
    """The `distill` entry of the student's summary: both models' test metrics, parameters
    and examples per second, and the student's share of each (student / teacher)."""
    assert teacher.data is not None, "the run has not read its data yet"
    split = "test" if len(teacher.data.test) else "validation"
    examples = teacher.data.test if split == "test" else teacher.data.validation
    student, student_task, _ = load_run(run_dir)  # the student as saved, as users get it
    device = next(teacher.adapter.module.parameters()).device
    student.module.to(device)
    batch = cfg.train.eval_batch_size
    models = {"teacher": (teacher.adapter, teacher.task), "student": (student, student_task)}
    for adapter, _ in models.values():  # warm-up: first-call allocations, lazy imports
        logits_for(adapter, examples.inputs[:batch], batch)
    speeds: dict[str, float] = {}
    outputs: dict[str, np.ndarray] = {}
    for _ in range(rounds):  # alternate, so a load burst on a shared machine hits both
        for name, (adapter, _) in models.items():
            outputs[name], speed = timed(adapter, examples.inputs, batch)
            speeds[name] = max(speeds.get(name, 0.0), speed)
    sides = {}
    for name, (adapter, task) in models.items():
        logits = outputs[name]
        if name == "teacher":  # the teacher's columns in the data's label order
            logits = logits[:, teacher.columns_for(teacher.data.task)]
        metrics = task.metrics(logits, examples.labels)
        sides[name] = {**{k: v for k, v in metrics.items() if isinstance(v, float)},
                       "params": sum(p.numel() for p in adapter.module.parameters()),
                       "examples_per_second": speeds[name]}
    metric = TASKS[teacher.task.type].natural_metric
    kept = cfg.distill.keep_layers
    if kept:
        blocks, _ = blocks_of(teacher.adapter)
        kept = ", ".join(map(str, chosen_blocks(parse_layers(kept) or kept, len(blocks))))
    return {
        "teacher": str(teacher.path),
        "student": f"blocks {kept} of the teacher" if kept else cfg.model.name,
        "temperature": cfg.distill.temperature, "alpha": cfg.distill.alpha,
        "unlabelled": len(teacher.unlabelled), "split": split, "examples": len(examples),
        "batch_size": batch, "rounds": rounds, "threads": torch.get_num_threads(),
        "device": str(device),
        "metric": metric, "models": sides,
        "quality_ratio": sides["student"][metric] / sides["teacher"][metric]
        if sides["teacher"][metric] else 0.0,
        "speedup": sides["student"]["examples_per_second"]
        / max(sides["teacher"]["examples_per_second"], 1e-9),
        "params_ratio": sides["student"]["params"] / sides["teacher"]["params"],
    }


def print_side_by_side(report: dict[str, Any], console: Console) -> None:
    """The teacher-vs-student table printed at the end of `warmstart distill`."""
    models = report["models"]
    table = Table(title=f"teacher vs student on the {report['split']} split "
                        f"({report['examples']} examples)")
    for column in ("", "teacher", "student", "student / teacher"):
        table.add_column(column, justify="right" if column else "left")
    keys = [k for k in _rows(models["teacher"]) if k in models["student"]]
    for key in keys:
        t, s = models["teacher"][key], models["student"][key]
        ratio = f"{s / t:.3f}" if t else "-"
        fmt = "{:,.0f}" if key == "params" else "{:.1f}" if key == "examples_per_second" \
            else "{:.4f}"
        table.add_row(key.replace("_", " "), fmt.format(t), fmt.format(s), ratio)
    console.print(table)
    console.print(f"throughput: batch {report['batch_size']}, {report['threads']} threads, "
                  f"{report['device']}, best of {report['rounds']} alternating passes",
                  highlight=False)


def _rows(side: dict[str, Any]) -> list[str]:
    """The rows of the table: the metrics, then size and speed."""
    return [k for k in side if k not in ("params", "examples_per_second")] + [
        "params", "examples_per_second"]
