"""Quality of every strategy at its defaults, against published numbers (issue #12).

    python bench/quality.py --part trec-cheap          # one part (see PARTS)
    python bench/quality.py --part sweep-text --seeds 1
    python bench/quality.py --list

Each run is its own `warmstart train` process at the strategy's defaults (nothing but the
data, model, strategy and seed is set, unless a part says so: the sweeps set the lr), so the
table measures what a user gets out of the box. Rows are appended to
`bench/results/quality-runs.csv` as each run finishes (a killed benchmark keeps what it
measured; an existing row with the same key is reused, not rerun); `--table` prints mean +-
sd over seeds per case, for bench/README.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from _common import DATA_ROOT, RESULTS

RUNS_CSV = RESULTS / "quality-runs.csv"
FIELDS = ["key", "part", "data", "model", "strategy", "overrides", "seed", "test_accuracy",
          "val_accuracy", "f1_macro", "trainable", "total", "epochs", "lr", "train_seconds",
          "wall_seconds", "load_before", "when"]

TREC = [f"data.name={DATA_ROOT / 'trec' / 'train.csv'}",
        f"data.test={DATA_ROOT / 'trec' / 'test.csv'}", "model.name=minilm-l6",
        "model.max_length=128"]
BANKING = [f"data.name={DATA_ROOT / 'banking77' / 'train.csv'}",
           f"data.test={DATA_ROOT / 'banking77' / 'test.csv'}", "model.name=minilm-l6",
           "model.max_length=128"]
TREC_2K = [*TREC, "data.limit=2000", "model.max_length=64"]  # sweeps: cheap, same ranking
CIFAR = [f"data.name={DATA_ROOT / 'cifar10_small' / 'train'}",
         f"data.test={DATA_ROOT / 'cifar10_small' / 'test'}", "model.name=efficientnet-lite0"]
MNIST = ["data.name=mnist-5k", "model.name=efficientnet-lite0"]
DIGITS = ["data.name=digits", "model.name=efficientnet-lite0", "model.image_size=64"]

CHEAP = ["features", "features:classifier=sklearn", "head"]
# 3 epochs, as the published and anchor numbers for full fine-tuning (the default is 2).
EXPENSIVE = ["full:train.epochs=3", "lora:train.epochs=3", "partial:train.epochs=3"]

# part -> (base overrides, strategy specs `name[:key=value]...`)
PARTS: dict[str, tuple[list[str], list[str]]] = {
    "trec-cheap": (TREC, CHEAP),
    "trec-expensive": (TREC, EXPENSIVE),
    "banking77-cheap": (BANKING, CHEAP),
    "banking77-expensive": (BANKING, EXPENSIVE),
    "cifar10-cheap": (CIFAR, CHEAP),
    "cifar10-expensive": (CIFAR, ["full", "lora", "partial"]),
    "mnist-cheap": (MNIST, CHEAP),
    "mnist-expensive": (MNIST, ["full", "lora", "partial"]),
    # Learning-rate sweeps behind each strategy's declared defaults.
    # Learning-rate sweeps behind each strategy's declared defaults: the head (cached, cheap)
    # for 10 epochs, the rest for 3.
    "sweep-text": (TREC_2K, [f"{s}:optim.lr={lr}:train.epochs={ep}" for s, ep, lrs in (
        ("head", 10, ["1e-3", "3e-3", "1e-2", "3e-2"]), ("lora", 3, ["3e-4", "1e-3", "3e-3"]),
        ("partial", 3, ["5e-5", "1e-4", "3e-4"]), ("bitfit", 3, ["3e-4", "1e-3", "3e-3"]),
    ) for lr in lrs]),
    # partial on the full TREC training set, around its default (k=2, 3e-4, 3 epochs).
    "trec-partial": (TREC, ["partial:train.epochs=3:optim.lr=1e-4",
                            "partial:train.epochs=5", "partial:train.epochs=3:k=3"]),
    # Full fine-tuning on banking77 (77 classes) read through BERT's pooler instead.
    "banking77-pooler": (BANKING, ["full:train.epochs=3:model.pooling=pooler"]),
    # Past the edge of sweep-text where its best value sat at the top of the range.
    "sweep-text-edge": (TREC_2K, [f"{s}:optim.lr={lr}:train.epochs=3" for s, lrs in (
        ("lora", ["1e-2"]), ("partial", ["1e-3"]), ("full", ["5e-5", "1e-4"]),
    ) for lr in lrs]),
    # The new head's own lr (optim.head_lr) in the strategies that train the backbone too,
    # where banking77's 77 classes left full/lora/partial under-trained at one shared lr.
    "sweep-head-lr": (BANKING, [f"{s}:train.epochs=3:optim.head_lr={lr}" for s, lrs in (
        ("full", ["1e-3", "3e-3", "1e-2"]), ("partial", ["3e-3"]),
    ) for lr in lrs]),
    # A larger base lr for full fine-tuning on banking77 instead (after head_lr 1e-3 lost).
    "banking77-full-lr": (BANKING, ["full:train.epochs=3:optim.lr=1e-4"]),
    "sweep-image": (DIGITS, [f"{s}:optim.lr={lr}:train.epochs={ep}" for s, ep, lrs in (
        ("head", 10, ["1e-3", "1e-2", "3e-2"]), ("lora", 3, ["1e-3", "3e-3"]),
        ("bitfit", 3, ["1e-3", "1e-2"]), ("norm", 3, ["1e-3", "1e-2"]),
        ("full", 3, ["3e-4", "1e-3"]),
    ) for lr in lrs]),
}


def spec_overrides(spec: str) -> tuple[str, list[str]]:
    """`lora:optim.lr=1e-3:r=4` -> ("lora", ["optim.lr=1e-3", "strategy.r=4"])."""
    name, *options = spec.split(":")
    out = []
    for option in options:
        key, _, value = option.partition("=")
        out.append(f"{key if '.' in key else 'strategy.' + key}={value}")
    return name, out


def done_keys(path: Path = RUNS_CSV) -> dict[str, dict[str, str]]:
    """The rows already measured in `path`, by key."""
    if not path.is_file():
        return {}
    with path.open(encoding="utf-8") as f:
        return {row["key"]: row for row in csv.DictReader(f)}


def train_summary(base: list[str], spec: str, seed: int) -> tuple[dict, float, float]:
    """Run `warmstart train` on `base` with strategy `spec` and `seed` in its own process;
    return its summary.json, the wall seconds and the 1-minute load average before it."""
    name, extra = spec_overrides(spec)
    with tempfile.TemporaryDirectory() as tmp:
        argv = [sys.executable, "-m", "warmstart", "train", "--quiet", *base,
                f"strategy.name={name}", *extra, f"train.seed={seed}", f"output.dir={tmp}",
                "output.name=run", "output.save_model=false"]
        load = os.getloadavg()[0]
        started = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"{spec} seed {seed} failed: {done.stderr.strip()[-500:]}")
        s = json.loads((Path(tmp) / "run" / "summary.json").read_text(encoding="utf-8"))
    return s, wall, load


def run_one(part: str, base: list[str], spec: str, seed: int) -> dict[str, str]:
    s, wall, load = train_summary(base, spec, seed)
    data = next(o for o in base if o.startswith("data.name=")).split("=", 1)[1]
    model = next(o for o in base if o.startswith("model.name=")).split("=", 1)[1]
    return {"key": f"{part}|{spec}|{seed}", "part": part, "data": Path(data).stem
            if Path(data).suffix else Path(data).name, "model": model, "strategy": spec,
            "overrides": " ".join(base[2:] if part.startswith(("trec", "banking")) else base),
            "seed": str(seed), "test_accuracy": f"{s['test'].get('accuracy', float('nan')):.4f}",
            "val_accuracy": f"{s['validation']['accuracy']:.4f}",
            "f1_macro": f"{s['test'].get('f1_macro', float('nan')):.4f}",
            "trainable": str(s["params"]["trainable"]), "total": str(s["params"]["total"]),
            "epochs": str(s["epochs"]), "lr": f"{s['lr']['base']:g}",
            "train_seconds": f"{s['train_seconds']:.1f}", "wall_seconds": f"{wall:.1f}",
            "load_before": f"{load:.2f}", "when": time.strftime("%Y-%m-%d %H:%M")}


def append(row: dict[str, str], path: Path = RUNS_CSV, fields: list[str] = FIELDS) -> None:
    """Add one measured row to `path` (with a header when the file is new)."""
    RESULTS.mkdir(exist_ok=True)
    new = not path.is_file()
    with path.open("a", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        if new:
            writer.writeheader()
        writer.writerow(row)


def run_parts(parts: dict[str, tuple[list[str], list[str]]], runs_csv: Path,
               fields: list[str], run_one: Callable[[str, str, int], dict[str, str]],
               table: Callable[[], str], shown: Callable[[dict[str, str]], str],
               description: str, default: Sequence[str] = ()) -> int:
    """The command line of a parts benchmark (`--part`, `--seeds`, `--list`, `--table`):
    every (part, spec, seed) not yet in `runs_csv` is run by `run_one` and appended as it
    ends; `shown(row)` is what its progress line says."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--part", action="append", default=[], choices=sorted(parts))
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args()
    if args.list:
        for part, (_, specs) in parts.items():
            print(f"{part}: {', '.join(specs)}")
        return 0
    if args.table:
        print(table())
        return 0
    done = done_keys(runs_csv)
    for part in args.part or list(default):
        for spec in parts[part][1]:
            spec_overrides(spec)  # fail early on a malformed spec
            for seed in range(args.seeds):
                key = f"{part}|{spec}|{seed}"
                if key not in done:
                    row = run_one(part, spec, seed)
                    append(row, runs_csv, fields)
                    print(f"{key}: {shown(row)} ({row['train_seconds']} s train, "
                          f"load {row['load_before']})", flush=True)
    return 0


