"""`warmstart soup`: the weights of finished runs averaged into one model (model soups).

    warmstart soup runs/a runs/b runs/c --out runs/soup [--how greedy|uniform]

Runs fine-tuned from the same pretrained weights often sit in one basin of the loss, so the
mean of their weights is a model as good as their ensemble, or close, at the cost of one
(Wortsman et al. 2022, "Model soups"). `uniform` averages every run; `greedy` (the paper's
recipe) sorts the runs by validation score and adds each to the soup only if the soup's
validation score does not drop, so a run that lies outside the basin is left out.

Runs can be souped when they share the model (`model.name`) and so every weight's name and
shape, besides what `ensemble` needs (task, labels, data, split). LoRA/IA3 runs are souped
after their adapters are merged into the base weights (peft's `merge_and_unload`): the
average of the merged weights is the average of what each run computes with, and the soup
is a plain model (as `export --merge` writes), which runs of different ranks can join.
Integer buffers (position ids) are not averaged: they must be equal, and are kept. The one
exception is batch norm's step counter (`num_batches_tracked`), which differs between runs
that trained for different numbers of steps or froze different blocks: it feeds no forward
pass unless the layer's momentum is None, and the soup keeps the largest.

The soup is a normal run directory (config, split, `model/`, `summary.json`, and `soup.json`
naming its runs), so every command that takes a run takes it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from warmstart.config import dump_config
from warmstart.errors import WarmstartError
from warmstart.files import atomic_write_json, atomic_write_text
from warmstart.models.base import Adapter, read_model_file, record_task
from warmstart.models.peft import merged
from warmstart.ship.members import (
    SPLIT,
    Member,
    combined_summary,
    load_members,
    outputs,
    score_key,
    selection_metric,
    shared_data,
    write_folder,
)
from warmstart.summary import SUMMARY, RunSummary
from warmstart.tasks import Multilabel

HOWS = ("greedy", "uniform")
COUNTERS = ("num_batches_tracked",)  # integer buffers that count steps: the soup keeps the max
SOUP_FILE = "soup.json"  # which runs the soup holds, how chosen


@dataclass
class Soup:
    """What `soup` wrote: the run folder, the runs it averaged and its summary."""

    dir: Path
    runs: list[Path]
    kept: list[Path]
    how: str
    summary: RunSummary


def plain_adapter(member: Member) -> Adapter:
    """The member's model with LoRA/IA3 adapters merged in (as loaded otherwise)."""
    folder = member.run / "model"
    meta = read_model_file(folder)
    return merged(folder, meta) if meta.get("source") == "peft" else member.adapter


def check_soupable(members: list[Member], states: list[dict[str, torch.Tensor]]) -> None:
    """Refuse runs whose weights cannot be averaged, in one line."""
    first, shapes = members[0], {k: v.shape for k, v in states[0].items()}
    for m, state in zip(members[1:], states[1:]):
        where = f"{m.run} and {first.run}"
        if m.cfg.model.name != first.cfg.model.name:
            raise WarmstartError(f"{where} fine-tuned different models ({m.cfg.model.name!r} vs "
                                 f"{first.cfg.model.name!r}); a soup averages runs of one "
                                 "pretrained model (use `warmstart ensemble` for these)")
        if {k: v.shape for k, v in state.items()} != shapes:
            raise WarmstartError(f"{where} have weights of different names or shapes; a soup "
                                 "averages runs of one architecture (use `warmstart ensemble`)")
        if m.task.to_dict() | {"thresholds": []} != first.task.to_dict() | {"thresholds": []}:
            raise WarmstartError(f"{where} save differently scaled outputs ({m.task.describe()} "
                                 f"vs {first.task.describe()}); soup runs of the same data")
        for k, v in state.items():
            if not v.is_floating_point() and not _counter(k) and not torch.equal(v, states[0][k]):
                raise WarmstartError(f"{where} differ in the fixed buffer {k!r}; a soup averages "
                                     "runs of one architecture")


def _counter(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in COUNTERS


def average(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The mean of float tensors, the largest of step counters, and the first state's value
    of the other integer buffers (equal, checked)."""
    return {k: torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype)
            if v.is_floating_point() else
            torch.stack([s[k] for s in states]).amax(0) if _counter(k) else v
            for k, v in states[0].items()}


def soup(runs: list[str | Path], out: str | Path, how: str = "greedy", *,
         overwrite: bool = False) -> Soup:
    """Average the weights of finished runs into the new run folder `out`.

    Args:
        runs: run directories of one model trained on the same data and split.
        out: the folder to write; it must not exist yet, or be empty (with `overwrite`: an
            earlier soup there is replaced).
        how: `greedy` (Wortsman et al.'s greedy soup on validation) or `uniform`.

    Raises:
        WarmstartError: fewer than two runs, runs that cannot be averaged (one line naming
            them), an `out` that holds files.
    """
    if how not in HOWS:
        raise WarmstartError(f"--how {how!r}: use one of {', '.join(HOWS)}")
    out = Path(out)
    members = load_members(runs, "a soup")
    adapters = [plain_adapter(m) for m in members]
    states = [{k: v.detach().cpu().clone() for k, v in a.module.state_dict().items()}
              for a in adapters]
    check_soupable(members, states)
    return write_folder(out, overwrite, SOUP_FILE,
                        lambda tmp: _build(members, adapters[0], states, out, tmp, how))


def _build(members: list[Member], holder: Adapter, states: list[dict[str, torch.Tensor]],
           out: Path, tmp: Path, how: str) -> Soup:
    data = shared_data(members[0])
    val, test = data.validation, data.test
    metric = selection_metric(members)
    first = members[0].task
    base = replace(first, thresholds=()) if isinstance(first, Multilabel) else first

    def load(chosen: list[int]) -> tuple[tuple[float, float], np.ndarray]:
        """Put the soup of `chosen` into `holder`: its validation score and logits."""
        holder.module.load_state_dict(average([states[i] for i in chosen]))
        z = outputs(holder, val.inputs)
        return score_key(base.tuned(z, val.labels).metrics(z, val.labels), metric), z

    if how == "uniform":
        chosen = list(range(len(members)))
    else:  # best single run first, by the validation score it was trained to
        order = sorted(range(len(members)), key=lambda i: score_key(
            members[i].summary.validation, metric), reverse=True)
        chosen, best = [order[0]], load([order[0]])[0]
        for i in order[1:]:
            score = load([*chosen, i])[0]
            if score >= best:
                chosen, best = [*chosen, i], score
    _, z = load(chosen)  # (the holder may hold a soup that was turned down)
    task = base.tuned(z, val.labels)
    validation = task.metrics(z, val.labels, full=True)
    test_metrics = (task.metrics(outputs(holder, test.inputs), test.labels, full=True)
                    if len(test) else {})

    kept = [members[i] for i in sorted(chosen)]
    summary = combined_summary(out, kept, f"soup:{how}", validation, test_metrics, metric,
                               members[0].summary.params)
    holder.save(tmp / "model", task.label_names)
    record_task(tmp / "model", task.to_dict())
    atomic_write_text(tmp / "config.yaml", dump_config(members[0].cfg))
    shutil.copyfile(members[0].run / SPLIT, tmp / SPLIT)
    atomic_write_json(tmp / SOUP_FILE, {"how": how, "metric": metric,
                                        "runs": [str(m.run) for m in members],
                                        "kept": [str(m.run) for m in kept]})
    atomic_write_json(tmp / SUMMARY, summary.to_dict())  # last: marks the run finished
    return Soup(out, [m.run for m in members], [m.run for m in kept], how, summary)
