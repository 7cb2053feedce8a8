"""The model card (`README.md`) of a finished run: what it is, how well it does, where it fails.

Sections follow "Model Cards for Model Reporting" (Mitchell et al. 2019), cut to what a run
knows: base model, data, strategy and its parameters, metrics overall and per class, training
time and hardware, intended use and limitations. Everything comes from the run's own
`summary.json`, config and `environment.json`; nothing is re-measured.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from warmstart.config import RunConfig
from warmstart.files import atomic_write_text
from warmstart.models.pooling import HEAD_FILE, Pooling, usage
from warmstart.summary import RunSummary, Split
from warmstart.tasks import TASKS


def strategy_options(cfg: RunConfig) -> dict[str, Any]:
    """The chosen strategy's `strategy.*` options (its own options dataclass, by field)."""
    return dataclasses.asdict(cfg.strategy.options)


def _hardware(run_dir: Path, summary: RunSummary) -> str:
    """Device, CPU model and thread count, from the run's environment.json where present."""
    env_path = run_dir / "environment.json"
    env = json.loads(env_path.read_text(encoding="utf-8")) if env_path.is_file() else {}
    if env.get("cuda"):
        return f"{env['cuda']} ({summary.precision})"
    cpu = env.get("processor") or cpu_model() or "CPU"
    cores = f", {env['cpus']} cores" if env.get("cpus") else ""
    return f"{cpu}{cores}, {summary.threads} torch threads, {summary.precision}"


def cpu_model() -> str:
    """The CPU's model name on Linux (platform.processor() is often empty there)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _saved(run_dir: Path) -> dict[str, Any]:
    """The saved model's `warmstart_model.json` (empty when no model was saved)."""
    meta = run_dir / "model" / "warmstart_model.json"
    return json.loads(meta.read_text(encoding="utf-8")) if meta.is_file() else {}


def _metrics_table(summary: RunSummary) -> str:
    all_splits: tuple[Split, ...] = ("train", "validation", "test")
    splits = [s for s in all_splits if summary.metrics(s)]
    keys = TASKS[summary.task].metric_names
    lines = ["| metric | " + " | ".join(splits) + " |", "|---|" + "---:|" * len(splits)]
    for key in keys:
        values = [summary.metrics(s).get(key) for s in splits]
        lines.append(f"| {key} | " + " | ".join(
            "-" if v is None else f"{v:.4f}" for v in values) + " |")
    return "\n".join(lines)


