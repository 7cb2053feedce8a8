"""Does the default image augmentation recipe help? (issue #16, acceptance)

    python bench/augment.py                    # the default part (see PARTS; --list)
    python bench/augment.py --part longer      # one retry with more epochs
    python bench/augment.py --table            # the results, Markdown

`efficientnet-lite0` fine-tuned on `../shared/data/cifar10_small` (read by path: 5,000 train
images, 10% of them held out for validation, 1,000 test) with `augment.recipe=auto` (random
resized crop 0.35-1, flip, TrivialAugment) against `augment.recipe=none`: same epochs, seed,
strategy and learning rate. Each run is its own `warmstart train` process
(`quality.train_summary`); rows go to `bench/results/augment-runs.csv` as each run finishes,
and a row already there is reused, not rerun.

Sized for a 2-core CPU: the 32 px images are upsampled to 64 px (not the model's 224: a
run there takes hours here), and a stratified 1,000-image subset of the training split trains
for 6 epochs, a regime where the model can overfit and augmentation has something to fix.
"""

from __future__ import annotations

import sys
import time

from _common import DATA_ROOT, RESULTS
from quality import done_keys, run_parts, train_summary

RUNS_CSV = RESULTS / "augment-runs.csv"
FIELDS = ["key", "part", "strategy", "seed", "test_accuracy", "val_accuracy", "augment",
          "epochs", "best_epoch", "final_train_loss", "lr", "train_seconds", "wall_seconds",
          "load_before", "when"]
CIFAR = DATA_ROOT / "cifar10_small"
BASE = [f"data.name={CIFAR / 'train'}", f"data.test={CIFAR / 'test'}",
        "model.name=efficientnet-lite0", "model.image_size=64", "data.limit=1000",
        "train.batch_size=32"]
RECIPES = ["full:augment.recipe=none", "full:augment.recipe=auto"]
PARTS: dict[str, tuple[list[str], list[str]]] = {
    "cifar10-6ep": ([*BASE, "train.epochs=6"], RECIPES),
    "longer": ([*BASE, "train.epochs=12"], RECIPES),
}


def run_one(part: str, spec: str, seed: int) -> dict[str, str]:
    s, wall, load = train_summary(PARTS[part][0], spec, seed)
    return {"key": f"{part}|{spec}|{seed}", "part": part, "strategy": spec, "seed": str(seed),
            "test_accuracy": f"{s['test']['accuracy']:.4f}",
            "val_accuracy": f"{s['validation']['accuracy']:.4f}",
            "augment": s.get("augment", "?"), "epochs": str(s["epochs"]),
            "best_epoch": str(s["best_epoch"]),
            "final_train_loss": f"{s['final_epoch']['train_loss']:.4f}",
            "lr": f"{s['lr']['base']:g}", "train_seconds": f"{s['train_seconds']:.1f}",
            "wall_seconds": f"{wall:.1f}", "load_before": f"{load:.2f}",
            "when": time.strftime("%Y-%m-%d %H:%M")}


def table() -> str:
    lines = ["| part | run | test accuracy | val accuracy | best epoch | last train loss | "
             "train s | load before |", "|---|---|---|---|---|---|---|---|"]
    for r in done_keys(RUNS_CSV).values():
        lines.append(f"| {r['part']} | {r['strategy']} | {r['test_accuracy']} | "
                     f"{r['val_accuracy']} | {r['best_epoch']} of {r['epochs']} | "
                     f"{r['final_train_loss']} | {float(r['train_seconds']):.0f} | "
                     f"{r['load_before']} |")
    return "\n".join(lines)


def main() -> int:
    return run_parts(PARTS, RUNS_CSV, FIELDS, run_one, table,
                     lambda row: f"test {row['test_accuracy']}", __doc__.splitlines()[0],
                     default=["cifar10-6ep"])


if __name__ == "__main__":
    sys.exit(main())
