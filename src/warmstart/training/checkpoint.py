"""The checkpoints that make `warmstart train --resume` continue a run exactly, written
atomically (`files.py`). `summary.json` is written last, so its presence is what marks a run
as finished.

A checkpoint holds everything the loop's future depends on: weights, optimizer moments, the
loop's own state (`LoopState`: step/epoch/micro-batch counters, the history so far, the
running sums), the RNG state (dropout), and how long `metrics.jsonl` was. The data order and
the lr schedule are pure functions of (seed, epoch) and of the step, so they need no saving.

`LoopState` carries a format version: a checkpoint written by a warmstart whose loop state
differs is refused with one line instead of resuming into a silently different run.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from warmstart.errors import WarmstartError
from warmstart.files import atomic_dir, commit_dir, readable_by_others
from warmstart.summary import SUMMARY
from warmstart.training.distributed import Dist


def is_finished(run_dir: Path) -> bool:
    """A run is finished once its summary exists."""
    return (run_dir / SUMMARY).is_file()


LOOP_STATE_VERSION = 1  # raise when LoopState's fields change meaning


@dataclass
class LoopState:
    """Everything of the loop's own a checkpoint carries besides weights, optimizer and RNG.

    Attributes:
        epoch: epochs finished (0-based index of the current epoch).
        epoch_step: optimizer steps done within the current epoch.
        step: optimizer steps done in all.
        history: one row per finished epoch (train loss, validation metrics).
        best_value: the best validation value of `train.metric` so far.
        best_epoch: its epoch (1-based; 0 = none yet).
        train_seconds: time inside training epochs so far.
        samples: training examples seen so far.
        loss_sum, loss_count, correct: running sums of the current epoch (summed over all
            processes in a checkpoint).
        step_size: the global batch (examples per optimizer step) the run trains with.
        version: the format version (`LOOP_STATE_VERSION`).
    """

    epoch: int = 0
    epoch_step: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_value: float | None = None
    best_epoch: int = 0
    train_seconds: float = 0.0
    samples: int = 0
    loss_sum: float = 0.0
    loss_count: int = 0
    correct: int = 0
    step_size: int = 0
    version: int = LOOP_STATE_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: Path) -> LoopState:
        """The state saved in checkpoint `where`.

        Raises:
            WarmstartError: the checkpoint was written with another loop-state format.
        """
        version = data.get("version") if isinstance(data, dict) else None
        if version != LOOP_STATE_VERSION:
            raise WarmstartError(
                f"checkpoint {str(where)!r} has loop-state version {version}, not the "
                f"{LOOP_STATE_VERSION} this warmstart resumes; start the run over with "
                "--overwrite (or resume it with the warmstart version that wrote it)")
        return cls(**data)


@dataclass
class Resume:
    """Where a checkpoint left a run: what `fit` needs to continue it exactly."""

    model_state: dict[str, torch.Tensor]
    loop: LoopState
    optimizer: dict[str, Any]
    rng_by_rank: list[torch.Tensor]
    cuda_rng: list[torch.Tensor]
    scaler: dict[str, Any] | None
    metrics_bytes: int  # the length of metrics.jsonl when the checkpoint was written
    best_state: dict[str, torch.Tensor] | None


CHECKPOINTS = "checkpoints"
BEST = "best.safetensors"


def _weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share memory (tied weights); independent copies are safe.
    return {k: v.detach().to("cpu").clone().contiguous() for k, v in state.items()}


class Checkpointer:
    """Writes `checkpoints/step-NNNNNNNN/` folders (keeping the last K) and the best weights."""

    def __init__(self, run_dir: Path, every_steps: int, keep_last: int,
                 write: bool = True) -> None:
        self.dir = run_dir / CHECKPOINTS
        self.metrics = run_dir / "metrics.jsonl"
        self.every_steps = every_steps
        self.keep_last = keep_last
        self.write = write  # False on every process but the main one

    def save(self, weights: dict[str, torch.Tensor], optimizer_state: dict[str, Any],
             loop: LoopState, rng_by_rank: list[torch.Tensor],
             scaler: dict[str, Any] | None = None) -> Path:
        """Checkpoint after optimizer step `loop.step`; older checkpoints beyond K are removed.

        `weights` and `optimizer_state` are full state dicts (gathered whole under FSDP);
        `rng_by_rank` is every process's CPU RNG state.
        """
        if not self.write:
            return self.dir
        final = self.dir / f"step-{loop.step:08d}"
        tmp = atomic_dir(final)
        try:
            save_file(_weights(weights), str(tmp / "model.safetensors"))
            torch.save({
                "optimizer": optimizer_state,
                "rng_by_rank": rng_by_rank,
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "metrics_bytes": self.metrics.stat().st_size if self.metrics.exists() else 0,
                "loop": loop.to_dict(),
                "scaler": scaler,
            }, tmp / "state.pt")
        except OSError as e:  # a full disk, a quota: the half-written folder goes, the last
            shutil.rmtree(tmp, ignore_errors=True)  # finished checkpoint stays the resume point
            latest = self.latest()
            raise WarmstartError(
                f"cannot write checkpoint {str(final)!r}: {e.strerror or e}; free space (or "
                "set checkpoint.keep_last=1), then " + (
                    f"`warmstart train --resume {self.dir.parent}` continues from "
                    f"{latest.name}" if latest else "run the same command again")) from None
        commit_dir(tmp, final)
        for old in self.all()[: -self.keep_last]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def save_best(self, state: dict[str, torch.Tensor]) -> None:
        """The best epoch's weights (restored at the end, and on resume)."""
        if not self.write:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".best.", suffix=".tmp")
        os.close(fd)
        save_file(_weights(state), tmp)
        readable_by_others(tmp)
        os.replace(tmp, self.dir / BEST)

    def all(self) -> list[Path]:
        """Finished checkpoints, oldest first."""
        if not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.glob("step-*") if (p / "state.pt").is_file())

    def latest(self) -> Path | None:
        found = self.all()
        return found[-1] if found else None


