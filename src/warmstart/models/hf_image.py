"""Image classification with transformers models (ViT, ResNet, ConvNeXt, ...).

Any local Hugging Face directory of an image-classification model works through
`build_hf_image`; `tiny-vit` is a 2-layer random ViT for tests.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

from torch import nn

from warmstart.config import ModelConfig
from warmstart.models import hf
from warmstart.models.base import MODELS, Adapter, check_groups, set_dropout
from warmstart.models.images import image_collate, keep_inputs

# The common ViT/ConvNeXt fine-tuning rate; pretrained transformers want small steps.
IMAGE_LR = 5e-5
DEFAULT_SIZE = 224  # when neither the config nor the image processor names a size
HALF = (0.5, 0.5, 0.5)  # ViT's normalisation, used when there is no image processor


@MODELS.register("tiny-vit", "2-layer ViT on 32x32 images, hidden 32, random weights, for tests")
def tiny_vit(cfg: ModelConfig, num_labels: int) -> Adapter:
    """A tiny random ViT: fast enough for unit tests and demos."""
    from transformers import AutoModelForImageClassification, ViTConfig

    config = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=num_labels,
    )
    if cfg.dropout is not None:
        hf.set_config_dropout(config, cfg.dropout)
    model = hf.from_config(AutoModelForImageClassification, config)
    return _adapter(cfg, model, cfg.image_size or 32, HALF, HALF, processor_file=None)


def build_hf_image(cfg: ModelConfig, num_labels: int, source: str | None = None,
                   new_head: bool = True) -> Adapter:
    """A transformers image-classification model with a new `num_labels`-way head.

    The input size is `cfg.image_size`, else the config's `image_size`, else the image
    processor's size, else 224; mean/std come from the image processor, else 0.5.

    Args:
        cfg: the model config; `source` defaults to `cfg.name` (a local directory or hub id).
        num_labels: number of classes.
        source: where the weights (and `preprocessor_config.json`) are.
        new_head: False when restoring a saved fine-tuned model (keep its head).
    """
    from transformers import AutoModelForImageClassification

    source = source or cfg.name
    config = hf.load_config(source, num_labels, cfg.dropout)
    model = hf.from_pretrained(AutoModelForImageClassification, source, config, new_head)
    processor_file = _processor_file(source)
    processor = json.loads(processor_file.read_text(encoding="utf-8")) if processor_file else {}
    size = cfg.image_size or _config_size(config) or _processor_size(processor) or DEFAULT_SIZE
    mean = processor.get("image_mean", HALF)
    std = processor.get("image_std", HALF)
    return _adapter(cfg, model, size, mean, std, processor_file)


def _processor_file(source: str) -> Path | None:
    """The image processor's config (mean, std, size) in a directory or the hub cache, if any."""
    from transformers.utils import cached_file

    path = cached_file(source, hf.IMAGE_PROCESSOR_FILE, local_files_only=hf.offline(),
                       _raise_exceptions_for_missing_entries=False)
    return Path(path) if path else None


def _config_size(config: Any) -> int | None:
    size = getattr(config, "image_size", None)
    return size[0] if isinstance(size, (list, tuple)) else size


def _processor_size(processor: dict[str, Any]) -> int | None:
    size = processor.get("size")
    if isinstance(size, dict):
        return size.get("height") or size.get("shortest_edge")
    return size


def _adapter(cfg: ModelConfig, model: Any, size: int, mean: Any, std: Any,
             processor_file: Path | None) -> Adapter:
    """Wrap a loaded model: groups, head, image collation, saving."""
    if cfg.dropout is not None:
        set_dropout(model, cfg.dropout)
    groups, head = hf.layer_groups(model)
    check_groups(model, groups, head)
    native = _config_size(model.config)
    if native and size != native and "interpolate_pos_encoding" in inspect.signature(
        model.forward
    ).parameters:
        _always_interpolate(model)
    mean, std = _three(mean), _three(std)

    def save(directory: Path, label_names: list[str]) -> None:
        meta = {"name": cfg.name, "kind": "image", "image_size": size, "mean": mean, "std": std}
        hf.save_hf(model, Path(directory), label_names, meta,
                   extra_files=[processor_file] if processor_file else None)

    return Adapter(
        name=cfg.name, kind="image", module=model, groups=groups, head=head, default_lr=IMAGE_LR,
        encode=keep_inputs, collate=image_collate(size, mean, std), save=save,
        extra={"image_size": size, "mean": mean, "std": std},
    )


def _three(value: Any) -> list[float]:
    """Per-channel values; some image processors give one number for all three channels."""
    return [float(value)] * 3 if isinstance(value, (int, float)) else [float(v) for v in value]


def _always_interpolate(model: nn.Module) -> None:
    """ViT-like models learned position embeddings for one input size; at another size they
    must interpolate them, which their forward does only when asked."""

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return args, {**kwargs, "interpolate_pos_encoding": True}

    model.register_forward_pre_hook(hook, with_kwargs=True)


def load_hf_image(directory: Path, meta: dict[str, Any]) -> Adapter:
    """Restore an image adapter saved by `Adapter.save` (weights, size, mean/std)."""
    from transformers import AutoModelForImageClassification

    cfg = ModelConfig(name=meta["name"], image_size=meta["image_size"])
    config = hf.load_config(str(directory), len(meta["labels"]), None)
    model = hf.from_pretrained(AutoModelForImageClassification, str(directory), config, False)
    return _adapter(cfg, model, meta["image_size"], meta["mean"], meta["std"], None)
