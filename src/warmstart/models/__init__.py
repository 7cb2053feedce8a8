"""Model adapters: `build_model` turns `model.name` into an Adapter, `load_adapter` restores one.

Each adapter module registers its built-in names with one line (`@MODELS.register(...)`) and
its saved-model loader (`@LOADERS.register(source)`); importing them here fills the
registries that `warmstart ls models`, `load_adapter` and the tests read. `peft` wraps any
adapter with LoRA/IA3 layers (a model transform the lora and ia3 strategies apply).
"""

from warmstart.models import (  # noqa: F401
    custom,
    efficientnet,
    ensemble,
    hf,
    hf_image,
    hf_text,
    onnx,
    peft,
)
from warmstart.models.base import LOADERS, MODEL_FILE, MODELS, Adapter, LayerGroup, logits_of
from warmstart.models.build import build_model, load_adapter

__all__ = ["LOADERS", "MODEL_FILE", "MODELS", "Adapter", "LayerGroup", "build_model",
           "load_adapter", "logits_of"]
