"""`summary.json`: what a finished run measured, as a typed, versioned `RunSummary`.

`warmstart train` writes it last (its presence marks a run finished); the reports, the model
card, `warmstart compare` and the benchmarks read it back with `read_summary`. The JSON keeps
the plain nested layout that scripts outside warmstart read, plus a `version`.

The metrics (`validation`, `test`, `train`, the `history` rows) stay mappings: their names are
the task's (accuracy and F1 for classification today; other tasks bring other metrics).

A file without `version` was written before the field existed, with the same layout, so it is
version 1. A version this code does not know is refused with one line rather than read into
fields that may mean something else.

This is a bottom layer: it imports nothing from config, models, training or report.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from warmstart.errors import WarmstartError

SUMMARY = "summary.json"
SUMMARY_VERSION = 1  # raise when a field is added, removed or changes meaning
_KNOWN_VERSIONS = (1,)

Metrics = dict[str, Any]  # metric name -> value (plus `per_class`, `confusion_matrix`)
Split = Literal["train", "validation", "test"]


@dataclass
class ExampleCounts:
    """How many examples each split holds."""

    train: int
    """Training examples (after `data.limit`)."""
    validation: int
    """Validation examples: the best epoch is chosen on these."""
    test: int
    """Test examples (0 when the data has no test split)."""

    def of(self, split: Split) -> int:
        """The count of one split."""
        return {"train": self.train, "validation": self.validation, "test": self.test}[split]


@dataclass
class Params:
    """Parameter counts of the model as the strategy left it before the first epoch."""

    trainable: int
    """Parameters that receive gradients (staged strategies unfreeze more later)."""
    total: int
    """All parameters of the model."""
    fraction: float
    """`trainable / total`, between 0 and 1."""


@dataclass
class LearningRates:
    """The learning rates the run trained with."""

    base: float
    """The base learning rate: `optim.lr`, else the strategy's default for the model kind,
    else the model's."""
    groups: dict[str, float]
    """Peak learning rate of each strategy parameter group, by group name (0 for groups a
    closed-form solver fits)."""


@dataclass
class Versions:
    """Library versions the run trained with (the full list is in `environment.json`)."""

    warmstart: str
    """warmstart's version."""
    torch: str
    """PyTorch's version."""
    python: str
    """Python's version."""


