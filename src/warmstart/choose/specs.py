"""What `warmstart compare` is asked to compare: strategy specs, seeds, the demo's choice.

`--strategies full,partial:k=2,lora:optim.lr=1e-3` names each strategy with its own options
(a bare key is the strategy's option, a dotted key a config key that may differ between
strategies); `--seeds 3` or `--seeds 0,5,9` the seeds every strategy runs at. Everything is
checked here, before any run starts, with one-line errors naming the spec.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from rich.console import Console

from warmstart.config import all_keys
from warmstart.errors import WarmstartError, did_you_mean
from warmstart.options import STRATEGY_OPTIONS

# The demo (`warmstart compare` with no arguments) must finish in under 10 minutes on a
# 2-core CPU, so it trains little: one epoch over 600 examples (stratified, 120 per topic) at
# 64 tokens (a BBC article's headline and lead, enough to tell its topic), i.e. 38 steps of 16.
# Each run also pays for its process start, reading the corpus, tokenising and evaluating;
# validation and test keep their full 10% splits (~220 articles each), so the accuracies
# are not noise. The cheap strategies run as they would by default (features: one pass, a
# logistic regression; head: its 10 cached epochs cost seconds); lora and partial use their
# own learning rates; full fine-tuning gets 1e-4, twice the usual 5e-5, because 38 steps are
# few (0.80 test accuracy at 5e-5).
DEMO_STRATEGIES = ["features:classifier=sklearn", "head:train.epochs=10", "partial:k=2",
                   "full:optim.lr=1e-4", "lora"]
DEMO_OVERRIDES = ["model.name=minilm-l6", "data.name=bbc-news", "model.max_length=64",
                  "data.limit=600", "train.epochs=1", "train.batch_size=16",
                  "log.every=2"]  # a loss point every 2 steps: learning curves within the epoch

# Keys a strategy spec may not set: they would break "same data, same split, same seeds".
_FIXED_SECTIONS = ("data.", "output.", "log.", "checkpoint.")
_FIXED_KEYS = {"train.seed", "strategy.name"}


@dataclass(frozen=True)
class StrategySpec:
    """One `--strategies` entry: `partial:k=2` -> name partial, overrides [strategy.k=2]."""

    text: str
    name: str
    overrides: tuple[str, ...]
    slug: str


def split_specs(text: str) -> list[str]:
    """Split `--strategies` on commas outside brackets (`partial:groups=[1,2],full`)."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def _option_key(spec: str, name: str, key: str) -> str:
    """The dotted config key a spec option sets, checked against the strategy's options (a
    bare key) or the config's keys (a dotted one)."""
    if "." not in key:
        own = [f.name for f in dataclasses.fields(STRATEGY_OPTIONS.get(name))]
        if key not in own:
            raise WarmstartError(f"--strategies {spec!r}: {key!r} is not an option of {name}"
                                 + did_you_mean(key, own)
                                 + f"; {name}'s options: {', '.join(own) or 'none'}")
        return f"strategy.{key}"
    if key not in all_keys():
        raise WarmstartError(f"--strategies {spec!r}: unknown config key {key!r}"
                             + did_you_mean(key, all_keys()))
    if key in _FIXED_KEYS or key.startswith(_FIXED_SECTIONS):
        raise WarmstartError(f"--strategies {spec!r}: {key} must be the same for every "
                             "strategy; set it in the base config or as a key=value override")
    return key


def parse_spec(text: str) -> StrategySpec:
    """`name[:key=value]...` -> a StrategySpec (values are checked when planned)."""
    name, *options = [part.strip() for part in text.split(":")]
    if not name:
        raise WarmstartError(f"--strategies {text!r}: missing strategy name; use "
                             "name[:key=value]... (e.g. partial:k=2)")
    STRATEGY_OPTIONS.get(name)  # unknown name: an error suggesting the nearest
    overrides, slug = [], [name]
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise WarmstartError(f"--strategies {text!r}: option {option!r} must look like "
                                 "key=value (e.g. partial:k=2)")
        dotted = _option_key(text, name, key.strip())
        overrides.append(f"{dotted}={value.strip()}")
        slug.append(dotted.rsplit(".", 1)[-1] + value.strip())
    clean = re.sub(r"[^A-Za-z0-9.+-]+", "_", "-".join(slug)).strip("_")
    return StrategySpec(text, name, tuple(overrides), clean)


def parse_seeds(text: str, base_seed: int) -> list[int]:
    """`3` -> three seeds from train.seed on; `0,5,9` -> exactly those seeds."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or ("," not in text and values[0] < 1):
        raise WarmstartError(f"--seeds {text!r}: give a count (e.g. 3 = seeds train.seed, "
                             "train.seed+1, ...) or a comma-separated list of seeds (e.g. 0,5)")
    if "," not in text:
        return [base_seed + i for i in range(values[0])]
    if len(set(values)) != len(values):
        raise WarmstartError(f"--seeds {text!r}: a seed is listed twice")
    return values


def registered_demo_strategies(console: Console) -> list[str]:
    """The demo's strategies that this install registers; a missing one is noted and skipped."""
    from warmstart.strategies import STRATEGIES

    kept = []
    for text in DEMO_STRATEGIES:
        name = text.split(":")[0]
        if name in STRATEGIES:
            kept.append(text)
        else:
            console.print(f"note: strategy {name!r} is not registered in this install; the demo "
                          "skips it")
    return kept
