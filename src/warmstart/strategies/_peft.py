"""What `lora` and `ia3` share: adapters added through peft, chosen by structure, saved with
the head, and restored over a rebuilt base model.

The model is wrapped with `peft.get_peft_model` rather than injected in place, so saving,
reloading and merging are peft's own `save_pretrained`, `PeftModel.from_pretrained` and
`merge_and_unload`, and a saved run has the layout every peft user knows
(`adapter_config.json`, `adapter_model.safetensors`). The wrapper passes `module(**batch)`
through unchanged, to a transformers model as to a CNN's `PixelModel`.

The new head is peft's `modules_to_save`: it trains fully and is saved in the adapter file.
Without it a reloaded model would get a new random head (peft #310, #1070).

Only the adapters and the head are saved. Reloading rebuilds the base model from its config
with the run's seed, so random-weight test models come back identical, and compares a
fingerprint of the base weights before trusting the adapters on top of them.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from warmstart.config import ModelConfig, StrategyConfig
from warmstart.errors import WarmstartError
from warmstart.models import build_model
from warmstart.models.base import Adapter, LayerGroup, check_groups, write_model_file
from warmstart.strategies._select import count, ids, mark_trainable
from warmstart.strategies.base import ParamGroup, Plan

ADAPTER = "default"  # peft's name for the one adapter a model carries here
SOURCE = "peft"  # the `source` of warmstart_model.json for adapter runs
MAX_LABELS = 4  # module names shown in the notes line before "..."

# A function from target names to the peft config (LoraConfig, IA3Config) the run will use.
MakeConfig = Callable[[list[str]], Any]


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


@dataclass
class Targets:
    """The modules a strategy adapts.

    Attributes:
        spec: what peft receives: module names, or name suffixes such as `query`.
        names: the full names of the modules the spec selects.
        origin: where the choice came from ("peft's bert defaults", "strategy.target_modules"
            or "layer structure"), for the notes line.
    """

    spec: list[str]
    names: list[str]
    origin: str


def model_type(adapter: Adapter) -> str | None:
    """The transformers model type (e.g. `bert`), or None for a model without a config."""
    return getattr(getattr(adapter.module, "config", None), "model_type", None)


def head_names(adapter: Adapter) -> list[str]:
    """Full names of the head group's modules that have weights: peft's `modules_to_save`."""
    names = {id(m): n for n, m in adapter.module.named_modules()}
    return [names[id(m)] for m in adapter.groups[-1].modules if any(True for _ in m.parameters())]


def choose_targets(adapter: Adapter, cfg: StrategyConfig, defaults: Mapping[str, list[str]],
                   make_config: MakeConfig, can_adapt: Callable[[nn.Module], bool],
                   label: str) -> Targets:
    """The modules to adapt, in this order of precedence:

    1. `strategy.target_modules`, when given (names or suffixes, as peft matches them);
    2. peft's own defaults for the transformers model type (BERT: query and value for LoRA);
    3. by structure: every layer `can_adapt` accepts inside the block groups.

    The head is never a target: it is `modules_to_save`, which peft excludes from matching.
    """
    module = adapter.module
    if cfg.target_modules:
        spec = list(cfg.target_modules)
        names = _matching(module, make_config(spec))
        if not names:
            raise WarmstartError(
                f"strategy.target_modules {spec} matches no module of {adapter.name!r} below its "
                "head; give module names or suffixes such as 'query' (the head always trains)"
            )
        bad = [n for n in names if not can_adapt(module.get_submodule(n))]
        if bad:
            kind = type(module.get_submodule(bad[0])).__name__
            raise WarmstartError(
                f"strategy.target_modules selects {bad[0]!r} ({kind}), which {label} cannot "
                "adapt here; name Linear layers or plain convolutions"
            )
        return Targets(spec, names, "strategy.target_modules")
    kind = model_type(adapter)
    if kind in defaults:
        spec = list(defaults[kind])
        names = _matching(module, make_config(spec))
        if names:
            return Targets(spec, names, f"peft's {kind} defaults")
    names = structural_targets(adapter, can_adapt)
    if not names:
        raise WarmstartError(
            f"model {adapter.name!r} has no layer {label} can adapt below its head; "
            "name some in strategy.target_modules"
        )
    return Targets(names, names, "layer structure")


def _matching(module: nn.Module, config: Any) -> list[str]:
    """Names of the modules `config` targets, by peft's own matching rule."""
    from peft.tuners.tuners_utils import check_target_module_exists

    return [n for n, _ in module.named_modules() if n and check_target_module_exists(config, n)]


