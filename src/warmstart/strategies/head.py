"""`head`: a linear probe. The pretrained network stays frozen; only the new head trains.

With the backbone frozen for the whole run its output never changes, so the run computes the
classifier's inputs once and trains the classifier on them (`Plan.cache_head_inputs`): every
epoch after the first costs almost nothing. The trained head stays inside the full model.
"""

from __future__ import annotations

from warmstart.config import StrategyConfig
from warmstart.models.base import Adapter
from warmstart.strategies._select import cacheable, groups_of, head_ids, mark_trainable
from warmstart.strategies.base import STRATEGIES, Plan


@STRATEGIES.register("head", "linear probe: only the new head trains; backbone outputs cached")
def head(adapter: Adapter, cfg: StrategyConfig) -> Plan:
    """Freeze everything below the head group; train the head group at lr scale 1.

    Caching needs the head group to be the classifier alone; a head group with other new
    modules (DistilBERT's `pre_classifier`) trains through the full model instead.
    """
    chosen = head_ids(adapter)
    mark_trainable(adapter, chosen)
    cache = cacheable(adapter, chosen)
    notes = "only the head trains" + ("; backbone outputs computed once" if cache else
                                      "; head group has more than the classifier: no caching")
    return Plan(groups_of(adapter, chosen), notes=notes, cache_head_inputs=cache)
