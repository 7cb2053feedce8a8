"""Ensembles and soups of finished runs: what they predict, where they are accepted, what is
refused (tiny-bert runs on toy data; classification, multilabel and regression)."""

from __future__ import annotations

import io
import json
import shutil
import time

import numpy as np
import pytest
import torch
from conftest import make_rows, write_csv
from fastapi.testclient import TestClient
from rich.console import Console
from test_tasks import write_multilabel, write_pairs

import warmstart
from warmstart.cli import main
from warmstart.errors import WarmstartError
from warmstart.models.ensemble import ENSEMBLE_FILE
from warmstart.ship.ensemble import ensemble, greedy_weights
from warmstart.ship.export import export
from warmstart.ship.members import load_members, score_key
from warmstart.ship.predict import evaluate_file, predict
from warmstart.ship.serve import load_served, make_app
from warmstart.ship.soup import average, check_soupable, soup
from warmstart.summary import read_summary

TEXTS = ["match goal team", "bread soup recipe", "phone chip data", "goal bread code"]


def train(root, name, data, seed, *overrides):
    """A short tiny-bert run; every run of a test shares the split (data.split_seed=0)."""
    assert main(["train", "model.name=tiny-bert", f"data.name={data}", f"output.dir={root}",
                 f"output.name={name}", "log.quiet=true", "train.epochs=2",
                 "train.batch_size=8", "optim.lr=3e-3", f"train.seed={seed}",
                 "data.split_seed=0", "--quiet", *overrides]) == 0
    return root / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three classification runs at different seeds, on one split."""
    root = tmp_path_factory.mktemp("runs")
    data = write_csv(root / "d.csv", make_rows(20))
    return [train(root, f"r{s}", data, s) for s in range(3)] + [data]


def member_probs(run_dirs, texts):
    return [warmstart.load(r).predict_proba(texts) for r in run_dirs]


@pytest.mark.parametrize("weights", ["equal", "greedy"])
def test_predictions_are_the_weighted_average_of_the_members_probabilities(runs, tmp_path,
                                                                         weights):
    result = ensemble(runs[:3], tmp_path / "ens", weights)
    assert len(result.weights) == 3 and sum(result.weights) == pytest.approx(1)
    if weights == "equal":
        assert result.weights == pytest.approx([1 / 3] * 3)
    expected = sum(w * p for w, p in zip(result.weights, member_probs(runs[:3], TEXTS)))
    model = warmstart.load(result.dir)
    assert np.allclose(model.predict_proba(TEXTS), expected, atol=1e-5)
    assert model.labels == ["food", "sport", "tech"]
    # Members with no weight are left out of the folder; the others are copied in.
    kept = [p for p in (result.dir / "members").iterdir()]
    assert len(kept) == sum(w > 0 for w in result.weights)
    summary = read_summary(result.dir)
    assert summary.strategy == f"ensemble:{weights}" and "accuracy" in summary.test
    assert summary.train_seconds == pytest.approx(sum(
        read_summary(r).train_seconds for r, w in zip(runs, result.weights) if w > 0))


def test_greedy_weights_score_at_least_equal_weights_on_validation(runs, tmp_path):
    greedy = ensemble(runs[:3], tmp_path / "g", "greedy").summary
    equal = ensemble(runs[:3], tmp_path / "e", "equal").summary
    assert score_key(greedy.validation, "accuracy") >= score_key(equal.validation, "accuracy")
    best_single = max(score_key(read_summary(r).validation, "accuracy") for r in runs[:3])
    assert score_key(greedy.validation, "accuracy") >= best_single


def test_greedy_selection_adds_with_replacement_and_stops_without_gain():
    # Member 1 alone is best; adding anything else only lowers the score.
    def score(w):
        return (-abs(w[1] - 1.0), 0.0)
    weights, rounds = greedy_weights(score, 3)
    assert weights.tolist() == [0.0, 1.0, 0.0] and rounds == 6  # 1 good round + 5 stale
    # Two parts of member 0 to one of member 2 is best: found by adding member 0 twice.
    target = np.array([2 / 3, 0, 1 / 3])
    weights, _ = greedy_weights(lambda w: (-float(np.abs(w - target).sum()), 0.0), 3)
    assert weights == pytest.approx(target)


def test_predict_evaluate_serve_and_export_accept_an_ensemble(runs, tmp_path, capsys):
    ens = ensemble(runs[:2], tmp_path / "ens", "equal").dir
    assert main(["predict", str(ens), "--text", TEXTS[0], "--output",
                 str(tmp_path / "p.json")]) == 0
    rows = json.loads((tmp_path / "p.json").read_text())
    assert rows[0]["label"] in ("food", "sport", "tech")
    held_out = write_csv(tmp_path / "held.csv", make_rows(4, seed=1))
    metrics = evaluate_file(ens, held_out)
    assert 0 <= metrics["accuracy"] <= 1 and "per_class" in metrics

    with TestClient(make_app(load_served(ens))) as client:
        body = client.post("/predict", json={"inputs": TEXTS[:2]}).json()
        meta = client.get("/metadata").json()
    assert [r["label"] for r in body["predictions"]] == [r["label"] for r in
                                                        predict(ens, TEXTS[:2])]
    assert meta["strategy"] == "ensemble:equal" and meta["task"] == "classification"

    out = export(ens, tmp_path / "exported")
    assert (out / ENSEMBLE_FILE).is_file()
    assert len(list((out / "members").iterdir())) == 2
    assert np.allclose(warmstart.load(out).predict_proba(TEXTS),
                       warmstart.load(ens).predict_proba(TEXTS), atol=1e-4)


def test_an_onnx_export_of_an_ensemble_predicts_the_same(runs, tmp_path):
    pytest.importorskip("onnxruntime")
    ens = ensemble(runs[:2], tmp_path / "ens", "equal").dir
    out = export(ens, tmp_path / "onnx", fmt="onnx")
    assert all((m / "model.onnx").is_file() for m in (out / "members").iterdir())
    assert np.allclose(warmstart.load(out).predict_proba(TEXTS),
                       warmstart.load(ens).predict_proba(TEXTS), atol=1e-4)


def test_the_ensemble_keeps_working_when_its_runs_are_deleted(runs, tmp_path):
    copies = [shutil.copytree(r, tmp_path / r.name) for r in runs[:2]]
    ens = warmstart.ensemble(copies, tmp_path / "ens", weights="equal").dir  # the Python API
    before = warmstart.load(ens).predict_proba(TEXTS)
    for c in copies:
        shutil.rmtree(c)
    assert np.allclose(warmstart.load(ens).predict_proba(TEXTS), before)


def test_runs_that_cannot_be_combined_are_refused_in_one_line(runs, tmp_path):
    other_split = train(tmp_path, "other", runs[3], 0, "data.split_seed=5")
    cases = [([runs[0]], "at least 2 runs"),
             ([runs[0], runs[0]], "listed twice"),
             ([runs[0], other_split], "different validation/test examples"),
             ([runs[0], runs[1] / "model"], "not a run directory")]
    for members, match in cases:
        with pytest.raises(WarmstartError, match=match) as e:
            ensemble(members, tmp_path / "x")
        assert "\n" not in str(e.value)
    ensemble(runs[:2], tmp_path / "ens", "equal")
    with pytest.raises(WarmstartError, match="is an ensemble"):
        ensemble([tmp_path / "ens", runs[2]], tmp_path / "y")
    with pytest.raises(WarmstartError, match="not an empty folder"):
        ensemble(runs[:2], tmp_path / "ens")
    assert main(["ensemble", str(runs[0]), str(runs[1]), "--out", str(tmp_path / "ens"),
                 "--overwrite", "--weights", "equal"]) == 0


def test_multilabel_ensemble_averages_label_probabilities_and_retunes_thresholds(tmp_path):
    data = write_multilabel(tmp_path / "m.csv", n=90)
    members = [train(tmp_path, f"m{s}", data, s, "data.label_column=labels") for s in (0, 1)]
    ens = ensemble(members, tmp_path / "ens", "equal").dir
    texts = ["match goal chip data", "bread soup"]
    rows = [predict(m, texts) for m in members]
    expected = [[np.mean([r[i]["probabilities"][k] for r in rows]) for k in ("sport", "tech")]
                for i in range(2)]
    got = predict(ens, texts)
    assert np.allclose([[row["probabilities"][k] for k in ("sport", "tech")] for row in got],
                       expected, atol=1e-5)
    meta = json.loads((ens / "warmstart_model.json").read_text())
    assert meta["task"]["type"] == "multilabel" and len(meta["task"]["thresholds"]) == 2
    assert read_summary(ens).test["thresholds"] == dict(zip(["sport", "tech"],
                                                            meta["task"]["thresholds"]))


def test_regression_ensemble_averages_the_scores(tmp_path):
    data = write_pairs(tmp_path / "p.csv", n=60, score=True)
    members = [train(tmp_path, f"g{s}", data, s, "data.text_pair_column=text_pair")
               for s in (0, 1)]
    ens = ensemble(members, tmp_path / "ens", "greedy")
    pairs = [("match goal", "coach win"), ("bread", "chip data")]
    scores = np.array([[r["score"] for r in predict(m, pairs)] for m in members])
    got = [r["score"] for r in predict(ens.dir, pairs)]
    assert got == pytest.approx((np.array(ens.weights) @ scores).tolist(), abs=1e-4)
    assert read_summary(ens.dir).metric == "spearman"


@pytest.mark.parametrize("how", ["uniform", "greedy"])
def test_a_soup_is_a_run_that_loads_and_predicts(runs, tmp_path, how):
    result = soup(runs[:3], tmp_path / "soup", how)
    assert (result.dir / "summary.json").is_file() and (result.dir / "model").is_dir()
    assert predict(result.dir, TEXTS)[0]["label"] in ("food", "sport", "tech")
    model = warmstart.load(result.dir).adapter.module.state_dict()
    weights = [warmstart.load(r).adapter.module.state_dict() for r in result.kept]
    key = next(k for k, v in model.items() if v.is_floating_point() and v.dim() == 2)
    assert torch.allclose(model[key], torch.stack([w[key] for w in weights]).mean(0), atol=1e-6)
    if how == "uniform":
        assert result.kept == runs[:3]
    else:  # greedy starts from the best run and never lowers the validation score
        best = max(read_summary(r).validation["accuracy"] for r in runs[:3])
        assert result.summary.validation["accuracy"] >= best - 1e-9
    assert main(["evaluate", str(result.dir), "--data", str(runs[3])]) == 0
    assert main(["soup", *map(str, runs[:2]), "--out", str(result.dir), "--how", how,
                 "--overwrite"]) == 0
    assert len(json.loads((result.dir / "soup.json").read_text())["runs"]) == 2


def test_soup_refuses_runs_that_cannot_be_averaged(runs, tmp_path):
    renamed = shutil.copytree(runs[1], tmp_path / "renamed")
    config = renamed / "config.yaml"
    config.write_text(config.read_text().replace("name: tiny-bert", "name: tiny-bert-2"))
    with pytest.raises(WarmstartError, match="different models") as e:
        warmstart.soup([runs[0], renamed], tmp_path / "x")
    assert "\n" not in str(e.value)
    members = load_members(runs[:2], "a soup")
    states = [dict(warmstart.load(r).adapter.module.state_dict()) for r in runs[:2]]
    key = next(iter(states[1]))
    states[1][key] = torch.zeros(3, 3)
    with pytest.raises(WarmstartError, match="different names or shapes"):
        check_soupable(members, states)
    # Integer buffers must be equal, except batch norm's step counters, which differ between
    # runs of different lengths (or frozen blocks) and are kept at their largest.
    states = [{"pos": torch.arange(3), "bn.num_batches_tracked": torch.tensor(n),
               "bn.weight": torch.full((2,), float(n))} for n in (4, 10)]
    check_soupable(members, states)
    mean = average(states)
    assert mean["bn.num_batches_tracked"].item() == 10 and mean["bn.weight"].tolist() == [7, 7]
    states[1]["pos"] = torch.arange(1, 4)
    with pytest.raises(WarmstartError, match="fixed buffer 'pos'"):
        check_soupable(members, states)


def test_compare_with_seeds_adds_the_ensemble_of_the_best_strategy(runs, tmp_path):
    assert main(["compare", "model.name=tiny-bert", f"data.name={runs[3]}", "train.epochs=1",
                 f"output.dir={tmp_path}", "--strategies", "head", "--seeds", "2",
                 "--name", "c", "--quiet"]) == 0
    out = tmp_path / "compare-c"
    table = (out / "results.csv").read_text()
    assert "ensemble of head (2 seeds)" in table
    ens = out / "ensemble-head"
    assert (ens / ENSEMBLE_FILE).is_file() and predict(ens, TEXTS[:1])
    assert "ensemble of head (2 seeds)" in (out / "report.md").read_text()


def test_auto_soups_its_best_race_runs_and_counts_the_soup_as_a_candidate(runs, tmp_path):
    from warmstart.choose import auto, auto_report

    def race(out, run_dirs):
        (out / "race").mkdir(parents=True)
        trials = [{"outcome": "complete", "run": str(r), "value:optim.lr": 1e-3,
                   "score": read_summary(r).validation["accuracy"]} for r in run_dirs]
        (out / "race" / "search.json").write_text(json.dumps({"trials": trials}))
        return {"probe": {"metric": "accuracy", "overhead": 1.0, "score": 0.0, "seconds": 1.0,
                          "run": str(run_dirs[0])}, "budget_seconds": 60.0, "rules": [],
                "seconds": 1.0}

    quiet = Console(file=io.StringIO())
    out = tmp_path / "auto"
    facts = race(out, runs[:3])
    auto._soup(out, time.time() + 600, facts, quiet)
    assert facts["soup"]["outcome"] == "made"
    assert set(facts["soup"]["runs"]) == {str(r) for r in runs[:3]}
    assert facts["soup"]["kept"] and set(facts["soup"]["kept"]) <= set(facts["soup"]["runs"])
    assert facts["soup"]["score"] == read_summary(out / "soup").validation["accuracy"]
    auto_report.finish(out, facts, quiet)
    assert "greedy soup of the best 3 race runs" in (out / "report.md").read_text()
    # The soup competes on validation like any run: it wins by scoring highest, or by tying
    # the best run (greedy souping starts from it, so it never scores below it).
    best = max([read_summary(r).validation["accuracy"] for r in runs[:3]])
    assert facts["soup"]["score"] >= best
    assert facts["best"] == str(out / "soup")

    renamed = shutil.copytree(runs[1], tmp_path / "renamed")
    config = renamed / "config.yaml"
    config.write_text(config.read_text().replace("name: tiny-bert", "name: tiny-bert-2"))
    facts = race(tmp_path / "refused", [runs[0], renamed])
    auto._soup(tmp_path / "refused", time.time() + 600, facts, quiet)
    assert facts["soup"]["outcome"].startswith("refused: ") and "different models" in \
        facts["soup"]["outcome"]
    facts = race(tmp_path / "late", runs[:2])
    auto._soup(tmp_path / "late", time.time() + 1, facts, quiet)
    assert facts["soup"] == {"outcome": "not tried: too little budget left"}
