"""The Python API, through the README's own "From Python" block."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from conftest import make_rows, write_csv

import warmstart

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_block() -> str:
    section = README.read_text(encoding="utf-8").split("## From Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_python_block_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_csv(tmp_path / "reviews.csv", make_rows(12))
    write_csv(tmp_path / "held_out.csv", make_rows(4, seed=1))
    code = _readme_block().replace('"minilm-l6"', '"tiny-bert"')
    assert "tiny-bert" in code  # the block names a model, which the test swaps for speed
    # Comparisons start `warmstart train` processes: they get tiny-bert through the base.
    code = code.replace('seeds=1)', 'seeds=1, model="tiny-bert", **{"train.epochs": 1})')
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
    run, model, result = namespace["run"], namespace["model"], namespace["result"]
    assert run.dir.is_dir() and run.summary.metric == "accuracy"
    assert isinstance(run.summary.headline, float)
    assert model.labels == ["food", "sport", "tech"]
    probs = model.predict_proba(["match goal team", "bread soup"])
    assert probs.shape == (2, 3) and np.allclose(probs.sum(axis=1), 1)
    assert model.predict(["match goal team"])[0] in model.labels
    assert result.dir.is_dir() and [r.strategy for r in result.rows] == ["head", "partial:k=1"]
    assert result.pick.startswith(("head", "partial"))
    out = capsys.readouterr().out  # the block's prints, and each run's results table
    assert str(run.dir) in out and result.pick in out


def test_train_takes_any_key_and_load_reads_runs_and_model_folders(tmp_path):
    data = write_csv(tmp_path / "d.csv", make_rows(12))
    run = warmstart.train(data=str(data), model="tiny-bert", **{
        "train.epochs": 1, "output.dir": str(tmp_path), "output.name": "r",
        "optim.betas": [0.9, 0.99], "train.group_by_length": False})
    assert run.summary.epochs == 1 and run.summary.strategy == "full"
    assert warmstart.read_summary(run.dir) == run.summary
    texts = ["match goal", "bread soup"]
    assert warmstart.load(run.dir / "model").predict(texts) == run.load().predict(texts)
