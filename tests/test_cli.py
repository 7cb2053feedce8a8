"""Bad input: one line naming the problem, exit status 2, no traceback, no finished-looking run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_rows, write_csv

from warmstart.cli import main

TINY = ["model.name=tiny-bert", "train.epochs=1", "train.batch_size=8", "optim.lr=1e-3"]


def _fail(argv, capsys) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("warmstart: error: ")
    assert "\n" not in err and "Traceback" not in err
    return err


def _train(tmp_path, data_args, extra=()):
    return ["train", "--quiet", *TINY, f"output.dir={tmp_path / 'runs'}", "output.name=r",
            *data_args, *extra]


def _no_finished_run(tmp_path):
    assert not (tmp_path / "runs" / "r" / "summary.json").exists()


def test_missing_file(tmp_path, capsys):
    err = _fail(_train(tmp_path, [f"data.name={tmp_path / 'nope.csv'}"]), capsys)
    assert "nope.csv" in err
    _no_finished_run(tmp_path)


def test_non_utf8_file(tmp_path, capsys):
    path = tmp_path / "latin.csv"
    path.write_bytes(b"text,label\n" + "caf\xe9 cr\xe8me,a\nthe,b\n".encode("latin-1") * 20)
    err = _fail(_train(tmp_path, [f"data.name={path}"]), capsys)
    assert "latin.csv" in err and "UTF-8" in err
    _no_finished_run(tmp_path)


@pytest.mark.parametrize("column", ["text_column", "label_column"])
def test_missing_column(tmp_path, capsys, text_csv, column):
    err = _fail(_train(tmp_path, [f"data.name={text_csv}", f"data.{column}=body"]), capsys)
    assert "body" in err and "toy.csv" in err
    _no_finished_run(tmp_path)


def test_empty_dataset(tmp_path, capsys):
    path = tmp_path / "empty.csv"
    path.write_text("text,label\n")
    err = _fail(_train(tmp_path, [f"data.name={path}"]), capsys)
    assert "empty.csv" in err
    _no_finished_run(tmp_path)


def test_only_one_class(tmp_path, capsys):
    path = write_csv(tmp_path / "one.csv", [(t, "sport") for t, _ in make_rows()])
    err = _fail(_train(tmp_path, [f"data.name={path}"]), capsys)
    assert "one class" in err
    _no_finished_run(tmp_path)


def test_label_unseen_in_training(tmp_path, capsys, text_csv):
    test = write_csv(tmp_path / "test.csv", [("a b c", "sport"), ("d e f", "weather")])
    err = _fail(_train(tmp_path, [f"data.name={text_csv}", f"data.test={test}"]), capsys)
    assert "weather" in err
    _no_finished_run(tmp_path)


@pytest.mark.parametrize("key, value, hint", [
    ("model.name", "minilm-l7", "minilm-l6"),
    ("data.name", "bbc-nwes", "bbc-news"),
    ("strategy.name", "fulll", "full"),
])
def test_unknown_names_suggest(tmp_path, capsys, key, value, hint):
    err = _fail(["train", "--quiet", f"{key}={value}", f"output.dir={tmp_path / 'runs'}",
                 "output.name=r"], capsys)
    assert value in err and hint in err
    _no_finished_run(tmp_path)


def test_invalid_config_value(tmp_path, capsys):
    err = _fail(["train", "optim.lr=-1"], capsys)
    assert "optim.lr" in err


def test_finished_run_needs_overwrite(tmp_path, capsys, text_csv):
    args = _train(tmp_path, [f"data.name={text_csv}"])
    assert main(args) == 0
    summary = tmp_path / "runs" / "r" / "summary.json"
    first = summary.stat().st_mtime_ns
    capsys.readouterr()
    err = _fail(args, capsys)
    assert "--overwrite" in err
    assert summary.stat().st_mtime_ns == first
    assert main([*args, "--overwrite"]) == 0
    assert summary.stat().st_mtime_ns != first


def test_real_command_exit_status_and_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "warmstart", "train", "strategy.name=nope"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "unknown strategy 'nope'" in proc.stderr
    assert not (Path(tmp_path) / "runs").exists()


def test_ls_lists_registries(capsys):
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    for name in ("minilm-l6", "efficientnet-lite0", "bbc-news", "digits", "mnist-5k", "full"):
        assert name in out


def test_unfinished_run_is_refused_naming_resume_and_kept(tmp_path, capsys, text_csv):
    args = _train(tmp_path, [f"data.name={text_csv}"])
    assert main(args) == 0
    run = tmp_path / "runs" / "r"
    (run / "summary.json").unlink()  # as a run killed after its last checkpoint leaves it
    checkpoints = sorted(p.name for p in (run / "checkpoints").glob("step-*"))
    assert checkpoints
    capsys.readouterr()
    err = _fail(args, capsys)
    assert "unfinished" in err and f"--resume {run}" in err and "--overwrite" in err
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == checkpoints
    err = _fail(["train", "--resume", str(run), "--overwrite"], capsys)
    assert "--resume" in err and "--overwrite" in err
    assert main(["train", "--quiet", "--resume", str(run)]) == 0
    capsys.readouterr()
    err = _fail(["train", "--quiet", "--resume", str(run)], capsys)
    assert "nothing to resume" in err and "--overwrite" in err and "pass --overwrite" not in err
    (run / "summary.json").unlink()
    assert main([*args, "--overwrite"]) == 0


def test_a_folder_that_is_no_run_is_not_emptied(tmp_path, capsys, text_csv):
    mine = tmp_path / "runs" / "r"
    mine.mkdir(parents=True)
    (mine / "thesis.tex").write_text("years of work")
    err = _fail(_train(tmp_path, [f"data.name={text_csv}"], ["--overwrite"]), capsys)
    assert "not a warmstart run directory" in err and "thesis.tex" in err
    assert (mine / "thesis.tex").read_text() == "years of work"


def test_second_run_into_a_locked_directory_fails_naming_the_holder(tmp_path, capsys, text_csv):
    from test_files import hold_lock

    holder = hold_lock(tmp_path / "runs" / "r")
    try:
        err = _fail(_train(tmp_path, [f"data.name={text_csv}"]), capsys)
        assert f"process {holder.pid}" in err and "in use" in err
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert main(_train(tmp_path, [f"data.name={text_csv}"])) == 0  # the stale lock blocks nobody
    assert (tmp_path / "runs" / "r" / "summary.json").is_file()
    assert not (tmp_path / "runs" / "r" / ".lock").exists()


def test_a_refused_run_leaves_no_directory(tmp_path, capsys):
    _fail(_train(tmp_path, [f"data.name={tmp_path / 'nope.csv'}"]), capsys)
    assert not (tmp_path / "runs").exists()


def test_ctrl_c_says_how_to_resume(tmp_path, capsys, monkeypatch, text_csv):
    import warmstart.training.run as run_module

    def interrupted(cfg, **_):
        step = tmp_path / "runs" / "r" / "checkpoints" / "step-00000012"
        step.mkdir(parents=True)
        (step / "state.pt").write_bytes(b"")
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "train", interrupted)
    assert main(_train(tmp_path, [f"data.name={text_csv}"])) == 130
    err = capsys.readouterr().err
    assert f"step 12 with `warmstart train --resume {tmp_path / 'runs' / 'r'}`" in err


def test_quiet_still_prints_the_results_and_start_shows_only_changes(tmp_path, capsys,
                                                                      text_csv):
    assert main(_train(tmp_path, [f"data.name={text_csv}"])) == 0
    out = capsys.readouterr().out
    assert "f1_macro" in out and "best epoch" in out  # the final table, despite --quiet
    assert main(["train", *TINY, f"data.name={text_csv}", f"output.dir={tmp_path / 'runs'}",
                 "output.name=loud"]) == 0
    err = capsys.readouterr().err
    assert "config: model.name=tiny-bert" in err and "pooling: auto" not in err
