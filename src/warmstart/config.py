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
from typing import Any, Literal

import yaml

from warmstart import typed
from warmstart.errors import WarmstartError, did_you_mean
from warmstart.options import StrategyConfig, own_options_only
from warmstart.typed import check

_f = typed.documented  # a field with its help text


@dataclass
class ModelConfig:
    """Which pretrained model to start from and how to feed it."""

    name: str = _f(
        "minilm-l6",
        "a built-in model (`warmstart ls models`), a local Hugging Face directory, a hub id "
        "(where a network exists), or `package.module:factory` returning a torch.nn.Module",
    )
    max_length: int = _f(
        64, "text: tokens kept per example (longer inputs are truncated). 64 covers a question, "
        "an intent or a headline plus lead, and halves CPU time per example against 128; "
        "raise it for long documents"
    )
    pooling: Literal["auto", "mean", "cls", "pooler", "last", "max"] = _f(
        "auto", "text: how the token vectors become the head's input. auto = as the checkpoint "
        "was trained: a sentence-transformers layout's pooling (all-MiniLM-L6-v2: mean, "
        "L2-normalised; its pooler was never trained), else the architecture's own head. "
        "pooler = that own head (BERT's pooler on [CLS]); mean/cls/last/max = warmstart's "
        "head on that pooling of the base model"
    )
    image_size: int | None = _f(
        None, "images: side in pixels after resizing; null = the model's own input size"
    )
    dropout: float | None = _f(
        None, "override the model's dropout probabilities; null keeps the pretrained values"
    )
    groups: list[str] = _f(
        [], "custom models only: names of the top-level children that form the layer groups, "
        "input to head (empty = every top-level child is a group, the last is the head)"
    )
    head: str | None = _f(
        None, "custom models only: attribute name of the classification head (a Linear whose "
        "out_features becomes the number of classes); null = the last top-level child"
    )


@dataclass
class DataConfig:
    """Where the labelled examples come from and how they are split."""

    name: str = _f(
        "bbc-news",
        "a built-in dataset (`warmstart ls datasets`), or a path: a CSV/TSV/JSONL/Parquet file "
        "or an image folder with one subfolder per class",
    )
    validation: str | None = _f(None, "explicit validation file/folder (else split from `name`)")
    test: str | None = _f(None, "explicit test file/folder (else split from `name`)")
    text_column: str = _f("text", "column holding the input text")
    text_pair_column: str | None = _f(
        None, "column holding a second text per example (paraphrase, entailment, question-"
        "answer): the model reads the two as a pair; null = single texts"
    )
    label_column: str = _f(
        "label", "column holding the label: a class name, several names joined by "
        "data.label_separator (multilabel), or a number (regression)"
    )
    label_separator: str = _f(
        ";", "joins several labels in one cell (multilabel); a blank cell means no label"
    )
    val_fraction: float = _f(
        0.1, "share of the examples held out for validation when no validation file is given"
    )
    test_fraction: float = _f(
        0.1, "share of the examples held out for testing when no test file is given"
    )
    limit: int | None = _f(
        None, "use at most this many training examples (stratified); null = all"
    )
    split_seed: int | None = _f(
        None, "seed of the train/validation/test split; null = train.seed (set it to keep one "
        "split while varying train.seed, as `warmstart compare --seeds` does)"
    )


@dataclass
class TaskConfig:
    """What is predicted: one class, several labels, or a number."""

    type: Literal["auto", "classification", "multilabel", "regression"] = _f(
        "auto", "auto = read from the labels (cells joined by data.label_separator: "
        "multilabel; numbers with decimals: regression; else classification), printed with "
        "the reason"
    )
    thresholds: Literal["global", "per_label"] = _f(
        "global", "multilabel: tune one decision threshold for all labels, or one per label, "
        "on the validation split (saved with the model)"
    )


@dataclass
class RegularizeConfig:
    """Regularisers available to every strategy (weight decay lives in `optim`)."""

    label_smoothing: float = _f(
        0.0, "cross-entropy label smoothing (0.1 is common); 0 = plain cross-entropy"
    )
    l1: float = _f(0.0, "coefficient of an L1 penalty on the trainable weights; 0 = off")
    l2sp: float = _f(
        0.0, "coefficient of the L2-SP penalty pulling trainable pretrained weights toward "
        "their starting values (Li et al. 2018; 0.01 is a typical value); 0 = off"
    )


