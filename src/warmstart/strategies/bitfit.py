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
from warmstart.strategies.base import Defaults, Plan, register_strategy

# Biases are a small share of the weights; they need large steps to move the model.
# Measured by bench/quality.py (TREC-2k and digits, 3 epochs, test accuracy).
DEFAULTS = {
    "text": Defaults(lr=3e-3, why="TREC-2k: 0.830 at 3e-4, 0.908 at 1e-3, 0.922 at 3e-3"),
    "image": Defaults(lr=1e-2, why="digits: 0.733 at 1e-3, 0.833 at 1e-2"),
}


@register_strategy("bitfit", "BitFit: only bias terms (each module's own bias) and the head",
                   defaults=DEFAULTS)
def bitfit(adapter: Adapter, options: NoOptions) -> Plan:
    """Train every module's own `bias` Parameter and the whole head group."""
    head = head_ids(adapter)
    # The head's own biases train with it; the note counts the backbone's.
    biases = [p for p in own_biases(adapter.module) if id(p) not in head]
    chosen = ids(biases) | head
    mark_trainable(adapter, chosen)
    return Plan(groups_of(adapter, chosen),
                notes=f"{len(biases)} bias tensors ({count(biases):,} weights) and the head train")
