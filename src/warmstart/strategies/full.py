"""`full`: every parameter trains at the same learning rate."""

from __future__ import annotations

from warmstart.models.base import Adapter
from warmstart.options import NoOptions
from warmstart.strategies._select import everything, groups_of, mark_trainable
from warmstart.strategies.base import Plan, register_strategy


@register_strategy("full", "full fine-tuning: every parameter trains at the base lr")
def full(adapter: Adapter, options: NoOptions) -> Plan:
    """Train everything; one parameter group per layer group, all at lr scale 1."""
    chosen = everything(adapter)
    mark_trainable(adapter, chosen)
    return Plan(groups_of(adapter, chosen), notes="all layer groups train")
