"""`lp-ft`: linear probing, then full fine-tuning (Kumar et al. 2022).

The first `strategy.probe_epochs` epochs train only the head on frozen features; then every
parameter trains. While the head is still random and bad, fine-tuning changes the features
of the training examples a lot and those of unseen, out-of-distribution inputs little, so the
two drift apart ("feature distortion"); starting from a probed head, the gradients reaching
the backbone are small and the features move less, which helps out of distribution above all.

Every group is in the plan from the start, so the optimizer keeps one shape; the hook's effect
depends only on the epoch number, so a resumed run is in the same state.
"""

from __future__ import annotations

from dataclasses import dataclass

from warmstart.models.base import Adapter
from warmstart.options import check, option
from warmstart.strategies._select import everything, groups_of, set_trainable
from warmstart.strategies.base import Plan, register_strategy


@dataclass
class LpftOptions:
    """`strategy.*` keys of lp-ft."""

    probe_epochs: int = option(1, "epochs of linear probing (head only) before full fine-tuning")

    def __post_init__(self) -> None:
        check(self.probe_epochs >= 0, "strategy.probe_epochs", "must be >= 0")


@register_strategy("lp-ft", "linear probe for strategy.probe_epochs epochs, then fine-tune all",
                   LpftOptions)
def lpft(adapter: Adapter, cfg: LpftOptions) -> Plan:
    """Plan all groups; head only before epoch `cfg.probe_epochs`, everything from then on."""
    below, head = adapter.groups[:-1], adapter.groups[-1:]

    def on_epoch_start(epoch: int) -> None:
        set_trainable(below, epoch >= cfg.probe_epochs)
        set_trainable(head, True)

    on_epoch_start(0)  # the state before training
    return Plan(groups_of(adapter, everything(adapter)), on_epoch_start=on_epoch_start,
                notes=f"head only for {cfg.probe_epochs} epoch(s), then all groups")
