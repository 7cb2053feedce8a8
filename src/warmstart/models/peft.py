"""PEFT as a model transform: `wrap(adapter, peft_config, ...)` returns a new Adapter whose
module carries peft adapters (LoRA, IA3), with its own `save` and its own registered loader.

The model is wrapped with `peft.get_peft_model` rather than injected in place, so saving,
reloading and merging are peft's own `save_pretrained`, `PeftModel.from_pretrained` and
`merge_and_unload`, and a saved run has the layout every peft user knows
(`adapter_config.json`, `adapter_model.safetensors`). The wrapper passes `module(**batch)`
through unchanged, to a transformers model as to a CNN's `PixelModel`.

The new head is peft's `modules_to_save`: it trains fully and is saved in the adapter file.
Without it a reloaded model would get a new random head (peft #310, #1070).

Only the adapters and the head are saved. Reloading rebuilds the base model from its config
with the seed it was built with (passed to `wrap`, recorded in `warmstart_model.json`), so
random-weight test models come back identical, and compares a fingerprint of the base
weights before trusting the adapters on top of them.

Which modules to adapt is the strategy's choice (`strategies/lora.py`, `ia3.py`); this
module only applies a peft config and keeps the adapter's layer groups and head pointing at
the modules peft put in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from warmstart.config import ModelConfig
from warmstart.errors import WarmstartError
from warmstart.models.base import LOADERS, Adapter, LayerGroup, check_groups, write_model_file
from warmstart.models.build import build_model

ADAPTER = "default"  # peft's name for the one adapter a model carries here
SOURCE = "peft"  # the `source` of warmstart_model.json for adapter runs


def require_peft(what: str) -> None:
    """Fail with an install hint when the optional peft package is missing."""
    if importlib.util.find_spec("peft") is None:
        raise WarmstartError(f"{what} needs peft; run `pip install 'warmstart[peft]'`")


@contextlib.contextmanager
def quiet_peft() -> Iterator[None]:
    """Hide transformers' deprecation warning that peft triggers when it wraps a model (it
    reads `is_gradient_checkpointing`): the user can do nothing about it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing",
                                category=FutureWarning)
        yield


def head_names(adapter: Adapter) -> list[str]:
    """Full names of the head group's modules that have weights: peft's `modules_to_save`."""
    names = {id(m): n for n, m in adapter.module.named_modules()}
    return [names[id(m)] for m in adapter.groups[-1].modules if any(True for _ in m.parameters())]


def wrap(adapter: Adapter, config: Any, method: str, *, seed: int | None,
         plain_convs: list[str] | None = None) -> Adapter:
    """A new adapter whose module is `adapter.module` wrapped with the peft `config`.

    peft injects its layers into the base module in place, so `adapter` must not be used
    afterwards; the returned adapter's groups and head point at the modules peft put in,
    and its `save` writes the adapter layout that `load` (registered for `source: peft`)
    restores.

    Args:
        adapter: the model's adapter, as built.
        config: the peft config (LoraConfig, IA3Config) with targets and modules_to_save.
        method: the strategy name (`lora`, `ia3`), recorded for reloading.
        seed: the torch seed the base model was built with (`Adapter.seed`); reloading
            rebuilds the base with it.
        plain_convs: convolutions to turn into plain nn.Conv2d first (`use_plain_convs`).
    """
    require_peft(f"strategy.name {method!r}")
    from peft import get_peft_model

    plain_convs = plain_convs or []
    record = {"source": SOURCE, "peft": method, "kind": adapter.kind,
              "base": base_config(adapter), "seed": seed, "fingerprint": fingerprint(adapter),
              "plain_convs": plain_convs}
    adapter = use_plain_convs(adapter, plain_convs)
    with quiet_peft():
        wrapped = get_peft_model(adapter.module, config, adapter_name=ADAPTER)
    return _follow(adapter, wrapped, record)


