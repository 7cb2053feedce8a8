"""Tasks beyond one label: regression, multilabel, text pairs; inferred, trained, saved, served."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from conftest import WORDS

from warmstart.cli import main
from warmstart.config import DataConfig, TaskConfig, load_config
from warmstart.data import load_task
from warmstart.data.labels import infer_type
from warmstart.errors import WarmstartError
from warmstart.ship.predict import evaluate_file, predict
from warmstart.summary import read_summary
from warmstart.tasks import Classification, Multilabel, Regression

CLASSES = list(WORDS)


def _sentence(rng: random.Random, label: str) -> str:
    return " ".join(rng.choices(WORDS[label].split(), k=rng.randint(4, 9)))


def write_multilabel(path, n=60, seed=0, blank_every=0):
    """Texts mixing the vocabularies of one or two classes; the label cell names them."""
    rng = random.Random(seed)
    lines = ["text,labels"]
    for i in range(n):
        if blank_every and i % blank_every == 0:
            lines.append(f'"{_sentence(rng, "food")} hmm",')  # no label at all
            continue
        chosen = sorted(rng.sample(CLASSES[:2], rng.choice([1, 2])))
        text = " ".join(_sentence(rng, c) for c in chosen)
        lines.append(f'"{text}",{";".join(chosen)}')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_pairs(path, n=60, seed=0, score=False):
    """Pairs of sentences whose label depends on the *second* one only (is it about sport?):
    a model that did not read the pair could not learn it."""
    rng = random.Random(seed)
    lines = ["text,text_pair,label"]
    for i in range(n):
        a, b = rng.choice(CLASSES), CLASSES[i % 3]
        label = f"{(4.5 if b == 'sport' else 0.5) + rng.random() / 2:.2f}" if score \
            else int(b == "sport")
        lines.append(f'"{_sentence(rng, a)}","{_sentence(rng, b)}",{label}')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def train(tmp_path, name, *overrides):
    """A tiny-bert run long enough to learn the toy tasks (6 epochs of 15 steps)."""
    assert main(["train", "model.name=tiny-bert", f"output.dir={tmp_path}",
                 f"output.name={name}", "log.quiet=true", "train.epochs=6",
                 "train.batch_size=8", "optim.lr=3e-3", *overrides]) == 0
    return tmp_path / name


# ------------------------------------------------------------------ inference and errors

@pytest.mark.parametrize(("cells", "kind"), [
    (["0.5", "3.25", "1"], "regression"),
    (["1", "2", "10"], "classification"),
    (["joy;anger", "joy", ""], "multilabel"),
    (["cat", "dog"], "classification"),
    (["1e-3", "2"], "regression"),
    (["nan", "2.5"], "classification"),  # not finite: a name, not a score
])
def test_the_task_type_is_read_from_the_label_cells(cells, kind):
    assert infer_type(cells, ";")[0] == kind


def test_inferred_or_given_types_encode_labels_for_the_task(tmp_path):
    pairs = write_pairs(tmp_path / "p.csv", score=True)
    data = load_task(DataConfig(name=str(pairs), text_pair_column="text_pair"), 0)
    assert isinstance(data.task, Regression) and "inferred" in data.task_reason
    assert data.train.labels.dtype == np.float32 and data.train.labels.ndim == 1
    assert isinstance(data.train.inputs[0], tuple) and len(data.train.inputs[0]) == 2
    total = len(data.train) + len(data.validation) + len(data.test)
    assert total == 60

    multi = write_multilabel(tmp_path / "m.csv", blank_every=10)
    data = load_task(DataConfig(name=str(multi), label_column="labels"), 0)
    assert isinstance(data.task, Multilabel) and data.task.label_names == CLASSES[:2]
    everything = np.concatenate([data.train.labels, data.validation.labels, data.test.labels])
    assert everything.shape == (60, 2)
    assert (everything.sum(axis=1) == 0).sum() == 6  # blank cells: examples with no label

    binary = write_pairs(tmp_path / "b.csv")
    assert isinstance(load_task(DataConfig(name=str(binary), text_pair_column="text_pair"),
                                0).task, Classification)
    forced = load_task(DataConfig(name=str(binary), text_pair_column="text_pair"), 0,
                       TaskConfig(type="regression"))
    assert isinstance(forced.task, Regression) and forced.task_reason == "task.type"
    assert set(forced.train.labels.tolist()) == {0.0, 1.0}


@pytest.mark.parametrize(("content", "overrides", "match"), [
    ("text,label\na,1.5\nb,2.5\nc,x\nd,3.5\n", {"task": "regression"},
     r"regression label 'x' in '.*bad.csv' row 4 is not a number"),
    ("text,text_pair,label\na,b,1\nc,,0\nd,e,1\n", {"pair": "text_pair"},
     r"bad.csv' row 3: the pair column 'text_pair'"),
    ("text,label\na,1\nb,0\n", {"pair": "other"}, r"no column 'other'.*data.text_pair_column"),
    ("text,label\na,x|y\nb,y\nc,x\n", {"task": "multilabel"},
     r"no label cell .* holds data.label_separator ';', while 1 hold '\|'"),
])
def test_bad_task_input_names_file_row_and_column(tmp_path, content, overrides, match):
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(WarmstartError, match=match):
        load_task(DataConfig(name=str(path), text_pair_column=overrides.get("pair")), 0,
                  TaskConfig(type=overrides.get("task", "auto")))


def test_a_task_type_the_data_cannot_have_is_refused(tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    for c in ("a", "b"):
        (folder / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8)).save(folder / c / f"{i}.png")
    with pytest.raises(WarmstartError, match="task.type=regression but .* image set"):
        load_task(DataConfig(name=str(folder)), 0, TaskConfig(type="regression"))


@pytest.mark.parametrize(("overrides", "match"), [
    (["train.metric=accuracy"], r"'accuracy' is not a regression metric.*spearman"),
    (["train.class_weights=balanced"], "class_weights does not apply to regression"),
])
def test_settings_that_do_not_fit_the_task_are_refused(tmp_path, overrides, match):
    pairs = write_pairs(tmp_path / "p.csv", score=True)
    cfg = load_config(None, ["model.name=tiny-bert", f"data.name={pairs}",
                             "data.text_pair_column=text_pair", *overrides])
    from warmstart.training.session import setup

    with pytest.raises(WarmstartError, match=match):
        setup(cfg)


# ------------------------------------------------------------------ metrics and thresholds

def test_regression_metrics_are_scipys_and_sklearns():
    from scipy.stats import pearsonr, spearmanr

    rng = np.random.default_rng(0)
    y = rng.normal(size=50).astype(np.float32)
    pred = (y + rng.normal(scale=0.5, size=50)).astype(np.float32)
    m = Regression(["score"]).metrics(pred[:, None], y)
    assert m["pearson"] == pytest.approx(pearsonr(y, pred)[0])
    assert m["spearman"] == pytest.approx(spearmanr(y, pred)[0])
    assert m["mse"] == pytest.approx(float(np.mean((y - pred) ** 2)), rel=1e-5)
    assert m["loss"] == m["mse"]
    assert Regression(["score"]).metrics(np.zeros((5, 1), np.float32), y[:5])["pearson"] == 0


def test_multilabel_thresholds_are_tuned_to_the_best_f1_globally_or_per_label():
    rng = np.random.default_rng(0)
    y = (rng.random((400, 2)) < 0.4).astype(np.float32)
    # Label 0's positives score around p=0.3, label 1's around 0.7; negatives lower.
    probs = np.where(y == 1, [0.32, 0.72], [0.1, 0.4]) + rng.normal(scale=0.03, size=y.shape)
    logits = np.log(probs / (1 - probs)).astype(np.float32)
    task = Multilabel(["a", "b"])
    at_half = task.metrics(logits, y)["f1_macro"]
    shared = task.tuned(logits, y)
    per = Multilabel(["a", "b"], per_label=True).tuned(logits, y)
    assert len(set(shared.thresholds)) == 1
    assert per.thresholds[0] < 0.32 < per.thresholds[1] or per.thresholds[1] < 0.72
    assert 0.1 < per.thresholds[0] < 0.32 and 0.4 < per.thresholds[1] < 0.72
    assert per.metrics(logits, y)["f1_macro"] == pytest.approx(1.0)
    assert shared.metrics(logits, y)["f1_macro"] >= at_half
    assert per.metrics(logits, y)["f1_macro"] >= shared.metrics(logits, y)["f1_macro"]


def test_multilabel_loss_is_bce_and_balanced_weights_are_negatives_over_positives():
    y = np.array([[1, 0], [1, 0], [0, 1], [1, 0]], dtype=np.float32)
    task = Multilabel(["a", "b"])
    w = task.class_weights(y, "balanced")
    assert w.tolist() == pytest.approx([1 / 3, 3.0])
    logits = torch.zeros(4, 2)
    assert task.loss(logits, torch.from_numpy(y)).item() == pytest.approx(np.log(2), rel=1e-5)


def test_a_new_head_starts_at_the_training_labels_rates():
    from warmstart.config import ModelConfig
    from warmstart.models import build_model
    from warmstart.models.base import start_head_bias

    # Multilabel: each label's sigmoid is its (Laplace-smoothed) rate; rare labels start low.
    y = np.zeros((98, 3), dtype=np.float32)
    y[:49, 0], y[:1, 1] = 1, 1
    rates = 1 / (1 + np.exp(-Multilabel(["a", "b", "c"]).head_bias(y)))
    assert rates.tolist() == pytest.approx([0.5, 0.02, 0.01])
    # Classification and regression (its targets standardised) keep a zero bias.
    assert Classification(["x", "y"]).head_bias(np.array([0, 0, 1])) is None
    assert Regression(["s"]).head_bias(np.array([1.0, 2.0])) is None
    # The head's output layer takes it; nothing else moves.
    bias = np.log([0.7, 0.2, 0.1])
    adapter = build_model(ModelConfig(name="tiny-bert"), 3, seed=0)
    before = {k: v.clone() for k, v in adapter.module.state_dict().items()}
    start_head_bias(adapter, bias)
    changed = [k for k, v in adapter.module.state_dict().items() if not torch.equal(v, before[k])]
    assert changed == ["classifier.bias"]
    assert adapter.module.classifier.bias.tolist() == pytest.approx(bias.tolist())


def test_a_head_on_a_normalised_vector_starts_as_large_as_a_transformers_head():
    from transformers import BertConfig, BertModel

    from warmstart.models.pooling import PooledClassifier, Pooling

    config = BertConfig(hidden_size=256, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, vocab_size=100)
    torch.manual_seed(0)
    plain = PooledClassifier(BertModel(config), Pooling("mean", False), 50, 0.1)
    unit = PooledClassifier(BertModel(config), Pooling("mean", True), 50, 0.1)
    # The logits' spread on a unit vector is what transformers' 0.02 gives on unit components.
    assert plain.classifier.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert unit.classifier.weight.std().item() == pytest.approx(0.02 * 16, rel=0.05)


# ------------------------------------------------------------------ end to end

def test_regression_on_pairs_trains_saves_and_reloads_in_transformers(tmp_path, capsys):
    pairs = write_pairs(tmp_path / "p.csv", n=120, score=True)
    run = train(tmp_path, "reg", f"data.name={pairs}", "data.text_pair_column=text_pair")
    summary = read_summary(run)
    assert (summary.task, summary.metric) == ("regression", "spearman")
    # The second text decides the score up to noise within each group (which caps Spearman).
    assert summary.validation["pearson"] > 0.8
    assert "mse" in summary.test and "accuracy" not in summary.test
    err = capsys.readouterr().err
    assert "task regression" in err and "inferred" in err

    config = json.loads((run / "model" / "config.json").read_text())
    assert config["problem_type"] == "regression"
    preds = predict(run, [("match goal team", "goal coach win"), ("match goal", "bread soup")])
    assert set(preds[0]) == {"score"}
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    hf = AutoModelForSequenceClassification.from_pretrained(run / "model").eval()
    tok = AutoTokenizer.from_pretrained(run / "model")
    with torch.no_grad():
        out = hf(**tok(["match goal team", "match goal"], ["goal coach win", "bread soup"],
                       padding=True, return_tensors="pt")).logits
    assert out.shape == (2, 1)
    assert out[:, 0].tolist() == pytest.approx([p["score"] for p in preds], abs=1e-4)

    assert main(["predict", str(run), "--text", "match goal", "--text-pair", "bread soup",
                 "--output", str(tmp_path / "o.csv")]) == 0
    header = (tmp_path / "o.csv").read_text().splitlines()[0]
    assert header == "input,input_pair,score"


@pytest.mark.parametrize("strategy", ["full", "head", "lora"])
def test_multilabel_trains_with_tuned_thresholds_saved_and_used_by_predict(tmp_path, strategy):
    data = write_multilabel(tmp_path / "m.csv", n=120, blank_every=15)
    run = train(tmp_path, strategy, f"data.name={data}", "data.label_column=labels",
                f"strategy.name={strategy}", "task.thresholds=per_label",
                *([] if strategy == "full" else ["train.epochs=2"]))
    summary = read_summary(run)
    assert (summary.task, summary.metric) == ("multilabel", "f1_macro")
    assert summary.labels == CLASSES[:2]
    assert set(summary.test["thresholds"]) == set(CLASSES[:2])
    meta = json.loads((run / "model" / "warmstart_model.json").read_text())
    assert meta["task"]["thresholds"] == list(summary.test["thresholds"].values())
    if strategy == "full":
        assert summary.validation["f1_macro"] > 0.8
        rows = predict(run, [_sentence(random.Random(1), "sport") + " " +
                             _sentence(random.Random(2), "tech")])
        assert set(rows[0]) == {"labels", "probabilities"}
        assert set(rows[0]["labels"]) <= set(CLASSES[:2])
        metrics = evaluate_file(run, data)
        assert "per_label" in metrics and "subset_accuracy" in metrics


def test_pair_classification_reads_both_texts(tmp_path):
    pairs = write_pairs(tmp_path / "p.csv", n=120)
    run = train(tmp_path, "pairs", f"data.name={pairs}", "data.text_pair_column=text_pair")
    summary = read_summary(run)
    assert summary.task == "classification" and summary.labels == ["0", "1"]
    # Only the second text says the label: above chance means the model read the pair.
    assert summary.validation["accuracy"] > 0.8
    rows = predict(run, [("match goal team", "coach win season")])
    assert set(rows[0]) == {"label", "probabilities"}


def test_compare_tables_and_picks_by_the_tasks_metrics(tmp_path):
    pairs = write_pairs(tmp_path / "p.csv", n=60, score=True)
    assert main(["compare", "model.name=tiny-bert", f"data.name={pairs}",
                 "data.text_pair_column=text_pair", "train.epochs=1", "optim.lr=3e-3",
                 f"output.dir={tmp_path}", "--strategies", "head,full", "--name", "r"]) == 0
    out = tmp_path / "compare-r"
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert {"test_spearman_mean", "test_pearson_mean"} <= set(header)
    assert "test_accuracy_mean" not in header
    assert "highest mean test Spearman" in (out / "report.md").read_text()
    assert "Predicted vs true" in (out / "report.html").read_text()


# ------------------------------------------------------------------ bi-encoder pairs

def write_similar_pairs(path, n=120, seed=0, score=True):
    """Pairs whose label says whether the two texts share a topic: what a bi-encoder's cosine
    can express (a label that depends on one text alone would not be)."""
    rng = random.Random(seed)
    lines = ["text,text_pair,label"]
    for i in range(n):
        a = rng.choice(CLASSES)
        b = a if i % 2 else rng.choice([c for c in CLASSES if c != a])
        label = (f"{(4.5 if a == b else 0.5) + rng.random() / 2:.2f}" if score
                 else int(a == b))
        lines.append(f'"{_sentence(rng, a)}","{_sentence(rng, b)}",{label}')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_bi_encoder_scores_pairs_by_cosine_symmetrically_and_reloads(tmp_path):
    pairs = write_similar_pairs(tmp_path / "s.csv")
    run = train(tmp_path, "bi", f"data.name={pairs}", "data.text_pair_column=text_pair",
                "model.pair_encoding=bi")
    summary = read_summary(run)
    assert summary.task == "regression" and summary.validation["pearson"] > 0.8
    # The head's own lr: the model's default for a bi-encoder's two-weight head.
    assert summary.lr.groups["head"] == pytest.approx(1e-2)
    meta = json.loads((run / "model" / "warmstart_model.json").read_text())
    assert meta["pair_encoding"] == "bi"
    a, b = "match goal team win", "coach season goal"
    forward, backward = predict(run, [(a, b), (b, a)])
    # Each text is encoded alone: the order of the pair cannot matter (it does in cross).
    assert forward["score"] == pytest.approx(backward["score"], abs=1e-5)
    assert "cosine of the two vectors" in (run / "README.md").read_text()
    assert main(["export", str(run), str(tmp_path / "onnx"), "--format", "onnx"]) == 0
    exported = predict(tmp_path / "onnx", [(a, b), ("bread soup", b)])
    assert exported[0]["score"] == pytest.approx(forward["score"], abs=1e-4)


def test_bi_encoder_classifies_pairs_and_runs_partial_uncached(tmp_path, capsys):
    pairs = write_similar_pairs(tmp_path / "c.csv", score=False)
    run = train(tmp_path, "bic", f"data.name={pairs}", "data.text_pair_column=text_pair",
                "model.pair_encoding=bi")
    assert read_summary(run).validation["accuracy"] > 0.8
    capsys.readouterr()
    train(tmp_path, "bip", f"data.name={pairs}", "data.text_pair_column=text_pair",
          "model.pair_encoding=bi", "strategy.name=partial", "train.epochs=1")
    said = " ".join(capsys.readouterr().err.split())  # the console wraps long lines
    assert "not cached: a bi-encoder runs them once per text of a pair" in said


def test_a_bi_encoder_score_starts_as_the_cosine_of_the_two_texts():
    from warmstart.config import ModelConfig
    from warmstart.models import build_model

    adapter = build_model(ModelConfig(name="tiny-bert", pair_encoding="bi"), 1, seed=0)
    model = adapter.module.eval()
    batch = adapter.collate(adapter.encode([("match goal team", "bread soup"),
                                            ("coach win", "coach win season")]))
    with torch.no_grad():
        scores = model(**batch)[:, 0]
        first = {k: v for k, v in batch.items() if not k.endswith("_b")}
        second = {k.removesuffix("_b"): v for k, v in batch.items() if k.endswith("_b")}
        cosine = torch.nn.functional.cosine_similarity(model.features(**first),
                                                       model.features(**second))
    assert scores.tolist() == pytest.approx(cosine.tolist(), abs=1e-6)
    # Trained on targets from 0 to 5, the head starts at sentence-transformers' reading of
    # a cosine: 0 is the lowest target, 1 the highest (in the task's standardised units).
    task = Regression.fitted(["score"], np.array([0.0, 1.0, 4.0, 5.0]))
    model.start_score(task.cosine_head())
    with torch.no_grad():
        predicted = task.values(model(**batch).numpy())
    assert predicted.tolist() == pytest.approx((5 * cosine).tolist(), abs=1e-5)


@pytest.mark.parametrize(("overrides", "match"), [
    ([], "'model.pair_encoding': bi encodes the two texts of a pair apart"),
    (["data.text_pair_column=text_pair", "model.pooling=pooler"], "'model.pooling': pooler"),
])
def test_bi_encoder_settings_that_cannot_work_are_refused(overrides, match):
    with pytest.raises(WarmstartError, match=match):
        load_config(None, ["model.pair_encoding=bi", *overrides])
