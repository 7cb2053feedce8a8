"""`warmstart search` with and without pruning on TREC-2k (issue #15's acceptance).

    python bench/search.py                      # both searches, 20 trials each
    python bench/search.py --trials 6 --pruners median   # a shorter look

Each search is one `warmstart search` process over the same space (strategy partial k 1-4,
lora or full, each with its own lr range; 3 epochs; minilm-l6 at 64 tokens, 2,000 training
examples of `../shared/data/trec` read by path), the same seed, so TPE proposes the same
first values; the pruned one stops trials whose per-epoch validation accuracy falls below
the median. Recorded per search: wall time, the 1-minute load average before and after
(`os.getloadavg`: this machine is shared), trials pruned, the best validation accuracy, the
best run's test accuracy, and whether `warmstart predict` works on the best run at once.
Rows go to `bench/results/search-trec.csv`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from _common import DATA_ROOT, RESULTS

TREC = DATA_ROOT / "trec"
SPACE = """\
# python bench/search.py (written by it)
strategy.name:
  partial:
    strategy.k: {int: [1, 4]}
    optim.lr: {log: [3.0e-5, 3.0e-3]}
  lora:
    optim.lr: {log: [3.0e-4, 1.0e-2]}
  full:
    optim.lr: {log: [1.0e-5, 3.0e-4]}
"""
BASE = ["model.name=minilm-l6", "model.max_length=64", f"data.name={TREC / 'train.csv'}",
        f"data.test={TREC / 'test.csv'}", "data.limit=2000", "train.epochs=3",
        "train.batch_size=32", "train.seed=0"]
FIELDS = ["pruner", "trials", "pruned", "wall_seconds", "load_before", "load_after",
          "best_validation", "best_test", "best_run", "predict_ok", "when"]


def run_search(pruner: str, trials: int, out: Path) -> dict[str, object]:
    space = out / "space.yaml"
    space.parent.mkdir(parents=True, exist_ok=True)
    space.write_text(SPACE, encoding="utf-8")
    name = f"trec-{pruner}-{trials}"
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "warmstart", "search", *BASE, f"output.dir={out}",
                    "--space", str(space), "--trials", str(trials), "--pruner", pruner,
                    "--name", name, "--quiet"], check=True)
    wall = time.perf_counter() - started
    result = json.loads((out / f"search-{name}" / "search.json").read_text(encoding="utf-8"))
    best = result["best"]
    summary = json.loads((Path(best) / "summary.json").read_text(encoding="utf-8"))
    predict = subprocess.run([sys.executable, "-m", "warmstart", "predict", best, "--text",
                              "How far is the moon from the earth ?"], capture_output=True)
    return {"pruner": pruner, "trials": len(result["trials"]),
            "pruned": sum(t["outcome"] == "pruned" for t in result["trials"]),
            "wall_seconds": round(wall, 1), "load_before": load_before,
            "load_after": os.getloadavg()[0], "best_validation": result["score"],
            "best_test": summary["test"].get("accuracy"), "best_run": best,
            "predict_ok": predict.returncode == 0, "when": datetime.now().isoformat(" ", "minutes")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--pruners", default="median,none")
    parser.add_argument("--out", default=str(Path("runs") / "bench-search"))
    args = parser.parse_args()
    path = RESULTS / "search-trec.csv"
    for pruner in args.pruners.split(","):
        row = run_search(pruner, args.trials, Path(args.out).resolve())
        new = not path.exists()
        with path.open("a", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, FIELDS)
            if new:
                writer.writeheader()
            writer.writerow(row)
        print(json.dumps(row))


if __name__ == "__main__":
    main()