def _per_class_table(report: dict[str, Any], labels: list[str], what: str = "class") -> str:
    lines = [f"| {what} | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    for name in labels:
        c = report[name]
        lines.append(f"| {name} | {c['precision']:.4f} | {c['recall']:.4f} | "
                     f"{c['f1-score']:.4f} | {c['support']:.0f} |")
    return "\n".join(lines)


def _limitations(summary: RunSummary, cfg: RunConfig, kind: str) -> list[str]:
    """Limitations the run's own numbers and settings reveal."""
    split = summary.quality_split
    m, n = summary.quality, summary.examples.of(split)
    source = f"Measured on {n} held-out examples from the same source as the training data"
    elsewhere = "on other sources (other years, styles or domains) expect less."
    if summary.task == "classification":
        half = 1.96 * math.sqrt(max(m["accuracy"] * (1 - m["accuracy"]), 1e-12) / max(n, 1))
        out = [f"{source}: {split} accuracy {m['accuracy']:.3f} is known to about ±{half:.3f} "
               f"(95%, normal approximation); {elsewhere}",
               f"It always answers with one of the {len(summary.labels)} training labels, "
               "even for inputs that belong to none of them."]
    else:
        value = summary.headline
        shown = "-" if value is None else f"{value:.3f}"
        out = [f"{source} ({split} {summary.metric} {shown}); {elsewhere}"]
        out.append(
            "It answers with the labels whose probability passes its threshold, tuned on the "
            "validation split; labels never seen in training are never predicted."
            if summary.task == "multilabel" else
            "Its scores are learnt from the training range; far outside it they are guesses.")
    per_class = m.get("per_class") or m.get("per_label") or {}
    scores = {k: per_class[k]["f1-score"] for k in summary.labels if k in per_class}
    if scores:
        worst = min(scores, key=scores.get)
        out.append(f"Weakest {'label' if summary.task == 'multilabel' else 'class'} on "
                   f"{split}: {worst!r} (F1 {scores[worst]:.3f}).")
    if kind == "text":
        out.append(f"Texts are cut to their first {cfg.model.max_length} tokens; what comes "
                   "later is never seen.")
    if cfg.data.limit is not None:
        out.append(f"Trained on a stratified subset of {summary.examples.train} examples "
                   f"(data.limit={cfg.data.limit}), not the whole training split.")
    out.append(f"It inherits the biases of the pretrained model ({cfg.model.name}) and of the "
               "training data; check it on your own cases before relying on it.")
    return out


def _model_section(summary: RunSummary, cfg: RunConfig) -> list[str]:
    options = strategy_options(cfg)
    params = summary.params
    return [
        "## Model", "",
        f"- base model: {cfg.model.name}",
        f"- strategy: {cfg.strategy.name}"
        + (" (" + ", ".join(f"{k}={v}" for k, v in options.items()) + ")" if options else ""),
        f"- trainable parameters: {params.trainable:,} of {params.total:,} "
        f"({params.fraction:.2%})",
        f"- learning rate: {summary.lr.base:g} ({cfg.optim.schedule} schedule), "
        f"batch {cfg.train.batch_size} x {cfg.train.accumulate}, seed {summary.seed}",
        f"- augmentation (training only): {summary.augment}",
        f"- epochs: {summary.epochs} of {cfg.train.epochs or summary.epochs}, best epoch "
        f"{summary.best_epoch} (by validation {summary.metric}; its weights are saved)",
    ]


def _data_section(summary: RunSummary) -> list[str]:
    ex = summary.examples
    return [
        "## Data", "",
        f"- source: {summary.data}",
        f"- examples: {ex.train} train / {ex.validation} validation / {ex.test} test",
        {"classification": f"- {len(summary.labels)} classes: {', '.join(summary.labels)}",
         "multilabel": f"- {len(summary.labels)} labels (any number per example): "
                       f"{', '.join(summary.labels)}",
         }.get(summary.task, "- target: one number per example (regression)"),
    ]


def _metrics_section(summary: RunSummary) -> list[str]:
    if summary.task == "regression":
        return ["## Metrics", "", _metrics_table(summary)]
    what = "label" if summary.task == "multilabel" else "class"
    report = summary.quality.get(f"per_{what}")
    return [
        "## Metrics", "", _metrics_table(summary), "",
        f"Per {what} ({summary.quality_split}):", "",
        _per_class_table(report, summary.labels, what) if report else "(none recorded)",
    ]


def _distill_section(summary: RunSummary) -> list[str]:
    """A distilled student beside its teacher: quality, size, speed."""
    d = summary.distill
    teacher, student = d["models"]["teacher"], d["models"]["student"]
    rows = [k for k in teacher if k in student]
    lines = ["## Distillation", "",
             f"Distilled from the teacher `{d['teacher']}` into {d['student']} (temperature "
             f"{d['temperature']:g}, alpha {d['alpha']:g}"
             + (f", {d['unlabelled']} unlabelled texts" if d["unlabelled"] else "") + "). "
             f"Measured on the {d['split']} split ({d['examples']} examples), both models in "
             f"one process: batch {d['batch_size']}, {d['threads']} threads, {d['device']}.",
             "", "| | teacher | student | student / teacher |", "|---|---:|---:|---:|"]
    for key in rows:
        t, s = teacher[key], student[key]
        fmt = ("{:,.0f}" if key == "params" else "{:.1f}" if key == "examples_per_second"
               else "{:.4f}")
        lines.append(f"| {key.replace('_', ' ')} | {fmt.format(t)} | {fmt.format(s)} | "
                     + (f"{s / t:.3f}" if t else "-") + " |")
    return lines


def _training_section(run_dir: Path, summary: RunSummary) -> list[str]:
    versions = summary.versions
    return [
        "## Training", "",
        f"- time: {summary.train_seconds:.1f} s training, {summary.wall_seconds:.1f} s "
        f"in all; {summary.samples_per_second:.1f} samples/s",
        f"- peak memory: {summary.peak_memory_mb:.0f} MB",
        f"- hardware: {_hardware(run_dir, summary)}",
        f"- software: warmstart {versions.warmstart}, torch {versions.torch}, "
        f"Python {versions.python}",
    ]


def _use_section(run_dir: Path, summary: RunSummary, kind: str, pairs: bool) -> list[str]:
    things = {"text": "texts", "image": "images"}.get(kind, "inputs")
    if pairs:
        things = "pairs of texts"
    usage = f"warmstart predict {run_dir} " + (
        '--text "..." --text-pair "..."' if pairs else '--text "..."' if kind == "text"
        else "--input FILE")
    doing = {"classification": "Sorting {} like those in {} into the classes above",
             "multilabel": "Tagging {} like those in {} with the labels above",
             "regression": "Scoring {} like those in {}"}[summary.task]
    return [
        "## Intended use", "",
        f"{doing.format(things, summary.data)}, e.g. "
        f"`{usage}`. It is a research artifact of a fine-tuning run, not a vetted product: "
        "do not use it for decisions about people.",
    ]


def _loading_section(meta: dict[str, Any]) -> list[str]:
    """How to compute the same logits with transformers alone, for a saved model (`meta`:
    its warmstart_model.json) whose head sits on a pooling of its own (`models/pooling.py`);
    nothing for the other layouts."""
    mode = meta.get("pooling")
    if meta.get("kind") != "text" or mode in (None, "pooler") or "peft" in meta:
        return []
    how = Pooling(mode, bool(meta.get("normalize")))
    pooled = f"{mode}-pooled" + (" and L2-normalised" if how.normalize else "")
    pair = meta.get("pair_encoding", "cross")
    if pair == "bi":
        pooled += ("; it is a bi-encoder: each text of a pair is pooled alone and the head "
                   "reads the cosine of the two vectors")
    return ["## Loading without warmstart", "",
            f"The head reads the base model's token vectors, {pooled}. `model/` holds the "
            "base model (`AutoModel.from_pretrained`; also a sentence-transformers layout) and "
            f"the head in `{HEAD_FILE}`; with `d` that folder:", "",
            "```python", usage(how, meta["max_length"], pair).rstrip(), "```", "",
            *_reading_outputs(meta.get("task") or {})]


def _reading_outputs(task: dict[str, Any]) -> list[str]:
    """What the logits mean for the saved model's task (one line; none for classification)."""
    if task.get("type") == "regression":
        return ["`logits[:, 0]` is the predicted score itself (the target's standardisation "
                "is folded into the head)."]
    if task.get("type") == "multilabel":
        return ["Labels are independent: `logits.sigmoid()` gives each label's probability, "
                "and a label applies when it reaches its threshold (`task.thresholds` in "
                "`warmstart_model.json`, tuned on validation)."]
    return []


def model_card(run_dir: Path, summary: RunSummary, cfg: RunConfig) -> str:
    """The card's Markdown text (with a small YAML header, as model hubs expect)."""
    meta = _saved(run_dir)
    kind = meta.get("kind", "inputs")
    task = {"text": "text-classification", "image": "image-classification"}.get(kind)
    metrics = {"classification": "[accuracy, f1]", "multilabel": "[f1, precision, recall]",
               "regression": "[spearmanr, pearsonr, mse]"}[summary.task]
    what = {"classification": "classifier", "multilabel": "multi-label classifier",
            "regression": "regression model"}[summary.task]
    sections = [
        ["---", f"tags: [warmstart{', ' + task if task else ''}]", f"metrics: {metrics}",
         "---", "", f"# {run_dir.name}", "",
         f"A {kind + ' ' if task else ''}{what} fine-tuned with warmstart from "
         f"**{cfg.model.name}** on **{summary.data}** with the **{cfg.strategy.name}** "
         "strategy."],
        _model_section(summary, cfg),
        _data_section(summary),
        _metrics_section(summary),
        *([_distill_section(summary)] if summary.distill else []),
        _training_section(run_dir, summary),
        _use_section(run_dir, summary, kind, bool(cfg.data.text_pair_column)),
        _loading_section(meta),
        ["## Limitations", "", *[f"- {x}" for x in _limitations(summary, cfg, kind)]],
    ]
    return "\n\n".join("\n".join(lines) for lines in sections) + "\n"


def write_model_card(run_dir: Path, summary: RunSummary, cfg: RunConfig) -> None:
    """Write `run_dir/README.md`, the model card of a finished run (atomically)."""
    atomic_write_text(Path(run_dir) / "README.md", model_card(Path(run_dir), summary, cfg))
