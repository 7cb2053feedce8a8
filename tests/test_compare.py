"""`warmstart compare`: spec parsing, bad input, and one real comparison that is killed after
its first run and resumed (tiny-bert on a 36-row CSV, one epoch per run)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_rows, write_csv
from rich.console import Console
from test_report import assert_report_ok, check_table_against_summaries, needs_chromium

from warmstart.choose import compare
from warmstart.choose import specs as spec_parsing
from warmstart.choose.specs import DEMO_STRATEGIES, parse_seeds, parse_spec, split_specs
from warmstart.cli import main
from warmstart.errors import WarmstartError
from warmstart.summary import read_summary

TINY = ["model.name=tiny-bert", "train.epochs=1", "train.batch_size=8", "optim.lr=1e-3"]


def test_parse_spec():
    spec = parse_spec("partial:k=2")
    assert (spec.name, spec.overrides, spec.slug) == ("partial", ("strategy.k=2",), "partial-k2")
    spec = parse_spec("llrd:decay=0.9:optim.lr=1e-4")
    assert spec.overrides == ("strategy.decay=0.9", "optim.lr=1e-4")
    assert spec.slug == "llrd-decay0.9-lr1e-4"
    assert parse_spec("partial:groups=[1,2]").slug == "partial-groups_1_2"
    assert split_specs("full, partial:groups=[1,2],head") == ["full", "partial:groups=[1,2]",
                                                             "head"]
    assert parse_seeds("3", 5) == [5, 6, 7] and parse_seeds("0,4", 5) == [0, 4]


@pytest.mark.parametrize("text, expected", [
    ("partial:kk=2", "did you mean 'k'"),
    ("head:data.limit=5", "must be the same for every strategy"),
    ("head:optim.lrr=1", "did you mean 'optim.lr'"),
    ("partial:k", "key=value"),
    ("full:k=2", "'k' is not an option of full; full's options: none"),
    ("llrd:r=4", "'r' is not an option of llrd; llrd's options: decay"),
])
def test_bad_spec(text, expected):
    with pytest.raises(WarmstartError, match=expected):
        parse_spec(text)


@pytest.mark.parametrize("args, expected", [
    (["--strategies", "ful,head"], "did you mean 'full'"),
    (["--strategies", "partial:k=two"], "strategy.k"),
    (["--strategies", "head,head"], "twice"),
    (["--strategies", "head", "--seeds", "0"], "--seeds"),
    ([], "say what to compare: --strategies"),
])
def test_bad_compare_is_one_line(tmp_path, capsys, args, expected):
    code = main(["compare", *TINY, f"output.dir={tmp_path}", *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("warmstart: error: ") and "\n" not in err
    assert expected in err
    assert not any(tmp_path.iterdir())  # nothing trained, nothing written


def test_demo_keeps_lora_listed():
    assert {"head", "partial", "full", "lora"} <= {s.split(":")[0] for s in DEMO_STRATEGIES}


def test_demo_skips_unregistered_strategies(monkeypatch):
    monkeypatch.setattr(spec_parsing, "DEMO_STRATEGIES", ["full", "nosuch:r=4"])
    console = Console(file=io.StringIO(), width=200)
    assert spec_parsing.registered_demo_strategies(console) == ["full"]
    assert "'nosuch' is not registered" in console.file.getvalue()


# --------------------------------------------------------------------------- a real comparison

def _compare_args(tmp_path: Path, data: Path) -> list[str]:
    return ["compare", *TINY, f"data.name={data}", f"output.dir={tmp_path / 'runs'}",
            "--strategies", "head,partial:k=1", "--name", "t"]


def _kill_after_first_run(tmp_path: Path, args: list[str], first: Path) -> None:
    """Start `warmstart compare` and kill it (and the training it started) once `first` exists.

    The comparison gets its own process group, so one killpg ends it and its child run.
    """
    proc = subprocess.Popen([sys.executable, "-m", "warmstart", *args], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 240
    try:
        while not first.exists():
            if proc.poll() is not None:
                pytest.fail(f"compare ended early: {proc.stdout.read().decode()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail("the first run did not finish within 240 s")
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    """Run compare, kill it after the first run finishes, run it again; return what we saw."""
    tmp_path = tmp_path_factory.mktemp("compare")
    data = write_csv(tmp_path / "toy.csv", make_rows())
    out = tmp_path / "runs" / "compare-t"
    first = out / "head-seed0" / "summary.json"
    args = _compare_args(tmp_path, data)
    _kill_after_first_run(tmp_path, args, first)
    assert not (out / "results.csv").exists()
    before = (first.stat().st_mtime_ns, first.read_bytes())
    code = main(args)
    assert code == 0
    return out, before


def test_resume_runs_only_the_rest(killed_and_resumed):
    out, (mtime, content) = killed_and_resumed
    first = out / "head-seed0" / "summary.json"
    assert (first.stat().st_mtime_ns, first.read_bytes()) == (mtime, content)
    assert (out / "partial-k1-seed0" / "summary.json").is_file()
    assert (out / "logs" / "partial-k1-seed0.log").is_file()
    for name in ("results.csv", "report.md", "report.html"):
        assert (out / name).is_file()


def test_table_matches_run_summaries(killed_and_resumed):
    out, _ = killed_and_resumed
    check_table_against_summaries(out)
    md = (out / "report.md").read_text()
    summary = read_summary(out / "partial-k1-seed0")
    assert f"{summary.test['accuracy']:.4f}" in md


def test_every_run_has_a_model_card(killed_and_resumed):
    out, _ = killed_and_resumed
    for run in ("head-seed0", "partial-k1-seed0"):
        card = (out / run / "README.md").read_text()
        assert "tiny-bert" in card and "## Limitations" in card and "| food |" in card


@needs_chromium
def test_real_report_in_chromium(killed_and_resumed, tmp_path):
    out, _ = killed_and_resumed
    assert_report_ok(out / "report.html", tmp_path, "report-compare.png")


def test_the_base_config_gives_each_strategy_only_its_own_options(tmp_path):
    # A shared base holding partial's option still plans `full`; the option reaches partial.
    specs = [parse_spec("full"), parse_spec("partial")]
    runs = compare.plan_runs(None, [*TINY, "strategy.k=1"], specs, [0, 3], tmp_path)
    assert [(r.spec.name, r.seed) for r in runs] == [("full", 0), ("partial", 0), ("full", 3),
                                                     ("partial", 3)]
    assert runs[1].cfg.strategy.options.k == 1
    assert {r.cfg.data.split_seed for r in runs} == {0}  # one split for every seed
    assert runs[0].config_file == tmp_path / "configs" / "full-seed0.yaml"


def test_compare_trains_through_the_map_function_it_is_given(tmp_path):
    # A stand-in map that records what it was asked and returns stored summaries: compare
    # must train nothing itself and report what the map returned, in run order.
    summary = read_summary(_trained_run(tmp_path))
    calls = []

    def fake_map(work, runs, done):
        calls.append([r.run_dir.name for r in runs])
        results = [(summary, False, 0.0) for _ in runs]
        for i in reversed(range(len(runs))):  # finishing out of order, as Ray may
            done(i, results[i])
        return results

    specs = [parse_spec("head"), parse_spec("full")]
    runs = compare.plan_runs(None, TINY, specs, [0], tmp_path / "cmp")
    out = io.StringIO()
    groups = compare.run_comparison(runs, tmp_path / "cmp", Console(file=out), fake_map)
    assert calls == [["head-seed0", "full-seed0"]]
    assert list(groups) == ["head", "full"] and groups["full"] == [("full-seed0", summary)]
    assert "[1/2] full-seed0 finished earlier, reused" in out.getvalue()
    assert not (tmp_path / "cmp" / "head-seed0" / "summary.json").exists()


def _trained_run(tmp_path):
    data = write_csv(tmp_path / "d.csv", make_rows(12))
    assert main(["train", *TINY, f"data.name={data}", f"output.dir={tmp_path}",
                 "output.name=one", "--quiet"]) == 0
    return tmp_path / "one"


def test_second_compare_into_one_folder_fails_naming_the_holder(tmp_path):
    from test_files import hold_lock

    holder = hold_lock(tmp_path / "compare-x")
    try:
        with pytest.raises(WarmstartError, match=f"process {holder.pid}"):
            compare.compare(None, [*TINY, f"output.dir={tmp_path}"], ["head"], "1", name="x",
                            quiet=True)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert not (tmp_path / "compare-x" / "head-seed0").exists()


def test_an_unfinished_run_with_another_config_is_not_restarted(tmp_path):
    from warmstart.config import dump_config

    head, full = compare.plan_runs(None, TINY, [parse_spec("head"), parse_spec("full")], [0],
                                   tmp_path)
    (head.run_dir / "checkpoints" / "step-00000004").mkdir(parents=True)
    (head.run_dir / "config.yaml").write_text(dump_config(full.cfg))  # trained another way
    with pytest.raises(WarmstartError, match="unfinished run with a different strategy"):
        compare.ensure_run(head, tmp_path / "logs")
    assert (head.run_dir / "checkpoints" / "step-00000004").is_dir()


def test_a_finished_run_is_reused_only_while_its_data_is_unchanged(tmp_path):
    from warmstart.config import read_run_config

    run_dir = _trained_run(tmp_path)
    data = tmp_path / "d.csv"
    saved = json.loads((run_dir / "data_files.json").read_text())
    assert saved["data.name"]["path"] == str(data) and len(saved["data.name"]["sha256"]) == 64
    run = compare.PlannedRun(parse_spec("full"), 0, read_run_config(run_dir / "config.yaml"),
                             tmp_path / "configs" / "one.yaml")
    assert compare.ensure_run(run, tmp_path / "logs")[1] is False  # reused
    os.utime(data, ns=(time.time_ns(), time.time_ns() + 10**9))  # touched, same bytes
    assert compare.ensure_run(run, tmp_path / "logs")[1] is False
    with data.open("a") as f:
        f.write('"one more sport match goal",sport\n')
    with pytest.raises(WarmstartError, match=f"other data.*data.name {data}"):
        compare.ensure_run(run, tmp_path / "logs")


def test_resume_refuses_data_that_changed_since_the_start(tmp_path, capsys):
    run_dir = _trained_run(tmp_path)
    (run_dir / "summary.json").unlink()
    with (tmp_path / "d.csv").open("a") as f:
        f.write('"one more sport match goal",sport\n')
    capsys.readouterr()
    assert main(["train", "--quiet", "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "other data" in err and "d.csv" in err and "--overwrite" in err
