"""`build_model` turns `model.name` into an Adapter; `load_adapter` restores a saved one.

Loaders are looked up in `LOADERS` by the `source` a saved model records; each adapter module
registers its own, so this module knows no adapter's save format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from warmstart.config import ModelConfig
from warmstart.errors import WarmstartError, did_you_mean
from warmstart.models import custom, hf, hf_image, hf_text
from warmstart.models.base import LOADERS, MODEL_FILE, MODELS, Adapter, read_model_file


def build_model(cfg: ModelConfig, num_labels: int, seed: int | None = None) -> Adapter:
    """Build the adapter `cfg.name` names, with a new `num_labels`-way head.

    `cfg.name` is resolved in this order: a registered name (`warmstart ls models`); an existing
    local directory (a Hugging Face model, text or image: see `hf.detect_kind`);
    `package.module:factory` (a custom torch module); else a hub id, read from the local cache
    only when HF_HUB_OFFLINE is set.

    With a `seed`, torch is seeded with it first, so the new head's initialisation (and a
    random test model's weights) follow it; the adapter records it (`Adapter.seed`).
    """
    if seed is not None:
        torch.manual_seed(seed)
    adapter = _build(cfg, num_labels)
    if cfg.pooling != "auto" and "pooling_note" not in adapter.extra:
        raise WarmstartError(f"model.pooling={cfg.pooling} applies to Hugging Face text models; "
                             f"{cfg.name!r} keeps its own pooling (leave model.pooling=auto)")
    adapter.seed = seed
    return adapter


def _build(cfg: ModelConfig, num_labels: int) -> Adapter:
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


@LOADERS.register("hf", "Hugging Face save_pretrained layouts, text or image")
def _load_hf(directory: Path, meta: dict[str, Any]) -> Adapter:
    # Here rather than in hf.py: text and image models share the `hf` source, and this is
    # the module that knows both.
    if meta["kind"] == "image":
        return hf_image.load_hf_image(directory, meta)
    return hf_text.load_hf_text(directory, meta)


def load_adapter(directory: str | Path) -> tuple[Adapter, list[str]]:
    """Restore an adapter, weights included, from a directory `Adapter.save` wrote (offline).

    Returns:
        The adapter (in eval mode) and the label names, in class-index order.
    """
    directory = Path(directory)
    meta = read_model_file(directory)
    source = meta.get("source", "")
    if source not in LOADERS:
        raise WarmstartError(
            f"{str(directory / MODEL_FILE)!r} has an unknown source {meta.get('source')!r}; "
            "it was written by another warmstart version: save the model again"
        )
    adapter = LOADERS.get(source)(directory, meta)
    adapter.module.eval()
    return adapter, list(meta["labels"])