def plain_conv(conv: nn.Conv2d) -> nn.Conv2d:
    """A plain nn.Conv2d sharing `conv`'s weight and bias Parameters (no new weights)."""
    plain = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                      padding=0, dilation=conv.dilation, groups=conv.groups,
                      bias=conv.bias is not None, device="meta")  # meta: no init, no RNG use
    plain.weight = conv.weight
    plain.bias = conv.bias
    return plain


def use_plain_convs(adapter: Adapter, names: list[str]) -> Adapter:
    """The adapter with the named pointwise convs replaced by plain nn.Conv2d sharing their
    Parameters (in its module, and in its groups).

    peft builds LoRA's branch convs by calling the base conv's own class with nn.Conv2d's
    positional arguments; a subclass with another constructor (EfficientNet-Lite's conv
    takes dilation where nn.Conv2d takes padding) fails there. The caller has checked that
    the swap leaves the model's function unchanged (`lora.computes_like_conv2d`); the
    state-dict keys stay the same, so merged weights load back into the original classes.
    """
    swapped: dict[int, nn.Module] = {}
    for name in names:
        parent_name, _, attr = name.rpartition(".")
        conv = adapter.module.get_submodule(name)
        swapped[id(conv)] = plain_conv(conv)
        setattr(adapter.module.get_submodule(parent_name), attr, swapped[id(conv)])
    return _regroup(adapter, swapped)


def _regroup(adapter: Adapter, replaced: dict[int, nn.Module], **changes: Any) -> Adapter:
    """The adapter with every group module in `replaced` (by id) swapped for its value."""
    groups = [LayerGroup(g.name, [replaced.get(id(m), m) for m in g.modules])
              for g in adapter.groups]
    return dataclasses.replace(adapter, groups=groups, **changes)


def adapter_params(wrapped: nn.Module) -> list[nn.Parameter]:
    """The parameters peft added: those of each adapter layer minus its wrapped base layer."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    out: dict[int, nn.Parameter] = {}
    for m in wrapped.modules():
        if isinstance(m, BaseTunerLayer):
            base = {id(p) for p in m.get_base_layer().parameters()}
            for p in m.parameters():
                if id(p) not in base:
                    out.setdefault(id(p), p)
    return list(out.values())


def _head_wrappers(wrapped: nn.Module) -> list[Any]:
    from peft.utils import ModulesToSaveWrapper

    return [m for m in wrapped.modules() if isinstance(m, ModulesToSaveWrapper)]


def _follow(adapter: Adapter, wrapped: nn.Module, record: dict[str, Any]) -> Adapter:
    """The adapter of the peft-wrapped module: groups, head and `save` follow peft.

    peft replaces each targeted layer by an adapter layer holding it, and each head module by
    a wrapper holding a frozen original and the trained copy used in forward. The groups
    follow those replacements so every parameter stays in one group, and the head is the
    trained copy: the module whose input the cached-feature path and L2-SP rely on.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    replaced: dict[int, nn.Module] = {}
    heads = _head_wrappers(wrapped)
    for w in heads:
        replaced[id(w.original_module)] = w
    for m in wrapped.modules():
        if isinstance(m, BaseTunerLayer):
            replaced[id(m.get_base_layer())] = m
    wanted = {id(m) for m in adapter.groups[-1].modules if any(True for _ in m.parameters())}
    if {id(w.original_module) for w in heads} != wanted:
        # peft matches modules_to_save by name suffix; another module ending like the head's
        # name would be wrapped too and silently trained.
        raise WarmstartError(
            f"model {adapter.name!r}: peft's modules_to_save {head_names(adapter)} matched "
            "modules outside the head; rename the module whose name ends like the head's"
        )

    def save(directory: Path, label_names: list[str]) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        wrapped.save_pretrained(str(directory))  # adapters + the head (modules_to_save)
        # peft also writes a blank model-card template; the run's README.md is the card.
        (directory / "README.md").unlink(missing_ok=True)
        write_model_file(directory, {**record, "num_labels": len(label_names),
                                     "labels": list(label_names)})

    head = replaced[id(adapter.head)].modules_to_save[ADAPTER]
    out = _regroup(adapter, replaced, module=wrapped, head=head, save=save,
                   extra={**adapter.extra, "peft": record})
    check_groups(wrapped, out.groups, out.head)
    return out


