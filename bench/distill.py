"""Distillation into a layer-dropped minilm-l6 (issue #16's acceptance).

    python bench/distill.py                      # trec and banking77, 2,000 examples each
    python bench/distill.py --data trec --keep 0,2,4
    python bench/distill.py --data trec --student-epochs 6   # the student trains longer

Per data set: the teacher is minilm-l6 fine-tuned with `full` (3 epochs, defaults
otherwise); the student is a copy of it keeping 3 of its 6 blocks (`--student keep:1,3,5`:
every other block, ending at the top one the fine-tuned head reads), distilled at the
`distill.temperature` and `distill.alpha` defaults for the same 3 epochs. `warmstart distill`
itself measures both models side by side on the test split in this one process (same
examples, batch size and threads; best of 3 alternating passes), so the throughput ratio is
the command's own. Targets: the student keeps >= 97% of the teacher's test accuracy, at
>= 1.8x its throughput.

Run directories go to --out (default: a temp folder), reused when a teacher already finished
there; results are appended to bench/results/distill.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from _common import DATA_ROOT, RESULTS

DATASETS = ("trec", "banking77")
EPOCHS = 3
LIMIT = 2000


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run(data: str, keep: str, out: Path, student_epochs: int = EPOCHS) -> dict:
    """Teacher (reused if finished), then the distilled student; the student's `distill`
    summary entry with the loads and times added."""
    import warmstart
    from warmstart.summary import read_summary

    common = {"data.name": str(DATA_ROOT / data / "train.csv"),
              "data.test": str(DATA_ROOT / data / "test.csv"), "data.limit": LIMIT,
              "model.max_length": 64, "train.epochs": EPOCHS, "output.dir": str(out)}
    teacher = out / f"{data}-teacher"
    started, load_before = time.perf_counter(), load_average()
    if (teacher / "summary.json").is_file():
        teacher_summary = read_summary(teacher)
    else:
        teacher_summary = warmstart.train(model="minilm-l6", strategy="full",
                                          **{**common, "output.name": teacher.name}).summary
    taught = time.perf_counter()
    student = warmstart.distill(teacher, f"keep:{keep}", **{
        "output.name": f"{data}-student-{keep.replace(',', '')}-{student_epochs}ep",
        "output.overwrite": True, "train.epochs": student_epochs})
    report = student.summary.distill
    return {**report, "data": data, "limit": LIMIT, "epochs": EPOCHS,
            "student_epochs": student_epochs, "keep": keep,
            "teacher_train_seconds": teacher_summary.train_seconds,
            "student_train_seconds": student.summary.train_seconds,
            "teacher_seconds": taught - started,
            "student_seconds": time.perf_counter() - taught,
            "load_before": load_before, "load_after": load_average(),
            "when": time.strftime("%Y-%m-%d %H:%M")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=",".join(DATASETS))
    parser.add_argument("--keep", default="1,3,5", help="blocks the student keeps")
    parser.add_argument("--out", type=Path, default=None, help="folder for the run dirs")
    parser.add_argument("--student-epochs", type=int, default=EPOCHS,
                        help="the student's epochs (default: the teacher's)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.gettempdir()) / "warmstart-bench-distill"
    for data in args.data.split(","):
        row = run(data, args.keep, out, args.student_epochs)
        with (RESULTS / "distill.jsonl").open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        t, s = row["models"]["teacher"], row["models"]["student"]
        print(f"{data}: teacher acc {t['accuracy']:.4f}, student acc {s['accuracy']:.4f} "
              f"(ratio {row['quality_ratio']:.3f}), throughput {t['examples_per_second']:.1f}"
              f" -> {s['examples_per_second']:.1f} ex/s ({row['speedup']:.2f}x), params "
              f"{t['params']:,} -> {s['params']:,}; load {row['load_before']} -> "
              f"{row['load_after']}", flush=True)


if __name__ == "__main__":
    main()
