"""End to end: the golden run on a tiny model, run outputs, predict/evaluate, determinism."""

from __future__ import annotations

import json
import math

import pytest
import yaml
from conftest import make_rows, write_csv

from warmstart.cli import main
from warmstart.config import load_config
from warmstart.ship.predict import evaluate_file, predict
from warmstart.training.run import train

TINY = ["model.name=tiny-bert", "train.epochs=4", "train.batch_size=8", "optim.lr=1e-2",
        "optim.warmup_ratio=0.1", "log.every=1"]


def _cfg(tmp_path, data, name="golden", extra=()):
    return load_config(None, [*TINY, f"data.name={data}", f"output.dir={tmp_path / 'runs'}",
                              f"output.name={name}", *extra])


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("golden")
    data = write_csv(tmp / "toy.csv", make_rows(n_per_class=30))
    summary = train(_cfg(tmp, data), quiet=True)
    return tmp, data, summary


def test_golden_run_learns_and_reports(golden):
    tmp, _, s = golden
    losses = [row["train_loss"] for row in s.history]
    assert losses[-1] < 0.7 * losses[0], losses  # the loss falls
    assert s.test["accuracy"] > 0.6  # three classes: chance is 1/3
    scalars = [v for split in (s.validation, s.test) for v in split.values()
               if isinstance(v, float)]
    assert len(scalars) == 10 and all(math.isfinite(v) for v in scalars)
    assert s.best_epoch in range(1, 5)
    best = s.history[s.best_epoch - 1]
    assert s.validation["accuracy"] == pytest.approx(best["val_accuracy"])
    assert set(s.test["per_class"]) >= {"food", "sport", "tech", "macro avg"}
    assert len(s.test["confusion_matrix"]) == 3
    assert s.params.trainable == s.params.total > 0
    assert s.samples_per_second > 0 and s.peak_memory_mb > 0
    assert s.labels == ["food", "sport", "tech"]


def test_run_directory_layout(golden):
    tmp, _, s = golden
    run = tmp / "runs" / "golden"
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["name"] == "tiny-bert"
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r["kind"] == "step"]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    assert len(epochs) == 4 and len(steps) == s.steps
    assert json.loads((run / "summary.json").read_text())["test"] == s.test
    assert (run / "model" / "config.json").is_file()  # Hugging Face layout
    card = (run / "README.md").read_text()
    assert "tiny-bert" in card and f"{s.test['accuracy']:.4f}"[:4] in card
    assert any(p.suffix == ".safetensors" for p in (run / "model").iterdir())


def test_same_seed_same_run_different_seed_differs(golden, tmp_path):
    _, data, s = golden
    again = train(_cfg(tmp_path, data, "again"), quiet=True)
    assert [r["train_loss"] for r in again.history] == [r["train_loss"] for r in s.history]
    other = train(_cfg(tmp_path, data, "other", ["train.seed=1"]), quiet=True)
    assert [r["train_loss"] for r in other.history] != [r["train_loss"] for r in s.history]


