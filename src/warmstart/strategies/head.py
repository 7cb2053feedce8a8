"""`head`: a linear probe. The pretrained network stays frozen; only the new head trains.

With the backbone frozen for the whole run its output never changes, so the run computes the
classifier's inputs once and trains the classifier on them (`training/cache.py`): every
epoch after the first costs almost nothing. The trained head stays inside the full model.
"""

from __future__ import annotations

from warmstart.models.base import Adapter
from warmstart.options import NoOptions
from warmstart.strategies._select import groups_of, head_ids, mark_trainable
from warmstart.strategies.base import Plan, register_strategy


@register_strategy("head", "linear probe: only the new head trains; backbone outputs cached")
def head(adapter: Adapter, options: NoOptions) -> Plan:
    """Freeze everything below the head group; train the head group at lr scale 1.

    Where the head group is the classifier alone, the run caches its inputs; a head group
    with other new modules (DistilBERT's `pre_classifier`) caches the frozen groups below.
    """
    chosen = head_ids(adapter)
    mark_trainable(adapter, chosen)
    return Plan(groups_of(adapter, chosen), notes="only the head group trains")
