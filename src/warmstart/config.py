"""Typed configuration: one dataclass per concern, YAML files plus dotted overrides.

Every field is documented where it is declared (`help` metadata); `warmstart train --help`
and the saved `config.yaml` come from these declarations. Loading checks every key and value:
an unknown key is an error that suggests the nearest valid one, and a bad value names its key.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from warmstart import typed
from warmstart.errors import WarmstartError, did_you_mean
from warmstart.options import StrategyConfig, own_options_only
from warmstart.sections import (
    AugmentConfig,
    CheckpointConfig,
    DataConfig,
    DistillConfig,
    LogConfig,
    ModelConfig,
    OptimConfig,
    OutputConfig,
    RegularizeConfig,
    TaskConfig,
    TrainConfig,
)
from warmstart.typed import check

# The sections are declared in `sections.py` and re-exported: callers import every config
# type from here.
__all__ = ["AugmentConfig", "CheckpointConfig", "DataConfig", "DistillConfig", "LogConfig",
           "ModelConfig", "OptimConfig", "OutputConfig", "RegularizeConfig", "RunConfig",
           "StrategyConfig", "TaskConfig", "TrainConfig"]


@dataclass
class RunConfig:
    """Everything a run needs; each section is one concern."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    regularize: RegularizeConfig = field(default_factory=RegularizeConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (for YAML/JSON); the strategy section flat, as it is written."""
        return {f.name: self.strategy.to_tree() if f.name == "strategy"
                else dataclasses.asdict(getattr(self, f.name)) for f in dataclasses.fields(self)}


