"""Penalties added to the loss, available to every strategy: L1 and L2-SP.

L2-SP (Li et al. 2018, "Explicit inductive bias for transfer learning") pulls the pretrained
weights toward their starting point instead of toward zero: plain weight decay forgets what
pretraining learned, L2-SP keeps the fine-tuned model near it. The new head has no pretrained
starting point, so it is left to ordinary weight decay.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from warmstart.config import RegularizeConfig
from warmstart.strategies.base import Plan


def make_penalty(plan: Plan, head: nn.Module, cfg: RegularizeConfig
                 ) -> Callable[[], torch.Tensor] | None:
    """A function returning the penalty for the current weights, or None when all are off."""
    params = [p for g in plan.groups for p in g.params]
    head_ids = {id(p) for p in head.parameters()}
    weights = [p for p in params if p.ndim >= 2]  # biases and norms are left alone
    pretrained = [p for p in weights if id(p) not in head_ids]
    anchors = [p.detach().clone() for p in pretrained] if cfg.l2sp > 0 else []
    if cfg.l1 == 0 and cfg.l2sp == 0:
        return None

    def penalty() -> torch.Tensor:
        total = torch.zeros((), device=params[0].device)
        if cfg.l1 > 0:
            total = total + cfg.l1 * sum(p.abs().sum() for p in weights if p.requires_grad)
        if cfg.l2sp > 0:
            total = total + cfg.l2sp / 2 * sum(
                (p - a).pow(2).sum() for p, a in zip(pretrained, anchors) if p.requires_grad
            )
        return total

    return penalty
