"""Any torch.nn.Module, from `package.module:factory`, fine-tuned as an image classifier.

The factory is called with no arguments (it loads its own weights). Layer groups are the
module's top-level children, input to head; the head (the last child, or `model.head`) must be
an nn.Linear and is replaced by a new one with the task's number of classes. Inputs are images
resized to `model.image_size` (default 32) and normalised with the ImageNet mean/std.
`tiny-cnn` is a small random CNN built this way, for tests.
"""

from __future__ import annotations

import importlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

from torch import nn

from warmstart.config import ModelConfig
from warmstart.errors import WarmstartError
from warmstart.models.base import LOADERS, MODELS, Adapter, LayerGroup, check_groups, set_dropout
from warmstart.models.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PixelModel,
    image_collate,
    keep_inputs,
    load_weights,
    save_weights,
)

# Adam's usual rate: right for small CNNs with BatchNorm (3e-4..3e-3); transformers want less.
CUSTOM_LR = 1e-3
CUSTOM_SIZE = 32  # small enough for any CPU; set model.image_size for a pretrained CNN's own
TINY_CNN = "warmstart.models.custom:tiny_cnn"


def tiny_cnn() -> nn.Module:
    """A 3-conv CNN with BatchNorm (so frozen-BatchNorm behaviour is testable), 10 classes."""

    def conv(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(OrderedDict(
        stem=nn.Sequential(*conv(3, 8, 1)),
        block1=nn.Sequential(*conv(8, 16, 2)),
        block2=nn.Sequential(*conv(16, 32, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten()),
        head=nn.Linear(32, 10),
    ))


@MODELS.register("tiny-cnn", "3-conv CNN with BatchNorm, 32x32 images, random weights, for tests")
def tiny_cnn_model(cfg: ModelConfig, num_labels: int) -> Adapter:
    """`tiny_cnn` through the custom-factory path (so that path is tested too)."""
    return build_custom(cfg, num_labels, factory=TINY_CNN)


def load_factory(spec: str) -> nn.Module:
    """Import `package.module:factory` and call it; errors name `model.name`."""
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise WarmstartError(
            f"model.name {spec!r}: cannot import {attr!r} from {module_name!r} ({e}); "
            "give `package.module:factory` with the package importable"
        ) from None
    net = factory()
    if not isinstance(net, nn.Module):
        raise WarmstartError(
            f"model.name {spec!r}: the factory returned a {type(net).__name__}, "
            "not a torch.nn.Module"
        )
    return net


def build_custom(cfg: ModelConfig, num_labels: int, factory: str | None = None) -> Adapter:
    """A custom module with its head replaced by a new `num_labels`-way Linear.

    Args:
        cfg: `name` is the factory (unless `factory` is given); `groups`, `head` and
            `image_size` choose the layer groups, the head and the input size.
        num_labels: number of classes.
        factory: `package.module:factory`, for registered models built this way.
    """
    spec = factory or cfg.name
    net = load_factory(spec)
    children = dict(net.named_children())
    head_name = cfg.head or (list(children)[-1] if children else None)
    old = children.get(head_name) if head_name else None
    if not isinstance(old, nn.Linear):
        raise WarmstartError(
            f"model.head {head_name!r} of {spec!r} is a {type(old).__name__}, not an nn.Linear; "
            "set model.head to the name of the Linear classifier child"
        )
    setattr(net, head_name, nn.Linear(old.in_features, num_labels, bias=old.bias is not None))
    return _adapter(cfg, spec, net, head_name, num_labels)


def _adapter(cfg: ModelConfig, spec: str, net: nn.Module, head_name: str,
             num_labels: int) -> Adapter:
    head = getattr(net, head_name)
    if cfg.dropout is not None:
        set_dropout(net, cfg.dropout)
    groups = [LayerGroup(name, [getattr(net, name)]) for name in _group_names(cfg, net, head_name)]
    groups.append(LayerGroup("head", [head]))
    if len({g.name for g in groups}) < len(groups):
        raise WarmstartError(
            f"model.head: a non-head child of {spec!r} is called 'head'; "
            "set model.head to 'head' or rename that child"
        )
    module = PixelModel(net)
    check_groups(module, groups, head)
    size = cfg.image_size or CUSTOM_SIZE

    def save(directory: Path, label_names: list[str]) -> None:
        meta = {"source": "custom", "name": cfg.name, "factory": spec, "kind": "image",
                "head": head_name, "groups": list(cfg.groups), "num_labels": num_labels,
                "image_size": size, "labels": list(label_names)}
        save_weights(module, Path(directory), meta)

    return Adapter(
        name=cfg.name, kind="image", module=module, groups=groups, head=head,
        default_lr=CUSTOM_LR, encode=keep_inputs,
        collate=image_collate(size, IMAGENET_MEAN, IMAGENET_STD), save=save,
        extra={"image_size": size, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
    )


def _group_names(cfg: ModelConfig, net: nn.Module, head_name: str) -> list[str]:
    """The non-head groups: `cfg.groups` in order, else every child with parameters."""
    children = dict(net.named_children())
    has_params = {n for n, c in children.items() if any(True for _ in c.parameters())}
    if not cfg.groups:
        return [n for n in children if n in has_params and n != head_name]
    for name in cfg.groups:
        if name not in children:
            raise WarmstartError(
                f"model.groups names {name!r}, which is not a top-level child of "
                f"{cfg.name!r}; its children are {', '.join(children)}"
            )
    names = [n for n in cfg.groups if n != head_name]
    left = [n for n in children if n in has_params and n not in names and n != head_name]
    if left:
        raise WarmstartError(
            f"model.groups leaves the parameters of child {left[0]!r} in no group; "
            "add it to model.groups"
        )
    return names


@LOADERS.register("custom", "custom torch modules: factory re-imported, weights loaded")
def load_custom(directory: Path, meta: dict[str, Any]) -> Adapter:
    """Restore a saved custom model: re-import the factory, then load the saved weights."""
    cfg = ModelConfig(name=meta["name"], image_size=meta["image_size"], groups=meta["groups"],
                      head=meta["head"])
    adapter = build_custom(cfg, meta["num_labels"], factory=meta["factory"])
    load_weights(adapter.module, directory)
    return adapter