@dataclass
class RunSummary:
    """What a finished run measured; written as `summary.json` by `to_dict`."""

    run: str
    """The run directory."""
    model: str
    """`model.name` as given in the config."""
    data: str
    """Where the examples came from (a file, folder or built-in data set name)."""
    strategy: str
    """`strategy.name`."""
    labels: list[str]
    """Names of the model's outputs in order: the classes or labels (regression: one)."""
    examples: ExampleCounts
    """Examples per split."""
    best_epoch: int
    """The epoch (1-based) whose weights were kept, by validation `train.metric`."""
    epochs: int
    """Epochs trained (fewer than `train.epochs` when stopped early; 1 for solvers)."""
    stopped_early: bool
    """Whether early stopping ended training."""
    steps: int
    """Optimizer steps taken (0 for closed-form solvers)."""
    validation: Metrics
    """Validation metrics of the best epoch's weights, with per-class report and confusion
    matrix."""
    test: Metrics
    """Test metrics of the best epoch's weights, likewise; empty without a test split."""
    train: Metrics
    """Metrics of the best epoch's weights on a seeded sample of the training split (its
    `examples` entry says which sample), for the train-minus-validation gap."""
    final_epoch: Metrics
    """The last epoch's history row."""
    history: list[Metrics]
    """One row per epoch: `epoch`, `step`, train loss, validation metrics (`val_*`)."""
    params: Params
    """Trainable and total parameter counts."""
    lr: LearningRates
    """Base and per-group learning rates."""
    train_seconds: float
    """Seconds spent training, caching frozen layers' outputs included."""
    cache_seconds: float
    """Seconds of those spent caching frozen layers' outputs (0 without a cache)."""
    wall_seconds: float
    """Seconds for the whole run, setup and final evaluation included."""
    samples_per_second: float
    """Training examples processed per second of `train_seconds`."""
    peak_memory_mb: float
    """Peak memory in MB (2**20 bytes): allocated GPU memory on CUDA, else peak RSS."""
    device: str
    """The torch device trained on (`cpu`, `cuda:0`, ...)."""
    precision: str
    """Numeric precision of training (`fp32`, `bf16`, ...)."""
    processes: int
    """Training processes (1 unless distributed)."""
    global_batch: int
    """Examples per optimizer step, over all processes and accumulated micro-batches."""
    threads: int
    """torch CPU threads of the (main) process."""
    seed: int
    """`train.seed`."""
    versions: Versions
    """warmstart, torch and Python versions."""
    task: str = "classification"
    """The task type: classification, multilabel or regression."""
    metric: str = "accuracy"
    """The validation metric that picked the best epoch (`train.metric` as resolved), also
    the headline of tables and charts."""
    transferability: dict[str, float] = dataclasses.field(default_factory=dict)
    """Scores of the frozen features before training (`logme`, `training/transfer.py`), for
    runs whose head trains on cached features (`features`, `head`); empty otherwise."""
    augment: str = "none"
    """The training-time augmentation, in words (`augment.*` as resolved)."""
    version: int = SUMMARY_VERSION
    """Format version of this summary (`SUMMARY_VERSION` when written)."""
    distill: Metrics = dataclasses.field(default_factory=dict)
    """A distillation's teacher and student side by side (`warmstart distill`; empty, and
    left out of the file, for other runs): `teacher`, `student`, `temperature`, `alpha`,
    `unlabelled` (count), the `split` measured, and under `models` each one's metrics,
    `params` and `examples_per_second` (same examples, batch size and threads), with
    `quality_ratio` (student / teacher on `metric`), `speedup` and `params_ratio`."""

    @property
    def quality_split(self) -> Literal["test", "validation"]:
        """The split that says how good the run is: test, or validation without a test split."""
        return "test" if self.test else "validation"

    @property
    def quality(self) -> Metrics:
        """The metrics of `quality_split`."""
        return self.metrics(self.quality_split)

    @property
    def headline(self) -> float | None:
        """The value of `metric` on `quality_split` (None when the split lacks it)."""
        return self.quality.get(self.metric)

    def metrics(self, split: Split) -> Metrics:
        """The metrics of one split (empty for a split the run did not evaluate)."""
        return {"train": self.train, "validation": self.validation, "test": self.test}[split]

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict written as `summary.json` (nested like the fields); `distill`
        only where there is one, so other runs keep the layout they always had."""
        out = dataclasses.asdict(self)
        if not out["distill"]:
            del out["distill"]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = SUMMARY) -> RunSummary:
        """A summary from its dict, checked; `source` names the file in errors.

        Keys this version does not know are ignored: a change of meaning raises the version.

        Raises:
            WarmstartError: the version is unknown, or a key is missing or has the wrong type.
        """
        if not isinstance(data, Mapping):
            raise WarmstartError(f"{source} is not a run summary (a JSON object); retrain the run")
        version = data.get("version", 1)  # files written before the field are version 1
        if type(version) is not int or version not in _KNOWN_VERSIONS:
            raise WarmstartError(
                f"{source} has summary version {version!r}, which this warmstart does not read "
                f"(it reads {', '.join(map(str, _KNOWN_VERSIONS))}); upgrade warmstart or "
                "retrain the run")
        return _build(cls, {**data, "version": version}, source, "")


def read_summary(run_dir: Path) -> RunSummary:
    """The summary of the finished run in `run_dir`.

    Raises:
        WarmstartError: no summary (the run has not finished), an unreadable or corrupt file,
            or a version this warmstart does not read.
    """
    path = Path(run_dir) / SUMMARY
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WarmstartError(f"{path} is missing: the run has not finished; train it (or "
                             "continue it with warmstart train --resume)") from None
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise WarmstartError(f"cannot read {path} ({reason}); retrain the run") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise WarmstartError(f"{path} is not valid JSON ({e.msg}, line {e.lineno}); it may be "
                             "corrupt: retrain the run") from None
    return RunSummary.from_dict(data, source=str(path))


# How each annotation (a string: `from __future__ import annotations`) is checked.
_SCALARS: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "float": (int, float), "bool": (bool,),
    "Metrics": (dict,), "list[str]": (list,), "list[Metrics]": (list,),
    "dict[str, float]": (dict,),
}
_NESTED = {c.__name__: c for c in (ExampleCounts, Params, LearningRates, Versions)}


def _build(cls: type, data: Mapping[str, Any], source: str, prefix: str) -> Any:
    """`cls` from `data`, each field's value checked against its annotation."""
    values = {}
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if f.name not in data:
            if (f.default is not dataclasses.MISSING
                    or f.default_factory is not dataclasses.MISSING):
                continue
            raise WarmstartError(f"{source} lacks {key!r}; it is not a complete run summary: "
                                 "retrain the run")
        value = data[f.name]
        annotation = str(f.type)
        if annotation in _NESTED:
            if not isinstance(value, Mapping):
                raise _wrong(source, key, "an object", value)
            values[f.name] = _build(_NESTED[annotation], value, source, f"{key}.")
            continue
        kinds = _SCALARS[annotation]
        # bool is an int subclass, but a flag is not a count (nor a count a flag)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise _wrong(source, key, " or ".join(k.__name__ for k in kinds), value)
        values[f.name] = value
    return cls(**values)


def _wrong(source: str, key: str, expected: str, value: Any) -> WarmstartError:
    return WarmstartError(f"{source}: {key!r} should be {expected}, not "
                          f"{type(value).__name__}; the file may be corrupt: retrain the run")
