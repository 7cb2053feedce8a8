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
