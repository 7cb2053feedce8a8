"""`warmstart search`: the space file's bad inputs, and real searches on tiny-bert (a search
killed after its first trial and resumed; pruning of a diverging learning rate; the budget)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_rows, write_csv

from warmstart.choose.space import parse_space, sample
from warmstart.cli import main
from warmstart.summary import read_summary

pytest.importorskip("optuna")

TINY = ["model.name=tiny-bert", "train.batch_size=8"]


def _space(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("text, expected", [
    ("optim.lrr: {log: [1.0e-5, 1.0e-3]}", "unknown config key 'optim.lrr' (did you mean "
                                           "'optim.lr'"),
    ("optim.lr: {log: [1.0e-3, 1.0e-5]}", "is empty: low must be < high"),
    ("strategy.k: {int: [4, 1]}", "is empty: low must be <= high"),
    ("optim.lr: {log: [0, 1.0e-3]}", "a log range needs low > 0"),
    ("optim.lr: {logg: [1.0e-5, 1.0e-3]}", "not a distribution (did you mean 'log'"),
    ("optim.lr: {categorical: []}", "needs a non-empty list"),
    ("optim.lr: {uniform: [a, b]}", "needs [low, high], two numbers"),
    ("optim.lr: 3", "needs a distribution"),
    ("data.limit: {int: [10, 20]}", "data.limit cannot be searched"),
    ("optim.lr: {uniform: [-1.0, 1.0]}", "optim.lr"),  # the config refuses lr <= 0
    ("strategy.name: {full: {}, partial: {strategy.kk: {int: [1, 2]}}}",
     "(strategy.name=partial)"),
    ("strategy.name: {full: {}}\nstrategy.k: {int: [1, 2]}", "(strategy.name=full)"),
    ("strategy.name: {fulll: {}}", "did you mean 'full'"),
    ("- optim.lr", "must map config keys to distributions"),
])
def test_bad_space_is_one_line(tmp_path, capsys, text, expected):
    space = _space(tmp_path, text)
    code = main(["search", *TINY, f"output.dir={tmp_path / 'runs'}", "--space", str(space),
                 "--trials", "2"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("warmstart: error: ") and "\n" not in err, err
    assert expected in err and "space.yaml" in err
    assert not (tmp_path / "runs").exists()  # refused before anything was written


@pytest.mark.parametrize("args, expected", [
    (["--sampler", "grid"], "--sampler grid needs int or categorical ranges"),
    (["--budget", "soon"], "--budget 'soon'"),
    ([], "say how long to search"),
    (["--trials", "2", "--resume"], "holds no search to continue"),
])
def test_bad_search_options(tmp_path, capsys, args, expected):
    space = _space(tmp_path, "optim.lr: {log: [1.0e-4, 1.0e-2]}")
    code = main(["search", *TINY, f"output.dir={tmp_path / 'runs'}", "--space", str(space),
                 *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and expected in err, err


def test_missing_optuna_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna -> ImportError
    code = main(["search", "--space", str(_space(tmp_path, "optim.lr: {log: [1, 2]}")),
                 "--trials", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "pip install 'warmstart[search]'" in err and "\n" not in err


class Recorder:
    """A stand-in for an optuna trial: the first value of every distribution."""

    def __init__(self):
        self.names = []

    def suggest_float(self, name, low, high, *, log=False):
        self.names.append(name)
        return low

    def suggest_int(self, name, low, high):
        self.names.append(name)
        return high

    def suggest_categorical(self, name, choices):
        self.names.append(name)
        return choices[-1]


def test_conditional_keys_are_sampled_only_in_their_branch():
    space = parse_space({"optim.lr": {"log": [1e-5, 1e-3]},
                         "strategy.name": {"full": {},
                                           "lora": {"strategy.r": {"int": [2, 8]},
                                                    "optim.lr": {"log": [1e-4, 1e-2]}}}},
                        "space")
    trial = Recorder()
    values = sample(space, trial)
    # lora is chosen (the last choice): its own lr replaces the top-level one, unsampled
    assert values == {"strategy.name": "lora", "strategy.r": 8, "optim.lr": 1e-4}
    assert trial.names == ["strategy.name", "lora:strategy.r", "lora:optim.lr"]


# --------------------------------------------------------------------------- real searches

def _search_args(tmp_path: Path, data: Path, space: Path, *extra: str) -> list[str]:
    return ["search", *TINY, "train.epochs=1", "optim.lr=1e-3", f"data.name={data}",
            f"output.dir={tmp_path / 'runs'}", "--space", str(space), "--name", "t",
            "--trials", "3", "--pruner", "none", *extra]


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"search ended early: {proc.stdout.read().decode()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"{path} did not appear within {seconds} s")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    """A 3-trial search killed (SIGKILL, with its training) once the second trial has begun,
    then resumed; returns the folder and what the first trial's summary was before."""
    tmp_path = tmp_path_factory.mktemp("search")
    data = write_csv(tmp_path / "toy.csv", make_rows())
    space = _space(tmp_path, "strategy.name:\n  head: {}\n  partial:\n"
                             "    strategy.k: {int: [1, 2]}\n")
    out = tmp_path / "runs" / "search-t"
    args = _search_args(tmp_path, data, space)
    proc = subprocess.Popen([sys.executable, "-m", "warmstart", *args], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:  # the second trial's log is opened after the first was told to the study
        _wait_for(out / "logs" / "trial-0001.log", proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    first = out / "trial-0000" / "summary.json"
    before = (first.stat().st_mtime_ns, first.read_bytes())
    assert not (out / "search.json").exists()
    (tmp_path / "other").mkdir()
    changed = _space(tmp_path / "other", "optim.lr: {log: [1.0e-4, 1.0e-2]}")
    code_changed = main([*_search_args(tmp_path, data, changed), "--resume"])
    code = main([*args, "--resume"])
    return out, before, code, code_changed


def test_resume_refuses_another_space(killed_and_resumed):
    assert killed_and_resumed[3] == 2


def test_resumed_search_keeps_finished_trials(killed_and_resumed):
    out, before, code, _ = killed_and_resumed
    assert code == 0
    first = out / "trial-0000" / "summary.json"
    assert (first.stat().st_mtime_ns, first.read_bytes()) == before  # never trained again
    result = json.loads((out / "search.json").read_text())
    outcomes = [t["outcome"] for t in result["trials"]]
    assert outcomes.count("complete") == 3 and outcomes.count("interrupted") == 1
    interrupted = next(t for t in result["trials"] if t["outcome"] == "interrupted")
    retried = result["trials"][interrupted["trial"] + 1]  # the same values, tried again
    assert {k: v for k, v in retried.items() if k.startswith("value:")} == \
        {k: v for k, v in interrupted.items() if k.startswith("value:")}


def test_search_returns_a_usable_best_run(killed_and_resumed, capsys, tmp_path):
    out, *_ = killed_and_resumed
    result = json.loads((out / "search.json").read_text())
    best = Path(result["best"])
    summary = read_summary(best)
    complete = [t for t in result["trials"] if t["outcome"] == "complete"]
    assert result["score"] == max(t["score"] for t in complete)
    assert result["score"] == pytest.approx(summary.validation[summary.metric])
    capsys.readouterr()
    assert main(["predict", str(best), "--text", "goal match team"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["label"] in summary.labels
    assert main(["export", str(best), str(tmp_path / "exported")]) == 0


def test_search_reports(killed_and_resumed):
    out, *_ = killed_and_resumed
    rows = (out / "results.csv").read_text().splitlines()
    assert rows[0].startswith("trial,outcome,score,test,epochs,best_epoch,seconds,strategy.name")
    assert len(rows) == 1 + 4
    md = (out / "results.md").read_text()
    assert "| trial | outcome | score |" in md
    html = (out / "report.html").read_text()
    assert 'id="results"' in html and 'id="parallel"' in html
    assert 'id="importances"' in html or "importances" in html


def test_pruning_stops_a_diverging_trial(tmp_path):
    """lr 3.0 diverges. A grid runs its points in order, so the diverging trial comes after
    two good complete ones and the median pruner stops it at an early epoch. Enough epochs
    that even on a quiet machine the trial cannot finish before the watcher sees its first."""
    data = write_csv(tmp_path / "toy.csv", make_rows(30))
    space = _space(tmp_path, "optim.lr: {categorical: [0.003, 0.002, 3.0]}")
    code = main(["search", *TINY, "strategy.name=full", "train.epochs=40", "train.metric=loss",
                 f"data.name={data}", f"output.dir={tmp_path / 'runs'}", "--space", str(space),
                 "--sampler", "grid", "--name", "p", "--quiet"])
    assert code == 0
    out = tmp_path / "runs" / "search-p"
    trials = json.loads((out / "search.json").read_text())["trials"]
    pruned = [t for t in trials if t["outcome"] == "pruned"]
    assert pruned, trials
    for t in pruned:
        assert t["value:optim.lr"] == 3.0 and t["epochs"] < 40
        run = Path(t["run"])
        assert json.loads((run / "trial.json").read_text())["outcome"] == "pruned"
        assert not (run / "summary.json").exists()
    assert [t["value:optim.lr"] for t in trials] == [0.003, 0.002, 3.0]
    assert [t["outcome"] for t in trials] == ["complete", "complete", "pruned"]


def test_budget_stops_the_search(tmp_path):
    # Far more training than 15 s allows on any machine: the first trial meets the budget.
    data = write_csv(tmp_path / "toy.csv", make_rows(100))
    space = _space(tmp_path, "optim.lr: {log: [1.0e-4, 1.0e-2]}")
    started = time.monotonic()
    code = main(["search", *TINY, "strategy.name=full", "train.epochs=500", f"data.name={data}",
                 f"output.dir={tmp_path / 'runs'}", "--space", str(space), "--trials", "5",
                 "--budget", "15s", "--name", "b", "--quiet"])
    elapsed = time.monotonic() - started
    assert code == 0
    # 15 s, plus the reports and stopping the process (generous: a loaded 2-core machine)
    assert elapsed < 15 + 20, elapsed
    trials = json.loads((tmp_path / "runs" / "search-b" / "search.json").read_text())["trials"]
    assert [t["outcome"] for t in trials] == ["budget"]


# --------------------------------------------------------------------------- warmstart auto

def _auto_args(tmp_path: Path, data: Path, budget: str, name: str) -> list[str]:
    return ["auto", *TINY, f"data.name={data}", f"output.dir={tmp_path / 'runs'}",
            "--budget", budget, "--name", name]


def test_auto_ends_within_its_budget_with_a_usable_winner(tmp_path, capsys):
    data = write_csv(tmp_path / "toy.csv", make_rows(30))
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "warmstart", *_auto_args(tmp_path, data, "60s",
                                                                          "a")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    # +5% of the budget, plus starting Python and torch (not timed by the command itself)
    assert elapsed < 60 * 1.05 + 10, elapsed
    out = tmp_path / "runs" / "auto-a"
    facts = json.loads((out / "auto.json").read_text())
    assert facts["probe"]["run"].endswith("probe-features")
    assert facts["plan"]["candidates"] and facts["plan"]["why"]
    best = Path(facts["best"])
    assert facts["winner"]["score"] == pytest.approx(
        read_summary(best).validation[facts["probe"]["metric"]])
    report = (out / "report.md").read_text()
    assert "features (probe)" in report and "Rules the candidates come from" in report
    capsys.readouterr()
    assert main(["predict", str(best), "--text", "bread cheese soup"]) == 0


def test_auto_measures_each_candidates_throughput_and_sizes_the_epochs_by_it(tmp_path):
    from warmstart.choose import auto, auto_plan
    from warmstart.config import with_overrides

    data = write_csv(tmp_path / "toy.csv", make_rows(40))
    base = with_overrides({}, [*TINY, f"data.name={data}", "train.epochs=1"])
    out = tmp_path / "auto"
    probe = auto._run_probe(base, out, time.time() + 300)
    assert probe is not None and "logme" in probe.summary.transferability
    runs = auto.measure(base, ["head", "full"], out, time.time() + 3600, probe)
    measured = auto.seconds_per_example(runs)
    assert set(measured) == {"head", "full"} and all(v > 0 for v in measured.values())
    # full has no lr of its own: the race varies the model's, which its measure run used.
    _, rounds = auto_plan.pairs_of(["full"], "text", runs)
    assert [r[0]["full:optim.lr"] for r in rounds] == pytest.approx(
        [runs["full"].lr.base * f for f in (1, 3, 1 / 3)])
    assert auto_plan.pairs_of(["full"], "text")[1] == [[{"strategy.name": "full",
                                                    "full:optim.lr": None}]]
    for spec in ("head", "full"):  # a few batches, not the data: 4 batches of 8
        assert read_summary(out / f"measure-{spec}").examples.train <= auto.MEASURE_BATCHES * 8
    # The measured cost decides the epochs: slow enough for one epoch, fast enough for three.
    pairs, n = 6, probe.summary.examples.train
    seconds = pairs * probe.overhead + 8 * n  # room for 8 epochs of 1 s per example
    assert auto_plan.epochs_for(probe, ["full"], pairs, seconds, {"full": 2.0}) == 1
    assert auto_plan.epochs_for(probe, ["full"], pairs, seconds, {"full": 1e-6}) == 3
    # At 0.75 s per example, two epochs for all six pairs would take 12 * 0.75 = 9 > 8, but
    # halving prunes after the first: 2 * 2 + 4 * 1.5 = 10 epochs take 7.5; three epochs
    # (2 * 3 + 4 * 1.75 = 13, 9.75) do not fit.
    assert [auto_plan.expected_epochs(e) for e in (1, 2, 3)] == [1.0, 1.5, 1.75]
    assert auto_plan.epochs_for(probe, ["full"], pairs, seconds, {"full": 0.75}) == 2
    # Where all rounds fit only one epoch, the race drops the last rounds of lr variants.
    rounds = [[{"strategy.name": "full", "full:optim.lr": lr}] * 2 for lr in (1, 3, 0.3)]
    seconds = 4 * probe.overhead + 8 * n  # four trials' overhead and 8 epochs of 1 s each
    kept, epochs = auto_plan.race_plan(probe, ["full"], rounds, seconds, {"full": 1.0})
    assert (len(kept), epochs) == (4, 2)  # 2 * 2 + 2 * 1.5 = 7 epochs; 3: 9.5, too many
    assert auto_plan.race_plan(probe, ["full"], rounds, seconds, {"full": 9.0})[0] == rounds[0]
    # No time to measure: nothing is run and the estimate is used.
    assert auto.measure(base, ["full"], tmp_path / "late", time.time() + 1, probe) == {}
    assert not (tmp_path / "late").exists()


def test_auto_races_every_candidate_at_its_default_lr_before_any_variant():
    from warmstart.choose import auto_plan
    from warmstart.strategies import STRATEGY_DEFAULTS

    space, rounds = auto_plan.pairs_of(["head", "partial:k=2", "lora"], "text")
    pairs = [pair for round_ in rounds for pair in round_]
    names = [p["strategy.name"] for p in pairs]
    assert names == ["head", "partial", "lora"] * 3
    for pair in pairs[:3]:
        name = pair["strategy.name"]
        assert pair[f"{name}:optim.lr"] == STRATEGY_DEFAULTS[name]["text"].lr
    assert pairs[1]["partial:strategy.k"] == 2
    assert pairs[3]["head:optim.lr"] == pytest.approx(3 * pairs[0]["head:optim.lr"])
    assert set(space["strategy.name"]) == {"head", "partial", "lora"}


def test_auto_interrupted_keeps_the_best_so_far(tmp_path, capsys):
    # Enough data that the race's first trial is still training when Ctrl-C comes, even on a
    # quiet machine.
    data = write_csv(tmp_path / "toy.csv", make_rows(150))
    out = tmp_path / "runs" / "auto-i"
    proc = subprocess.Popen([sys.executable, "-m", "warmstart",
                             *_auto_args(tmp_path, data, "10m", "i")], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_for(out / "race" / "logs" / "trial-0000.log", proc)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)  # Ctrl-C while the race's first trial trains
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    facts = json.loads((out / "auto.json").read_text())
    assert facts["best"] == facts["probe"]["run"]  # the only finished candidate
    capsys.readouterr()
    assert main(["predict", facts["best"], "--text", "goal match"]) == 0


def test_search_trials_run_in_parallel_on_ray(tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install "
                              "'warmstart[ray]'")
    data = write_csv(tmp_path / "toy.csv", make_rows())
    space = _space(tmp_path, "optim.lr: {categorical: [0.001, 0.002]}")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        # Enough epochs that each trial trains longer than a Ray worker takes to start.
        code = main(["search", *TINY, "train.epochs=80", "strategy.name=full", f"data.name={data}",
                     f"output.dir={tmp_path / 'runs'}", "--space", str(space), "--trials", "2",
                     "--sampler", "grid", "--name", "r", "--quiet", "--ray", "local"])
    finally:
        ray.shutdown()
    assert code == 0
    out = tmp_path / "runs" / "search-r"
    trials = json.loads((out / "search.json").read_text())["trials"]
    assert sorted(t["value:optim.lr"] for t in trials) == [0.001, 0.002]  # the grid, once each
    assert all(t["outcome"] == "complete" for t in trials)
    runs = [out / f"trial-{i:04d}" for i in (0, 1)]
    started = [(r / "config.yaml").stat().st_mtime for r in runs]
    finished = [(r / "summary.json").stat().st_mtime for r in runs]
    assert max(started) < min(finished), (started, finished)  # they overlapped


def test_auto_hands_its_race_to_ray_with_the_ray_option(tmp_path, monkeypatch):
    from warmstart.choose import auto, raysweep

    seen = {}
    monkeypatch.setattr(raysweep, "ray_map", lambda options, console: ("ray map", options))
    monkeypatch.setattr(auto, "auto", lambda *a, **kw: seen.update(kw))
    assert main(["auto", *TINY, "--budget", "1m", "--ray", "local", "--ray-cpus", "2"]) == 0
    kind, options = seen["map_fn"]
    assert kind == "ray map" and options.address == "local" and options.cpus == 2.0
    assert main(["auto", *TINY, "--budget", "1m"]) == 0
    assert seen["map_fn"] is None  # without --ray the race runs here, one trial after another
