"""Pooling a text encoder's token vectors into one vector, as the checkpoint intends.

A sentence-transformers checkpoint (all-MiniLM-L6-v2 among them) was trained to be read as
the mean of its token vectors, L2-normalised; its BERT pooler (a dense layer on [CLS]) was
never trained for anything. Read through the pooler, its frozen features reach 0.72 test
accuracy on TREC with a logistic regression; read as trained, 0.90 (issue #12's table). So
the pooling comes from the checkpoint: `modules.json` and `1_Pooling/config.json` when the
directory has them, else the architecture's own classification path (`pooler`).

`model.pooling` overrides: `pooler` is the transformers `*ForSequenceClassification` model
as it is (BERT's pooler, RoBERTa's [CLS] head, GPT's last token); `mean`, `cls`, `last` and
`max` put warmstart's own head (dropout + linear) on that pooled vector of the base model.

A model with warmstart's head saves in the sentence-transformers layout (the base model
through `save_pretrained`, `modules.json`, `1_Pooling/`, `2_Normalize/`) plus the head's
weights in `head.safetensors`, so `AutoModel.from_pretrained` (or `SentenceTransformer`)
users compute the same vector and the model card shows the two lines that turn it into logits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from warmstart.errors import WarmstartError

MODES = ("mean", "cls", "last", "max")
HEAD_FILE = "head.safetensors"
# A bi-encoder's batch holds the second text's inputs under the same keys with this suffix.
PAIR_SUFFIX = "_b"
_ST_MODES = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls",
             "pooling_mode_max_tokens": "max", "pooling_mode_lasttoken": "last"}


@dataclass(frozen=True)
class Pooling:
    """How token vectors become one vector: `mode` (`pooler`: the architecture's own head;
    else one of MODES), whether it is then L2-normalised, and where that was decided."""

    mode: str
    normalize: bool = False
    origin: str = "model.pooling"

    @property
    def native(self) -> bool:
        return self.mode == "pooler"

    def describe(self) -> str:
        what = "the model's own pooler head" if self.native else f"{self.mode} pooling"
        return what + (", L2-normalised" if self.normalize else "") + f" ({self.origin})"


def from_layout(directory: Path) -> Pooling | None:
    """The pooling a sentence-transformers layout in `directory` declares, if it has one.

    Raises:
        WarmstartError: `modules.json` or the pooling config is not readable JSON.
    """
    modules_file = directory / "modules.json"
    if not modules_file.is_file():
        return None
    try:
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
        types = {str(m.get("type", "")).rsplit(".", 1)[-1]: m.get("path", "") for m in modules}
        if "Pooling" not in types:
            return None
        config = json.loads((directory / types["Pooling"] / "config.json")
                            .read_text(encoding="utf-8"))
    except (OSError, ValueError, AttributeError) as e:
        raise WarmstartError(f"{directory}: cannot read its sentence-transformers pooling "
                             f"({type(e).__name__}); fix the files or set model.pooling") from None
    modes = [mode for key, mode in _ST_MODES.items() if config.get(key)]
    if len(modes) != 1:
        return None  # several modes concatenated (or none): not one vector warmstart can read
    return Pooling(modes[0], "Normalize" in types, "the checkpoint's sentence-transformers layout")


def resolve(setting: str, directory: Path | None) -> Pooling:
    """`model.pooling` made concrete: `auto` follows the checkpoint's layout, else `pooler`."""
    if setting != "auto":
        return Pooling(setting, normalize=False)
    found = from_layout(directory) if directory is not None and directory.is_dir() else None
    return found or Pooling("pooler", origin="the architecture's own head")


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """One vector per example from token vectors (batch x tokens x dims) and the attention
    mask; padding never counts, whichever side it is on."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    if mode == "mean":
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    if mode == "max":
        return hidden.masked_fill(weights == 0, torch.finfo(hidden.dtype).min).max(1).values
    if mode == "cls":
        return hidden[:, 0]
    # last: the last real token (right padding: at length - 1; left padding: at the end)
    last = mask.shape[1] - 1 - mask.flip(1).long().argmax(1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


class PooledClassifier(nn.Module):
    """A transformers base model, pooled, then warmstart's new head (dropout + linear).

    Children in order: `base` (embeddings and blocks), `dropout`, `classifier`: the layer
    groups find the blocks in `base` and the head in the rest (`hf.layer_groups`).

    With `pair="bi"` (a bi-encoder) each text of a pair goes through `base` alone (the
    second under `PAIR_SUFFIX` keys) and the head reads the cosine of the two pooled vectors:
    sentence-transformers' bi-encoder, whose cosine a sentence-embedding checkpoint was
    trained to make meaningful (all-MiniLM-L6-v2's frozen cosine scores 0.82 Spearman on
    STS-B), and which keeps working on text pairs the cross-encoder never saw.
    """

    def __init__(self, base: nn.Module, pooling: Pooling, num_labels: int, dropout: float,
                 pair: str = "cross") -> None:
        super().__init__()
        if getattr(base, "pooler", None) is not None:
            base.pooler = None  # unused here; left in, DDP would wait for its gradients
        self.base = base
        self.pooling = pooling
        self.pair = pair
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(1 if pair == "bi" else base.config.hidden_size, num_labels)
        # transformers' initialisation of a new classifier, as *ForSequenceClassification does,
        # for inputs whose components are about 1 (LayerNorm outputs, a tanh pooler). An
        # L2-normalised vector's are 1/sqrt(dims) of that: the head starts sqrt(dims) times
        # larger, so its first logits spread as a transformers head's do. Full fine-tuning of
        # minilm-l6 on banking77-2k (3 epochs): test accuracy 0.680 / 0.710 (seeds 0, 1) from
        # the plain initialisation, 0.771 from this one.
        # A head trained alone keeps the plain start (`plain_start`).
        self.start_scale = (base.config.hidden_size ** 0.5
                            if pooling.normalize and pair != "bi" else 1.0)
        std = getattr(base.config, "initializer_range", 0.02)
        nn.init.normal_(self.classifier.weight, std=std * self.start_scale)
        nn.init.zeros_(self.classifier.bias)
        if pair == "bi" and num_labels == 1:
            # A score starts as the cosine itself: the checkpoint's own ranking of the pairs
            # (all-MiniLM-L6-v2: 0.820 Spearman on STS-B test). Training sets the scale from
            # its targets (`start_score`); a model built without a task keeps this.
            nn.init.ones_(self.classifier.weight)

    def plain_start(self) -> None:
        """Undo the larger start of a head on a normalised vector, for a head trained alone
        (a probe): a linear model on fixed features starts best near 0, as scikit-learn's
        logistic regression does. On TREC-2k, `head` for 3 epochs at 3e-2 scored 0.860 test
        from the larger start against 0.872 from this one."""
        with torch.no_grad():
            self.classifier.weight.div_(self.start_scale)
        self.start_scale = 1.0

    def start_score(self, start: tuple[float, float] | None) -> None:
        """Start a bi-encoder's head at `(weight, bias)` on the cosine (from the task's
        `cosine_head`: its targets' range); no-op for a cross-encoder or None."""
        if self.pair != "bi" or start is None:
            return
        with torch.no_grad():
            self.classifier.weight.fill_(start[0])
            self.classifier.bias.fill_(start[1])

    @property
    def config(self) -> Any:
        """The base model's transformers config (peft reads its model type)."""
        return self.base.config

    @property
    def base_model(self) -> nn.Module:
        return self.base

    def features(self, **inputs: torch.Tensor) -> torch.Tensor:
        """The pooled (and, if the checkpoint says so, normalised) vector per example."""
        hidden = self.base(**inputs).last_hidden_state
        mask = inputs.get("attention_mask")
        if mask is None:
            mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
        vector = pool(hidden, mask, self.pooling.mode)
        return nn.functional.normalize(vector, dim=-1) if self.pooling.normalize else vector

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        if self.pair != "bi":
            return self.classifier(self.dropout(self.features(**inputs)))
        second = {k.removesuffix(PAIR_SUFFIX): v for k, v in inputs.items()
                  if k.endswith(PAIR_SUFFIX)}
        if not second:
            raise ValueError("a bi-encoder reads text pairs: the batch has no second text")
        first = {k: v for k, v in inputs.items() if not k.endswith(PAIR_SUFFIX)}
        cosine = nn.functional.cosine_similarity(self.features(**first), self.features(**second))
        return self.classifier(cosine.unsqueeze(-1))


