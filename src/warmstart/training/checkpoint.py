"""The checkpoints that make `warmstart train --resume` continue a run exactly, written
atomically (`files.py`). `summary.json` is written last, so its presence is what marks a run
as finished.

A checkpoint holds everything the loop's future depends on: weights, optimizer moments, the
step/epoch/micro-batch counters, the history so far, the RNG state (dropout), and how long
`metrics.jsonl` was. The data order and the lr schedule are pure functions of (seed, epoch)
and of the step, so they need no saving.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from warmstart.files import atomic_dir, commit_dir
from warmstart.training.distributed import Dist

SUMMARY = "summary.json"


def is_finished(run_dir: Path) -> bool:
    """A run is finished once its summary exists."""
    return (run_dir / SUMMARY).is_file()


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

    def save(self, step: int, weights: dict[str, torch.Tensor], optimizer_state: dict[str, Any],
             loop_state: dict[str, Any], extra: dict[str, Any] | None = None) -> Path:
        """Checkpoint after optimizer step `step`; older checkpoints beyond K are removed.

        `weights` and `optimizer_state` are full state dicts (gathered whole under FSDP).
        """
        if not self.write:
            return self.dir
        final = self.dir / f"step-{step:08d}"
        tmp = atomic_dir(final)
        save_file(_weights(weights), str(tmp / "model.safetensors"))
        torch.save({
            "optimizer": optimizer_state,
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "metrics_bytes": self.metrics.stat().st_size if self.metrics.exists() else 0,
            "loop": loop_state,
            **(extra or {}),
        }, tmp / "state.pt")
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
        os.replace(tmp, self.dir / BEST)

    def all(self) -> list[Path]:
        """Finished checkpoints, oldest first."""
        if not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.glob("step-*") if (p / "state.pt").is_file())

    def latest(self) -> Path | None:
        found = self.all()
        return found[-1] if found else None


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(model weights, state) of a checkpoint folder."""
    state = torch.load(path / "state.pt", weights_only=False)
    return load_file(str(path / "model.safetensors")), state


def load_best(run_dir: Path) -> dict[str, torch.Tensor] | None:
    """The best weights saved so far, if any."""
    path = run_dir / CHECKPOINTS / BEST
    return load_file(str(path)) if path.is_file() else None


def restore_rng(state: dict[str, Any], place: Dist) -> None:
    """Put the RNGs back where the checkpoint left them (dropout continues identically).

    Each process gets its own saved state when the number of processes is unchanged; on a
    different count they all take the main process's (the run then matches within noise).
    """
    rngs = state.get("rng_by_rank") or [state["rng"]]
    torch.set_rng_state(rngs[place.rank] if len(rngs) == place.world else rngs[0])
    if state.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
