"""One pass of the data through a model that records what one module receives or returns.

The mechanism behind both caches of `cache.py`: a hook keeps the module's tensor and stops
the forward there (nothing after it needs to run), one row per example; for text, only the
rows of real tokens, which `pad_rows` puts back for a batch of any padded length.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from warmstart.data.batches import Batches
from warmstart.data.rows import DiskRows
from warmstart.tensors import move
from warmstart.training.distributed import current, gather_all


class _Stop(Exception):
    """Raised by a recording hook: nothing after the recorded module needs to run."""


def first_tensor(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


@torch.inference_mode()
def record(model: nn.Module, module: nn.Module, batches: Batches, device: torch.device, *,
           inputs: bool, per_token: bool = False, store: DiskRows | None = None
           ) -> Sequence[torch.Tensor]:
    """What `module` receives (`inputs`) or returns, per example of `batches`, in example order.

    The model runs in eval mode and stops right after `module`. With `per_token`, each
    example keeps only the rows of its real tokens (`attention_mask`), so padding costs no
    memory and a batch of any padded length can be rebuilt (`pad_rows`). Under data
    parallelism each process records its share once and the shares are gathered. With a
    `store` (one process only), rows go to its file as they come, never all in memory.
    """
    captured: list[torch.Tensor] = []

    def keep(tensor: torch.Tensor) -> None:
        captured.append(tensor.detach())
        raise _Stop

    if inputs:
        hook = module.register_forward_pre_hook(lambda _m, args: keep(args[0]))
    else:
        hook = module.register_forward_hook(lambda _m, _a, out: keep(first_tensor(out)))
    was_training = model.training
    model.eval()
    parts: list[tuple[np.ndarray, list[torch.Tensor]]] = []
    try:
        for ids, batch in batches.epoch():
            batch.pop("labels")
            captured.clear()
            with contextlib.suppress(_Stop):
                model(**move(batch, device))
            out = captured[0].cpu()
            rows = split_rows(out, batch["attention_mask"] if per_token else None)
            if store is not None:
                for i, row in zip(ids, rows):
                    store.put(i, row)
            else:
                parts.append((ids, rows))
    finally:
        hook.remove()
        model.train(was_training)
    if store is not None:
        return store
    if batches.world > 1:
        parts = [p for rank in gather_all(current(), parts) for p in rank]
    result: list[torch.Tensor | None] = [None] * batches.num_examples
    for ids, rows in parts:
        for i, row in zip(ids, rows):
            result[i] = row
    return result  # type: ignore[return-value]


def split_rows(out: torch.Tensor, mask: torch.Tensor | None) -> list[torch.Tensor]:
    """A batch's output as one row per example; with a `mask`, only its real tokens."""
    if mask is None:
        return [row.clone() for row in out]
    return [out[i][m.bool()].clone() for i, m in enumerate(mask)]


def pad_rows(rows: list[torch.Tensor], mask: torch.Tensor | None) -> torch.Tensor:
    """Rebuild a batch's prefix output: each example's rows go back to its real-token
    positions (either padding side); padded positions get zeros, which the attention mask
    hides from every real token exactly as it hid the frozen layers' padding outputs."""
    if mask is None:
        return torch.stack(rows)
    out = rows[0].new_zeros((*mask.shape, *rows[0].shape[1:]))
    for i, row in enumerate(rows):
        out[i][mask[i].bool()] = row
    return out
