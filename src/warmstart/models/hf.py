"""What the Hugging Face adapters share: quiet offline loading, layer groups by structure, saving.

transformers is imported inside the functions: `warmstart ls` and the CNN adapters should not
pay its import time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from torch import nn

from warmstart.errors import WarmstartError
from warmstart.models.base import LayerGroup, write_model_file

log = logging.getLogger(__name__)

# Files that mean "this directory has a tokenizer", so the model reads text.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "spiece.model")
IMAGE_PROCESSOR_FILE = "preprocessor_config.json"
# Config fields that hold dropout probabilities, across BERT/RoBERTa/ViT/DistilBERT/GPT-2-like
# models (the nn.Dropout modules are set too; these reach the plain float copies).
DROPOUT_FIELDS = (
    "hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout",
    "dropout", "attention_dropout", "hidden_dropout", "seq_classif_dropout",
    "attn_pdrop", "resid_pdrop", "embd_pdrop",
)


def offline() -> bool:
    """Whether HF_HUB_OFFLINE asks for cached files only (read at call time, not import time)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def detect_kind(source: str, config: Any) -> Literal["text", "image"]:
    """Which data a Hugging Face model reads; the rule, in order:

    1. a local directory with tokenizer files -> text;
    2. a local directory with an image-processor config (`preprocessor_config.json`) -> image;
    3. a config whose architectures name an `...ForImageClassification`, or whose model type
       transformers lists for image classification only -> image;
    4. anything else -> text.
    """
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES as IMAGE_TYPES,
    )
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES as TEXT_TYPES,
    )

    directory = Path(source)
    if directory.is_dir():
        if any((directory / f).is_file() for f in TOKENIZER_FILES):
            return "text"
        if (directory / IMAGE_PROCESSOR_FILE).is_file():
            return "image"
    if any(a.endswith("ForImageClassification") for a in config.architectures or []):
        return "image"
    model_type = getattr(config, "model_type", "")
    return "image" if model_type in IMAGE_TYPES and model_type not in TEXT_TYPES else "text"


def load_config(source: str, num_labels: int, dropout: float | None) -> Any:
    """The model's config with `num_labels` classes and the dropout override applied.

    The dropout goes into the config *before* the model is built, because some models copy it
    into plain float attributes (e.g. ViT's attention dropout) that no module walk can reach.
    """
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(source, num_labels=num_labels, local_files_only=offline())
    if dropout is not None:
        set_config_dropout(config, dropout)
    return config


