"""Fault benchmark: runs SIGKILLed at random moments, then resumed, must end exactly as an
uninterrupted run; a full disk during a checkpoint write must leave the previous one usable.

```bash
python bench/faults.py                 # 30 killed runs + the full-disk case (~15 min, 2 cores)
python bench/faults.py --runs 5        # a smoke run
```

Every run is `warmstart train` on a tiny transformer (`model.name=tiny-bert`, random weights)
over a small 3-class CSV this script writes, with a checkpoint every 3 steps. One
uninterrupted reference run is timed first (when its run directory appears, when its last
epoch is logged, when it exits); each faulty run is then SIGKILLed in one of three ways,
all from one seeded RNG:

- `anytime`: at a moment drawn over the run's own progress (start-up and steps slow down by
  seconds under load, so not by the clock): 10 % during setup, 80 % a random time after
  optimizer step k (k uniform over the run's steps), 10 % as `final`;
- `checkpoint`: the moment the k-th checkpoint's temporary folder appears (k random), i.e.
  while a checkpoint is being written;
- `final`: a random delay after the last epoch is logged, up to half of what the reference
  took from there to its exit (the final evaluation on validation/test/train sample, the
  model and card being written).

Each kill is classed by what the run left behind (`phase`): setup (no config yet), training,
checkpoint write (a half-written `.step-*.tmp` folder), final evaluation (every epoch logged,
no summary), model save (a half-written `.model.*.tmp`), after summary. Runs that finish
before their kill fires are checked too but do not count towards `--runs`.

It is then resumed with `warmstart train --resume RUN` (or, when it died before writing its
config, the first command again); a resume is itself killed with probability 0.3, at a
uniform delay, at most 3 times, and then resumed to the end. The run must end with the
reference's saved weights (every tensor of `model/model.safetensors` within 1e-6; exact
equality is counted too), the same summary metrics (validation, test, train sample,
history, best epoch, steps) and the same `metrics.jsonl` apart from its timing fields.

Full disk: a subprocess runs the same training with the checkpoint writer patched to write
half a file and raise `OSError(ENOSPC)` at the 3rd checkpoint. The run must fail in one
line, the latest checkpoint must be the 2nd (loadable), and `--resume` must end exactly as
the reference. Results: printed, and `bench/results/faults.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
SRC = Path(__file__).resolve().parents[1] / "src"
TOLERANCE = 1e-6
TIMING = {"samples_per_s", "seconds", "train_seconds", "cache_seconds", "wall_seconds",
          "samples_per_second", "peak_memory_mb"}

WORDS = {
    "sport": "match goal team player score league coach win season cup",
    "tech": "software chip computer phone internet data code device app cloud",
    "food": "bread cheese soup recipe kitchen bake salad flavour dinner spice",
}


def write_data(path: Path, per_class: int = 40) -> Path:
    rng = random.Random(0)
    rows = [(" ".join(rng.choices(words.split(), k=rng.randint(4, 12))), label)
            for label, words in WORDS.items() for _ in range(per_class)]
    rng.shuffle(rows)
    path.write_text("text,label\n" + "".join(f'"{t}",{y}\n' for t, y in rows), encoding="utf-8")
    return path


def train_args(data: Path, runs: Path, name: str) -> list[str]:
    return ["train", "--quiet", "model.name=tiny-bert", f"data.name={data}", "train.epochs=4",
            "train.batch_size=8", "optim.lr=1e-2", "optim.warmup_ratio=0.1", "log.every=1",
            "checkpoint.every_steps=3", "checkpoint.keep_last=2",
            f"output.dir={runs}", f"output.name={name}"]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    # stderr to a file: a pipe nobody reads while we poll could fill and stall the run
    with (cwd / "stderr.txt").open("w") as err:
        return subprocess.Popen([sys.executable, "-m", "warmstart", *args], cwd=cwd, env=env(),
                                stdout=subprocess.DEVNULL, stderr=err)


def last_error(cwd: Path) -> str:
    lines = (cwd / "stderr.txt").read_text(errors="replace").strip().splitlines()
    return lines[-1] if lines else ""


def logged(run: Path, kind: str) -> int:
    """How many rows of `kind` ("step", "epoch") the run's metrics.jsonl holds."""
    try:
        return (run / "metrics.jsonl").read_text(encoding="utf-8").count(f'"kind": "{kind}"')
    except OSError:
        return 0