def test_predict_and_evaluate_reload_the_saved_model(golden, capsys):
    tmp, data, s = golden
    run = tmp / "runs" / "golden"
    rows = predict(run, ["goal match team win", "chip software code"])
    assert [r["label"] for r in rows] == ["sport", "tech"]
    assert sum(rows[0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    test = write_csv(tmp / "held.csv", make_rows(n_per_class=5, seed=7))
    metrics = evaluate_file(run, test)
    assert metrics["accuracy"] > 0.6 and len(metrics["confusion_matrix"]) == 3
    out = tmp / "pred.csv"
    assert main(["predict", str(run), "--input", str(test), "--output", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "input,label,p_food,p_sport,p_tech" and len(lines) == 16
    assert main(["predict", str(run), "--text", "bake bread"]) == 0
    assert json.loads(capsys.readouterr().out)["label"] == "food"


def test_saved_split_re_evaluates_the_held_out_rows(golden):
    tmp, data, s = golden
    run = tmp / "runs" / "golden"
    split = json.loads((run / "split.json").read_text())
    lines = data.read_text().splitlines()  # row r of the file is line r - 1
    assert sorted(split["train"]["rows"] + split["validation"]["rows"]
                  + split["test"]["rows"]) == list(range(2, len(lines) + 1))
    for name, scores in (("test", s.test), ("validation", s.validation)):
        held = tmp / f"{name}-again.csv"
        held.write_text("\n".join([lines[0]] + [lines[r - 1] for r in split[name]["rows"]]))
        assert evaluate_file(run, held)["accuracy"] == pytest.approx(scores["accuracy"])


@pytest.mark.slow
def test_real_minilm_loss_falls(tmp_path):
    data = write_csv(tmp_path / "toy.csv", make_rows(n_per_class=16))
    s = train(load_config(None, [
        "model.name=minilm-l6", f"data.name={data}", "train.epochs=2", "train.batch_size=8",
        "optim.lr=1e-4", "model.max_length=32", f"output.dir={tmp_path}", "output.save_model=false",
    ]), quiet=True)
    losses = [r["train_loss"] for r in s.history]
    assert losses[1] < losses[0]
    assert s.test["accuracy"] > 0.5


def _one_line_error(argv, capsys) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("warmstart: error: ") and "\n" not in err, err
    return err


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".json", ".parquet"])
def test_predict_writes_the_format_its_extension_names(golden, suffix):
    import pandas as pd

    tmp, _, _ = golden
    out = tmp / f"pred{suffix}"
    assert main(["predict", str(tmp / "runs" / "golden"), "--text", "goal match",
                 "--text", "bake bread", "--output", str(out)]) == 0
    if suffix == ".parquet":
        frame = pd.read_parquet(out)
    elif suffix == ".json":
        frame = pd.DataFrame(json.loads(out.read_text()))
    elif suffix == ".jsonl":
        frame = pd.read_json(out, lines=True)
    else:
        frame = pd.read_csv(out, sep="\t" if suffix == ".tsv" else ",")
    assert list(frame["label"]) == ["sport", "food"] and len(frame) == 2


def test_unknown_or_unwritable_outputs_fail_before_any_work(golden, capsys):
    tmp, data, _ = golden
    run = str(tmp / "runs" / "golden")
    err = _one_line_error(["predict", run, "--text", "x", "--output", str(tmp / "p.xlsx")],
                          capsys)
    assert "'.xlsx'" in err and ".parquet" in err and not (tmp / "p.xlsx").exists()
    err = _one_line_error(["evaluate", run, "--data", str(data), "--output",
                           str(tmp / "missing" / "m.json")], capsys)
    assert "missing" in err and "does not exist" in err
    (tmp / "afile").write_text("")
    err = _one_line_error(["export", run, str(tmp / "afile" / "out")], capsys)
    assert "afile" in err


def test_predict_accepts_the_model_folder_and_points_a_stopped_run_to_resume(golden, capsys):
    import shutil

    tmp, _, _ = golden
    assert main(["predict", str(tmp / "runs" / "golden" / "model"), "--text", "goal"]) == 0
    assert "label" in json.loads(capsys.readouterr().out)
    stopped = tmp / "runs" / "stopped"
    shutil.copytree(tmp / "runs" / "golden", stopped)
    (stopped / "summary.json").unlink()
    err = _one_line_error(["predict", str(stopped), "--text", "goal"], capsys)
    assert f"warmstart train --resume {stopped}" in err
    err = _one_line_error(["evaluate", str(stopped), "--data", "x.csv"], capsys)
    assert f"warmstart train --resume {stopped}" in err


def test_run_files_are_readable_by_others(golden):
    import os
    import stat

    tmp, _, _ = golden
    mask = os.umask(0)
    os.umask(mask)
    run = tmp / "runs" / "golden"
    for path in [run / "summary.json", run / "config.yaml", run / "README.md",
                 run / "model" / "config.json", run / "checkpoints" / "best.safetensors"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask, path
    for folder in [run / "model", *run.glob("checkpoints/step-*")]:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~mask, folder


def test_runs_on_cached_features_record_logme_and_others_do_not(golden, capsys):
    tmp, data, full = golden
    assert full.transferability == {}  # the backbone trained: no frozen features to score
    head = train(_cfg(tmp, data, "head", ["strategy.name=head", "train.epochs=1"]))
    assert set(head.transferability) == {"logme"} and math.isfinite(head.transferability["logme"])
    assert "LogME of the frozen features" in capsys.readouterr().out
    saved = json.loads((tmp / "runs" / "head" / "summary.json").read_text())
    assert saved["transferability"] == head.transferability
