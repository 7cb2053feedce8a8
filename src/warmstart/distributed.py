"""Data-parallel training on torch.distributed: the same command on 1 or N processes.

`torchrun --nproc_per_node=N -m warmstart train ...` sets RANK/WORLD_SIZE/LOCAL_RANK; with no
such variables this is a one-process run and every helper here is a no-op. Gradients are
averaged by torch's DistributedDataParallel (the engine is torch's, not ours); this module
only starts the process group and moves small Python values between ranks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    """This process's place in the job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Only the main process writes files, logs and progress."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def setup(device_name: str) -> tuple[Dist, str]:
    """Join the process group when launched by torchrun; return the place and the device.

    The backend follows the device: nccl for CUDA, gloo for CPU. Under torchrun, `auto`
    and `cuda` become `cuda:<local rank>` so each process drives its own GPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device_name
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
    if use_cuda:
        torch.cuda.set_device(local)
        device_name = f"cuda:{local}"
    elif device_name == "auto":
        device_name = "cpu"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Dist(rank, world, local), device_name


def teardown() -> None:
    """Leave the process group (end of a run)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(place: Dist) -> None:
    if place.active:
        dist.barrier()


def sum_all(place: Dist, values: list[float]) -> list[float]:
    """Element-wise sum of `values` over all ranks (float64 on CPU: exact for counts)."""
    if not place.active:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return t.cpu().tolist()


def gather_all(place: Dist, obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank."""
    if not place.active:
        return [obj]
    out: list[Any] = [None] * place.world
    dist.all_gather_object(out, obj)
    return out


def current() -> Dist:
    """The place of this process (from the initialised process group, if any)."""
    if dist.is_available() and dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size(),
                    int(os.environ.get("LOCAL_RANK", "0")))
    return Dist()
