"""`ia3`: learned per-channel scaling vectors on frozen layers, through peft (Liu et al. 2022).

(IA)^3 multiplies chosen activations by trainable vectors that start at one: far fewer
weights than LoRA (one per channel), and like LoRA it merges into the base weights. Only the
vectors and the new head train; see `models/peft.py` for saving, reloading and merging.

Targets: `strategy.target_modules` if given; else peft's defaults for the transformers model
type (BERT: key, value and the feed-forward output, which is scaled on its input side as the
paper does); else, by structure, the Linear and Conv2d layers inside the block groups, scaled
on their output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from warmstart.models.base import Adapter
from warmstart.models.peft import head_names, require_peft
from warmstart.options import option
from warmstart.strategies._peft import (
    adapt,
    choose_targets,
    describe,
    model_type,
)
from warmstart.strategies.base import Plan, register_strategy


def can_adapt(module: nn.Module) -> bool:
    """Linear layers and any Conv2d: scaling a conv's output channels works whatever its
    padding or grouping (depthwise convs included), and merges into its weights."""
    return isinstance(module, (nn.Linear, nn.Conv2d))


@dataclass
class Ia3Options:
    """`strategy.*` keys of ia3."""

    target_modules: list[str] = option(
        [], "module names (or name suffixes such as query) to adapt; empty = peft's defaults "
        "for the model type, else every Linear/conv layer inside the block groups")


@register_strategy("ia3", "(IA)^3 (peft): learned per-channel scales on chosen layers",
                   Ia3Options)
def ia3(adapter: Adapter, cfg: Ia3Options) -> Plan:
    """Add (IA)^3 scaling vectors to the chosen layers; train them and the head."""
    require_peft("strategy.name 'ia3'")
    from peft import IA3Config
    from peft.utils import TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as FEEDFORWARD
    from peft.utils import TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as DEFAULTS

    heads = head_names(adapter)
    # peft's feed-forward layers for this model type, scaled on their input; every other
    # target (and every structural one) is scaled on its output.
    known_feedforward = FEEDFORWARD.get(model_type(adapter) or "", [])

    def config(targets: list[str]) -> Any:
        return IA3Config(target_modules=targets, modules_to_save=heads,
                         feedforward_modules=[m for m in known_feedforward if m in targets])

    targets = choose_targets(adapter, cfg.target_modules, DEFAULTS, config, can_adapt, "IA3")
    return adapt(adapter, config(targets.spec), "ia3", f"IA3 on {describe(adapter, targets)}")
