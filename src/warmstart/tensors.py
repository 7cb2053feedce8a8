"""Small tensor helpers every stage uses."""

from __future__ import annotations

import torch


def move(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The batch's tensors on `device`."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
