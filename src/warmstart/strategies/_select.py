"""Helpers the strategies share: mark a chosen set of parameters trainable, group it, name it.

Every selection here is by structure (layer groups, module types, a module's own `bias`),
never by substrings of parameter names: a parameter called `bias_like` is not a bias, and a
custom normalisation layer is recognised by its class, not by `norm` in its name.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from warmstart.models.base import Adapter, LayerGroup
from warmstart.training.optim import ParamGroup

# Normalisation layers whose parameters are per-channel scales and shifts. RMSNorm only
# exists in newer torch releases, hence the getattr.
NORM_TYPES: tuple[type[nn.Module], ...] = tuple(
    t for t in (
        nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
        nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
        nn.LayerNorm, nn.GroupNorm, getattr(nn, "RMSNorm", None),
    ) if t is not None
)


def ids(params: Iterable[nn.Parameter]) -> set[int]:
    """The identities of `params` (parameters are compared by identity, never by value)."""
    return {id(p) for p in params}


def mark_trainable(adapter: Adapter, chosen: set[int]) -> None:
    """Make exactly the parameters whose id is in `chosen` trainable; freeze the rest."""
    for p in adapter.module.parameters():
        p.requires_grad_(id(p) in chosen)


def set_trainable(groups: Iterable[LayerGroup], trainable: bool) -> None:
    """Mark every parameter of `groups` trainable or frozen (staged strategies' hooks)."""
    for group in groups:
        for p in group.parameters():
            p.requires_grad_(trainable)


def everything(adapter: Adapter) -> set[int]:
    """Every parameter of the model (for the strategies in which all of it trains)."""
    return ids(adapter.module.parameters())


def groups_of(adapter: Adapter, chosen: set[int], scales: list[float] | None = None
              ) -> list[ParamGroup]:
    """ParamGroups (one per layer group, input to head) holding only the `chosen` parameters.

    Layer groups with no chosen parameter are left out, so the optimizer holds only what
    may train.

    Args:
        adapter: the model's adapter.
        chosen: ids of the parameters that may train at some point of the run.
        scales: lr scale per layer group (default 1 for all).
    """
    scales = scales or [1.0] * len(adapter.groups)
    out = []
    for group, scale in zip(adapter.groups, scales):
        params = [p for p in group.parameters() if id(p) in chosen]
        if params:
            out.append(ParamGroup(group.name, params, scale))
    return out


def head_ids(adapter: Adapter) -> set[int]:
    """Parameters of the head group (the new classifier, plus any other new head module)."""
    return ids(adapter.groups[-1].parameters())


def own_biases(module: nn.Module) -> list[nn.Parameter]:
    """Each module's own `bias` Parameter (registered on the module itself), each once.

    A `bias` that is a buffer or None, or a parameter merely named like a bias
    (`bias_like`, `no_bias`), is not selected.
    """
    out: dict[int, nn.Parameter] = {}
    for m in module.modules():
        bias = dict(m.named_parameters(recurse=False)).get("bias")
        if bias is not None:
            out.setdefault(id(bias), bias)
    return list(out.values())


def norm_params(module: nn.Module) -> list[nn.Parameter]:
    """Parameters of the normalisation layers (`NORM_TYPES`) inside `module`, each once."""
    out: dict[int, nn.Parameter] = {}
    for m in module.modules():
        if isinstance(m, NORM_TYPES):
            for p in m.parameters(recurse=False):
                out.setdefault(id(p), p)
    return list(out.values())


def describe(adapter: Adapter, chosen: set[int]) -> str:
    """Which layer groups hold trainable parameters, e.g. `block1, head`."""
    names = [g.name for g in adapter.groups if ids(g.parameters()) & chosen]
    return ", ".join(names) or "nothing"


def count(params: Iterable[nn.Parameter]) -> int:
    """Number of scalar weights in `params`."""
    return sum(p.numel() for p in params)
