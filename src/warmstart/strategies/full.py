"""`full`: every parameter trains at the same learning rate."""

from __future__ import annotations

from warmstart.config import StrategyConfig
from warmstart.models.base import Adapter
from warmstart.strategies.base import STRATEGIES, Plan, group_plan, set_trainable


@STRATEGIES.register("full", "full fine-tuning: every parameter trains at the base lr")
def full(adapter: Adapter, cfg: StrategyConfig) -> Plan:
    """Train everything; one parameter group per layer group, all at lr scale 1."""
    set_trainable(adapter.groups, True)
    return Plan(group_plan(adapter), notes="all layer groups train")
