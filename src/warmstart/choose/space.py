"""The search space of `warmstart search`: a YAML file over config keys, read and checked.

    # warmstart search -c base.yaml --space space.yaml --trials 20
    optim.lr: {log: [1.0e-5, 1.0e-2]}        # log-uniform between the two ends
    optim.weight_decay: {uniform: [0.0, 0.1]}
    train.batch_size: {categorical: [8, 16, 32]}
    strategy.name:                           # a choice: each branch holds its own keys
      full: {}
      partial:
        strategy.k: {int: [1, 4]}            # sampled only when partial is chosen
      lora:
        strategy.r: {categorical: [4, 8, 16]}
        optim.lr: {log: [1.0e-4, 1.0e-2]}    # lora's own range replaces the one above

A key maps either to one distribution (`log`, `uniform`, `int`: `[low, high]`, both ends
included; `categorical`: a list of plain values) or to a choice: a mapping from each value the
key may take to the keys sampled only with that value (`{}`: none). A key set in the chosen
branch replaces the same key above it. In the study, a branch's keys are named
`<value>:<key>` (`partial:strategy.k`), like a `warmstart compare` spec.

Every key is checked with the config loader before any training, at both ends of every range
and with every categorical value, so an unknown key, a strategy option outside its strategy's
branch, or an out-of-range value fails in one line naming the space file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from warmstart.config import RunConfig, all_keys, build_config, with_overrides
from warmstart.errors import WarmstartError, did_you_mean
from warmstart.options import own_options_only

DISTRIBUTIONS = ("log", "uniform", "int", "categorical")
# What every trial must share, so their scores compare: the data and its split, the metric
# that picks the best epoch; and what the search itself decides (where runs go, logging).
_FIXED_SECTIONS = ("data.", "output.", "log.", "checkpoint.")
_FIXED_KEYS = {"train.metric"}


class Suggester(Protocol):
    """The part of an optuna trial the space uses (kept a Protocol: optuna is optional)."""

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...
    def suggest_int(self, name: str, low: int, high: int) -> int: ...
    def suggest_categorical(self, name: str, choices: list[Any]) -> Any: ...


@dataclass(frozen=True)
class Dist:
    """One distribution over a key's values."""

    kind: str  # one of DISTRIBUTIONS
    values: tuple[Any, ...]  # (low, high), or the categorical values

    def suggest(self, trial: Suggester, name: str) -> Any:
        if self.kind == "categorical":
            return trial.suggest_categorical(name, list(self.values))
        if self.kind == "int":
            return trial.suggest_int(name, *self.values)
        return trial.suggest_float(name, *self.values, log=self.kind == "log")

    def probes(self) -> list[Any]:
        """The values the space is checked with: both ends, or every categorical value."""
        return list(self.values)

    def grid(self) -> list[Any]:
        """Every value, for the grid sampler (int ranges enumerated)."""
        if self.kind == "int":
            return list(range(self.values[0], self.values[1] + 1))
        return list(self.values)


@dataclass(frozen=True)
class Choice:
    """A key whose value picks which further keys are sampled."""

    branches: dict[Any, dict[str, Dist | Choice]]


Space = dict[str, "Dist | Choice"]


def _dist(where: str, key: str, kind: str, raw: Any) -> Dist:
    """A checked distribution (`where` names the file, for the message)."""
    at = f"{where}: {key}: {kind}"
    if kind == "categorical":
        if not isinstance(raw, list) or not raw:
            raise WarmstartError(f"{at} needs a non-empty list of values, e.g. "
                                 "{categorical: [8, 16, 32]}")
        if not all(v is None or isinstance(v, (bool, int, float, str)) for v in raw):
            raise WarmstartError(f"{at}: values must be plain numbers, strings, booleans or "
                                 "null (lists and mappings cannot be sampled)")
        if len(set(map(repr, raw))) != len(raw):
            raise WarmstartError(f"{at} lists a value twice; list each once")
        return Dist(kind, tuple(raw))
    if (not isinstance(raw, list) or len(raw) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw)):
        raise WarmstartError(f"{at} needs [low, high], two numbers, e.g. {{{kind}: [1, 4]}}"
                             if kind == "int" else
                             f"{at} needs [low, high], two numbers, e.g. {{{kind}: [1.0e-5, "
                             "1.0e-3]}")
    low, high = raw
    if kind == "int":
        if low != int(low) or high != int(high):
            raise WarmstartError(f"{at} needs whole numbers; use uniform for fractions")
        low, high = int(low), int(high)
        if low > high:
            raise WarmstartError(f"{at} [{low}, {high}] is empty: low must be <= high")
        return Dist(kind, (low, high))
    if not low < high:
        raise WarmstartError(f"{at} [{low}, {high}] is empty: low must be < high (a single "
                             "value: set it in the base config)")
    if kind == "log" and low <= 0:
        raise WarmstartError(f"{at} [{low}, {high}]: a log range needs low > 0")
    return Dist(kind, (float(low), float(high)))


def _check_key(where: str, key: Any) -> str:
    if not isinstance(key, str) or "." not in key:
        raise WarmstartError(f"{where}: {key!r} is not a dotted config key (e.g. optim.lr)")
    if key in _FIXED_KEYS or key.startswith(_FIXED_SECTIONS):
        raise WarmstartError(f"{where}: {key} cannot be searched (every trial shares the data, "
                             "its split, the metric and where runs go); set it in the base "
                             "config")
    if key not in all_keys() and not key.startswith("strategy."):
        raise WarmstartError(f"{where}: unknown config key {key!r}" + did_you_mean(key, all_keys()))
    return key


