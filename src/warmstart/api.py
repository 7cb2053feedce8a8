"""warmstart from Python: train, load, predict, evaluate and compare in a script or notebook.

The same machinery as the CLI, no second code path: `train` builds the config the way
`warmstart train key=value ...` does (`config.load_config`) and calls `training.run.train`;
`load` restores any run, model or exported folder the way `warmstart predict` does; `compare`
is `warmstart compare`. Results are typed: `RunSummary`, `Comparison`, metric dicts of floats.

    import warmstart
    run = warmstart.train(data="reviews.csv", model="minilm-l6", strategy="lora",
                          **{"optim.lr": 3e-4})
    model = warmstart.load(run.dir)
    model.predict(["great phone", "awful battery"])
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from warmstart.choose.compare import Comparison
from warmstart.config import load_config
from warmstart.models.base import Adapter
from warmstart.ship.predict import evaluate_file, load_run, logits_for
from warmstart.summary import RunSummary, read_summary  # noqa: F401  (part of the API)
from warmstart.tasks import Task

if TYPE_CHECKING:
    from warmstart.ship.ensemble import Ensemble
    from warmstart.ship.soup import Soup


@dataclass
class Run:
    """A finished training run: its folder and summary."""

    dir: Path
    summary: RunSummary

    def load(self) -> Model:
        return load(self.dir)


@dataclass
class Model:
    """A fine-tuned model ready to predict (from a run, its `model/` folder, or an export)."""

    adapter: Adapter
    task: Task
    source: Path

    @property
    def labels(self) -> list[str]:
        return self.task.label_names

    def predictions(self, inputs: list[Any]) -> list[dict[str, Any]]:
        """What `warmstart predict` gives for each input (label/labels/score, probabilities)."""
        return self.task.predictions(self.logits(inputs)) if inputs else []

    def predict(self, inputs: list[Any]) -> list[Any]:
        """Per input: the label (classification), the list of labels (multilabel) or the
        score (regression). Texts, (text, pair) tuples, or images (paths or arrays)."""
        key = {"classification": "label", "multilabel": "labels", "regression": "score"}
        return [row[key[self.task.type]] for row in self.predictions(inputs)]

    def predict_proba(self, inputs: list[Any]) -> np.ndarray:
        """Probabilities, one row per input and one column per label (`labels` order)."""
        if self.task.type == "regression":
            raise ValueError("a regression model predicts scores, not probabilities: "
                             "use predict()")
        return np.array([[row["probabilities"][n] for n in self.labels]
                         for row in self.predictions(inputs)]).reshape(-1, len(self.labels))

    def logits(self, inputs: list[Any]) -> np.ndarray:
        return logits_for(self.adapter, list(inputs))

    def evaluate(self, path: str | Path) -> dict[str, Any]:
        """The task's metrics on a labelled file (read with the run's column names)."""
        return evaluate_file(self.source, path)


def train(data: str | None = None, model: str | None = None, strategy: str | None = None, *,
          config: str | Path | None = None, quiet: bool = True, **overrides: Any) -> Run:
    """Fine-tune and return the finished run.

    Args:
        data, model, strategy: shortcuts for `data.name`, `model.name`, `strategy.name`.
        config: a YAML config file, as `warmstart train -c`.
        quiet: no progress display (the default in scripts).
        overrides: dotted keys, e.g. `**{"optim.lr": 3e-4, "train.epochs": 3}`; lists are
            given as Python lists.
    """
    from warmstart.training.run import run_dir_of
    from warmstart.training.run import train as run_training

    given = {"data.name": data, "model.name": model, "strategy.name": strategy, **overrides}
    cfg = load_config(config, [f"{k}={_value(v)}" for k, v in given.items() if v is not None])
    summary = run_training(cfg, quiet=quiet)
    return Run(run_dir_of(cfg), summary)


def distill(teacher: str | Path, student: str, data: str | None = None, *,
            config: str | Path | None = None, unlabelled: str | Path | None = None,
            quiet: bool = True, **overrides: Any) -> Run:
    """`warmstart distill`: train `student` on the finished run `teacher`'s outputs and
    return the run; its summary's `distill` entry holds both models side by side.

    Args:
        teacher: a finished run directory.
        student: a model (as `model.name`), or `keep:every_other` / `keep:0,2,4` for a copy
            of the teacher keeping those transformer blocks.
        data: `data.name`; default the teacher's data (its data, task and training
            settings are the starting point).
        config: a YAML config file on top of the teacher's settings.
        unlabelled: texts without labels for the teacher to label (`distill.unlabelled`).
        quiet: no progress display (the default in scripts).
        overrides: dotted keys, e.g. `**{"distill.temperature": 4, "train.epochs": 3}`.
    """
    from warmstart.distillation.run import distill as run_distillation
    from warmstart.distillation.run import distill_config
    from warmstart.training.run import run_dir_of

    given = {"data.name": data, **overrides}
    cfg = distill_config(str(teacher), student, str(config) if config else None,
                         [f"{k}={_value(v)}" for k, v in given.items() if v is not None],
                         unlabelled=str(unlabelled) if unlabelled else None)
    summary = run_distillation(cfg, quiet=quiet)
    return Run(run_dir_of(cfg), summary)


def load(path: str | Path) -> Model:
    """A model from a run folder, its `model/` folder, an exported (hf or onnx) folder, or an
    ensemble folder (`ensemble`)."""
    adapter, task, _ = load_run(path)
    return Model(adapter, task, Path(path))


def compare(data: str | None = None, strategies: list[str] | None = None, seeds: int = 1, *,
            model: str | None = None, config: str | Path | None = None,
            name: str | None = None, quiet: bool = True, **overrides: Any) -> Comparison:
    """`warmstart compare`: every strategy spec (e.g. `"partial:k=2"`) at every seed on the
    same data and split; returns the folder, summaries, table rows and the pick."""
    from warmstart.choose.compare import compare as run_comparison

    given = {"data.name": data, "model.name": model, **overrides}
    items = [f"{k}={_value(v)}" for k, v in given.items() if v is not None]
    return run_comparison(str(config) if config else None, items,
                          list(strategies or ["head", "full"]), str(seeds), name=name,
                          quiet=quiet)


def ensemble(runs: list[str | Path], out: str | Path, weights: str = "greedy", *,
             overwrite: bool = False) -> Ensemble:
    """`warmstart ensemble`: average finished runs' probabilities (scores, for regression)
    into the folder `out`, weights `greedy` (chosen on validation) or `equal`; `load(out)`
    predicts with it."""
    from warmstart.ship.ensemble import ensemble as build

    return build(runs, out, weights, overwrite=overwrite)


def soup(runs: list[str | Path], out: str | Path, how: str = "greedy", *,
         overwrite: bool = False) -> Soup:
    """`warmstart soup`: average finished runs' weights (one model, same data) into the run
    folder `out`, `greedy` (runs kept while validation does not drop) or `uniform`."""
    from warmstart.ship.soup import soup as build

    return build(runs, out, how, overwrite=overwrite)


def _value(value: Any) -> str:
    """A Python value as the CLI's `key=value` text (lists comma-separated)."""
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
