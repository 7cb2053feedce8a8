"""Cached head inputs: run a frozen backbone once, then train the head on what it produced.

When a strategy freezes everything below the head for the whole run (`features`, `head`),
every epoch would recompute the same backbone outputs. Instead a forward pre-hook on the head
records the head's input for each example once; the head then trains on those tensors for
all epochs. The frozen backbone runs in eval mode (no dropout), so its output is
deterministic and caching changes nothing but the time. The trained head stays inside the
full model, which still predicts from raw inputs.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from warmstart.data.batches import Batches
from warmstart.distributed import current, gather_all
from warmstart.evaluate import move


class HeadOnly(nn.Module):
    """Feeds cached head inputs (`features`) to the head."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)


def _stack(items: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"features": torch.stack(items)}


@torch.inference_mode()
def head_inputs(model: nn.Module, head: nn.Module, batches: Batches,
                device: torch.device) -> list[torch.Tensor]:
    """The head's input for every example of `batches`, in example order (one backbone pass).

    Under data parallelism each process computes its own share once and the shares are
    gathered, so the whole set costs one backbone pass across all processes.
    """
    captured: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach()))
    was_training = model.training
    model.eval()
    parts: list[tuple[np.ndarray, torch.Tensor]] = []
    try:
        for ids, batch in batches.epoch():
            batch.pop("labels")
            captured.clear()
            model(**move(batch, device))
            parts.append((ids, captured[0].cpu().clone()))
    finally:
        hook.remove()
        model.train(was_training)
    if batches.world > 1:
        parts = [p for rank in gather_all(current(), parts) for p in rank]
    out: list[torch.Tensor | None] = [None] * batches.num_examples
    for ids, rows in parts:
        for i, row in zip(ids, rows):
            out[i] = row
    return out  # type: ignore[return-value]


def cached_batches(model: nn.Module, head: nn.Module, batches: Batches,
                   device: torch.device) -> Batches:
    """`batches` with each example replaced by its cached head input."""
    feats = head_inputs(model, head, batches, device)
    return Batches(feats, batches.labels.numpy().astype(np.int64), _stack, batches.batch_size,
                   shuffle=batches.shuffle, seed=batches.seed, accumulate=batches.accumulate,
                   rank=batches.rank, world=batches.world)
