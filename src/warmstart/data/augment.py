"""Training-time augmentation: the `augment.*` keys resolved to a recipe, applied to each
training batch by the loop (`fit(augment=...)`), after the batch is on its device.

Seeded and resumable: each example draws its randomness from its own generator, seeded by
(train.seed, epoch, the example's index in the training split). So the augmentation of an
example depends neither on the batch it lands in nor on the number of processes, and a run
resumed mid-epoch sees the very augmentations an uninterrupted one would. Nothing here
touches torch's global generator (which drives dropout and is saved in checkpoints).

Evaluation, prediction, feature caching and calibration never pass through here: only the
training step of `fit` calls an `Augment`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from warmstart.config import AugmentConfig
from warmstart.data.augment_image import (
    COLUMNS,
    MIX_KIND,
    ImageOps,
    colour_normalised,
    geometric,
    mix_images,
    mix_labels,
)
from warmstart.data.augment_text import TextOps, Vocab, edit_batch
from warmstart.errors import WarmstartError
from warmstart.models.base import Adapter

# Keeps augmentation's streams apart from the data order's ([seed, epoch]) and any other
# (seed, ...) stream: an arbitrary constant, fixed forever (changing it changes every run).
STREAM = 0x41554721

# The image recipe of `augment.recipe=auto` (reasons in sections.AugmentConfig's help).
AUTO_IMAGE = ImageOps(crop_scale=(0.35, 1.0), flip=0.5, trivial=1.0, trivial_strength=1.0)
IMAGE_KEYS = tuple(f.name for f in fields(ImageOps))
TEXT_KEYS = tuple(f.name for f in fields(TextOps))


@dataclass(frozen=True)
class Recipe:
    """What augmentation a run does, every value resolved."""

    image: ImageOps = ImageOps()
    text: TextOps = TextOps()

    @property
    def active(self) -> bool:
        i = self.image
        return (i.crop_scale != (1.0, 1.0) or i.flip > 0 or i.jitter > 0 or i.trivial > 0
                or i.mixes or self.text.active)

    def describe(self) -> str:
        """One line for the log, the summary and the model card."""
        i, t = self.image, self.text
        parts = []
        if i.crop_scale != (1.0, 1.0):
            parts.append(f"random resized crop (scale {i.crop_scale[0]:g}-{i.crop_scale[1]:g})")
        if i.flip > 0:
            parts.append(f"flip p={i.flip:g}")
        if i.jitter > 0:
            parts.append(f"colour jitter {i.jitter:g}")
        if i.trivial > 0:
            parts.append(f"TrivialAugment p={i.trivial:g} strength {i.trivial_strength:g}")
        if i.mixes:
            parts.append(f"mixup {i.mixup:g} / cutmix {i.cutmix:g} on {i.mix_prob:g} of "
                         "examples")
        for key in TEXT_KEYS:
            if getattr(t, key) > 0:
                parts.append(f"{key.replace('_', ' ')} {getattr(t, key):g}")
        return ", ".join(parts) if parts else "none"


def resolve(cfg: AugmentConfig, kind: str, *, backbone_trains: bool) -> Recipe:
    """The recipe `augment.*` asks for on a model reading `kind` ("image" or "text").

    Args:
        cfg: the `augment` section; a key left null takes the recipe's value.
        kind: what the model reads.
        backbone_trains: whether more than the classifier trains (else `auto` adds nothing:
            a head-only strategy's frozen features are cached, a bigger win).

    Raises:
        WarmstartError: a key that applies to the other kind of input is set.
    """
    own, other = (IMAGE_KEYS, TEXT_KEYS) if kind == "image" else (TEXT_KEYS, IMAGE_KEYS)
    for key in other:
        if getattr(cfg, key) is not None:
            raise WarmstartError(f"config key 'augment.{key}' applies to "
                                 f"{'text' if kind == 'image' else 'image'} models and this "
                                 f"model reads {kind}; remove it")
    base: Any = ImageOps() if kind == "image" else TextOps()
    if cfg.recipe == "auto" and kind == "image" and backbone_trains:
        base = AUTO_IMAGE
    values = {key: getattr(cfg, key) if getattr(cfg, key) is not None else getattr(base, key)
              for key in own}
    if kind == "image":
        values["crop_scale"] = tuple(float(v) for v in values["crop_scale"])
        if values["mix_prob"] == 0 and cfg.mix_prob is None and (values["mixup"] > 0
                                                                 or values["cutmix"] > 0):
            values["mix_prob"] = 1.0  # asking for mixup means mixing, unless told how often
        return Recipe(image=ImageOps(**values))
    return Recipe(text=TextOps(**values))


class Augment:
    """Augments training batches: `augment(batch, ids, epoch) -> batch` (a new dict).

    Args:
        recipe: what to do.
        seed: `train.seed`.
        num_classes: outputs of the task (class indices become soft targets when mixed).
        mean, std: images: the normalisation the collate applied (colour ops undo it).
        vocab: text: what the token edits need of the tokenizer.
    """

    def __init__(self, recipe: Recipe, seed: int, num_classes: int, *,
                 mean: list[float] | None = None, std: list[float] | None = None,
                 vocab: Vocab | None = None) -> None:
        self.recipe, self.seed, self.num_classes = recipe, seed, num_classes
        self.mean, self.std, self.vocab = mean, std, vocab

    def generators(self, ids: np.ndarray, epoch: int) -> list[np.random.Generator]:
        """One generator per example, a pure function of (seed, epoch, example)."""
        return [np.random.default_rng([STREAM, self.seed, epoch, int(i)]) for i in ids]

    def __call__(self, batch: dict[str, torch.Tensor], ids: np.ndarray, epoch: int
                 ) -> dict[str, torch.Tensor]:
        rngs = self.generators(ids, epoch)
        if "pixel_values" in batch:
            return self._images(batch, rngs)
        if self.vocab is not None and self.recipe.text.active:
            return edit_batch(batch, rngs, self.recipe.text, self.vocab)
        return batch

    def _images(self, batch: dict[str, torch.Tensor], rngs: list[np.random.Generator]
                ) -> dict[str, torch.Tensor]:
        ops = self.recipe.image
        draws = torch.from_numpy(np.stack([r.random(COLUMNS) for r in rngs])).float()
        x = geometric(batch["pixel_values"], draws, ops)
        x = colour_normalised(x, draws, ops, self.mean or [0.0] * 3, self.std or [1.0] * 3)
        out = {**batch, "pixel_values": x}
        if ops.mixes:
            lam = torch.tensor([_mix_weight(r, ops, d) for r, d in
                                zip(rngs, draws[:, MIX_KIND].tolist())])
            out["pixel_values"], share = mix_images(x, draws, lam, ops)
            out["labels"] = mix_labels(batch["labels"], share, self.num_classes)
        return out


def _mix_weight(rng: np.random.Generator, ops: ImageOps, kind_draw: float) -> float:
    """An example's own share when mixed, from Beta(a, a) of the op it gets (cutmix where
    only cutmix is on, or both are and `kind_draw` < 0.5; as `mix_images` decides)."""
    cut = ops.cutmix > 0 and (ops.mixup <= 0 or kind_draw < 0.5)
    alpha = ops.cutmix if cut else ops.mixup
    return float(rng.beta(alpha, alpha)) if alpha > 0 else 1.0


def make_augment(cfg: AugmentConfig, adapter: Adapter, num_classes: int, seed: int, *,
                 backbone_trains: bool) -> Augment | None:
    """The run's augmentation, or None when the recipe does nothing.

    Raises:
        WarmstartError: a key for the other kind of input, or span masking with a tokenizer
            that has neither a mask nor an unknown token.
    """
    recipe = resolve(cfg, adapter.kind, backbone_trains=backbone_trains)
    if not recipe.active:
        return None
    if adapter.kind == "image":
        return Augment(recipe, seed, num_classes, mean=adapter.extra.get("mean"),
                       std=adapter.extra.get("std"))
    tokenizer = adapter.extra.get("tokenizer")
    if tokenizer is None:
        raise WarmstartError(f"augment.* text ops need a tokenizer and model "
                             f"{adapter.name!r} has none; set augment.recipe=none")
    mask_id = tokenizer.mask_token_id
    mask_id = mask_id if mask_id is not None else tokenizer.unk_token_id
    if recipe.text.span_mask > 0 and mask_id is None:
        raise WarmstartError(f"config key 'augment.span_mask': {adapter.name!r}'s tokenizer "
                             "has no mask or unknown token to write; set it to 0")
    pad = {"input_ids": tokenizer.pad_token_id or 0, "attention_mask": 0,
           "token_type_ids": getattr(tokenizer, "pad_token_type_id", 0)}
    vocab = Vocab(frozenset(tokenizer.all_special_ids), mask_id, pad)
    return Augment(recipe, seed, num_classes, vocab=vocab)