def structural_targets(adapter: Adapter, can_adapt: Callable[[nn.Module], bool]) -> list[str]:
    """Full names of the layers `can_adapt` accepts inside the block groups.

    The input group (embeddings, a CNN stem) is left out when there are blocks above it: it
    maps raw inputs, and a 3-channel stem conv has fewer weights than a rank-8 adapter on it.
    Layers of an `nn.MultiheadAttention` are left out too: it reads their weights directly
    and never calls them, so an adapter wrapped around them would be skipped silently.
    """
    below = adapter.groups[:-1]
    blocks = below[1:] if len(below) > 1 else below
    skip = {id(c) for m in adapter.module.modules() if isinstance(m, nn.MultiheadAttention)
            for c in m.modules()}
    chosen = {id(m) for g in blocks for top in g.modules for m in top.modules()
              if id(m) not in skip and can_adapt(m)}
    return [n for n, m in adapter.module.named_modules() if id(m) in chosen]


def describe(adapter: Adapter, targets: Targets) -> str:
    """e.g. `12 modules (query, value)`; structural targets are named by their last name part
    (or class, for numbered children such as a Sequential's `0`)."""
    if targets.origin != "layer structure":
        shown = targets.spec
    else:
        shown = []
        for name in targets.names:
            last = name.rsplit(".", 1)[-1]
            tag = type(adapter.module.get_submodule(name)).__name__ if last.isdigit() else last
            if tag not in shown:
                shown.append(tag)
    listed = ", ".join(shown[:MAX_LABELS]) + (", ..." if len(shown) > MAX_LABELS else "")
    return f"{len(targets.names)} modules ({listed}) by {targets.origin}"


def adapt(adapter: Adapter, config: Any, method: str, notes: str,
          plain_convs: list[str] | None = None) -> Plan:
    """Wrap `adapter.module` with the peft `config`; train only the adapters and the head.

    The adapter is updated in place: its module is the peft model, its groups and head point
    at the modules peft put in, and `save` writes the adapter layout.

    Args:
        adapter: the model's adapter, as built.
        config: the peft config (LoraConfig, IA3Config) with targets and modules_to_save.
        method: the strategy name, recorded for reloading.
        notes: the plan's notes line, before the weight count.
        plain_convs: convolutions to turn into plain nn.Conv2d first (see `useplain_convs`).
    """
    from peft import get_peft_model

    plain_convs = plain_convs or []
    record = {"source": SOURCE, "peft": method, "kind": adapter.kind,
              "base": base_config(adapter),
              # run.py seeds torch just before building the model: this is the run's seed
              "seed": torch.initial_seed(),
              "fingerprint": fingerprint(adapter),
              "plain_convs": plain_convs}
    useplain_convs(adapter, plain_convs)
    with quiet_peft():
        wrapped = get_peft_model(adapter.module, config, adapter_name=ADAPTER)
    attach(adapter, wrapped, record)
    adapters = adapter_params(wrapped)
    head = [p for w in _head_wrappers(wrapped) for p in w.modules_to_save[ADAPTER].parameters()]
    # Chosen by module type here, not by peft's name-based marking: exactly these train.
    mark_trainable(adapter, ids(adapters) | ids(head))
    return Plan([ParamGroup("adapters", adapters), ParamGroup("head", head)],
                notes=f"{notes}; {count(adapters):,} adapter weights, the head trains fully")


def plain_conv(conv: nn.Conv2d) -> nn.Conv2d:
    """A plain nn.Conv2d sharing `conv`'s weight and bias Parameters (no new weights)."""
    plain = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                      padding=0, dilation=conv.dilation, groups=conv.groups,
                      bias=conv.bias is not None, device="meta")  # meta: no init, no RNG use
    plain.weight = conv.weight
    plain.bias = conv.bias
    return plain


def useplain_convs(adapter: Adapter, names: list[str]) -> None:
    """Replace the named pointwise convs by plain nn.Conv2d sharing their Parameters.

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
    adapter.groups = [LayerGroup(g.name, [swapped.get(id(m), m) for m in g.modules])
                      for g in adapter.groups]


def adapter_params(wrapped: nn.Module) -> list[nn.Parameter]:
    """The parameters peft added: those of each adapter layer minus its wrapped base layer."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    out: dict[int, nn.Parameter] = {}
    for m in wrapped.modules():
        if isinstance(m, BaseTunerLayer):
            base = ids(m.get_base_layer().parameters())
            for p in m.parameters():
                if id(p) not in base:
                    out.setdefault(id(p), p)
    return list(out.values())


