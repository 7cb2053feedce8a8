"""`norm`: only the normalisation layers' scales and shifts, and the new head, train.

Tuning just LayerNorm (transformers) or BatchNorm (CNNs) affine parameters re-scales and
re-centres the pretrained features per channel; it is a strong parameter-efficient baseline
(Frankle et al. 2021 for BatchNorm; Zhao et al. 2024 for LayerNorm). Layers are recognised by
their type (`_select.NORM_TYPES`), so a model's own normalisation class that does not derive
from torch's is not selected.
"""

from __future__ import annotations

from warmstart.models.base import Adapter
from warmstart.options import NoOptions
from warmstart.strategies._select import (
    count,
    groups_of,
    head_ids,
    ids,
    mark_trainable,
    norm_params,
)
from warmstart.strategies.base import Defaults, Plan, register_strategy

# Normalisation scales and shifts are a small share of the weights; they need large steps.
# Measured by bench/quality.py (digits, 3 epochs, test accuracy); text is not swept yet.
DEFAULTS = {
    "image": Defaults(lr=1e-2, why="digits: 0.789 at 1e-3, 0.894 at 1e-2"),
}


@register_strategy("norm", "only normalisation layers (LayerNorm, BatchNorm, ...) and the head",
                   defaults=DEFAULTS)
def norm(adapter: Adapter, options: NoOptions) -> Plan:
    """Train the parameters of every normalisation layer and the whole head group."""
    head = head_ids(adapter)
    # Norm layers inside the head group (if any) train with it; the note counts the others.
    params = [p for p in norm_params(adapter.module) if id(p) not in head]
    chosen = ids(params) | head
    mark_trainable(adapter, chosen)
    return Plan(groups_of(adapter, chosen),
                notes=f"{len(params)} norm tensors ({count(params):,} weights) and the head train")
