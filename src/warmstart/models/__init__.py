"""Model adapters: `build_model` turns `model.name` into an Adapter, `load_adapter` restores one.

Each adapter module registers its built-in names with one line (`@MODELS.register(...)`);
importing them here fills the registry that `warmstart ls models` and the tests read.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from warmstart.config import ModelConfig
from warmstart.errors import WarmstartError, did_you_mean
from warmstart.models import custom, efficientnet, hf, hf_image, hf_text
from warmstart.models.base import (
    MODEL_FILE,
    MODELS,
    Adapter,
    LayerGroup,
    logits_of,
    read_model_file,
)

__all__ = ["MODEL_FILE", "MODELS", "Adapter", "LayerGroup", "build_model", "load_adapter",
           "logits_of"]


def build_model(cfg: ModelConfig, num_labels: int) -> Adapter:
    """Build the adapter `cfg.name` names, with a new `num_labels`-way head.

    `cfg.name` is resolved in this order: a registered name (`warmstart ls models`); an existing
    local directory (a Hugging Face model, text or image: see `hf.detect_kind`);
    `package.module:factory` (a custom torch module); else a hub id, read from the local cache
    only when HF_HUB_OFFLINE is set. The caller seeds torch first: the new head's
    initialisation follows the run's seed.
    """
    name = cfg.name
    if name in MODELS:
        return MODELS.get(name)(cfg, num_labels)
    if Path(name).is_dir():
        return _build_hf(cfg, num_labels)
    if ":" in name and not Path(name).exists():
        return custom.build_custom(cfg, num_labels)
    try:
        return _build_hf(cfg, num_labels)
    except WarmstartError:
        raise
    except Exception:  # any failure to reach or read the hub id means "no such model" here
        raise WarmstartError(
            f"model.name {name!r} is not a built-in model, a local directory or a reachable hub "
            f"id{did_you_mean(name, MODELS.names())}; run `warmstart ls models`"
        ) from None


def _build_hf(cfg: ModelConfig, num_labels: int) -> Adapter:
    try:
        config = hf.load_config(cfg.name, num_labels, None)
    except (OSError, ValueError) as e:
        if not Path(cfg.name).is_dir():
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WarmstartError(
            f"model.name {cfg.name!r} is a directory but not a Hugging Face model ({first}); "
            "point it at a folder with config.json and the weights"
        ) from None
    if hf.detect_kind(cfg.name, config) == "image":
        return hf_image.build_hf_image(cfg, num_labels)
    return hf_text.build_hf_text(cfg, num_labels)


def _load_hf(directory: Path, meta: dict[str, Any]) -> Adapter:
    if meta["kind"] == "image":
        return hf_image.load_hf_image(directory, meta)
    return hf_text.load_hf_text(directory, meta)


def _load_peft(directory: Path, meta: dict[str, Any]) -> Adapter:
    # Imported here, not at the top: the strategies package imports this one.
    from warmstart.strategies._peft import load_peft

    return load_peft(directory, meta)


# How each `source` in warmstart_model.json is restored.
LOADERS: dict[str, Callable[[Path, dict[str, Any]], Adapter]] = {
    "hf": _load_hf,
    efficientnet.ARCH: efficientnet.load_efficientnet,
    "custom": custom.load_custom,
    "peft": _load_peft,  # lora/ia3 runs: adapters and head over a rebuilt base model
}


def load_adapter(directory: str | Path) -> tuple[Adapter, list[str]]:
    """Restore an adapter, weights included, from a directory `Adapter.save` wrote (offline).

    Returns:
        The adapter (in eval mode) and the label names, in class-index order.
    """
    directory = Path(directory)
    meta = read_model_file(directory)
    loader = LOADERS.get(meta.get("source", ""))
    if loader is None:
        raise WarmstartError(
            f"{str(directory / MODEL_FILE)!r} has an unknown source {meta.get('source')!r}; "
            "it was written by another warmstart version: save the model again"
        )
    adapter = loader(directory, meta)
    adapter.module.eval()
    return adapter, list(meta["labels"])
