"""Ensembles as adapters: several saved models behind one, their outputs averaged.

`warmstart ensemble` (`ship/ensemble.py`) writes a folder holding `ensemble.json` (the members,
their weights, how the weights were chosen, the metrics), a `warmstart_model.json` with source
`ensemble`, and a copy of every member under `members/`. Loading that folder gives an
`Adapter` whose module runs every member and averages what the task predicts: probabilities
(softmax) for classification, each label's probability (sigmoid) for multilabel, the value
for regression. It hands the average back as logits (log p; log-odds of p; the value), so
everything that reads a model's logits (predict, evaluate, serve, export, `warmstart.load`)
reads an ensemble unchanged: softmax(log p) = p and sigmoid(log-odds p) = p.

Averaging probabilities rather than logits is what ensembles of classifiers usually do
(Lakshminarayanan et al. 2017; Caruana et al. 2004 average predictions), and it keeps a member
that is very sure of a wrong class from outvoting the others by the size of its logits.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from warmstart.errors import WarmstartError
from warmstart.models.base import LOADERS, Adapter, logits_of, read_model_file
from warmstart.models.build import load_adapter
from warmstart.tasks import Regression, Task, task_from_dict

ENSEMBLE_FILE = "ensemble.json"  # the manifest: members, weights, how chosen, metrics
MEMBERS = "members"  # the folder holding a copy of each member
# Probabilities are clipped this far from 0 and 1 before the log: a member certain of a class
# (p = 1 in float32) must not turn the other classes' logits into -inf.
EPS = 1e-7


def averaged(task: Task, logits: torch.Tensor) -> torch.Tensor:
    """What an ensemble averages of one member's logits: probabilities (classification,
    multilabel) or the predicted values (regression, as an n x 1 column)."""
    logits = logits.float()
    if task.type == "classification":
        return torch.softmax(logits, dim=1)
    if task.type == "multilabel":
        return torch.sigmoid(logits)
    assert isinstance(task, Regression)
    return logits[:, :1] * task.scale + task.mean


def as_logits(task_type: str, mean: torch.Tensor) -> torch.Tensor:
    """The averaged outputs as logits of the task type (the inverse of `averaged`)."""
    if task_type == "classification":
        return torch.log(mean.clamp_min(EPS))
    if task_type == "multilabel":
        p = mean.clamp(EPS, 1 - EPS)
        return torch.log(p) - torch.log1p(-p)
    return mean


def combine(task_type: str, parts: Sequence[torch.Tensor], weights: Sequence[float]
            ) -> torch.Tensor:
    """The weighted mean of the members' `averaged` outputs, as logits (weights sum to 1)."""
    total = sum(w * p for w, p in zip(weights, parts) if w)
    assert isinstance(total, torch.Tensor), "an ensemble needs a member with weight > 0"
    return as_logits(task_type, total)


class EnsembleModule(nn.Module):
    """`module(**batch)` -> the ensemble's logits. The batch holds each member's own collated
    inputs under `<i>/<key>` (member `i`'s tokenizer or image preprocessing made them)."""

    def __init__(self, modules: list[nn.Module], tasks: list[Task], weights: list[float],
                 task_type: str) -> None:
        super().__init__()
        self.members = nn.ModuleList(modules)
        self.tasks, self.weights, self.task_type = tasks, weights, task_type

    def forward(self, **batch: torch.Tensor) -> torch.Tensor:
        parts = []
        for i, (module, task) in enumerate(zip(self.members, self.tasks)):
            mine = {k.split("/", 1)[1]: v for k, v in batch.items() if k.startswith(f"{i}/")}
            parts.append(averaged(task, logits_of(module(**mine))))
        return combine(self.task_type, parts, self.weights)


def read_manifest(directory: Path) -> dict[str, Any]:
    """`ensemble.json` of an ensemble folder.

    Raises:
        WarmstartError: it is missing or not valid JSON.
    """
    path = Path(directory) / ENSEMBLE_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WarmstartError(f"{str(directory)!r} has no {ENSEMBLE_FILE}; pass a folder "
                             "written by `warmstart ensemble`") from None
    except (OSError, ValueError):
        raise WarmstartError(f"{str(path)!r} cannot be read as JSON; build the ensemble "
                             "again with `warmstart ensemble`") from None


def model_folder(member: Path) -> Path:
    """A member's saved model: a run's `model/` folder, or the member itself (an export)."""
    return member / "model" if (member / "model").is_dir() else member


@LOADERS.register("ensemble", "ensembles written by `warmstart ensemble` (members averaged)")
def load_ensemble(directory: Path, meta: dict[str, Any]) -> Adapter:
    """The adapter of an ensemble folder: every member with a weight, loaded and averaged."""
    entries = [e for e in read_manifest(directory)["members"] if e["weight"] > 0]
    adapters, tasks = [], []
    for entry in entries:
        folder = model_folder(directory / entry["path"])
        if not folder.is_dir():
            raise WarmstartError(f"ensemble member {str(folder)!r} is missing; the ensemble "
                                 "folder is incomplete: build it again")
        adapter, labels = load_adapter(folder)
        adapters.append(adapter)
        tasks.append(task_from_dict(read_model_file(folder).get("task"), labels))
    return ensemble_adapter(adapters, tasks, [float(e["weight"]) for e in entries],
                            meta["task"]["type"], str(meta.get("name", directory.name)))


def ensemble_adapter(members: list[Adapter], tasks: list[Task], weights: list[float],
                     task_type: str, name: str) -> Adapter:
    """One adapter over `members`: each example is encoded once per member (a tuple), and a
    batch holds each member's own collated inputs."""
    total = sum(weights)
    module = EnsembleModule([m.module for m in members], tasks, [w / total for w in weights],
                            task_type)

    def encode(inputs: Sequence[Any]) -> list[Any]:
        return list(zip(*(m.encode(inputs) for m in members)))

    def collate(batch: list[Any]) -> dict[str, torch.Tensor]:
        return {f"{i}/{k}": v for i, m in enumerate(members)
                for k, v in m.collate([example[i] for example in batch]).items()}

    def lengths(encoded: list[Any]) -> list[int]:
        # Batches grouped by the longest member encoding: the least padding overall.
        each = [m.lengths([e[i] for e in encoded]) for i, m in enumerate(members)
                if m.lengths is not None]
        return [max(n) for n in zip(*each)]

    def save(out: Path, label_names: list[str]) -> None:
        raise WarmstartError("an ensemble is written by `warmstart ensemble`; copy its folder "
                             "or `warmstart export` it")

    return Adapter(name=name, kind=members[0].kind, module=module, groups=[], head=module,
                   default_lr=0.0, encode=encode, collate=collate, save=save,
                   lengths=lengths if any(m.lengths for m in members) else None,
                   extra={"ensemble": [m.name for m in members]})
