"""`encoder`: freeze the input layer group (embeddings or CNN stem); train the rest.

The embeddings hold most of a small transformer's weights (MiniLM-L6: 11.7M of its 22.7M
sit in the token embedding) yet only the rows of words that occur in the training set get a
gradient: training them moves those rows away from the untouched rows of unseen words that
the test set may contain. Freezing them keeps the vocabulary consistent and drops the
largest block of optimizer state; for a CNN the stem's edge filters transfer as they are.
"""

from __future__ import annotations

from warmstart.models.base import Adapter
from warmstart.options import NoOptions
from warmstart.strategies._select import describe, groups_of, ids, mark_trainable
from warmstart.strategies.base import Plan, register_strategy


@register_strategy("encoder", "freeze the embeddings/stem (first layer group); train the rest")
def encoder(adapter: Adapter, options: NoOptions) -> Plan:
    """Train every layer group but the first; the head always trains."""
    below = adapter.groups[:-1]
    # A model whose only group is the head has no input group to freeze.
    frozen = below[0].name if below else None
    chosen = ids(p for g in adapter.groups if g.name != frozen for p in g.parameters())
    mark_trainable(adapter, chosen)
    return Plan(groups_of(adapter, chosen),
                notes=f"{frozen or 'nothing'} frozen; {describe(adapter, chosen)} train")
