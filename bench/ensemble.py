"""Ensembles and soups of seeds against the best single seed (issue #16).

    python bench/ensemble.py                       # banking77-2k, head, 3 seeds (~10 min)
    python bench/ensemble.py --strategy lora:train.epochs=3 --seeds 3

`warmstart compare --seeds N` trains the strategy at N seeds on one split (banking77's
train.csv: 10 % held out for validation, a stratified 2,000-example subset of the rest for
training; its test.csv, 3,080 queries, for test) and adds the equal-weight ensemble of the
seeds as a row. Then the same runs are combined by `warmstart ensemble --weights greedy` and
`warmstart soup` (uniform and greedy). Every result is read from its `summary.json`; the
table compares each with the best single seed on test (the acceptance target: the ensemble
of 3 seeds beats it by >= 0.5 points) and with the seed that validation would pick.

Each step is its own `warmstart` process (the CLI, as a user runs it). Results go to
`bench/results/ensemble.json`; the load average is recorded before and after.
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

BANKING_2K = [f"data.name={DATA_ROOT / 'banking77' / 'train.csv'}",
              f"data.test={DATA_ROOT / 'banking77' / 'test.csv'}", "model.name=minilm-l6",
              "model.max_length=128", "data.limit=2000"]


def warmstart(*argv: str) -> float:
    """Run `warmstart ARGV...` in a fresh process; the seconds it took (fails loudly)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "warmstart", *argv], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"warmstart {' '.join(argv)} failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    return time.perf_counter() - started


def metrics(folder: Path) -> dict[str, float]:
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    return {"val": summary["validation"]["accuracy"], "test": summary["test"]["accuracy"],
            "train_s": summary["train_seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strategy", default="head", help="one compare spec (default: head)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--keep", help="folder to keep the runs in (default: a temp folder)")
    args = parser.parse_args()
    root = Path(args.keep or tempfile.mkdtemp(prefix="ws-ensemble-"))
    load_before = os.getloadavg()
    seconds = {"compare": warmstart("compare", *BANKING_2K, f"output.dir={root}",
                                    "--strategies", args.strategy, "--seeds", str(args.seeds),
                                    "--name", "bench", "--quiet")}
    out = root / "compare-bench"
    seeds = sorted(p for p in out.iterdir() if p.is_dir() and "-seed" in p.name
                   and (p / "summary.json").is_file())
    runs = [str(p) for p in seeds]
    seconds["ensemble_greedy"] = warmstart("ensemble", *runs, "--out", str(root / "greedy"),
                                           "--weights", "greedy")
    seconds["soup_uniform"] = warmstart("soup", *runs, "--out", str(root / "soup-uniform"),
                                        "--how", "uniform")
    seconds["soup_greedy"] = warmstart("soup", *runs, "--out", str(root / "soup-greedy"))
    load_after = os.getloadavg()

    rows = {p.name: metrics(p) for p in seeds}
    equal = next(p for p in out.iterdir() if p.name.startswith("ensemble-"))
    combos = {"ensemble (equal)": metrics(equal), "ensemble (greedy)": metrics(root / "greedy"),
              "soup (uniform)": metrics(root / "soup-uniform"),
              "soup (greedy)": metrics(root / "soup-greedy")}
    best_test = max(r["test"] for r in rows.values())
    by_val = max(rows.values(), key=lambda r: r["val"])["test"]
    greedy = json.loads((root / "greedy" / "ensemble.json").read_text(encoding="utf-8"))
    result = {"when": time.strftime("%Y-%m-%d %H:%M"), "strategy": args.strategy,
              "seeds": rows, "combined": combos, "best_single_test": best_test,
              "validation_pick_test": by_val, "greedy_weights": {
                  Path(m["run"]).name: m["weight"] for m in greedy["members"]},
              "greedy_selection": greedy["selection"], "seconds": seconds,
              "load_before": load_before, "load_after": load_after, "folder": str(root)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ensemble.json").write_text(json.dumps(result, indent=2) + "\n",
                                           encoding="utf-8")
    print(f"| {args.strategy} on banking77-2k | val acc | test acc | vs best seed |")
    print("|---|---:|---:|---:|")
    for name, r in {**rows, **combos}.items():
        print(f"| {name} | {r['val']:.4f} | {r['test']:.4f} | "
              f"{100 * (r['test'] - best_test):+.2f} pts |")
    print(f"load average before {load_before}, after {load_after}; seconds {seconds}")


if __name__ == "__main__":
    main()
