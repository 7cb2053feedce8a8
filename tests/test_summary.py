"""`summary.json` as a typed RunSummary: round trip, versions, bad files, and a real run's file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_rows, write_csv

from warmstart.config import load_config
from warmstart.errors import WarmstartError
from warmstart.summary import (
    SUMMARY,
    SUMMARY_VERSION,
    ExampleCounts,
    LearningRates,
    Params,
    RunSummary,
    Versions,
    read_summary,
)
from warmstart.training.checkpoint import is_finished
from warmstart.training.run import train

# The keys `warmstart train` has always written: scripts outside warmstart read these.
KEYS = {"run", "model", "data", "strategy", "labels", "examples", "best_epoch", "epochs",
        "stopped_early", "steps", "validation", "test", "train", "final_epoch", "history",
        "params", "lr", "train_seconds", "cache_seconds", "wall_seconds", "samples_per_second",
        "peak_memory_mb", "device", "precision", "processes", "global_batch", "threads", "seed",
        "versions"}


def sample(test: bool = True) -> RunSummary:
    metrics = {"accuracy": 0.75, "f1_macro": 0.7, "loss": 0.6, "per_class": {
        "a": {"precision": 0.8, "recall": 0.7, "f1-score": 0.75, "support": 4.0}},
        "confusion_matrix": [[3, 1], [1, 3]]}
    history = [{"epoch": 1, "step": 4, "train_loss": 0.9, "val_accuracy": 0.75}]
    return RunSummary(
        run="runs/r", model="tiny-bert", data="toy.csv", strategy="lora", labels=["a", "b"],
        examples=ExampleCounts(train=16, validation=8, test=8 if test else 0), best_epoch=1,
        epochs=1, stopped_early=False, steps=4, validation={**metrics, "accuracy": 0.5},
        test=metrics if test else {}, train={"accuracy": 0.9, "examples": "a sample"},
        final_epoch=history[-1], history=history,
        params=Params(trainable=10, total=100, fraction=0.1),
        lr=LearningRates(base=1e-3, groups={"head": 1e-3, "lora": 5e-4}),
        train_seconds=2.5, cache_seconds=0.0, wall_seconds=4.0, samples_per_second=25.6,
        peak_memory_mb=512.0, device="cpu", precision="fp32", processes=1, global_batch=8,
        threads=2, seed=0, versions=Versions(warmstart="0.1.0", torch="2.5", python="3.11"))


def _write(run_dir: Path, data: object) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / SUMMARY).write_text(json.dumps(data), encoding="utf-8")
    return run_dir / SUMMARY


def _one_line_error(run_dir: Path) -> str:
    with pytest.raises(WarmstartError) as e:
        read_summary(run_dir)
    message = str(e.value)
    assert str(run_dir / SUMMARY) in message and "\n" not in message, message
    return message


def test_round_trip_keeps_every_field_and_the_json_layout(tmp_path):
    s = sample()
    d = s.to_dict()
    assert set(d) == KEYS | {"version", "task", "metric", "transferability", "augment"}
    assert d["version"] == SUMMARY_VERSION == 1
    assert d["examples"] == {"train": 16, "validation": 8, "test": 8}
    assert d["params"]["fraction"] == 0.1 and d["lr"]["groups"]["lora"] == 5e-4
    assert RunSummary.from_dict(d) == s
    _write(tmp_path / "r", d)
    assert read_summary(tmp_path / "r") == s
    assert is_finished(tmp_path / "r")


def test_quality_is_test_or_validation_without_a_test_split():
    with_test, without = sample(), sample(test=False)
    assert (with_test.quality_split, with_test.quality["accuracy"]) == ("test", 0.75)
    assert (without.quality_split, without.quality["accuracy"]) == ("validation", 0.5)
    assert without.metrics("train")["accuracy"] == 0.9 and without.examples.of("test") == 0


def test_a_file_without_version_is_version_1(tmp_path):
    d = sample().to_dict()
    del d["version"], d["task"], d["metric"], d["augment"]  # written before these existed
    _write(tmp_path / "old", d)
    s = read_summary(tmp_path / "old")
    assert s.version == 1 and s == sample()
    assert (s.task, s.metric, s.headline) == ("classification", "accuracy", 0.75)


def test_an_unknown_version_is_refused_in_one_line(tmp_path):
    _write(tmp_path / "new", {**sample().to_dict(), "version": 99})
    message = _one_line_error(tmp_path / "new")
    assert "99" in message and "upgrade warmstart" in message and "retrain" in message


@pytest.mark.parametrize("text", ['{"run": "runs/r", "model": ', "\x00\x01 not json", "[1, 2]"])
def test_a_corrupt_file_is_refused_in_one_line(tmp_path, text):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / SUMMARY).write_text(text, encoding="utf-8")
    assert "retrain" in _one_line_error(tmp_path / "r")


def test_a_missing_key_or_wrong_type_names_the_key(tmp_path):
    d = sample().to_dict()
    del d["examples"]["test"]
    _write(tmp_path / "missing", d)
    assert "'examples.test'" in _one_line_error(tmp_path / "missing")
    _write(tmp_path / "wrong", {**sample().to_dict(), "steps": "4"})
    assert "'steps'" in _one_line_error(tmp_path / "wrong")
    _write(tmp_path / "flag", {**sample().to_dict(), "epochs": True})
    assert "'epochs'" in _one_line_error(tmp_path / "flag")


def test_no_summary_says_the_run_has_not_finished(tmp_path):
    (tmp_path / "r").mkdir()
    assert "not finished" in _one_line_error(tmp_path / "r")


def test_a_real_runs_file_reads_back_as_what_train_returned(tmp_path):
    data = write_csv(tmp_path / "toy.csv", make_rows(n_per_class=8))
    returned = train(load_config(None, [
        "model.name=tiny-bert", f"data.name={data}", "train.epochs=2", "train.batch_size=8",
        f"output.dir={tmp_path / 'runs'}", "output.name=r", "output.save_model=false"]),
        quiet=True)
    assert isinstance(returned, RunSummary) and returned.version == SUMMARY_VERSION
    on_disk = read_summary(tmp_path / "runs" / "r")
    assert on_disk == returned
    assert on_disk.epochs == len(on_disk.history) == 2 and on_disk.test["accuracy"] >= 0
    raw = json.loads((tmp_path / "runs" / "r" / SUMMARY).read_text(encoding="utf-8"))
    # the layout scripts read, plus the task fields, LogME and the augmentation
    assert set(raw) == KEYS | {"version", "task", "metric", "transferability", "augment"}
    assert (raw["task"], raw["metric"]) == ("classification", "accuracy")
    assert raw["augment"] == "none"  # text: off by default