def parse_space(tree: Any, where: str) -> Space:
    """A space from its YAML tree, every node checked (keys against the config's keys)."""
    if not isinstance(tree, dict) or not tree:
        raise WarmstartError(f"{where} must map config keys to distributions, e.g. "
                             "optim.lr: {log: [1.0e-5, 1.0e-3]}")
    space: Space = {}
    for key, node in tree.items():
        key = _check_key(where, key)
        if not isinstance(node, dict) or not node:
            raise WarmstartError(f"{where}: {key} needs a distribution ({', '.join(DISTRIBUTIONS)}"
                                 f"), e.g. {key}: {{categorical: [a, b]}}, or a mapping of "
                                 "choices")
        (first, raw), = list(node.items())[:1]
        if len(node) == 1 and first in DISTRIBUTIONS:
            space[key] = _dist(where, key, first, raw)
            continue
        branches = {}
        for value, sub in node.items():
            if sub is None or sub == {}:
                branches[value] = {}
            elif isinstance(sub, dict):
                branches[value] = parse_space(sub, f"{where} ({key}={value})")
            else:
                raise WarmstartError(
                    f"{where}: {key}: {value!r} is not a distribution"
                    + did_you_mean(str(value), list(DISTRIBUTIONS))
                    + f" (use one of {', '.join(DISTRIBUTIONS)}; a choice maps each value to "
                    "a mapping of keys, {} for none)")
        space[key] = Choice(branches)
    return space


def read_space(path: str | Path) -> tuple[Space, Any]:
    """The space in a YAML file and its raw tree (saved with the study)."""
    p = Path(path)
    if not p.is_file():
        raise WarmstartError(f"space file {str(p)!r} not found; pass an existing YAML file")
    try:
        tree = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise WarmstartError(f"space file {str(p)!r} is not valid YAML: {first}") from None
    return parse_space(tree, f"space file {str(p)!r}"), tree


def sample(space: Space, trial: Suggester, prefix: str = "") -> dict[str, Any]:
    """{config key: value} for one trial. Choices first: a key of the chosen branch replaces
    the same key above it, which is then not sampled at all."""
    out: dict[str, Any] = {}
    for key, node in space.items():
        if isinstance(node, Choice):
            value = trial.suggest_categorical(prefix + key, list(node.branches))
            out[key] = value
            out.update(sample(node.branches[value], trial, f"{prefix}{value}:"))
    for key, node in space.items():
        if isinstance(node, Dist) and key not in out:
            out[key] = node.suggest(trial, prefix + key)
    return out


def trial_tree(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """The base tree with a trial's values set. The strategy goes first, then the base keeps
    only that strategy's own options (as in `warmstart compare`); the values are then set
    strictly, so an option of another strategy is an error."""
    name = values.get("strategy.name")
    tree = own_options_only(with_overrides(base, [] if name is None else
                                           [f"strategy.name={json.dumps(name)}"]))
    return with_overrides(tree, [f"{k}={json.dumps(v)}" for k, v in values.items()])


def _probe_points(space: Space) -> list[tuple[str, dict[str, Any]]]:
    """(where, values) sets that together visit every branch and every probe value."""
    fixed: dict[str, Any] = {}
    branches: list[tuple[str, Space]] = []
    for key, node in space.items():
        if isinstance(node, Choice):
            for value, sub in node.branches.items():
                branches.append((f"{key}={value}", {**{key: Dist("categorical", (value,))},
                                                    **sub}))
        else:
            fixed[key] = node
    if not branches:  # flat: each key's probes, the other keys at their first value
        first = {k: d.probes()[0] for k, d in fixed.items()}  # type: ignore[union-attr]
        return [("", {**first, k: v}) for k, d in fixed.items()
                for v in d.probes()]  # type: ignore[union-attr]
    points = []
    for where, sub in branches:
        for inner_where, values in _probe_points({**fixed, **sub}):
            points.append((" ".join(x for x in (where, inner_where) if x), values))
    return points


def check_space(space: Space, base: dict[str, Any], where: str) -> RunConfig:
    """Build the config at every probe point; the first one's config (for the study's settings).

    Raises:
        WarmstartError: a key or value the config refuses, naming the file and the branch.
    """
    first: RunConfig | None = None
    for branch, values in _probe_points(space):
        try:
            cfg = build_config(trial_tree(base, values))
        except WarmstartError as e:
            raise WarmstartError(f"{where}{f' ({branch})' if branch else ''}: {e}") from None
        first = first or cfg
    assert first is not None
    return first


def grid_of(space: Space, where: str) -> dict[str, list[Any]]:
    """The grid sampler's space: every key's values (flat spaces of int and categorical)."""
    grid = {}
    for key, node in space.items():
        if isinstance(node, Choice) and all(not b for b in node.branches.values()):
            grid[key] = list(node.branches)
        elif isinstance(node, Choice) or node.kind not in ("int", "categorical"):
            raise WarmstartError(f"{where}: --sampler grid needs int or categorical ranges "
                                 f"without per-choice keys ({key} is not); use --sampler tpe "
                                 "or random")
        else:
            grid[key] = node.grid()
    return grid
