"""Fine-tuning strategies, one file each; importing this package registers them all."""

from warmstart.strategies import (  # noqa: F401  (each import registers its strategy)
    bitfit,
    discriminative,
    encoder,
    features,
    full,
    gradual,
    head,
    ia3,
    llrd,
    lora,
    lpft,
    norm,
    partial,
)
from warmstart.strategies.base import (
    STRATEGIES,
    STRATEGY_DEFAULTS,
    Defaults,
    ParamGroup,
    Plan,
    train_mode,
)

__all__ = ["STRATEGIES", "STRATEGY_DEFAULTS", "Defaults", "ParamGroup", "Plan", "train_mode"]
