"""`gradual`: gradual unfreezing, as in ULMFiT (Howard & Ruder 2018).

Epoch 0 trains only the head; each later epoch unfreezes one more layer group from the top:
at epoch `e` the head and the top `e` groups below it train. The new head first learns from
fixed features, so its early, large and random gradients do not reach (and scramble) the
pretrained layers; each layer then starts training once the layers above it have settled.

Every group is in the plan from the start (frozen groups simply get no gradient), so the
optimizer never changes shape. The hook's effect depends only on the epoch number, so a run
resumed at epoch `e` is in the same state as one that got there epoch by epoch.
"""

from __future__ import annotations

from warmstart.models.base import Adapter
from warmstart.options import NoOptions
from warmstart.strategies._select import everything, groups_of, set_trainable
from warmstart.strategies.base import Plan, register_strategy


@register_strategy("gradual", "gradual unfreezing (ULMFiT): head first, one more group per epoch")
def gradual(adapter: Adapter, options: NoOptions) -> Plan:
    """Plan all groups; at epoch `e` train the head and the top `e` groups below it."""
    groups = adapter.groups

    def on_epoch_start(epoch: int) -> None:
        # Groups from index `first` up (the head is the last) train; it is set from scratch
        # every call, so the state is a pure function of `epoch`.
        first = max(0, len(groups) - 1 - epoch)
        set_trainable(groups[:first], False)
        set_trainable(groups[first:], True)

    on_epoch_start(0)  # the state before training: head only
    return Plan(groups_of(adapter, everything(adapter)), on_epoch_start=on_epoch_start,
                notes=f"epoch 0: head only; one more group per epoch, all "
                      f"{len(groups)} training from epoch {len(groups) - 1}")
