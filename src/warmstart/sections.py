"""The config's sections: one typed dataclass per concern, each field documented where declared.

`config.py` assembles them into `RunConfig` and loads, overrides and validates it; a new
concern (a new `<section>.*` group of keys) is one more dataclass here and one field there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from warmstart import typed

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
    pair_encoding: Literal["cross", "bi"] = _f(
        "cross", "text pairs (data.text_pair_column): cross = both texts in one sequence with "
        "segment ids, so attention sees how they relate (the choice for paraphrase, entailment "
        "and other pair classification); bi = each text pooled alone by the same encoder and "
        "the head on their cosine similarity (sentence-transformers' bi-encoder: a sentence-"
        "embedding checkpoint such as all-MiniLM-L6-v2 starts from what it was trained for; "
        "the choice for similarity scores, e.g. STS-B)"
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
class DistillConfig:
    """Knowledge distillation (`warmstart distill`): a student trained on a teacher's outputs."""

    teacher: str | None = _f(
        None, "the teacher: a finished run directory (or a saved model folder); its outputs "
        "on the training examples become soft targets. null = no distillation"
    )
    temperature: float = _f(
        2.0, "softens the teacher's and the student's distributions before they are compared. "
        "2 is the common choice for sentence classification (DistilBERT's task distillation, "
        "the transformers examples): it shows which wrong classes the teacher finds close "
        "without flattening its answer; 1 compares the plain probabilities"
    )
    alpha: float = _f(
        0.5, "weight of the soft (teacher) part of the loss; the labels' loss gets 1 - alpha. "
        "0.5 trusts teacher and labels equally: the labels correct the teacher's mistakes, "
        "the teacher adds how sure it is and which classes are alike; 0 = plain training"
    )
    unlabelled: str | None = _f(
        None, "a CSV/TSV/JSONL/TXT file of texts without labels (read with data.text_column; "
        "a .txt file: one text per line): the teacher labels them and the student learns them "
        "with the soft part of the loss alone, so it sees more data than the labelled set"
    )
    keep_layers: str | None = _f(
        None, "the student is a copy of the teacher keeping these transformer blocks, with "
        "the teacher's weights, head and pooling: `every_other` (blocks 0, 2, 4, ...) or a "
        "list such as `0,2,4` (0 = the block next to the embeddings). A layer-dropped copy "
        "starts where the teacher is, and beats a fresh small model (sentence-transformers' "
        "distillation: 12 -> 6 layers kept STS-B 85.44 -> 85.23). null = the student is "
        "model.name"
    )


@dataclass
class AugmentConfig:
    """Training-time augmentation of the batches (never at evaluation or prediction).

    `recipe` gives every key below its starting value; a key set to a number overrides it
    (`augment.recipe=none augment.flip=0.5` flips and does nothing else).
    """

    recipe: Literal["auto", "none"] = _f(
        "auto", "auto = images whose backbone trains: random resized crop (scale 0.35-1) + "
        "horizontal flip + TrivialAugment at RandAugment's ranges, no mixup; text: none "
        "(EDA-style edits did not consistently help pretrained transformers, Longpre et al. "
        "2020); head-only strategies: none (their frozen features are cached, which "
        "augmentation would rule out). none = nothing unless a key below is set"
    )
    crop_scale: list[float] | None = _f(
        None, "images: random resized crop keeps this [min, max] share of the area (auto: "
        "[0.35, 1]: ImageNet's 0.08 destroys small or already-cropped images); [1, 1] = off"
    )
    flip: float | None = _f(
        None, "images: probability of a horizontal flip (auto: 0.5; 0 for text-like images, "
        "digits or anything whose meaning flips)"
    )
    jitter: float | None = _f(
        None, "images: colour jitter strength: brightness, contrast and saturation each "
        "scaled by a factor in [1 - s, 1 + s] (auto: 0, TrivialAugment already varies colour)"
    )
    trivial: float | None = _f(
        None, "images: probability of one TrivialAugment op per image (auto: 1, as the "
        "paper: one uniformly drawn op at a uniformly drawn strength, identity among them)"
    )
    trivial_strength: float | None = _f(
        None, "images: the largest TrivialAugment magnitude as a share of RandAugment's "
        "ranges (rotate 30 deg, shear 0.3, translate 45%, colour x(1 +- 0.9)) (auto: 1 = "
        "those ranges, the 'light' choice beside TrivialAugment-wide's doubled ones)"
    )
    mixup: float | None = _f(
        None, "images: mixup's Beta(a, a) parameter; 0 = off (auto: 0: it slows convergence, "
        "which short fine-tuning runs cannot pay back). 0.2 is a common value"
    )
    cutmix: float | None = _f(
        None, "images: cutmix's Beta(a, a) parameter; 0 = off (auto: 0, as mixup). 1.0 is "
        "the paper's value; with mixup too, each example gets one of the two at random"
    )
    mix_prob: float | None = _f(
        None, "images: share of examples that mixup/cutmix mix with a neighbour in the batch "
        "(auto: 1 when either is on)"
    )
    token_delete: float | None = _f(
        None, "text: probability of deleting each token (special tokens are kept) (auto: 0)"
    )
    token_swap: float | None = _f(
        None, "text: probability of swapping each token with the next one (auto: 0)"
    )
    span_mask: float | None = _f(
        None, "text: share of each text's tokens replaced by the mask token as one span "
        "(auto: 0)"
    )
