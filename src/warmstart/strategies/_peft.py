"""What `lora` and `ia3` share: which modules to adapt (chosen by structure, or peft's
defaults for the model type, or the user's list), and the plan over the wrapped model.

Wrapping, saving, reloading and merging are the model transform's (`models/peft.py`); a
strategy here only chooses targets, asks for the wrap, and says what trains.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from warmstart.errors import WarmstartError
from warmstart.models import peft
from warmstart.models.base import Adapter
from warmstart.strategies._select import count, ids, mark_trainable
from warmstart.strategies.base import Plan
from warmstart.training.optim import ParamGroup

MAX_LABELS = 4  # module names shown in the notes line before "..."

# A function from target names to the peft config (LoraConfig, IA3Config) the run will use.
MakeConfig = Callable[[list[str]], Any]


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


def choose_targets(adapter: Adapter, given: list[str], defaults: Mapping[str, list[str]],
                   make_config: MakeConfig, can_adapt: Callable[[nn.Module], bool],
                   label: str) -> Targets:
    """The modules to adapt, in this order of precedence:

    1. `given` (`strategy.target_modules`), when not empty (names or suffixes, as peft
       matches them);
    2. peft's own defaults for the transformers model type (BERT: query and value for LoRA);
    3. by structure: every layer `can_adapt` accepts inside the block groups.

    The head is never a target: it is `modules_to_save`, which peft excludes from matching.
    """
    module = adapter.module
    if given:
        spec = list(given)
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
    """Wrap the model with the peft `config` (`models.peft.wrap`); train only the adapters
    and the head.

    Args:
        adapter: the model's adapter, as built (not to be used afterwards: peft changes its
            module in place; the plan carries the wrapped adapter).
        config: the peft config (LoraConfig, IA3Config) with targets and modules_to_save.
        method: the strategy name, recorded for reloading.
        notes: the plan's notes line, before the weight count.
        plain_convs: convolutions to turn into plain nn.Conv2d first (`peft.use_plain_convs`).
    """
    wrapped = peft.wrap(adapter, config, method, seed=adapter.seed, plain_convs=plain_convs)
    adapters, head = peft.trainable_params(wrapped)
    # Chosen by module type here, not by peft's name-based marking: exactly these train.
    mark_trainable(wrapped, ids(adapters) | ids(head))
    return Plan([ParamGroup("adapters", adapters), ParamGroup("head", head)],
                notes=f"{notes}; {count(adapters):,} adapter weights, the head trains fully",
                adapter=wrapped)