def epochs_logged(run: Path) -> int:
    return logged(run, "epoch")


def steps_logged(run: Path) -> int:
    return logged(run, "step")


def checkpoint_tmps(run: Path) -> set[str]:
    folder = run / "checkpoints"
    try:
        return {p.name for p in folder.iterdir() if p.name.startswith(".step-")}
    except OSError:
        return set()


class Timeline:
    """When the reference run's directory appeared, its last epoch was logged, it exited."""

    def __init__(self, made: float, last_epoch: float, end: float, epochs: int,
                 steps: int) -> None:
        self.made, self.last_epoch, self.end, self.epochs = made, last_epoch, end, epochs
        self.steps = steps  # optimizer steps in all (one metrics.jsonl row each)
        self.step = (last_epoch - made) / max(1, steps)  # seconds a step took, about


def reference(data: Path, runs: Path, cwd: Path) -> Timeline:
    run = runs / "reference"
    t0 = time.perf_counter()
    proc = start(train_args(data, runs, "reference"), cwd)
    made = last = None
    while proc.poll() is None:
        now = time.perf_counter() - t0
        if made is None and (run / "config.yaml").exists():
            made = now
        if last is None and epochs_logged(run) == 4:
            last = now
        time.sleep(0.005)
    end = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"reference run failed: {last_error(cwd)}")
    return Timeline(made or 0.0, last or end, end, 4, steps_logged(run))


def kill_when(proc: subprocess.Popen, run: Path, mode: str, rng: random.Random,
              ref: Timeline) -> tuple[bool, str]:
    """Run `proc` until the fault fires (SIGKILL) or it exits; (killed, what happened)."""
    t0 = time.perf_counter()
    if mode == "anytime":
        # Start-up and steps slow down by seconds under load, so the moment is drawn over
        # the run's own progress, not the clock: 10 % in setup (a delay up to the reference's
        # run directory), 80 % after optimizer step k of the whole run (plus up to a step's
        # time), 10 % after the last epoch (as `final`).
        u = rng.random()
        if u < 0.1:
            delay = rng.uniform(0.3, 1.0) * ref.made
            fire = lambda: time.perf_counter() - t0 >= delay  # noqa: E731
            what = f"anytime setup {delay:.2f}s"
        elif u < 0.9:
            k, extra = max(1, round((u - 0.1) / 0.8 * ref.steps)), rng.uniform(0.0, ref.step)
            reached: list[float] = []

            def fire() -> bool:
                if not reached and steps_logged(run) >= k:
                    reached.append(time.perf_counter())
                return bool(reached) and time.perf_counter() - reached[0] >= extra
            what = f"anytime step {k} +{extra:.2f}s"
        else:
            return kill_when(proc, run, "final", rng, ref)
    elif mode == "checkpoint":
        k, seen = rng.randint(1, 14), set()

        def fire() -> bool:
            seen.update(checkpoint_tmps(run))
            return len(seen) >= k
        what = f"during checkpoint #{k}"
    else:  # final: the first half of what follows the last epoch (the rest is exiting)
        extra = rng.uniform(0.0, max(0.05, 0.5 * (ref.end - ref.last_epoch)))
        logged_at: list[float] = []

        def fire() -> bool:
            if not logged_at and epochs_logged(run) >= ref.epochs:
                logged_at.append(time.perf_counter())
            return bool(logged_at) and time.perf_counter() - logged_at[0] >= extra
        what = f"final +{extra:.2f}s"
    while proc.poll() is None:
        if fire():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True, f"{what} [{phase(run)}]"
        time.sleep(0.001)
    return False, what