def set_config_dropout(config: Any, p: float) -> None:
    """Set every dropout-probability field the config has (see DROPOUT_FIELDS)."""
    for name in DROPOUT_FIELDS:
        if hasattr(config, name):
            setattr(config, name, p)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Hide transformers' progress bars and its weight-loading report, for one load or save.

    The report lists the new head as "newly initialized", which is the point here; we check the
    loading info ourselves (`from_pretrained`) and warn about what really is unexpected.
    """
    from transformers.utils import logging as hf_logging

    class DropLoadReport(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "LOAD REPORT" not in str(record.msg)

    report_logger = logging.getLogger("transformers.modeling_utils")
    drop = DropLoadReport()
    report_logger.addFilter(drop)
    bars_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        report_logger.removeFilter(drop)
        if bars_on:
            hf_logging.enable_progress_bar()


def from_pretrained(auto_cls: Any, source: str, config: Any, new_head: bool) -> nn.Module:
    """Load pretrained weights into `auto_cls` (an AutoModelFor... class) with a new head.

    Args:
        auto_cls: e.g. `AutoModelForSequenceClassification`.
        source: a local directory or a hub id.
        config: from `load_config` (carries num_labels and the dropout override).
        new_head: True when fine-tuning starts: a head found in the checkpoint (a pretrained
            classifier, or one of the same size) is re-initialised, so the head is always new.
            False when restoring a fine-tuned model, whose head is the one to keep.
    """
    kwargs = dict(config=config, ignore_mismatched_sizes=new_head, local_files_only=offline(),
                  output_loading_info=True)
    with quiet():
        try:  # SDPA: PyTorch's fused attention kernels, faster than the eager path on CPU too
            model, info = auto_cls.from_pretrained(source, attn_implementation="sdpa", **kwargs)
        except ValueError as e:
            if "scaled_dot_product_attention" not in str(e):
                raise
            model, info = auto_cls.from_pretrained(source, **kwargs)
        except OSError as e:
            if not Path(source).is_dir():
                raise  # a hub id: the caller says what it could not reach
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise WarmstartError(
                f"model folder {source!r} cannot be loaded ({first}); put its weights "
                "(model.safetensors) beside config.json, or save the model again") from None
    head_names = {n for n, c in model.named_children() if c is not model.base_model}
    fresh = set(info["missing_keys"]) | {k[0] for k in info["mismatched_keys"]}
    lost = sorted(k for k in fresh if k.split(".")[0] not in head_names)
    if lost:
        log.warning("%s: %d pretrained weights were not in the checkpoint and start random: %s",
                    source, len(lost), ", ".join(lost[:5]))
    head_keys = [n for n, _ in model.named_parameters() if n.split(".")[0] in head_names]
    if new_head and any(k not in fresh for k in head_keys):
        for name, child in model.named_children():
            if name in head_names:
                for m in child.modules():
                    if hasattr(m, "reset_parameters"):
                        m.reset_parameters()
    return model


def from_config(auto_cls: Any, config: Any) -> nn.Module:
    """A randomly initialised model (the tiny test models), with SDPA attention where possible."""
    try:
        return auto_cls.from_config(config, attn_implementation="sdpa")
    except ValueError as e:
        if "scaled_dot_product_attention" not in str(e):
            raise
        return auto_cls.from_config(config)


def _largest_module_list(base: nn.Module) -> nn.ModuleList:
    """The transformer blocks / CNN stages: the nn.ModuleList holding the most parameters.

    "Most parameters" rather than "longest" because stage-based models nest lists: ConvNeXt's
    `encoder.stages` (4) holds its stage 3's `layers` (9), and the outer list must win.
    """
    best, best_size = None, -1
    for m in base.modules():
        if isinstance(m, nn.ModuleList) and len(m) > 0:
            size = sum(p.numel() for p in m.parameters())
            if size > best_size:
                best, best_size = m, size
    if best is None:
        raise WarmstartError(
            f"model {type(base).__name__} has no nn.ModuleList of layers, so warmstart cannot "
            "find its layer groups; wrap it as a `package.module:factory` model instead"
        )
    return best


def _path_to(root: nn.Module, target: nn.Module) -> list[nn.Module]:
    """Modules from `root` (excluded) down to `target` (included), following children."""
    for child in root.children():
        if child is target:
            return [child]
        below = _path_to(child, target)
        if below:
            return [child, *below]
    return []


def layer_groups(model: nn.Module) -> tuple[list[LayerGroup], nn.Module]:
    """Layer groups of a `...ForSequence/ImageClassification` model, found by structure.

    Groups: `embeddings` (every module of the base model that comes before the blocks on the way
    down to them, e.g. BertEmbeddings or a CNN stem), `block0`..`block{n-1}` (the items of the
    blocks' ModuleList), `head`. Pretrained modules after the blocks (a pooler, a final
    LayerNorm) join the last block: they are pretrained and sit just below the head. The head
    group holds the modules of the top model that are not the base model: the new classifier.

    Returns:
        The groups and the head module (the last head child with parameters, e.g. BERT's
        `classifier`; DistilBERT's head group also holds its `pre_classifier`).
    """
    base = model.base_model
    blocks = _largest_module_list(base)
    before: list[nn.Module] = []
    after: list[nn.Module] = []
    node = base
    for step in _path_to(base, blocks):
        children = list(node.children())
        i = next(k for k, c in enumerate(children) if c is step)
        before += children[:i]
        after = children[i + 1:] + after  # inner leftovers first: they run first
        node = step
    groups = [LayerGroup("embeddings", before)] if before else []
    groups += [LayerGroup(f"block{i}", [b]) for i, b in enumerate(blocks)]
    groups[-1].modules += after
    head_modules = [c for c in model.children() if c is not base]
    groups.append(LayerGroup("head", head_modules))
    with_params = [m for m in head_modules if any(True for _ in m.parameters())]
    assert with_params, f"{type(model).__name__} has no classifier outside its base model"
    return groups, with_params[-1]


def save_hf(model: Any, directory: Path, label_names: list[str], meta: dict[str, Any],
            extra_files: list[Path] | None = None, tokenizer: Any = None) -> None:
    """save_pretrained (safetensors) with the label map, plus the warmstart model file."""
    directory.mkdir(parents=True, exist_ok=True)
    model.config.id2label = dict(enumerate(label_names))
    model.config.label2id = {name: i for i, name in enumerate(label_names)}
    with quiet():
        model.save_pretrained(directory)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    for path in extra_files or []:
        if path.is_file() and path.resolve() != (directory / path.name).resolve():
            shutil.copy(path, directory / path.name)
    write_model_file(directory, {**meta, "source": "hf", "labels": list(label_names)})