def table() -> str:
    """Mean +- sd of test accuracy over seeds, per part and strategy (markdown)."""
    groups: dict[tuple[str, str], list[dict[str, str]]] = {}
    for row in done_keys().values():
        groups.setdefault((row["part"], row["strategy"]), []).append(row)
    lines = ["| part | strategy | seeds | test accuracy | trainable params | train s | lr | "
             "epochs |", "|---|---|---|---|---|---|---|---|"]
    for (part, spec), rows in groups.items():
        acc = [float(r["test_accuracy"]) for r in rows]
        sd = f" +- {statistics.stdev(acc):.3f}" if len(acc) > 1 else ""
        secs = statistics.mean(float(r["train_seconds"]) for r in rows)
        lines.append(f"| {part} | {spec} | {len(rows)} | {statistics.mean(acc):.3f}{sd} | "
                     f"{int(rows[0]['trainable']):,} | {secs:.0f} | {rows[0]['lr']} | "
                     f"{rows[0]['epochs']} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", action="append", default=[], choices=sorted(PARTS))
    parser.add_argument("--seeds", type=int, default=3, help="seeds per cheap case")
    parser.add_argument("--expensive-seeds", type=int, default=1)
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
    done = done_keys()
    for part in args.part:
        base, specs = PARTS[part]
        seeds = args.expensive_seeds if part.endswith("expensive") else args.seeds
        for spec in specs:
            for seed in range(seeds):
                key = f"{part}|{spec}|{seed}"
                if key in done:
                    continue
                row = run_one(part, base, spec, seed)
                append(row)
                print(f"{key}: test {row['test_accuracy']} ({row['train_seconds']} s train, "
                      f"load {row['load_before']})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
