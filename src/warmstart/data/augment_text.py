"""Text augmentation on token ids: random token deletion, adjacent swaps, span masking.

Works on a collated batch after tokenisation (`input_ids`, `attention_mask`, and any other
per-token tensor such as `token_type_ids`), so the texts are encoded once per run as
without augmentation. Special tokens ([CLS], [SEP], padding) never move or vanish, and a text
keeps at least one ordinary token. Each example's edits come from its own generator, seeded by
(train.seed, epoch, example) in `augment.py`.

Off by default: Longpre et al. (2020, "How Effective is Task-Agnostic Data Augmentation for
Pretrained Transformers?") found that EDA-style edits and back-translation did not
consistently help pretrained transformers. Synonym replacement is left out: it needs a
synonym source, and none ships offline here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class TextOps:
    """The text ops of a recipe, resolved (`augment.py` builds it from `augment.*`)."""

    token_delete: float = 0.0
    token_swap: float = 0.0
    span_mask: float = 0.0

    @property
    def active(self) -> bool:
        return self.token_delete > 0 or self.token_swap > 0 or self.span_mask > 0


@dataclass(frozen=True)
class Vocab:
    """What the ops need to know of the tokenizer."""

    special: frozenset[int]  # ids never edited ([CLS], [SEP], [PAD], ...)
    mask_id: int | None  # what span masking writes ([MASK], else [UNK])
    pad: dict[str, int]  # the padding value of each per-token batch key


def edit_ids(ids: list[int], ordinary: list[int], rng: np.random.Generator, ops: TextOps,
             mask_id: int | None) -> tuple[list[int], list[int]]:
    """One text's edits: swaps, then a masked span, then deletions.

    Args:
        ids: the token ids of the text's real tokens (no padding).
        ordinary: positions in `ids` that may be edited (not special tokens).
        rng: the example's generator.
        ops: which edits, how often.
        mask_id: the id span masking writes.

    Returns:
        The edited ids and the positions (into `ids`) that are kept.
    """
    ids = list(ids)
    if ops.token_swap > 0:
        for a, b in zip(ordinary, ordinary[1:]):
            if b == a + 1 and rng.random() < ops.token_swap:  # neighbours in one segment
                ids[a], ids[b] = ids[b], ids[a]
    if ops.span_mask > 0 and ordinary and mask_id is not None:
        length = max(1, round(ops.span_mask * len(ordinary)))
        start = int(rng.integers(0, len(ordinary) - length + 1))
        for pos in ordinary[start:start + length]:
            ids[pos] = mask_id
    keep = list(range(len(ids)))
    if ops.token_delete > 0 and ordinary:
        dropped = {p for p in ordinary if rng.random() < ops.token_delete}
        if len(dropped) == len(ordinary):  # a text keeps one ordinary token
            dropped.discard(ordinary[int(rng.integers(len(ordinary)))])
        keep = [p for p in keep if p not in dropped]
    return ids, keep


def edit_batch(batch: dict[str, torch.Tensor], rngs: Sequence[np.random.Generator],
               ops: TextOps, vocab: Vocab) -> dict[str, torch.Tensor]:
    """The batch with each text edited by its own generator; shapes unchanged (deleted
    tokens leave padding at the end)."""
    ids_t, mask_t = batch["input_ids"], batch["attention_mask"]
    width = ids_t.shape[1]
    per_token = {k: v.cpu() for k, v in batch.items()
                 if k != "labels" and v.dim() == 2 and v.shape[1] == width}
    out = {k: v.clone() for k, v in per_token.items()}
    for i, rng in enumerate(rngs):
        real = mask_t[i].nonzero().flatten().tolist()
        ids = per_token["input_ids"][i, real].tolist()
        ordinary = [j for j, t in enumerate(ids) if t not in vocab.special]
        new_ids, keep = edit_ids(ids, ordinary, rng, ops, vocab.mask_id)
        new_ids_t = torch.tensor(new_ids, dtype=ids_t.dtype)
        # Where the padding was stays padding: at the end, or at the start (left padding).
        where = slice(width - len(keep), width) if real and real[0] > 0 else slice(0, len(keep))
        for key, value in per_token.items():
            row = new_ids_t if key == "input_ids" else value[i, real]
            out[key][i] = vocab.pad.get(key, 0)
            out[key][i, where] = row[keep]
    return {**batch, **{k: v.to(ids_t.device) for k, v in out.items()}}