@dataclass
class OptimConfig:
    """The optimizer and its learning-rate schedule."""

    lr: float | None = _f(
        None, "peak learning rate; null = the strategy's default for the model kind (a linear "
        "probe or LoRA wants larger steps than full fine-tuning; `warmstart train` prints the "
        "value and its reason), else the model's (5e-5 for transformers, 1e-3 for small CNNs)"
    )
    head_lr: float | None = _f(
        None, "peak learning rate of the new head (the rest trains at optim.lr); null = the "
        "same as everything else"
    )
    weight_decay: float = _f(
        0.01, "decoupled (AdamW) weight decay on weights; biases and norms never decay. 0.01 is "
        "the BERT fine-tuning default"
    )
    betas: list[float] = _f([0.9, 0.999], "AdamW betas")
    eps: float = _f(1e-8, "AdamW epsilon")
    schedule: Literal["linear", "constant", "cosine", "step", "onecycle", "stlr"] = _f(
        "linear", "lr after warmup: linear decay to 0, constant, cosine to 0, step decay "
        "(x step_gamma every step_every steps), one-cycle (cosine up then down), or ULMFiT's "
        "slanted triangular (short linear rise over warmup, long linear fall to 1/stlr_ratio)"
    )
    warmup_ratio: float = _f(
        0.06, "share of the steps spent warming up linearly from 0; 6% as in RoBERTa's recipe, "
        "so the new random head does not wreck the pretrained weights in the first steps"
    )
    warmup_steps: int | None = _f(
        None, "warmup length in optimizer steps; overrides warmup_ratio when set"
    )
    step_every: int = _f(100, "step schedule: optimizer steps between lr drops")
    step_gamma: float = _f(0.5, "step schedule: lr multiplier at each drop")
    stlr_ratio: float = _f(
        32.0, "stlr: how much smaller the lowest lr is than the peak (ULMFiT uses 32)"
    )
    clip_norm: float | None = _f(
        1.0, "clip the global gradient norm to this value; null = no clipping"
    )
    clip_value: float | None = _f(
        None, "clip each gradient element to [-v, v] (before norm clipping); null = off"
    )


@dataclass
class TrainConfig:
    """How long and how to train."""

    epochs: int | None = _f(
        None, "passes over the training set; null = the strategy's default for the model kind "
        "(`head`: 10 on text, its cached epochs cost little), else 2: 2-4 is the usual "
        "fine-tuning range, and 2 keeps the default job within minutes on a CPU"
    )
    batch_size: int = _f(16, "examples per optimizer step")
    eval_batch_size: int = _f(64, "examples per evaluation batch (no gradients, so larger)")
    seed: int = _f(0, "drives the split, data order, new-head initialisation and dropout")
    metric: str = _f(
        "auto", "validation metric that picks the best epoch (its weights are kept); auto = "
        "the task's own: accuracy (classification), f1_macro (multilabel), spearman "
        "(regression); any metric the task reports, e.g. f1_macro, loss, pearson, mse"
    )
    device: str = _f("auto", "`auto` (cuda if present, else cpu), `cpu`, `cuda`, `cuda:1`")
    threads: int | None = _f(None, "CPU threads for torch; null = torch's default")
    group_by_length: bool = _f(
        True, "text: batch examples of similar length (shuffled mega-batches) to cut padding; "
        "order within each epoch is still random"
    )
    accumulate: int = _f(
        1, "micro-batches of batch_size per optimizer step (effective batch = batch_size x "
        "accumulate x processes)"
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = _f(
        "auto", "autocast precision; auto = bf16 on a GPU that supports it, else fp32 (CPUs "
        "without native bf16 run bf16 matmuls ~100x slower)"
    )
    class_weights: list[float] | str = _f(
        "none", "loss weight per class: none, balanced (inverse label frequency, as in "
        "scikit-learn), or one number per class in label order"
    )
    early_stopping: int | None = _f(
        None, "stop after this many epochs without improving train.metric by more than "
        "train.min_delta; null = train all epochs (the best epoch's weights are kept anyway)"
    )
    min_delta: float = _f(0.0, "early stopping: smallest change that counts as improvement")
    cache: bool = _f(
        True, "compute the output of layers frozen for the whole run once and train on it "
        "(head inputs for head/features, the frozen bottom groups for partial); same result, "
        "less time"
    )
    cache_memory_mb: float = _f(
        4096, "largest cache kept in memory; a bigger one goes to a file in the run directory"
    )
    parallel: Literal["ddp", "fsdp"] = _f(
        "ddp", "under torchrun: ddp keeps a full model per process; fsdp (torch FSDP2) shards "
        "weights, gradients and optimizer state across processes, for models too large for one "
        "device (not with staged strategies or regularize.l1/l2sp)"
    )


@dataclass
class OutputConfig:
    """Where the run directory goes."""

    dir: str = _f("runs", "parent folder of run directories")
    name: str | None = _f(None, "run directory name; null = `<model>-<data>-<strategy>`")
    overwrite: bool = _f(
        False, "replace a run of the same name, finished or not (an unfinished one is "
        "otherwise continued only by `warmstart train --resume RUN`)"
    )
    save_model: bool = _f(True, "save the fine-tuned weights (safetensors) with the label map")


@dataclass
class CheckpointConfig:
    """Checkpoints for exact resume (`warmstart train --resume RUN`)."""

    every_steps: int = _f(
        0, "also checkpoint every this many optimizer steps (0 = only at epoch ends)"
    )
    keep_last: int = _f(
        1, "checkpoints kept besides the best weights; older ones are deleted"
    )


@dataclass
class LogConfig:
    """Progress and metric logging."""

    every: int = _f(10, "log training loss/lr to metrics.jsonl every this many steps")
    quiet: bool = _f(False, "no progress display (errors and the final table still print)")
    to: list[str] = _f(
        [], "also log to: tensorboard (needs the tensorboard package), mlflow (local file "
        "store under the run directory; needs mlflow)"
    )


@dataclass
class RunConfig:
    """Everything a run needs; each section is one concern."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    regularize: RegularizeConfig = field(default_factory=RegularizeConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)

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
    return cfg


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
