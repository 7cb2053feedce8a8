"""What every model adapter provides: layer groups from input to head, the head, preprocessing.

Strategies only ever see an `Adapter`, so "freeze the bottom k groups", layer-wise learning
rates and gradual unfreezing work the same for a BERT and for a CNN.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from warmstart.config import ModelConfig
from warmstart.errors import WarmstartError
from warmstart.registry import Registry

MODEL_FILE = "warmstart_model.json"  # written next to the weights; says how to rebuild


@dataclass
class LayerGroup:
    """A named set of modules that train (or freeze) together, e.g. `block3` or `head`."""

    name: str
    modules: list[nn.Module]

    def parameters(self) -> Iterator[nn.Parameter]:
        """The group's parameters, each once."""
        seen: set[int] = set()
        for m in self.modules:
            for p in m.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield p


@dataclass
class Adapter:
    """A pretrained model made ready for one classification task.

    Attributes:
        name: the model name as given in the config.
        kind: "text" or "image": which data the model reads.
        module: the network; `module(**batch_inputs)` returns logits, or an object with `.logits`.
        groups: layer groups ordered from input to head; `groups[-1]` is the head group and
            holds the new classifier. Every parameter of `module` is in exactly one group.
        head: the new classifier module (its input is the pooled feature vector).
        default_lr: the learning rate used when the config gives none.
        encode: turns raw inputs (texts, or images as arrays/paths) into per-example
            features once per dataset (e.g. token ids).
        collate: turns a list of encoded examples into a dict of batched tensors (padding).
        lengths: per-example lengths of encoded inputs, for length-grouped batching
            (None for models whose inputs all cost the same, e.g. images).
        save: `save(directory, label_names)` writes the weights, preprocessing files, the
            label map and `warmstart_model.json` to a directory that
            `warmstart.models.load_adapter` restores offline.
        extra: adapter-specific values (e.g. the tokenizer, the image size).
        seed: the torch seed the model was built with (the new head's initialisation, and
            the weights of random test models); None when the caller seeded nothing.
    """

    name: str
    kind: Literal["text", "image"]
    module: nn.Module
    groups: list[LayerGroup]
    head: nn.Module
    default_lr: float
    encode: Callable[[Sequence[Any]], list[Any]]
    collate: Callable[[list[Any]], dict[str, torch.Tensor]]
    save: Callable[[Path, list[str]], None]
    lengths: Callable[[list[Any]], list[int]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None


def logits_of(output: Any) -> torch.Tensor:
    """Logits from a model output: HF models return an object with `.logits`, others a tensor."""
    return output.logits if hasattr(output, "logits") else output


# A builder makes an Adapter for `num_labels` classes from the model config (the caller seeds
# torch first, so the new head's initialisation follows the run's seed).
ModelBuilder = Callable[[ModelConfig, int], Adapter]
MODELS: Registry[ModelBuilder] = Registry("model")
# How a saved model directory is restored, by the `source` in its warmstart_model.json; each
# adapter module registers its own loader next to its `save`.
Loader = Callable[[Path, dict[str, Any]], Adapter]
LOADERS: Registry[Loader] = Registry("model source")


# --------------------------------------------------------------------------- helpers for adapters


def check_groups(module: nn.Module, groups: list[LayerGroup], head: nn.Module) -> None:
    """Assert the group invariants: unique names, `head` last and holding exactly the head.

    A failure here is a bug in an adapter, not a user error, hence assertions.
    """
    names = [g.name for g in groups]
    assert len(set(names)) == len(names), f"duplicate layer group names: {names}"
    assert names and names[-1] == "head", f"the last layer group must be 'head': {names}"
    owner: dict[int, str] = {}
    for g in groups:
        for p in g.parameters():
            assert id(p) not in owner, f"a parameter is in groups {owner[id(p)]!r} and {g.name!r}"
            owner[id(p)] = g.name
    missing = [n for n, p in module.named_parameters() if id(p) not in owner]
    assert not missing, f"parameters in no layer group: {missing[:5]}"
    assert len(owner) == sum(1 for _ in module.parameters()), "a group holds a foreign parameter"
    head_ids = {id(p) for p in head.parameters()}
    assert head_ids <= {id(p) for p in groups[-1].parameters()}, "the head is not in 'head'"


def set_dropout(module: nn.Module, p: float) -> None:
    """Set the probability of every `nn.Dropout` inside `module` (the `model.dropout` key)."""
    for m in module.modules():
        if isinstance(m, nn.Dropout):
            m.p = p


def write_model_file(directory: Path, meta: dict[str, Any]) -> None:
    """Write `warmstart_model.json`: what `load_adapter` needs to rebuild the adapter."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MODEL_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


# transformers' `problem_type` for each task type: what its sequence-classification models
# read to pick the loss, so `from_pretrained` users get the run's behaviour.
PROBLEM_TYPES = {"classification": "single_label_classification",
                 "multilabel": "multi_label_classification", "regression": "regression"}


def record_task(directory: Path, task: dict[str, Any]) -> None:
    """Add the task (`Task.to_dict`) to a saved model: to `warmstart_model.json`, and to a
    Hugging Face `config.json` as `problem_type`, where there is one."""
    meta = read_model_file(directory)
    write_model_file(directory, {**meta, "task": task})
    config = directory / "config.json"
    if config.is_file():
        data = json.loads(config.read_text(encoding="utf-8"))
        data["problem_type"] = PROBLEM_TYPES[task["type"]]
        config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_model_file(directory: Path) -> dict[str, Any]:
    """Read `warmstart_model.json` from a saved model directory."""
    path = directory / MODEL_FILE
    if not path.is_file():
        raise WarmstartError(
            f"{str(directory)!r} has no {MODEL_FILE}; pass a directory saved by warmstart "
            "(a run's `model/` folder)"
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise WarmstartError(f"{str(path)!r} is not valid JSON; save the model again") from None


def start_head_bias(adapter: Adapter, bias: np.ndarray | None) -> None:
    """Set the bias of the new head's output layer (the last linear layer of `adapter.head`
    with one output per entry of `bias`); nothing when None or no such layer."""
    if bias is None:
        return
    outputs = [m for m in adapter.head.modules()
               if isinstance(m, nn.Linear) and m.bias is not None and m.out_features == len(bias)]
    if outputs:
        with torch.no_grad():
            outputs[-1].bias.copy_(torch.as_tensor(bias, dtype=outputs[-1].bias.dtype))

