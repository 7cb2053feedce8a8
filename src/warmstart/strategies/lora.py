"""`lora`: low-rank adapters beside frozen weights, through peft (Hu et al. 2021).

Each adapted layer `W` gets a trainable update `B @ A` of rank `r`, scaled by `alpha / r`;
`B` starts at zero, so training starts from the pretrained model exactly. Only the adapters
and the new head train, a few percent of the weights or less, and the saved run holds only
those (see `models/peft.py` for saving, reloading and merging).

Targets: `strategy.target_modules` if given; else peft's defaults for the transformers model
type (BERT: the attention's query and value); else, by structure, the Linear layers and the
ungrouped convolutions inside the block groups.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from warmstart.models.base import Adapter
from warmstart.models.peft import head_names, plain_conv, require_peft
from warmstart.options import check, option
from warmstart.strategies._peft import (
    adapt,
    choose_targets,
    describe,
)
from warmstart.strategies.base import Defaults, Plan, register_strategy


def can_adapt(module: nn.Module) -> bool:
    """Linear layers, and ungrouped convolutions peft can build a LoRA branch for.

    peft builds the branch convs by calling the base conv's own class with nn.Conv2d's
    arguments, so a plain nn.Conv2d qualifies, and a pointwise conv of a subclass that
    computes the same function (swapped for a plain one first: `models.peft.use_plain_convs`).
    Grouped and depthwise convs are left out: peft cannot merge them, and their per-channel
    filters leave a rank-r update little to do.
    """
    if isinstance(module, nn.Linear):
        return True
    if isinstance(module, nn.Conv2d) and module.groups == 1:
        return type(module) is nn.Conv2d or computes_like_conv2d(module)
    return False


def computes_like_conv2d(conv: nn.Conv2d) -> bool:
    """Whether a pointwise conv of a Conv2d subclass computes exactly what nn.Conv2d does.

    A 1x1 kernel needs no padding, so a subclass that only pads differently (EfficientNet-
    Lite's TF "SAME" padding) computes plain nn.Conv2d's function; one that changes the
    weights (weight standardisation) does not. A probe input tells them apart.
    """
    if conv.kernel_size != (1, 1) or conv.groups != 1:
        return False
    weight = conv.weight
    probe = torch.randn(1, conv.in_channels, 3, 3, generator=torch.Generator().manual_seed(0))
    probe = probe.to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        ours, plain = conv(probe), plain_conv(conv)(probe)
    return ours.shape == plain.shape and torch.allclose(ours, plain)


@dataclass
class LoraOptions:
    """`strategy.*` keys of lora."""

    r: int = option(8, "rank of the update matrices; 8 is the LoRA paper's robust default")
    alpha: float = option(16.0, "scaling numerator (the update is scaled by alpha/r); 2r is "
                          "common")
    lora_dropout: float = option(0.1, "dropout on the adapter input")
    target_modules: list[str] = option(
        [], "module names (or name suffixes such as query) to adapt; empty = peft's defaults "
        "for the model type, else every Linear/conv layer inside the block groups")

    def __post_init__(self) -> None:
        check(self.r >= 1, "strategy.r", "must be >= 1")
        check(self.alpha > 0, "strategy.alpha", "must be > 0")
        check(0 <= self.lora_dropout < 1, "strategy.lora_dropout", "must be in [0, 1)")


# The adapters start at zero and only a few weights train: larger steps than full
# fine-tuning. Measured by bench/quality.py (TREC-2k and digits, 3 epochs, test accuracy).
DEFAULTS = {
    "text": Defaults(lr=3e-3, why="TREC-2k: 0.886 at 3e-4, 0.930 at 1e-3, 0.942 at 3e-3, "
                     "0.744 at 1e-2"),
    "image": Defaults(lr=1e-3, why="digits: 0.972 at 1e-3, 0.967 at 3e-3"),
}


@register_strategy("lora", "LoRA (peft): rank-r updates to attention/conv weights; head trains",
                   LoraOptions, DEFAULTS)
def lora(adapter: Adapter, cfg: LoraOptions) -> Plan:
    """Add rank `strategy.r` LoRA adapters to the chosen layers; train them and the head."""
    require_peft("strategy.name 'lora'")
    from peft import LoraConfig
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    heads = head_names(adapter)

    def config(targets: list[str]) -> Any:
        return LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=targets, modules_to_save=heads, bias="none")

    targets = choose_targets(adapter, cfg.target_modules, DEFAULTS, config, can_adapt, "LoRA")
    convs = [adapter.module.get_submodule(n) for n in targets.names]
    plain = [n for n, m in zip(targets.names, convs)
             if isinstance(m, nn.Conv2d) and type(m) is not nn.Conv2d]
    return adapt(adapter, config(targets.spec), "lora",
                 f"LoRA r={cfg.r} alpha={cfg.alpha:g} on {describe(adapter, targets)}",
                 plain_convs=plain)