def write_layout(model: PooledClassifier, directory: Path) -> None:
    """The sentence-transformers files beside `save_pretrained`'s, and the head's weights."""
    from safetensors.torch import save_file

    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models."
                "Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers."
                "models.Pooling"}]
    if model.pooling.normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
        (directory / "2_Normalize").mkdir(exist_ok=True)
    (directory / "modules.json").write_text(json.dumps(modules, indent=2) + "\n",
                                            encoding="utf-8")
    config = {"word_embedding_dimension": model.config.hidden_size,
              **{key: mode == model.pooling.mode for key, mode in _ST_MODES.items()}}
    (directory / "1_Pooling").mkdir(exist_ok=True)
    (directory / "1_Pooling" / "config.json").write_text(json.dumps(config, indent=2) + "\n",
                                                         encoding="utf-8")
    head = {k: v.detach().cpu().contiguous() for k, v in model.classifier.state_dict().items()}
    save_file(head, str(directory / HEAD_FILE))


def load_head(model: PooledClassifier, directory: Path) -> None:
    """Put the saved head's weights (`write_layout`) back into `model`."""
    from safetensors.torch import load_file

    model.classifier.load_state_dict(load_file(str(directory / HEAD_FILE)))


def usage(pooling: Pooling, max_length: int, pair: str = "cross") -> str:
    """How a transformers user computes the same logits from a saved model (for the card);
    `max_length` is the truncation the model was trained and predicts with; `pair="bi"`:
    a bi-encoder's, from the texts and their pairs."""
    mean = ("m = enc['attention_mask'].unsqueeze(-1)\n"
            "v = (h * m).sum(1) / m.sum(1)  # mean over real tokens\n")
    vector = {"mean": mean, "cls": "v = h[:, 0]\n",
              "max": "v = h.masked_fill(enc['attention_mask'].unsqueeze(-1) == 0, "
                     "-1e9).max(1).values\n",
              "last": "v = h[range(len(h)), enc['attention_mask'].sum(1) - 1]  # right padding\n",
              }[pooling.mode]
    norm = "v = torch.nn.functional.normalize(v, dim=-1)\n" if pooling.normalize else ""
    if pair == "bi":  # the same vector for each text, then the head on their cosine
        body = "    h = model(**enc).last_hidden_state\n" + "".join(
            f"    {line}\n" for line in (vector + norm).splitlines())
        return ("import torch\n"
                "from safetensors.torch import load_file\n"
                "from transformers import AutoModel, AutoTokenizer\n"
                "tok, model = AutoTokenizer.from_pretrained(d), AutoModel.from_pretrained(d)\n"
                f"head = load_file(f'{{d}}/{HEAD_FILE}')\n"
                "def embed(batch):\n"
                f"    enc = tok(batch, padding=True, truncation=True, max_length={max_length}, "
                "return_tensors='pt')\n" + body + "    return v\n"
                "cos = torch.nn.functional.cosine_similarity(embed(texts), embed(pairs))\n"
                "logits = cos[:, None] @ head['weight'].T + head['bias']  "
                "# labels: model.config.id2label\n")
    return ("import torch\n"
            "from safetensors.torch import load_file\n"
            "from transformers import AutoModel, AutoTokenizer\n"
            "tok, model = AutoTokenizer.from_pretrained(d), AutoModel.from_pretrained(d)\n"
            f"head = load_file(f'{{d}}/{HEAD_FILE}')\n"
            f"enc = tok(texts, padding=True, truncation=True, max_length={max_length}, "
            "return_tensors='pt')\n"
            "h = model(**enc).last_hidden_state\n" + vector + norm +
            "logits = v @ head['weight'].T + head['bias']  # labels: model.config.id2label\n")
