"""The optimizer built from a strategy's parameter groups, and schedules as pure functions.

Each optimizer group carries the strategy's `lr_scale`; at every step the loop sets
`lr = base_lr * lr_scale * schedule(step)`. Schedules are plain functions of the step, so a
resumed run recomputes the exact learning rate from the step counter alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from warmstart.config import OptimConfig
from warmstart.strategies.base import ParamGroup

Schedule = Callable[[int], float]  # step (0-based) -> multiplier of the base lr


def warmup_steps(total_steps: int, warmup_ratio: float) -> int:
    """Steps of linear warmup for a run of `total_steps`."""
    return math.ceil(total_steps * warmup_ratio)


def linear_schedule(total_steps: int, warmup: int) -> Schedule:
    """Linear warmup from 0 to 1 over `warmup` steps, then linear decay to 0 at the end."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def constant_schedule(total_steps: int, warmup: int) -> Schedule:
    """Linear warmup, then the base lr until the end."""

    def factor(step: int) -> float:
        return (step + 1) / warmup if step < warmup else 1.0

    return factor


SCHEDULES: dict[str, Callable[[int, int], Schedule]] = {
    "linear": linear_schedule,
    "constant": constant_schedule,
}


def make_schedule(cfg: OptimConfig, total_steps: int) -> Schedule:
    """The configured schedule for a run of `total_steps` optimizer steps."""
    return SCHEDULES[cfg.schedule](total_steps, warmup_steps(total_steps, cfg.warmup_ratio))


def _decays(p: nn.Parameter) -> bool:
    # Biases and normalisation scales/shifts are the 1-D parameters; decaying them toward 0
    # only hurts (they set offsets and scales, not capacity), as in BERT's original recipe.
    return p.ndim >= 2


def build_optimizer(groups: list[ParamGroup], cfg: OptimConfig, lr: float) -> torch.optim.AdamW:
    """AdamW over the strategy's groups, each split into decayed and non-decayed parameters.

    Frozen parameters stay in their groups (they get no gradient, so AdamW skips them): the
    optimizer has the same groups from the first step to the last.
    """
    torch_groups = []
    for g in groups:
        for decay in (True, False):
            params = [p for p in g.params if _decays(p) == decay]
            if params:
                torch_groups.append({
                    "params": params,
                    "name": f"{g.name}{'' if decay else '.no_decay'}",
                    "lr_scale": g.lr_scale,
                    "weight_decay": cfg.weight_decay if decay else 0.0,
                    "lr": lr * g.lr_scale,
                })
    # foreach=True batches the update over all tensors: much less per-step Python overhead
    # than the per-parameter loop on CPU, with the same arithmetic.
    return torch.optim.AdamW(
        torch_groups, lr=lr, betas=tuple(cfg.betas), eps=cfg.eps, foreach=True
    )


def set_lr(optimizer: torch.optim.Optimizer, base_lr: float, factor: float) -> None:
    """Apply `base_lr * group lr_scale * factor` to every group."""
    for g in optimizer.param_groups:
        g["lr"] = base_lr * g["lr_scale"] * factor


def group_lrs(optimizer: torch.optim.Optimizer, base_lr: float) -> dict[str, float]:
    """Peak learning rate of each strategy group (for the summary and the start-up log)."""
    out: dict[str, float] = {}
    for g in optimizer.param_groups:
        out.setdefault(g["name"].removesuffix(".no_decay"), base_lr * g["lr_scale"])
    return out