PHASES = ("setup", "training", "checkpoint write", "final evaluation", "model save",
          "after summary")


def phase(run: Path) -> str:
    """Where a killed run was, read from what it left: a half-written checkpoint or model
    folder (`.step-*.tmp`, `.model.*.tmp`) means it died writing one."""
    if (run / "summary.json").is_file():
        return "after summary"
    if not (run / "config.yaml").is_file():
        return "setup"
    if any(p.name.startswith(".model.") for p in run.iterdir()):
        return "model save"
    if checkpoint_tmps(run):
        return "checkpoint write"
    return "final evaluation" if epochs_logged(run) >= 4 else "training"


def compare(run: Path, ref: Path) -> list[str]:
    """What differs between a finished run and the reference ('' entries none)."""
    from safetensors.numpy import load_file

    if not (run / "summary.json").is_file():
        return ["no summary.json"]
    problems = []
    mine, theirs = (load_file(str(p / "model" / "model.safetensors")) for p in (run, ref))
    if set(mine) != set(theirs):
        problems.append("weight names differ")
    for key in sorted(set(mine) & set(theirs)):
        diff = float(abs(mine[key].astype("float64") - theirs[key].astype("float64")).max()) \
            if mine[key].size else 0.0
        if mine[key].shape != theirs[key].shape or diff > TOLERANCE:
            problems.append(f"weight {key} differs by {diff:.3g}")
            break
    a, b = (json.loads((p / "summary.json").read_text()) for p in (run, ref))
    for key in ("validation", "test", "train", "history", "best_epoch", "steps", "epochs"):
        if _strip(a[key]) != _strip(b[key]):
            problems.append(f"summary {key} differs")
    rows = [[_strip(json.loads(x)) for x in (p / "metrics.jsonl").read_text().splitlines()]
            for p in (run, ref)]
    if rows[0] != rows[1]:
        problems.append(f"metrics.jsonl differs ({len(rows[0])} vs {len(rows[1])} rows)")
    return problems


def exact(run: Path, ref: Path) -> bool:
    return (run / "model" / "model.safetensors").read_bytes() == \
        (ref / "model" / "model.safetensors").read_bytes()


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def faulty_run(i: int, mode: str, rng: random.Random, data: Path, runs: Path, cwd: Path,
               ref: Timeline) -> dict[str, Any]:
    name = f"run-{i:02d}"
    run = runs / name
    kills, resumes, events, errors = 0, 0, [], []
    proc = start(train_args(data, runs, name), cwd)
    killed, what = kill_when(proc, run, mode, rng, ref)
    events.append(what if killed else f"{what}: finished first")
    kills += killed
    while not (run / "summary.json").is_file():
        if (run / "config.yaml").is_file():
            args, resumes = ["train", "--quiet", "--resume", str(run)], resumes + 1
        else:  # died before writing its config: the user runs the same command again
            args = train_args(data, runs, name)
        proc = start(args, cwd)
        if kills < 4 and rng.random() < 0.3:
            killed, what = kill_when(proc, run, "anytime", rng, ref)
            kills += killed
            events.append(("resume " if args[2] == "--resume" else "rerun ") + what)
            if killed:
                continue
        proc.wait()
        if proc.returncode != 0:
            errors.append(last_error(cwd))
            break
    problems = compare(run, runs / "reference") if not errors else [f"failed: {errors}"]
    out = {"run": name, "mode": mode, "kills": kills, "resumes": resumes, "events": events,
           "match": not problems, "exact": not problems and exact(run, runs / "reference"),
           "problems": problems}
    shutil.rmtree(run, ignore_errors=True)
    return out


