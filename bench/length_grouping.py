"""Does length-grouped batching change what full fine-tuning learns? Three seeds, both ways.

    python bench/length_grouping.py                   # TREC-2k, full, 3 epochs, seeds 0 1 2
    python bench/length_grouping.py --seeds 0 1 2 3 4 --data banking77

warmstart batches examples of similar length together (`train.group_by_length=true`, its
default) to cut padding. Batches are then less random than plain shuffling, so this checks
that the test accuracy stays within seed-to-seed noise: the same settings as the speed
benchmark (`vs_hf_trainer.py`), run with grouping on and off for each seed. Accuracy is what
is compared here, so the machine's load does not matter. Writes
`results/<date>-length-grouping.csv`.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import statistics
import sys
import tempfile
from pathlib import Path

from _common import RESULTS, Case, warmstart_overrides


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="trec", help="a folder of ../shared/data")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--limit", type=int, default=2000, help="training examples")
    args = p.parse_args(argv)

    from warmstart.config import load_config
    from warmstart.training.run import train

    rows = []
    for seed in args.seeds:
        case = Case(args.data, "full", args.epochs, limit=args.limit, seed=seed)
        for grouped in (True, False):
            with tempfile.TemporaryDirectory() as tmp:
                cfg = load_config(None, [*warmstart_overrides(case, Path(tmp)),
                                         f"train.group_by_length={str(grouped).lower()}"])
                summary = train(cfg, quiet=True)
            rows.append({"data": args.data, "seed": seed, "group_by_length": grouped,
                         "test_accuracy": summary.test["accuracy"],
                         "test_f1_macro": summary.test["f1_macro"],
                         "samples_per_second": summary.samples_per_second})
            print(f"seed {seed} group_by_length={grouped!s:5}: test accuracy "
                  f"{rows[-1]['test_accuracy']:.4f}, {rows[-1]['samples_per_second']:.1f} "
                  "samples/s", flush=True)
    for grouped in (True, False):
        accs = [r["test_accuracy"] for r in rows if r["group_by_length"] == grouped]
        spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"group_by_length={grouped!s:5}: mean {statistics.mean(accs):.4f}, "
              f"sd {spread:.4f} over seeds {args.seeds}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{dt.date.today().isoformat()}-length-grouping-{args.data}.csv"
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
