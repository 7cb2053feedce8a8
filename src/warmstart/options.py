"""The `strategy` config section: each strategy's own options, typed by its dataclass.

Each strategy declares its options as a dataclass next to its code (`strategies/<name>.py`)
and registers it here as it is imported (`strategies.base.register_strategy`). The map lives
below the strategies in the layering (config cannot import them), yet loading must type and
check `strategy.*` keys. In YAML and on the command line the section stays flat:
`strategy.name` and the chosen strategy's options (`strategy.k=2` for partial).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from warmstart import typed
from warmstart.errors import WarmstartError, did_you_mean
from warmstart.registry import Registry
from warmstart.typed import check, documented

__all__ = ["STRATEGY_OPTIONS", "NoOptions", "StrategyConfig", "check", "option",
           "own_options_only", "owners_of"]

STRATEGY_OPTIONS: Registry[type] = Registry("strategy")


def option(default: Any, help: str) -> Any:
    """A documented field of a strategy's options dataclass (shown by --help, the card)."""
    return documented(default, help)


@dataclass
class NoOptions:
    """The options of a strategy that has none."""


@dataclass
class StrategyConfig:
    """Which parameters train, at what learning-rate scale (`warmstart ls strategies`).

    `options` is the chosen strategy's options dataclass (flat in YAML: see the module).
    """

    name: str = documented("full", "the fine-tuning strategy")
    options: Any = field(default=None, metadata={"help": "the chosen strategy's options"})

    def __post_init__(self) -> None:
        if self.options is None:
            self.options = STRATEGY_OPTIONS.get(self.name)()

    @classmethod
    def of(cls, name: str, **options: Any) -> StrategyConfig:
        """`StrategyConfig.of("partial", k=1)`: a strategy with options checked like YAML's."""
        return cls.typed_build({"name": name, **options}, "strategy.")

    # The flat section's three faces (typed.py asks a dataclass for them when it has them):
    # its keys, its --help rows and how it is built from a mapping.
    @classmethod
    def typed_keys(cls, prefix: str) -> list[str]:
        """`strategy.name` and every registered strategy's options (for did-you-mean)."""
        keys = [f"{prefix}name"]
        for entry in STRATEGY_OPTIONS:
            keys += [k for k in typed.keys_of(entry.obj, prefix) if k not in keys]
        return keys

    @classmethod
    def typed_help(cls, prefix: str) -> list[tuple[str, Any, str]]:
        """(key, default, help) rows: `strategy.name`, then each option once, its help
        starting with the strategies that have it (`lora, ia3: ...`)."""
        rows: dict[str, tuple[Any, str, list[str]]] = {}
        for entry in STRATEGY_OPTIONS:
            for key, default, text in typed.help_of(entry.obj, prefix):
                rows.setdefault(key, (default, text, []))[2].append(entry.name)
        name_help = dataclasses.fields(cls)[0].metadata["help"]
        return [(f"{prefix}name", "full", name_help)] + [
            (key, default, f"{', '.join(owners)}: {text}")
            for key, (default, text, owners) in rows.items()]

    @classmethod
    def typed_build(cls, data: dict[str, Any], prefix: str) -> StrategyConfig:
        """Type the section: the name, then the options as that strategy's dataclass.

        Raises:
            WarmstartError: an unknown strategy, or a key that is not one of its options
                (naming the strategies it belongs to, or the nearest option).
        """
        if not isinstance(data, dict):
            raise WarmstartError(f"config section {prefix.rstrip('.')!r} must be a mapping "
                                 "(e.g. name: partial, k: 2)")
        data = dict(data)
        name = typed.coerce(data.pop("name", "full"), str, f"{prefix}name")
        options = STRATEGY_OPTIONS.get(name)
        own = typed.keys_of(options, prefix)
        bare = [k.removeprefix(prefix) for k in own]
        for key in data:
            dotted = prefix + str(key)
            if dotted not in own:
                owners = owners_of(str(key))
                valid = f"{name}'s options: {', '.join(bare) or 'none'}"
                if owners:
                    raise WarmstartError(
                        f"config key {dotted!r} does not apply to strategy {name!r} (it is "
                        f"an option of {', '.join(owners)}); {valid}")
                raise WarmstartError(f"unknown config key {dotted!r} for strategy {name!r}"
                                     f"{did_you_mean(str(key), ['name', *bare])}; {valid}")
        return cls(name, typed.build(data, options, prefix))

    def to_tree(self) -> dict[str, Any]:
        """The flat section as saved in config.yaml: name, then the options."""
        return {"name": self.name, **dataclasses.asdict(self.options)}


def owners_of(option: str) -> list[str]:
    """The strategies that have an option called `option`."""
    return [e.name for e in STRATEGY_OPTIONS
            if option in {f.name for f in dataclasses.fields(e.obj)}]


def own_options_only(tree: dict[str, Any]) -> dict[str, Any]:
    """A copy of a config tree keeping only the named strategy's own `strategy.*` options.

    For configs shared among strategies (a comparison's base config applies to every
    strategy it compares), and for config.yaml files saved when `strategy` listed every
    strategy's options.
    """
    out = {**tree}
    section = dict(out.get("strategy") or {})
    name = section.get("name", "full")
    if name in STRATEGY_OPTIONS:
        own = {f.name for f in dataclasses.fields(STRATEGY_OPTIONS.get(name))}
        section = {k: v for k, v in section.items()
                   if k == "name" or k in own or not owners_of(str(k))}
        out["strategy"] = section
    return out