FULL_DISK = r"""
import errno, sys
import warmstart.training.checkpoint as ck
from warmstart.cli import main
calls = [0]
real = ck.save_file
def full(tensors, path, *a, **k):
    calls[0] += 1
    if calls[0] == 3:  # the 3rd checkpoint: half a file, then the disk is full
        with open(path, "wb") as f:
            f.write(b"\0" * 1024)
        raise OSError(errno.ENOSPC, "No space left on device", path)
    return real(tensors, path, *a, **k)
ck.save_file = full
sys.exit(main(sys.argv[1:]))
"""


def full_disk(data: Path, runs: Path, cwd: Path) -> dict[str, Any]:
    """The 3rd checkpoint write fails with ENOSPC; the 2nd must stay usable and resume."""
    run = runs / "full-disk"
    proc = subprocess.run([sys.executable, "-c", FULL_DISK, *train_args(data, runs, "full-disk")],
                          cwd=cwd, env=env(), capture_output=True, text=True)
    err = proc.stderr.strip().splitlines()
    checkpoints = sorted(p.name for p in (run / "checkpoints").glob("step-*"))
    resumed = subprocess.run([sys.executable, "-m", "warmstart", "train", "--quiet",
                              "--resume", str(run)], cwd=cwd, env=env(), capture_output=True,
                             text=True)
    problems = compare(run, runs / "reference") if resumed.returncode == 0 else \
        [f"resume failed: {resumed.stderr.strip().splitlines()[-1:]}"]
    return {"exit_status": proc.returncode, "message": err[-1] if err else "",
            "one_line": len(err) == 1, "checkpoints_left": checkpoints,
            "resume_exit_status": resumed.returncode, "match": not problems,
            "problems": problems}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="runs killed at least once")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="warmstart-faults-") as tmp:
        cwd = Path(tmp)
        data, runs = write_data(cwd / "toy.csv"), cwd / "runs"
        ref = reference(data, runs, cwd)
        print(f"reference: run dir at {ref.made:.1f}s, last epoch at {ref.last_epoch:.1f}s, "
              f"exit at {ref.end:.1f}s", flush=True)
        modes = ["anytime", "anytime", "checkpoint", "final", "anytime"]
        results: list[dict[str, Any]] = []
        i = 0
        while sum(r["kills"] > 0 for r in results) < args.runs:  # runs that finish before
            r = faulty_run(i, modes[i % len(modes)], rng, data, runs, cwd, ref)  # their kill
            i += 1  # are checked too, but do not count towards --runs
            results.append(r)
            print(f"{r['run']} {r['mode']:10s} kills {r['kills']} resumes {r['resumes']} "
                  f"{'ok' if r['match'] else 'MISMATCH ' + '; '.join(r['problems'])} "
                  f"| {', '.join(r['events'])}", flush=True)
        disk = full_disk(data, runs, cwd)
        print(f"full disk: exit {disk['exit_status']} ({disk['message']!r}), checkpoints "
              f"left {disk['checkpoints_left']}, resume exit {disk['resume_exit_status']}, "
              f"{'ok' if disk['match'] else 'MISMATCH ' + '; '.join(disk['problems'])}")
    load = os.getloadavg()
    events = [e for r in results for e in r["events"]]
    phases = {p: sum(e.endswith(f"[{p}]") for e in events) for p in PHASES}
    print("kills by phase: " + ", ".join(f"{p} {n}" for p, n in phases.items()))
    counts = {"runs": len(results), "kills": sum(r["kills"] for r in results),
              "killed_runs": sum(r["kills"] > 0 for r in results),
              "resumes": sum(r["resumes"] for r in results),
              "mismatches": sum(not r["match"] for r in results),
              "exact_weights": sum(r["exact"] for r in results)}
    print(" | ".join(f"{k} {v}" for k, v in counts.items())
          + f" | load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
          f"| {time.time() - started:.0f}s")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "faults.json").write_text(json.dumps({
        **counts, "kills_by_phase": phases, "seed": args.seed, "load_average": load,
        "tolerance": TOLERANCE,
        "reference_seconds": {"run_dir": ref.made, "last_epoch": ref.last_epoch,
                              "exit": ref.end},
        "full_disk": disk, "per_run": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
