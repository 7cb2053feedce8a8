"""A handful of events and the observers that listen to them.

Events: `on_fit_start`, `on_step_end`, `on_epoch_end`, `on_fit_end`. Each observer receives
a frozen `State` snapshot: callbacks read the training state, they never write it (no
attribute delegation, no trainer mutation). An observer implements only the events it needs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from warmstart.errors import WarmstartError


@dataclass(frozen=True)
class State:
    """A read-only snapshot of the training state."""

    epochs: int = 0
    total_steps: int = 0
    steps_per_epoch: int = 0
    metric: str = "accuracy"
    epoch: int = 0  # 1-based, 0 before the first
    step: int = 0  # optimizer steps done
    loss: float = float("nan")  # last step's loss
    lr: float = 0.0  # base lr x schedule at the last step
    samples: int = 0  # training examples seen
    train_seconds: float = 0.0
    best_value: float | None = None
    best_epoch: int = 0
    epoch_metrics: dict[str, Any] = field(default_factory=dict)

    def update(self, **changes: Any) -> State:
        """A new snapshot with `changes` applied."""
        return dataclasses.replace(self, **changes)

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.train_seconds if self.train_seconds > 0 else 0.0


class Callbacks:
    """The observers of one run, called in order for each event."""

    def __init__(self, observers: list[Any]) -> None:
        self.observers = observers

    def fire(self, event: str, state: State) -> None:
        for obs in self.observers:
            handler = getattr(obs, event, None)
            if handler is not None:
                handler(state)


class MetricsLog:
    """Appends one JSON line per logged step and per epoch to `metrics.jsonl`."""

    def __init__(self, path: Path, every: int) -> None:
        self.path = path
        self.every = every

    def _write(self, row: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    def on_step_end(self, s: State) -> None:
        if s.step % self.every == 0 or s.step == s.total_steps:
            self._write({"kind": "step", "epoch": s.epoch, "step": s.step, "loss": s.loss,
                         "lr": s.lr, "samples_per_s": round(s.samples_per_second, 2)})

    def on_epoch_end(self, s: State) -> None:
        self._write({"kind": "epoch", **s.epoch_metrics})


class ProgressDisplay:
    """Live progress on a terminal (rich); plain periodic lines otherwise (CI, log files)."""

    PLAIN_EVERY_SECONDS = 15.0  # often enough to see life in a log, rare enough to read it

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.live = self.console.is_terminal
        self._progress: Progress | None = None
        self._task = None
        self._last_line = 0.0

    def on_fit_start(self, s: State) -> None:
        if self.live:
            self._progress = Progress(
                TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
                BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.2e}  "
                           "{task.fields[sps]:.1f} samples/s"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                console=self.console, transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(
                "train", total=s.total_steps, epoch=1, epochs=s.epochs, loss=float("nan"),
                lr=0.0, sps=0.0,
            )
        self._last_line = time.monotonic()

    def on_step_end(self, s: State) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=s.step, epoch=s.epoch, loss=s.loss,
                                  lr=s.lr, sps=s.samples_per_second)
        elif time.monotonic() - self._last_line >= self.PLAIN_EVERY_SECONDS:
            self._last_line = time.monotonic()
            left = (s.total_steps - s.step) * s.train_seconds / max(1, s.step)
            print(f"epoch {s.epoch}/{s.epochs} step {s.step}/{s.total_steps} loss {s.loss:.4f} "
                  f"lr {s.lr:.2e} {s.samples_per_second:.1f} samples/s ETA {left:.0f}s",
                  file=sys.stderr, flush=True)

    def on_epoch_end(self, s: State) -> None:
        m = s.epoch_metrics
        line = (f"epoch {s.epoch}/{s.epochs}: train loss {m['train_loss']:.4f}  "
                f"val loss {m.get('val_loss', float('nan')):.4f}  "
                f"val acc {m.get('val_accuracy', float('nan')):.4f}  "
                f"val F1 {m.get('val_f1_macro', float('nan')):.4f}"
                + ("  (best)" if s.best_epoch == s.epoch else ""))
        if self._progress is not None:
            self._progress.console.print(line)
        else:
            print(line, file=sys.stderr, flush=True)

    def on_fit_end(self, s: State) -> None:
        if self._progress is not None:
            self._progress.stop()


class TensorBoardLog:
    """Scalars for TensorBoard under `<run>/tensorboard` (`log.to=[tensorboard]`)."""

    def __init__(self, run_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise WarmstartError("log.to=tensorboard needs the tensorboard package: "
                                 "pip install 'warmstart[log]'") from None
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def on_step_end(self, s: State) -> None:
        self.writer.add_scalar("train/loss", s.loss, s.step)
        self.writer.add_scalar("train/lr", s.lr, s.step)

    def on_epoch_end(self, s: State) -> None:
        for key, value in s.epoch_metrics.items():
            if isinstance(value, float):  # val_accuracy -> val/accuracy, train_loss -> epoch/..
                tag = key.replace("_", "/", 1) if key.startswith("val_") else f"epoch/{key}"
                self.writer.add_scalar(tag, value, s.step)
        self.writer.flush()

    def on_fit_end(self, s: State) -> None:
        self.writer.close()


class MlflowLog:
    """Params and metrics to MLflow's local file store `<run>/mlruns` (`log.to=[mlflow]`)."""

    def __init__(self, run_dir: Path, params: dict[str, Any]) -> None:
        try:
            import mlflow
        except ImportError:
            raise WarmstartError("log.to=mlflow needs the mlflow package: "
                                 "pip install 'warmstart[log]'") from None
        # A plain folder per run needs no server or database; MLflow 3 keeps this file store
        # working but asks callers to opt in.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = mlflow.MlflowClient(tracking_uri=(run_dir / "mlruns").resolve().as_uri())
        experiment = self.client.get_experiment_by_name("warmstart")
        experiment_id = (experiment.experiment_id if experiment
                         else self.client.create_experiment("warmstart"))
        self.run_id = self.client.create_run(experiment_id, run_name=run_dir.name).info.run_id
        for key, value in params.items():
            self.client.log_param(self.run_id, key, value)

    def on_step_end(self, s: State) -> None:
        self.client.log_metric(self.run_id, "train_loss", s.loss, step=s.step)
        self.client.log_metric(self.run_id, "lr", s.lr, step=s.step)

    def on_epoch_end(self, s: State) -> None:
        for key, value in s.epoch_metrics.items():
            if key.startswith("val_") and isinstance(value, float):
                self.client.log_metric(self.run_id, key, value, step=s.step)

    def on_fit_end(self, s: State) -> None:
        self.client.set_terminated(self.run_id)


def log_sinks(names: list[str], run_dir: Path, cfg: Any) -> list[Any]:
    """The optional loggers named in `log.to`."""
    flat = {f"{section}.{k}": str(v) for section, values in cfg.to_dict().items()
            for k, v in values.items()}
    makers = {"tensorboard": lambda: TensorBoardLog(run_dir),
              "mlflow": lambda: MlflowLog(run_dir, flat)}
    return [makers[name]() for name in names]