# --------------------------------------------------------------------------- loading
def validate(cfg: RunConfig) -> RunConfig:
    """Check values that types alone cannot (ranges, combinations)."""
    check(cfg.model.max_length > 0, "model.max_length", "must be a positive integer")
    check(cfg.model.dropout is None or 0 <= cfg.model.dropout < 1, "model.dropout",
           "must be in [0, 1)")
    check(cfg.model.pair_encoding == "cross" or cfg.data.text_pair_column is not None,
          "model.pair_encoding", "bi encodes the two texts of a pair apart; set "
          "data.text_pair_column to the column holding the second text, or use cross")
    check(cfg.model.pair_encoding == "cross" or cfg.model.pooling != "pooler",
          "model.pooling", "pooler is the architecture's own head on one sequence; "
          "model.pair_encoding=bi pools each text: use auto, mean, cls, last or max")
    check(cfg.data.text_column != cfg.data.label_column, "data.text_column",
          f"{cfg.data.text_column!r} is also data.label_column: the model would read the "
          "answer; set data.text_column to the column holding the input text")
    for k in ("val_fraction", "test_fraction"):
        check(0 <= getattr(cfg.data, k) < 1, f"data.{k}", "must be in [0, 1)")
    check(cfg.data.val_fraction + cfg.data.test_fraction < 0.9, "data.val_fraction",
           "validation + test fractions must leave at least 10% for training")
    check(cfg.data.limit is None or cfg.data.limit > 1, "data.limit", "must be > 1 or null")
    check(0 <= cfg.regularize.label_smoothing < 1, "regularize.label_smoothing",
           "must be in [0, 1)")
    check(cfg.regularize.l1 >= 0, "regularize.l1", "must be >= 0")
    check(cfg.regularize.l2sp >= 0, "regularize.l2sp", "must be >= 0")
    check(cfg.optim.lr is None or cfg.optim.lr > 0, "optim.lr", "must be > 0")
    check(cfg.optim.head_lr is None or cfg.optim.head_lr > 0, "optim.head_lr", "must be > 0")
    check(cfg.optim.weight_decay >= 0, "optim.weight_decay", "must be >= 0")
    check(len(cfg.optim.betas) == 2 and all(0 <= b < 1 for b in cfg.optim.betas),
           "optim.betas", "must be two numbers in [0, 1)")
    check(0 <= cfg.optim.warmup_ratio < 1, "optim.warmup_ratio", "must be in [0, 1)")
    check(cfg.optim.clip_norm is None or cfg.optim.clip_norm > 0, "optim.clip_norm",
           "must be > 0 or null")
    check(cfg.train.epochs is None or cfg.train.epochs >= 1, "train.epochs",
          "must be >= 1 or null")
    check(cfg.train.batch_size >= 1, "train.batch_size", "must be >= 1")
    check(cfg.train.eval_batch_size >= 1, "train.eval_batch_size", "must be >= 1")
    check(cfg.train.threads is None or cfg.train.threads >= 1, "train.threads", "must be >= 1")
    check(cfg.log.every >= 1, "log.every", "must be >= 1")
    for name in cfg.log.to:
        sinks = ["tensorboard", "mlflow"]
        check(name in sinks, "log.to", f"{name!r} is not one of {sinks}"
               + did_you_mean(name, sinks))
    check(cfg.optim.warmup_steps is None or cfg.optim.warmup_steps >= 0, "optim.warmup_steps",
           "must be >= 0 or null")
    check(cfg.optim.step_every >= 1, "optim.step_every", "must be >= 1")
    check(0 < cfg.optim.step_gamma <= 1, "optim.step_gamma", "must be in (0, 1]")
    check(cfg.optim.stlr_ratio >= 1, "optim.stlr_ratio", "must be >= 1")
    check(cfg.optim.clip_value is None or cfg.optim.clip_value > 0, "optim.clip_value",
           "must be > 0 or null")
    check(cfg.train.accumulate >= 1, "train.accumulate", "must be >= 1")
    check(cfg.train.early_stopping is None or cfg.train.early_stopping >= 1,
           "train.early_stopping", "must be >= 1 or null")
    check(cfg.train.min_delta >= 0, "train.min_delta", "must be >= 0")
    check(cfg.train.parallel == "ddp" or cfg.regularize.l1 == cfg.regularize.l2sp == 0,
           "train.parallel", "fsdp shards the weights the L1/L2-SP penalties read; set "
           "regularize.l1=0 and regularize.l2sp=0, or train.parallel=ddp")
    cw = cfg.train.class_weights
    check(isinstance(cw, list) or cw in ("none", "balanced"), "train.class_weights",
           f"{cw!r} is not none, balanced or a list of numbers")
    check(not isinstance(cw, list) or all(w >= 0 for w in cw), "train.class_weights",
           "weights must be >= 0")
    check(cfg.checkpoint.every_steps >= 0, "checkpoint.every_steps", "must be >= 0")
    check(cfg.checkpoint.keep_last >= 1, "checkpoint.keep_last", "must be >= 1")
    _validate_distill(cfg.distill)
    _validate_augment(cfg.augment)
    return cfg


def _validate_distill(cfg: DistillConfig) -> None:
    check(cfg.temperature > 0, "distill.temperature", "must be > 0")
    check(0 <= cfg.alpha <= 1, "distill.alpha", "must be in [0, 1]")
    check(cfg.teacher is not None or (cfg.unlabelled is None and cfg.keep_layers is None),
          "distill.teacher", "is needed by distill.unlabelled and distill.keep_layers: give "
          "the teacher's run directory")
    if cfg.keep_layers is not None:
        check(bool(parse_layers(cfg.keep_layers)) or cfg.keep_layers == "every_other",
              "distill.keep_layers", "must be every_other or block numbers such as 0,2,4")


def parse_layers(spec: str) -> list[int]:
    """`distill.keep_layers` as block numbers ([] for `every_other` and for a bad spec:
    validation refuses the latter, `every_other` needs the teacher's depth)."""
    parts = [p.strip() for p in spec.split(",")] if spec else []
    if not parts or not all(p.isdigit() for p in parts):
        return []
    return [int(p) for p in parts]


