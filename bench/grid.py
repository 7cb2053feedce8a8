"""`warmstart auto` against an exhaustive grid on the same data (issue #15's acceptance).

    python bench/grid.py --data trec                 # the grid, then auto at 30% of its compute
    python bench/grid.py --data banking77 --lrs 1    # each strategy at its default lr only
    python bench/grid.py --data trec --table
    python bench/grid.py --data cifar10_small --limit 5000 --image-size 224   # on a GPU

The grid: {features, head, partial k=1,2,4, full, llrd, lora, lp-ft} x 3 learning rates
(each strategy's default for the model kind, and 1/3 and 3x of it), 3 epochs, one seed,
minilm-l6 at 64 tokens on 2,000 training examples of `../shared/data/<data>` (read by path),
each run its own `warmstart train` process (`quality.train_summary`). Its compute is the sum of
the runs' wall seconds; its answer is the test score of the run with the best validation
score. Then `warmstart auto --budget` gets `--share` (30%) of that compute on the same data,
and the result is its winner's test score, its wall time against its budget, and the gap to
the grid's answer (target: within 0.5 points, and within +5% of the budget). Rows go to
`bench/results/grid-<data>-<limit>.csv` as each run ends (a row already there is reused).
`cifar10_small` fine-tunes efficientnet-lite0 (lr defaults for images; batch 32) on its image
folders at `--image-size` px (64 by default: the 32 px originals upsampled).
Compare the two only when they ran under the same load: the load average is in each row.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import DATA_ROOT, RESULTS
from quality import append, done_keys, train_summary

STRATEGIES = ["features", "head", "partial:k=1", "partial:k=2", "partial:k=4", "full", "llrd",
              "lora", "lp-ft"]
FIELDS = ["key", "spec", "lr", "val", "test", "wall_seconds", "load_before", "when"]


IMAGES = "cifar10_small"  # image folders; every other data set is a text CSV pair


def base_of(data: str, limit: int, image_size: int = 64) -> list[str]:
    root = DATA_ROOT / data
    if data == IMAGES:  # efficientnet-lite0; 224 px is the model's own size (a GPU's work)
        return [f"data.name={root / 'train'}", f"data.test={root / 'test'}",
                f"data.limit={limit}", "model.name=efficientnet-lite0",
                f"model.image_size={image_size}", "train.batch_size=32", "train.epochs=3",
                "train.seed=0"]
    return [f"data.name={root / 'train.csv'}", f"data.test={root / 'test.csv'}",
            f"data.limit={limit}", "model.name=minilm-l6", "model.max_length=64",
            "train.epochs=3", "train.seed=0"]


def lrs_of(spec: str, count: int, kind: str = "text") -> list[float]:
    """The strategy's default lr for the kind of model (else the model's), then 1/3 and 3x."""
    from warmstart.models.efficientnet import LR as IMAGE_LR
    from warmstart.models.hf_text import TEXT_LR
    from warmstart.strategies import STRATEGY_DEFAULTS

    default = STRATEGY_DEFAULTS.get(spec.split(":")[0], {}).get(kind)
    model_lr = IMAGE_LR if kind == "image" else TEXT_LR
    lr = default.lr if default is not None and default.lr is not None else model_lr
    return [lr, lr / 3, lr * 3][:count]


def run_grid(data: str, limit: int, lr_count: int, csv_path: Path, image_size: int = 64
             ) -> list[dict[str, str]]:
    base = base_of(data, limit, image_size)
    done = done_keys(csv_path)
    rows = []
    for spec in STRATEGIES:
        for lr in lrs_of(spec, lr_count, "image" if data == IMAGES else "text"):
            key = f"{spec}|{lr:g}"
            if key not in done:
                s, wall, load = train_summary(base, f"{spec}:optim.lr={lr:g}", 0)
                done[key] = {"key": key, "spec": spec, "lr": f"{lr:g}",
                             "val": f"{s['validation'][s['metric']]:.4f}",
                             "test": f"{s['test'][s['metric']]:.4f}", "wall_seconds": f"{wall:.1f}",
                             "load_before": f"{load:.2f}", "when": time.strftime("%Y-%m-%d %H:%M")}
                append(done[key], csv_path, FIELDS)
                print(f"grid {key}: val {done[key]['val']} test {done[key]['test']} "
                      f"({wall:.0f} s, load {load:.1f})", flush=True)
            rows.append(done[key])
    return rows


def run_auto(data: str, limit: int, budget: float, image_size: int = 64,
             report: Path | None = None) -> dict[str, object]:
    """auto on the grid's data within `budget` seconds; its report.md is copied to `report`."""
    with tempfile.TemporaryDirectory() as tmp:
        load = os.getloadavg()[0]
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "warmstart", "auto",
                        *base_of(data, limit, image_size), f"output.dir={tmp}", "--budget",
                        f"{budget:.0f}s", "--name", "bench",
                        "--quiet"], check=True)
        wall = time.perf_counter() - started
        facts = json.loads((Path(tmp) / "auto-bench" / "auto.json").read_text(encoding="utf-8"))
        if report is not None:  # every trial's score, epochs and why it stopped
            report.write_text((Path(tmp) / "auto-bench" / "report.md").read_text(
                encoding="utf-8").replace(tmp, "<tmp>"), encoding="utf-8")
    winner = facts.get("winner") or {}
    return {"budget_seconds": round(budget, 1), "wall_seconds": round(wall, 1),
            "over_budget": round(wall / budget - 1, 4), "load_before": round(load, 2),
            "load_after": round(os.getloadavg()[0], 2), "winner": winner.get("what"),
            "val": winner.get("score"), "test": winner.get("test"), "plan": facts.get("plan"),
            "probe_logme": (facts.get("probe") or {}).get("logme"),
            "soup": facts.get("soup"), "final_soup": facts.get("final_soup"),
            "stopped": facts.get("stopped")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="trec", choices=["trec", "banking77", IMAGES])
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--image-size", type=int, default=64,
                        help=f"{IMAGES} only: the px the 32 px images are resized to")
    parser.add_argument("--lrs", type=int, default=3, choices=[1, 2, 3])
    parser.add_argument("--share", type=float, default=0.3)
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args()
    tag = f"-{args.image_size}px" if args.data == IMAGES else ""
    csv_path = RESULTS / f"grid-{args.data}-{args.limit}{tag}.csv"
    if args.table:
        for row in done_keys(csv_path).values():
            print(f"| {row['spec']} | {row['lr']} | {row['val']} | {row['test']} | "
                  f"{float(row['wall_seconds']):.0f} | {row['load_before']} |")
        return 0
    rows = run_grid(args.data, args.limit, args.lrs, csv_path, args.image_size)
    compute = sum(float(r["wall_seconds"]) for r in rows)
    best = max(rows, key=lambda r: float(r["val"]))
    print(f"grid: {len(rows)} runs, {compute:.0f} s; best by validation {best['key']}: "
          f"val {best['val']} test {best['test']}", flush=True)
    out = RESULTS / f"grid-{args.data}-{args.limit}{tag}-auto.json"
    result = run_auto(args.data, args.limit, args.share * compute, args.image_size,
                      out.with_name(out.stem + "-report.md"))
    result.update({"grid_runs": len(rows), "grid_seconds": round(compute, 1),
                   "grid_best": best["key"], "grid_best_val": float(best["val"]),
                   "grid_best_test": float(best["test"]),
                   "gap_points": round(100 * (float(best["test"]) - float(result["test"] or 0)),
                                       2), "when": time.strftime("%Y-%m-%d %H:%M")})
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