def _head_wrappers(wrapped: nn.Module) -> list[Any]:
    from peft.utils import ModulesToSaveWrapper

    return [m for m in wrapped.modules() if isinstance(m, ModulesToSaveWrapper)]


def attach(adapter: Adapter, wrapped: nn.Module, record: dict[str, Any]) -> None:
    """Point `adapter` at its peft-wrapped module: groups, head and `save`.

    peft replaces each targeted layer by an adapter layer holding it, and each head module by
    a wrapper holding a frozen original and the trained copy used in forward. The groups
    follow those replacements so every parameter stays in one group, and `adapter.head` is
    the trained copy: the module whose input the cached-feature path and L2-SP rely on.
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
    adapter.head = replaced[id(adapter.head)].modules_to_save[ADAPTER]
    adapter.groups = [LayerGroup(g.name, [replaced.get(id(m), m) for m in g.modules])
                      for g in adapter.groups]
    adapter.module = wrapped
    check_groups(wrapped, adapter.groups, adapter.head)

    def save(directory: Path, label_names: list[str]) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        wrapped.save_pretrained(str(directory))  # adapters + the head (modules_to_save)
        # peft also writes a blank model-card template; the run's README.md is the card.
        (directory / "README.md").unlink(missing_ok=True)
        write_model_file(directory, {**record, "num_labels": len(label_names),
                                     "labels": list(label_names)})

    adapter.save = save


def base_config(adapter: Adapter) -> dict[str, Any]:
    """The ModelConfig keys that rebuild the base model: its name and resolved input size."""
    out: dict[str, Any] = {"name": adapter.name}
    for key in ("max_length", "image_size"):
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
    """The base model an adapter run started from, rebuilt from its config with the run's seed.

    Raises:
        WarmstartError: when the rebuilt weights differ from those the adapters trained on.
    """
    require_peft(f"the saved model in {str(directory)!r} (strategy {meta['peft']})")
    with torch.random.fork_rng(devices=[]):  # leave the caller's random state alone
        torch.manual_seed(meta["seed"])
        base = build_model(ModelConfig(**meta["base"]), meta["num_labels"])
    if fingerprint(base) != meta["fingerprint"]:
        raise WarmstartError(
            f"{str(directory)!r} holds {meta['peft']} adapters for base model "
            f"{meta['base']['name']!r}, but that model no longer rebuilds with the weights they "
            "were trained on (its files changed, or its random weights did not come from the "
            "run's seed); retrain the run on the current base model"
        )
    return base


def load_peft(directory: Path, meta: dict[str, Any]) -> Adapter:
    """Restore an adapter run saved by `attach`'s `save`: base model, adapters and head."""
    from peft import PeftModel

    adapter = rebuild_base(directory, meta)
    useplain_convs(adapter, meta["plain_convs"])
    with quiet_peft():
        wrapped = PeftModel.from_pretrained(adapter.module, str(directory), adapter_name=ADAPTER)
    attach(adapter, wrapped, {k: v for k, v in meta.items() if k not in ("labels", "num_labels")})
    return adapter


def merged_base(directory: Path, meta: dict[str, Any]) -> Adapter:
    """The base adapter with the saved adapters folded into its weights (`merge_and_unload`).

    Its `save` is the base model's own, so it writes a plain model that loads without peft.
    """
    from peft import PeftModel

    adapter = rebuild_base(directory, meta)
    useplain_convs(adapter, meta["plain_convs"])  # merged, they save under the same keys
    with quiet_peft():
        wrapped = PeftModel.from_pretrained(adapter.module, str(directory), adapter_name=ADAPTER)
    trained = {id(w.original_module): w.modules_to_save[ADAPTER] for w in _head_wrappers(wrapped)}
    merged = wrapped.merge_and_unload()  # the same module object, adapter layers replaced
    assert merged is adapter.module, "merge_and_unload returned a new model"
    # The head's trained copy now sits where the original head was: follow it.
    adapter.head = trained[id(adapter.head)]
    adapter.groups = [LayerGroup(g.name, [trained.get(id(m), m) for m in g.modules])
                      for g in adapter.groups]
    check_groups(merged, adapter.groups, adapter.head)
    return adapter
