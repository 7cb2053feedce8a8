"""Data-parallel training on torch.distributed: the same command on 1 or N processes.

`torchrun --nproc_per_node=N -m warmstart train ...` sets RANK/WORLD_SIZE/LOCAL_RANK; with no
such variables this is a one-process run and every helper here is a no-op. Gradients are
averaged by torch's DistributedDataParallel, or with `train.parallel=fsdp` by torch's FSDP2
(the engine is torch's, not ours); this module starts the process group, moves small Python
values between ranks, and shards a model and gathers its state for FSDP.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from copy import deepcopy
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

if TYPE_CHECKING:
    from warmstart.training.optim import ParamGroup


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


# --------------------------------------------------------------------------- FSDP2 sharding
# `train.parallel=fsdp` trains a sharded copy of the model (torch's FSDP2, `fully_shard`):
# each process holds 1/N of the weights, gradients and optimizer state, and gathers a block's
# full weights only while it runs. The caller's model stays a plain module (parked on the
# CPU meanwhile), so everything after training (best weights, evaluation, saving) is the
# same as for DDP. Checkpoints hold full tensors, so any process count, with or without
# FSDP, can resume them.


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The blocks FSDP shards one at a time: the items of each outermost ModuleList
    (transformer layers), else the top-level children. The root takes what is left."""
    units: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        for child in module.children():
            if isinstance(child, nn.ModuleList):
                units.extend(m for m in child if any(True for _ in m.parameters()))
            else:
                visit(child)

    visit(model)
    return units or [m for m in model.children() if any(True for _ in m.parameters())]


def shard(model: nn.Module, groups: list[ParamGroup]) -> tuple[nn.Module, list[ParamGroup]]:
    """A copy of `model` sharded with FSDP2 across the process group, and `groups` remapped
    to the copy's parameters (FSDP replaces every parameter with a sharded one)."""
    from torch.distributed.fsdp import fully_shard

    names = {id(p): n for n, p in model.named_parameters()}
    model.to("cpu")  # the plain model waits on the CPU: the device holds only shards
    copy = deepcopy(model)
    for unit in shard_units(copy):
        fully_shard(unit)
    fully_shard(copy)  # moves parameters and buffers to the process's device
    params = dict(copy.named_parameters())
    return copy, [replace(g, params=[params[names[id(p)]] for p in g.params]) for g in groups]


def full_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """`module.state_dict()` with sharded tensors gathered whole on the CPU.

    Under FSDP every process must call it (the gathers are collective); otherwise it is the
    plain state dict, no copy.
    """
    return {k: v.full_tensor().cpu() if isinstance(v, DTensor) else v
            for k, v in module.state_dict().items()}


def full_optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's state dict with sharded moments gathered whole (collective under
    FSDP), in torch's usual layout, so a run without FSDP can load it."""
    state = optimizer.state_dict()
    if not any(isinstance(p, DTensor) for g in optimizer.param_groups for p in g["params"]):
        return state
    state["state"] = {i: {k: v.full_tensor().cpu() if isinstance(v, DTensor) else v
                          for k, v in s.items()} for i, s in state["state"].items()}
    return state


def shard_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]
                          ) -> dict[str, Any]:
    """A full optimizer state dict (`full_optimizer_state`) cut into this optimizer's shards."""
    from torch.distributed.tensor import distribute_tensor

    params = [p for g in optimizer.param_groups for p in g["params"]]
    if not any(isinstance(p, DTensor) for p in params):
        return state
    sharded = {}
    for i, values in state["state"].items():
        p = params[i]
        sharded[i] = {k: distribute_tensor(v.to(p.device), p.device_mesh, p.placements)
                      if isinstance(v, torch.Tensor) and v.shape == p.shape else v
                      for k, v in values.items()}
    return {**state, "state": sharded}


@contextlib.contextmanager
def no_sync(runner: nn.Module) -> Iterator[None]:
    """Skip the gradient all-reduce for the micro-batches before a step's last (DDP's
    `no_sync`, FSDP2's `set_requires_gradient_sync`); a plain module has nothing to skip."""
    if isinstance(runner, DistributedDataParallel):
        with runner.no_sync():
            yield
    elif hasattr(runner, "set_requires_gradient_sync"):  # an FSDPModule
        runner.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            runner.set_requires_gradient_sync(True)
    else:
        yield
