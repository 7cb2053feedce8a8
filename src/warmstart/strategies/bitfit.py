"""`bitfit`: only the bias terms and the new head train (Ben Zaken et al. 2022).

BitFit showed that tuning the biases alone (about 0.1% of BERT's weights) comes close to full
fine-tuning on small and medium data sets. Biases are found by structure: each module's own
registered `bias` Parameter, so a parameter merely named like a bias is not picked up.
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
    own_biases,
)
from warmstart.strategies.base import Plan, register_strategy


@register_strategy("bitfit", "BitFit: only bias terms (each module's own bias) and the head")
def bitfit(adapter: Adapter, options: NoOptions) -> Plan:
    """Train every module's own `bias` Parameter and the whole head group."""
    head = head_ids(adapter)
    # The head's own biases train with it; the note counts the backbone's.
    biases = [p for p in own_biases(adapter.module) if id(p) not in head]
    chosen = ids(biases) | head
    mark_trainable(adapter, chosen)
    return Plan(groups_of(adapter, chosen),
                notes=f"{len(biases)} bias tensors ({count(biases):,} weights) and the head train")
