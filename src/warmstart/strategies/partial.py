"""`partial`: train the top `k` layer groups below the head, plus the head; freeze the rest.

The classic "freeze the bottom of the network" recipe (Yosinski et al. 2014: lower layers are
general and transfer as they are, upper layers are specific to the pretraining task). Three
ways to say what trains, most specific first:

- `strategy.patterns`: shell-style patterns on parameter names (`module.named_parameters()`),
  for power users who need finer cuts than layer groups (e.g. `*.attention.*`);
- `strategy.groups`: explicit layer-group indices, 0 = the input side (an out-of-range
  index is an error that lists every group with its index);
- `strategy.k`: the top k groups below the head.

The head always trains: a new, randomly initialised classifier left frozen predicts nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from warmstart.errors import WarmstartError
from warmstart.models.base import Adapter
from warmstart.options import check, option
from warmstart.strategies._select import (
    describe,
    groups_of,
    head_ids,
    ids,
    mark_trainable,
)
from warmstart.strategies.base import Defaults, Plan, register_strategy


@dataclass
class PartialOptions:
    """`strategy.*` keys of partial, most specific first: patterns, groups, k."""

    k: int = option(2, "how many of the top layer groups train (the head always trains)")
    groups: list[int] = option(
        [], "explicit layer-group indices to train (0 = input side; overrides k)")
    patterns: list[str] = option(
        [], "shell-style patterns on parameter names to train, for power users (e.g. "
        "'*.attention.*'; overrides k and groups)")

    def __post_init__(self) -> None:
        check(self.k >= 0, "strategy.k", "must be >= 0")


# The top blocks and the new head train, the rest is fixed: they take larger steps than full
# fine-tuning. Measured by bench/quality.py (TREC-2k, k=2, 3 epochs, test accuracy).
DEFAULTS = {
    "text": Defaults(lr=3e-4, why="TREC-2k, k=2: 0.922 at 5e-5, 0.926 at 1e-4, 0.944 at 3e-4, "
                     "0.918 at 1e-3"),
}


@register_strategy("partial", "train the top strategy.k layer groups and the head "
                              "(or strategy.groups / strategy.patterns)", PartialOptions,
                   DEFAULTS)
def partial(adapter: Adapter, cfg: PartialOptions) -> Plan:
    """Train the chosen layer groups (or pattern-matched parameters) and the head.

    Raises:
        WarmstartError: `k` exceeds the groups below the head, an index in `groups` is out of
            range, or a pattern in `patterns` matches no parameter.
    """
    if cfg.patterns:
        chosen, how = _by_patterns(adapter, cfg.patterns), f"patterns {cfg.patterns}"
    elif cfg.groups:
        chosen, how = _by_indices(adapter, cfg.groups), f"groups {cfg.groups}"
    else:
        below = len(adapter.groups) - 1
        chosen, how = _top_k(adapter, cfg.k), f"top {cfg.k} of {below} below the head"
    chosen |= head_ids(adapter)
    mark_trainable(adapter, chosen)
    return Plan(groups_of(adapter, chosen), notes=f"{describe(adapter, chosen)} train ({how})")


def _names(adapter: Adapter) -> str:
    return ", ".join(f"{i}={g.name}" for i, g in enumerate(adapter.groups))


def _top_k(adapter: Adapter, k: int) -> set[int]:
    below = adapter.groups[:-1]
    if k > len(below):
        raise WarmstartError(
            f"strategy.k={k} but the model has only {len(below)} layer groups below the head "
            f"({', '.join(g.name for g in below)}); use a k from 0 to {len(below)}"
        )
    return ids(p for g in below[len(below) - k:] for p in g.parameters())


def _by_indices(adapter: Adapter, indices: list[int]) -> set[int]:
    n = len(adapter.groups)
    bad = [i for i in indices if not 0 <= i < n]
    if bad:
        raise WarmstartError(
            f"strategy.groups: {bad} out of range; this model's layer groups are "
            f"{_names(adapter)} (indices 0 to {n - 1})"
        )
    return ids(p for i in indices for p in adapter.groups[i].parameters())


def _by_patterns(adapter: Adapter, patterns: list[str]) -> set[int]:
    named = list(adapter.module.named_parameters())
    chosen: set[int] = set()
    for pattern in patterns:
        hits = {id(p) for name, p in named if fnmatchcase(name, pattern)}
        if not hits:
            example = named[0][0] if named else "?"
            raise WarmstartError(
                f"strategy.patterns: {pattern!r} matches no parameter name (names look like "
                f"{example!r}; shell-style wildcards, e.g. '*.layer.1.*')"
            )
        chosen |= hits
    return chosen