def _validate_augment(aug: AugmentConfig) -> None:
    """Ranges of the `augment.*` keys (null = the recipe's value, always valid)."""
    scale = aug.crop_scale
    check(scale is None or (len(scale) == 2 and 0 < scale[0] <= scale[1] <= 1),
          "augment.crop_scale", "must be [min, max] with 0 < min <= max <= 1")
    for key in ("flip", "trivial", "mix_prob", "token_delete", "token_swap", "span_mask"):
        value = getattr(aug, key)
        check(value is None or 0 <= value <= 1, f"augment.{key}", "must be in [0, 1]")
    check(aug.token_delete is None or aug.token_delete < 1, "augment.token_delete",
          "must be below 1 (1 would delete every token)")
    check(aug.jitter is None or 0 <= aug.jitter < 1, "augment.jitter", "must be in [0, 1)")
    check(aug.trivial_strength is None or 0 <= aug.trivial_strength <= 1,
          "augment.trivial_strength", "must be in [0, 1]")
    for key in ("mixup", "cutmix"):
        value = getattr(aug, key)
        check(value is None or value >= 0, f"augment.{key}", "must be >= 0 (0 = off)")


def all_keys(cls: type = RunConfig, prefix: str = "") -> list[str]:
    """Every dotted key the config accepts, e.g. `optim.lr`."""
    return typed.keys_of(cls, prefix)


def field_help(cls: type = RunConfig, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(dotted key, default, help) for every leaf field, for --help output."""
    return typed.help_of(cls, prefix)


def from_dict(data: dict[str, Any], cls: type = RunConfig, prefix: str = "") -> Any:
    """Build a (nested) config dataclass from a dict, checking every key and value."""
    return typed.build(data, cls, prefix)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML file (optional), apply dotted overrides, validate, and return the config."""
    return build_config(with_overrides(read_tree(path), overrides or []))


def read_tree(path: str | Path | None) -> dict[str, Any]:
    """A YAML config file as a plain tree of sections (empty for None)."""
    if path is None:
        return {}
    p = Path(path)
    if not p.is_file():
        raise WarmstartError(f"config file {str(p)!r} not found; pass an existing YAML file")
    try:
        tree = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise WarmstartError(f"config file {str(p)!r} is not valid YAML: {first}") from None
    if not isinstance(tree, dict):
        raise WarmstartError(f"config file {str(p)!r} must hold a mapping of sections")
    return tree


def with_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of `tree` with dotted `key=value` overrides applied (keys checked)."""
    tree = copy.deepcopy(tree)
    for text in overrides:
        key, value = typed.parse_override(text)
        # `strategy.*` keys are checked with the chosen strategy's options when built.
        if key not in all_keys() and not key.startswith("strategy."):
            raise WarmstartError(f"unknown config key {key!r}" + did_you_mean(key, all_keys()))
        typed.set_dotted(tree, key, value)
    return tree


def build_config(tree: dict[str, Any]) -> RunConfig:
    """The typed, validated config of a tree (every key and value checked)."""
    return validate(from_dict(tree))


def read_run_config(path: str | Path) -> RunConfig:
    """The config.yaml a run saved, as a RunConfig (also one saved when the `strategy`
    section listed every strategy's options: the others' are dropped)."""
    try:
        tree = read_tree(path)
    except WarmstartError:
        raise WarmstartError(f"{path} is not a readable config.yaml; pass a run directory "
                             "that `warmstart train` created") from None
    return build_config(own_options_only(tree))


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def config_changes(cfg: RunConfig) -> list[str]:
    """`key=value` for every key whose value is not the default (printed at start, where the
    whole config would bury the warnings; config.yaml holds all of it)."""
    defaults = _flat(RunConfig().to_dict())
    # The chosen strategy's options against their own defaults.
    own = _flat(from_dict({"strategy": {"name": cfg.strategy.name}}).to_dict())
    defaults.update({k: v for k, v in own.items() if k not in defaults})
    return [f"{key}={value}" for key, value in _flat(cfg.to_dict()).items()
            if key not in defaults or defaults[key] != value]


def dump_config(cfg: RunConfig) -> str:
    """The resolved config as YAML (saved in the run directory, printed at start)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
