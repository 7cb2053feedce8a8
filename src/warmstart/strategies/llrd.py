"""`llrd`: layer-wise learning-rate decay (Howard & Ruder 2018; Sun et al. 2019; Clark et al. 2020).

Everything trains, but each layer group's rate shrinks geometrically with its distance below
the head: `lr_scale = decay ** distance`, where the head is at distance 0, the group just
below it at 1, and so on down to the embeddings/stem. Lower layers hold general features that
transfer as they are and are easily damaged; upper layers are the most task-specific and
need to move the most.
"""

from __future__ import annotations

from warmstart.config import StrategyConfig
from warmstart.models.base import Adapter
from warmstart.strategies.base import STRATEGIES, Plan, group_plan, set_trainable


def decay_scales(num_groups: int, decay: float) -> list[float]:
    """lr scale per layer group, input to head: `decay ** (steps below the head)`."""
    return [decay ** (num_groups - 1 - i) for i in range(num_groups)]


@STRATEGIES.register("llrd", "layer-wise lr decay: every group trains at decay**(depth below head)")
def llrd(adapter: Adapter, cfg: StrategyConfig) -> Plan:
    """Train everything; the group `d` steps below the head runs at `cfg.decay ** d`."""
    set_trainable(adapter.groups, True)
    scales = decay_scales(len(adapter.groups), cfg.decay)
    return Plan(group_plan(adapter, scales),
                notes=f"all groups train; lr scale {scales[0]:.3g} ({adapter.groups[0].name}) "
                      f"to 1 (head), x{cfg.decay:g} per group")
