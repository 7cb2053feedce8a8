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

import argparse
import sys
import time

from _common import DATA_ROOT, RESULTS
from quality import append, done_keys, spec_overrides, train_summary

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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", action="append", default=[], choices=sorted(PARTS))
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args()
    if args.list:
        for part, (_, specs) in PARTS.items():
            print(f"{part}: {', '.join(specs)}")
        return 0
    if args.table:
        print(table())
        return 0
    done = done_keys(RUNS_CSV)
    for part in args.part or ["cifar10-6ep"]:
        for spec in PARTS[part][1]:
            spec_overrides(spec)  # fail early on a malformed spec
            for seed in range(args.seeds):
                key = f"{part}|{spec}|{seed}"
                if key not in done:
                    row = run_one(part, spec, seed)
                    append(row, RUNS_CSV, FIELDS)
                    print(f"{key}: test {row['test_accuracy']} ({row['train_seconds']} s "
                          f"train, load {row['load_before']})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