def load_checkpoint(path: Path, best_state: dict[str, torch.Tensor] | None = None) -> Resume:
    """The checkpoint folder `path` as a resume point (with the run's best weights so far).

    Raises:
        WarmstartError: the checkpoint's loop state has another format version.
    """
    # weights_only: a checkpoint holds tensors and plain values only, so nothing in it runs
    # code when loaded (a pickle from elsewhere cannot).
    try:
        state = torch.load(path / "state.pt", weights_only=True)
        weights = load_file(str(path / "model.safetensors"))
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, SafetensorError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise WarmstartError(
            f"checkpoint {str(path)!r} cannot be loaded as plain tensors ({first}); warmstart "
            "loads no pickled objects (they can run code): a checkpoint from elsewhere must be "
            "converted where you trust it (torch.load it, then safetensors.torch.save_file "
            "its tensors), or start the run over with --overwrite") from None
    if not isinstance(state, dict) or not {"loop", "optimizer", "rng_by_rank",
                                           "metrics_bytes"} <= set(state):
        raise WarmstartError(f"checkpoint {str(path)!r} was not written by warmstart train; "
                             "start the run over with --overwrite")
    loop = LoopState.from_dict(state.get("loop"), path)
    return Resume(weights, loop, state["optimizer"],
                  state["rng_by_rank"], state.get("cuda_rng") or [], state.get("scaler"),
                  state["metrics_bytes"], best_state)


def check_fits(model: torch.nn.Module, resume: Resume, run_dir: Path) -> None:
    """Refuse a checkpoint whose weights are not this model's (names or shapes differ).

    Raises:
        WarmstartError: naming the first differing weight.
    """
    mine = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in resume.model_state.items()}
    if mine == theirs:
        return
    odd = sorted(set(mine) ^ set(theirs)) or sorted(k for k in mine if mine[k] != theirs[k])
    raise WarmstartError(
        f"the checkpoint in {run_dir} holds the weights of another model ({odd[0]!r} differs); "
        "resume it with the config it was trained with, or start over with --overwrite")


def load_best(run_dir: Path) -> dict[str, torch.Tensor] | None:
    """The best weights saved so far, if any."""
    path = run_dir / CHECKPOINTS / BEST
    return load_file(str(path)) if path.is_file() else None


def restore_rng(resume: Resume, place: Dist) -> None:
    """Put the RNGs back where the checkpoint left them (dropout continues identically).

    Each process gets its own saved state when the number of processes is unchanged; on a
    different count they all take the main process's (the run then matches within noise).
    """
    rngs = resume.rng_by_rank
    torch.set_rng_state(rngs[place.rank] if len(rngs) == place.world else rngs[0])
    if resume.cuda_rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(resume.cuda_rng)