def trainable_params(adapter: Adapter) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(adapter weights peft added, the trained head copy's weights) of a wrapped adapter."""
    head = [p for w in _head_wrappers(adapter.module)
            for p in w.modules_to_save[ADAPTER].parameters()]
    return adapter_params(adapter.module), head


def base_config(adapter: Adapter) -> dict[str, Any]:
    """The ModelConfig keys that rebuild the base model: its name and resolved input size."""
    out: dict[str, Any] = {"name": adapter.name}
    for key in ("max_length", "image_size", "pooling"):
        if key in adapter.extra:
            out[key] = adapter.extra[key]
    return out


def fingerprint(adapter: Adapter) -> str:
    """sha256 of the base model's state (weights and buffers), the head group left out."""
    head = {id(t) for m in adapter.groups[-1].modules for t in (*m.parameters(), *m.buffers())}
    digest = hashlib.sha256()
    for name, tensor in adapter.module.state_dict(keep_vars=True).items():
        if id(tensor) in head:
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def rebuild_base(directory: Path, meta: dict[str, Any]) -> Adapter:
    """The base model an adapter run started from, rebuilt from its config with its seed.

    Raises:
        WarmstartError: when the rebuilt weights differ from those the adapters trained on.
    """
    require_peft(f"the saved model in {str(directory)!r} (strategy {meta['peft']})")
    with torch.random.fork_rng(devices=[]):  # leave the caller's random state alone
        base = build_model(ModelConfig(**meta["base"]), meta["num_labels"], seed=meta["seed"])
    if fingerprint(base) != meta["fingerprint"]:
        raise WarmstartError(
            f"{str(directory)!r} holds {meta['peft']} adapters for base model "
            f"{meta['base']['name']!r}, but that model no longer rebuilds with the weights they "
            "were trained on (its files changed, or its random weights did not come from the "
            "run's seed); retrain the run on the current base model"
        )
    return base


def _from_pretrained(directory: Path, meta: dict[str, Any]) -> tuple[Adapter, nn.Module]:
    from peft import PeftModel

    adapter = use_plain_convs(rebuild_base(directory, meta), meta["plain_convs"])
    with quiet_peft():
        wrapped = PeftModel.from_pretrained(adapter.module, str(directory), adapter_name=ADAPTER)
    return adapter, wrapped


@LOADERS.register(SOURCE, "lora/ia3 runs: adapters and head over a rebuilt base model")
def load(directory: Path, meta: dict[str, Any]) -> Adapter:
    """Restore an adapter run saved by a wrapped adapter's `save`: base, adapters and head."""
    adapter, wrapped = _from_pretrained(directory, meta)
    record = {k: v for k, v in meta.items() if k not in ("labels", "num_labels")}
    return _follow(adapter, wrapped, record)


def merged(directory: Path, meta: dict[str, Any]) -> Adapter:
    """The base adapter with the saved adapters folded into its weights (`merge_and_unload`).

    Its `save` is the base model's own, so it writes a plain model that loads without peft.
    """
    adapter, wrapped = _from_pretrained(directory, meta)
    trained = {id(w.original_module): w.modules_to_save[ADAPTER] for w in _head_wrappers(wrapped)}
    module = wrapped.merge_and_unload()  # the same module object, adapter layers replaced
    assert module is adapter.module, "merge_and_unload returned a new model"
    # The head's trained copy now sits where the original head was: follow it.
    out = _regroup(adapter, trained, head=trained[id(adapter.head)])
    check_groups(module, out.groups, out.head)
    return out
