"""`warmstart auto` on tiny-bert: the budget, the measured throughput and the plan it sizes,
the round order of the race, the rounds raced when time is left, Ctrl-C, and `--ray`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_rows, write_csv
from test_search import TINY, _wait_for

from warmstart.cli import main
from warmstart.summary import read_summary

pytest.importorskip("optuna")


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
    # One more pair, once the bar is set: its overhead and 1.5 epochs on average.
    assert auto_plan.pair_seconds(probe, ["full"], 2, {"full": 0.75}) == pytest.approx(
        probe.overhead + 1.5 * 0.75 * n)
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


def test_auto_races_dropped_rounds_and_its_reserve_when_time_is_left(tmp_path, monkeypatch):
    """A plan that kept only the defaults (as if the later rounds might not fit) leaves most
    of a generous budget: the 3x and 1/3 lrs then race in the same study after the soup,
    each round followed by the rule's reserve candidate at that round's lr."""
    from warmstart.choose import auto

    def defaults_only(probe, specs, rounds, seconds, measured, epochs):
        assert epochs is None  # the base config leaves train.epochs unset
        return rounds[0], 1

    monkeypatch.setattr(auto, "plan", lambda probe: (["head"], ["partial:k=1"], "for the test"))
    monkeypatch.setattr(auto, "race_plan", defaults_only)
    data = write_csv(tmp_path / "toy.csv", make_rows(30))
    out = auto.auto(None, [*TINY, f"data.name={data}", f"output.dir={tmp_path / 'runs'}"],
                    "10m", name="later", quiet=True)
    facts = json.loads((out / "auto.json").read_text())
    later = facts["plan"]["later_rounds"]
    assert later["pairs"] == 5 and sum(later["outcomes"].values()) == 5, later
    assert facts["final_soup"]["outcome"]  # the best runs are averaged again after them
    trials = json.loads((out / "race" / "search.json").read_text())["trials"]
    names = [t["value:strategy.name"] for t in trials]
    assert names == ["head", "partial", "head", "partial", "head", "partial"]
    assert {t["value:strategy.k"] for t in trials if t["value:strategy.name"] == "partial"} == {1}
    for name in ("head", "partial"):
        lrs = [t["value:optim.lr"] for t in trials if t["value:strategy.name"] == name]
        assert lrs == pytest.approx([lrs[0], 3 * lrs[0], lrs[0] / 3])
    assert "stopped" not in facts


def test_later_pairs_and_a_space_shared_by_two_specs_of_one_strategy():
    from warmstart.choose import auto_plan

    space, _ = auto_plan.pairs_of(["partial:k=2", "head", "partial:k=4"], "text")
    partial = space["strategy.name"]["partial"]
    assert partial["strategy.k"] == {"categorical": [2, 4]}
    assert len(partial["optim.lr"]["categorical"]) == 3  # both ks share the three lrs
    _, rounds = auto_plan.pairs_of(["head", "partial:k=2"], "text")
    _, spare = auto_plan.pairs_of(["partial:k=4"], "text")
    raced = rounds[0] + rounds[1][:1]  # defaults and head at 3x raced; the rest dropped
    later = auto_plan.later_pairs(rounds, spare, raced)
    assert [(p["strategy.name"], p.get("partial:strategy.k")) for p in later] == [
        ("partial", 4), ("partial", 2), ("partial", 4), ("head", None), ("partial", 2),
        ("partial", 4)]
    assert auto_plan.later_pairs(rounds, [], rounds[0] + rounds[1] + rounds[2]) == []
    # Ranked by what each strategy scored so far: partial k=2's variants before head's.
    trials = [{"outcome": "complete", "score": 0.7, "value:strategy.name": "head",
               "value:strategy.k": None, "value:optim.lr": 0.03},
              {"outcome": "complete", "score": 0.8, "value:strategy.name": "partial",
               "value:strategy.k": 2, "value:optim.lr": 3e-4},
              {"outcome": "pruned", "score": None, "value:strategy.name": "partial",
               "value:strategy.k": 4, "value:optim.lr": 3e-4}]
    scores = auto_plan.strategy_scores(trials, "accuracy")
    assert scores == {(("strategy.name", "head"),): 0.7,
                      (("strategy.k", 2), ("strategy.name", "partial")): 0.8}
    ranked = auto_plan.later_pairs(rounds, [], rounds[0], scores)
    assert [p["strategy.name"] for p in ranked] == ["partial", "head", "partial", "head"]
    assert auto_plan.strategy_scores(trials, "mse")[(("strategy.name", "head"),)] == -0.7


def test_a_train_epochs_the_user_set_is_what_every_race_trial_trains():
    """auto sizes the epochs to the budget unless `train.epochs` is set; then it keeps those
    and drops lr rounds instead (the first round always stays)."""
    from types import SimpleNamespace

    from warmstart.choose import auto_plan

    summary = SimpleNamespace(wall_seconds=11.0, train_seconds=1.0, cache_seconds=1.0,
                              examples=SimpleNamespace(train=100))
    probe = auto_plan.Probe(Path("probe"), summary, "text")
    rounds = [[{"strategy.name": "full", "full:optim.lr": lr}] * 2 for lr in (1, 3, 0.3)]
    per_example = {"full": 0.1}  # 10 s an epoch; each trial's overhead 10 s
    six = auto_plan.race_seconds(probe, ["full"], 6, 3, per_example)
    assert six == pytest.approx(6 * 10 + (2 * 3 + 4 * 1.75) * 10)
    kept, epochs = auto_plan.race_plan(probe, ["full"], rounds, six, per_example, 3)
    assert (len(kept), epochs) == (6, 3)
    kept, epochs = auto_plan.race_plan(probe, ["full"], rounds, six - 1, per_example, 3)
    assert (len(kept), epochs) == (4, 3)  # the 1/3 round dropped to keep the 3 epochs asked
    assert auto_plan.race_plan(probe, ["full"], rounds, 1.0, per_example, 3) == (rounds[0], 3)
    # Unset, the budget decides: the same seconds fit all six pairs at 2 epochs.
    assert auto_plan.race_plan(probe, ["full"], rounds, six - 1, per_example) == (
        [p for r in rounds for p in r], 2)


def test_auto_picks_the_soup_when_it_ties_the_best_run(tmp_path, monkeypatch):
    """Greedy souping starts from the best race run, so a soup never scores below it on
    validation; on a tie the soup (several runs averaged) wins, below it the run does."""
    from types import SimpleNamespace

    from rich.console import Console

    from warmstart.choose import auto_report

    out = tmp_path / "auto-t"
    (out / "race").mkdir(parents=True)
    run = str(out / "race" / "trial-0000")
    (out / "race" / "search.json").write_text(json.dumps({"trials": [
        {"outcome": "complete", "score": 0.9, "run": run, "value:strategy.name": "full"}]}))
    monkeypatch.setattr(auto_report, "read_summary",
                        lambda path: SimpleNamespace(headline=0.5, test={"accuracy": 0.5}))

    def winner(soup_score):
        facts = {"budget_seconds": 60.0, "seconds": 50.0, "rules": ["a rule"],
                 "probe": {"run": str(tmp_path / "probe"), "score": 0.8, "metric": "accuracy",
                           "seconds": 5.0, "logme": None},
                 "soup": {"outcome": "made", "runs": [run, run], "score": soup_score}}
        auto_report.finish(out, facts, Console(quiet=True))
        return facts["best"]

    assert winner(0.9) == str(out / auto_report.SOUPS["soup"])
    assert winner(0.89) == run
