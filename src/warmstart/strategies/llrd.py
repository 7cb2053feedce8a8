"""`llrd`: layer-wise learning-rate decay (Howard & Ruder 2018; Sun et al. 2019; Clark et al. 2020).

Everything trains, but each layer group's rate shrinks geometrically with its distance below
the head: `lr_scale = decay ** distance`, where the head is at distance 0, the group just
below it at 1, and so on down to the embeddings/stem. Lower layers hold general features that
transfer as they are and are easily damaged; upper layers are the most task-specific and
need to move the most.
"""

from __future__ import annotations

from dataclasses import dataclass

from warmstart.models.base import Adapter
from warmstart.options import check, option
from warmstart.strategies._select import everything, groups_of, mark_trainable
from warmstart.strategies.base import Plan, register_strategy


@dataclass
class LlrdOptions:
    """`strategy.*` keys of llrd."""

    decay: float = option(
        0.9, "lr multiplier per group below the head; 0.9 is the middle of the 0.8-0.95 range "
        "Sun et al. 2019 found to help BERT")

    def __post_init__(self) -> None:
        check(0 < self.decay <= 1, "strategy.decay", "must be in (0, 1]")


def decay_scales(num_groups: int, decay: float) -> list[float]:
    """lr scale per layer group, input to head: `decay ** (steps below the head)`."""
    return [decay ** (num_groups - 1 - i) for i in range(num_groups)]


@register_strategy("llrd", "layer-wise lr decay: every group trains at decay**(depth below head)",
                   LlrdOptions)
def llrd(adapter: Adapter, cfg: LlrdOptions) -> Plan:
    """Train everything; the group `d` steps below the head runs at `cfg.decay ** d`."""
    chosen = everything(adapter)
    mark_trainable(adapter, chosen)
    scales = decay_scales(len(adapter.groups), cfg.decay)
    return Plan(groups_of(adapter, chosen, scales),
                notes=f"all groups train; lr scale {scales[0]:.3g} ({adapter.groups[0].name}) "
                      f"to 1 (head), x{cfg.decay:g} per group")
