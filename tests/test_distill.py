"""Distillation: the loss against torch's own functions, the teacher's outputs cached, the
layer-dropped student, `warmstart distill` end to end for each task type, and bad inputs."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import WORDS, make_rows, write_csv

from warmstart import api
from warmstart.cli import main
from warmstart.config import load_config
from warmstart.distillation import teacher as teacher_module
from warmstart.errors import WarmstartError
from warmstart.models import load_adapter
from warmstart.models.layerdrop import keep_layers
from warmstart.ship.predict import evaluate_file, predict
from warmstart.summary import read_summary
from warmstart.tasks import Classification, Multilabel, Regression
from warmstart.training.distill_loss import distill_loss, pack_targets, soft_loss
from warmstart.training.loss import make_loss
from warmstart.training.run import train

TINY = ["model.name=tiny-bert", "train.epochs=3", "train.batch_size=8", "optim.lr=1e-2",
        "log.quiet=true"]
FAST = ["train.epochs=1", "log.quiet=true"]  # a student run: one epoch is enough to check


# ------------------------------------------------------------------------------ the loss


def _batch(task, n=6, k=3, unlabelled=(4, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g, requires_grad=True)
    teacher = torch.randn(n, k, generator=g) * 3
    if task.type == "classification":
        labels = torch.randint(0, k, (n,), generator=g)
    elif task.type == "multilabel":
        labels = (torch.rand(n, k, generator=g) > 0.5).float()
    else:
        labels, teacher = torch.randn(n, generator=g) * 2 + 1, teacher[:, :1]
    labelled = np.array([i not in unlabelled for i in range(n)])
    targets = torch.from_numpy(pack_targets(teacher.numpy(), labelled))
    return logits, teacher, labels, torch.from_numpy(labelled), targets


TASKS = [Classification(["a", "b", "c"]), Multilabel(["a", "b", "c"]),
         Regression(["score"], mean=1.0, scale=2.0)]


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.type)
def test_the_loss_is_the_hand_formula(task):
    T, alpha = 2.5, 0.3
    logits, teacher, labels, labelled, targets = _batch(task)
    if task.type == "regression":
        logits = logits[:, :1].detach().requires_grad_()
    got = distill_loss(task, make_loss(task), temperature=T, alpha=alpha)(
        logits, {"labels": labels, "targets": targets})
    if task.type == "classification":
        soft = (F.softmax(teacher / T, 1) * (F.log_softmax(teacher / T, 1)
                                             - F.log_softmax(logits / T, 1))).sum(1) * T * T
        hard = F.cross_entropy(logits[labelled], labels[labelled])
    elif task.type == "multilabel":
        soft = F.binary_cross_entropy_with_logits(
            logits / T, torch.sigmoid(teacher / T), reduction="none").mean(1) * T * T
        hard = F.binary_cross_entropy_with_logits(logits[labelled], labels[labelled])
    else:  # the teacher's score, standardised as the labels are
        soft = (logits[:, 0] - (teacher[:, 0] - 1.0) / 2.0) ** 2
        hard = F.mse_loss(logits[labelled, 0], (labels[labelled] - 1.0) / 2.0)
    share = labelled.float().mean()
    want = alpha * soft.mean() + (1 - alpha) * share * hard
    assert torch.allclose(got, want, atol=1e-6), (got, want)


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.type)
def test_alpha_zero_is_the_task_loss(task):
    logits, _, labels, _, targets = _batch(task, unlabelled=())
    if task.type == "regression":
        logits = logits[:, :1]
    hard = make_loss(task, label_smoothing=0.1 if task.type != "regression" else 0.0)
    got = distill_loss(task, hard, temperature=2.0, alpha=0.0)(
        logits, {"labels": labels, "targets": targets})
    assert torch.allclose(got, hard(logits, {"labels": labels}))


def test_unlabelled_rows_get_the_soft_part_only():
    task, alpha, T = Classification(["a", "b", "c"]), 0.4, 2.0
    logits, teacher, labels, labelled, targets = _batch(task)
    loss_fn = distill_loss(task, make_loss(task), temperature=T, alpha=alpha)
    loss = loss_fn(logits, {"labels": labels, "targets": targets})
    other = labels.clone()
    other[~labelled] = (labels[~labelled] + 1) % 3  # their (placeholder) labels change...
    assert torch.allclose(loss, loss_fn(logits, {"labels": other, "targets": targets}))
    loss.backward()  # ...and their gradient is the soft part's alone
    soft = soft_loss(task, logits, teacher, T)
    expected = torch.autograd.grad(alpha * soft.sum() / len(soft), logits)[0]
    assert torch.allclose(logits.grad[~labelled], expected[~labelled], atol=1e-6)
    assert not torch.allclose(logits.grad[labelled], expected[labelled], atol=1e-6)


def test_training_batches_carry_each_examples_targets_and_evaluation_batches_do_not():
    from warmstart.data.batches import Batches

    n = 10
    labels = np.arange(n)
    targets = pack_targets(np.arange(n * 2, dtype=np.float32).reshape(n, 2), labels < 7)
    batches = Batches([{"x": [i]} for i in range(n)], labels,
                      lambda items: {"x": torch.tensor([e["x"] for e in items])}, 4,
                      shuffle=True, seed=3, targets=targets)
    seen = 0
    for _, micros in batches.steps(0):
        for ids, batch in micros:
            assert torch.equal(batch["targets"], torch.from_numpy(targets[ids]))
            assert torch.equal(batch["targets"][:, 0], batch["labels"].float() * 2)
            seen += len(ids)
    assert seen == n
    assert all("targets" not in batch for _, batch in batches.epoch())


# ------------------------------------------------------------------------ teachers, students


def write_multilabel(path: Path, n: int = 90, seed: int = 0) -> Path:
    rng = random.Random(seed)
    lines = ["text,labels"]
    for _ in range(n):
        chosen = sorted(rng.sample(["sport", "tech"], rng.choice([1, 2])))
        text = " ".join(" ".join(rng.choices(WORDS[c].split(), k=5)) for c in chosen)
        lines.append(f'"{text}",{";".join(chosen)}')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_scores(path: Path, n_per_class: int = 30) -> Path:
    score = {"sport": 4.0, "tech": 2.5, "food": 0.5}
    rows = [(t, f"{score[y] + random.Random(i).random() / 4:.2f}")
            for i, (t, y) in enumerate(make_rows(n_per_class))]
    return write_csv(path, rows)


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """A tiny-bert teacher per task type, trained once for the module."""
    tmp = tmp_path_factory.mktemp("teachers")
    data = {"classification": (write_csv(tmp / "toy.csv", make_rows(30)), []),
            "multilabel": (write_multilabel(tmp / "multi.csv"), ["data.label_column=labels"]),
            "regression": (write_scores(tmp / "scores.csv"), [])}
    runs = {}
    for kind, (path, extra) in data.items():
        cfg = load_config(None, [*TINY, f"data.name={path}", f"output.dir={tmp / 'runs'}",
                                 f"output.name={kind}", *extra])
        train(cfg, quiet=True)
        runs[kind] = tmp / "runs" / kind
    return tmp, runs, {k: v[0] for k, v in data.items()}


def test_a_layer_dropped_student_keeps_the_teachers_weights(teachers):
    _, runs, _ = teachers
    teacher, _ = load_adapter(runs["classification"] / "model")
    student = keep_layers(load_adapter(runs["classification"] / "model")[0], [1])
    t, s = teacher.module.state_dict(), student.module.state_dict()
    assert [g.name for g in student.groups] == ["embeddings", "block0", "head"]
    assert student.module.config.num_hidden_layers == 1
    kept = {k: v for k, v in t.items() if ".layer.0." not in k}  # block 1 became block 0
    for key, value in kept.items():
        mine = key.replace(".layer.1.", ".layer.0.")
        assert torch.equal(s[mine], value), key
    assert sum(v.numel() for v in s.values()) < sum(v.numel() for v in t.values())
    assert sum(p.numel() for p in student.module.parameters()) < sum(
        p.numel() for p in teacher.module.parameters())


@pytest.mark.parametrize("kind", ["classification", "multilabel", "regression"])
def test_distill_writes_a_run_that_predicts_and_reports_both_models(teachers, kind, tmp_path):
    tmp, runs, data = teachers
    unlabelled = tmp_path / "more.txt"
    unlabelled.write_text("\n".join(t for t, _ in make_rows(5, seed=7)), encoding="utf-8")
    argv = ["distill", "--teacher", str(runs[kind]), "--student", "keep:every_other",
            "--unlabelled", str(unlabelled), f"output.dir={tmp_path}", *FAST]
    assert main(argv) == 0
    run = tmp_path / f"{kind}-distill-keep-every_other"
    summary = read_summary(run)
    d = summary.distill
    assert (d["student"], d["unlabelled"], d["split"]) == ("blocks 0 of the teacher", 15, "test")
    teacher, student = d["models"]["teacher"], d["models"]["student"]
    assert student["params"] < teacher["params"]
    assert d["speedup"] == pytest.approx(
        student["examples_per_second"] / teacher["examples_per_second"])
    metric = summary.metric
    assert student[metric] == pytest.approx(summary.test[metric], abs=1e-4)
    assert teacher[metric] == pytest.approx(read_summary(runs[kind]).test[metric], abs=1e-4)
    assert "## Distillation" in (run / "README.md").read_text()
    assert json.loads((run / "model" / "config.json").read_text())["num_hidden_layers"] == 1
    assert len(predict(run, ["goal match team"])) == 1
    assert summary.metric in evaluate_file(run, data[kind])
    assert api.load(run).predict(["goal match team"])


@pytest.mark.parametrize("strategy", ["head", "partial:k=1"])
def test_cached_frozen_layers_keep_the_soft_targets(teachers, strategy, tmp_path):
    """`head` trains on cached head inputs, `partial` replays a frozen prefix: both rebuild
    the batches, which must still carry the teacher's outputs to the loss."""
    _, runs, _ = teachers
    name, _, option = strategy.partition(":")
    argv = ["distill", "--teacher", str(runs["classification"]), "--student", "keep:0",
            f"output.dir={tmp_path}", "output.name=s", f"strategy.name={name}", *FAST]
    assert main([*argv, *([f"strategy.{option}"] if option else [])]) == 0
    assert read_summary(tmp_path / "s").distill["models"]["student"]["params"] > 0


def test_a_regression_student_starts_where_the_teacher_is(teachers, tmp_path):
    """The copied head outputs the teacher's standardised score (its saved scale unfolded)."""
    _, runs, data = teachers
    cfg = load_config(None, ["distill.keep_layers=0", f"data.name={data['regression']}",
                             f"distill.teacher={runs['regression']}", *FAST])
    task = Regression(["label"], mean=2.0, scale=1.5)
    rt = teacher_module.load_teacher(cfg)
    student = rt.student(task)
    assert student is not None
    texts = ["goal match team", "bread soup"]
    both = keep_layers(load_adapter(runs["regression"] / "model")[0], [0])
    want = teacher_module.teacher_outputs(both, Regression(["label"]), texts, 8)[:, 0]
    got = teacher_module.logits_for(student, texts)[:, 0] * task.scale + task.mean
    assert np.allclose(got, want, atol=1e-4)


def test_the_teachers_outputs_are_computed_once(teachers, tmp_path, monkeypatch):
    _, runs, _ = teachers
    calls = []
    real = teacher_module.teacher_outputs
    monkeypatch.setattr(teacher_module, "teacher_outputs",
                        lambda *a, **k: calls.append(len(a[2])) or real(*a, **k))
    argv = ["distill", "--teacher", str(runs["classification"]), "--student", "tiny-bert",
            f"output.dir={tmp_path}", "output.name=s", *FAST]
    assert main(argv) == 0
    assert len(calls) == 1  # the training split, once
    assert main([*argv, "--overwrite"]) == 0  # a repeated run reads the cache
    assert main([*argv, "--overwrite", "train.seed=1"]) == 0  # another split: new outputs
    assert len(calls) == 2
    assert len(list((tmp_path / "s" / "caches").iterdir())) == 2


def test_a_stopped_distillation_resumes_on_the_cached_outputs(teachers, tmp_path, monkeypatch):
    _, runs, _ = teachers
    assert main(["distill", "--teacher", str(runs["classification"]), "--student", "keep:0",
                 f"output.dir={tmp_path}", "output.name=s", *FAST]) == 0
    (tmp_path / "s" / "summary.json").unlink()  # as if killed after its last checkpoint
    calls = []
    real = teacher_module.teacher_outputs
    monkeypatch.setattr(teacher_module, "teacher_outputs",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    assert main(["distill", "--resume", str(tmp_path / "s"), "--quiet"]) == 0
    assert calls == []  # the training split's outputs came from the cache
    assert read_summary(tmp_path / "s").distill["student"] == "blocks 0 of the teacher"


# ------------------------------------------------------------------------------ bad inputs


def _error(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_bad_inputs_fail_in_one_line(teachers, tmp_path, capsys):
    tmp, runs, _ = teachers
    teacher = str(runs["classification"])
    base = [f"output.dir={tmp_path}", *FAST]
    assert "not found" in _error(["distill", "--teacher", str(tmp_path / "nope"),
                                  "--student", "tiny-bert", *base], capsys)
    other = write_csv(tmp_path / "other.csv", [(t, y.upper()) for t, y in make_rows(10)])
    assert "other labels" in _error(["distill", "--teacher", teacher, "--student",
                                     "tiny-bert", f"data.name={other}", *base], capsys)
    for spec, words in (("keep:5", "not a list of blocks"), ("keep:1,0", "increasing order"),
                        ("keep:0,1", "keeps all 2 blocks"), ("keep:x", "every_other")):
        assert words in _error(["distill", "--teacher", teacher, "--student", spec, *base],
                               capsys), spec
    assert "no column 'text'" in _error(
        ["distill", "--teacher", teacher, "--student", "tiny-bert", "--unlabelled",
         str(write_csv(tmp_path / "u.csv", [("a", "b")], header="body,x")), *base], capsys)
    assert "give the teacher and the student" in _error(["distill", "--teacher", teacher],
                                                        capsys)
    assert "warmstart distill" in _error(["train", f"distill.teacher={teacher}", *base],
                                         capsys)
    assert "cannot learn from a teacher" in _error(
        ["distill", "--teacher", teacher, "--student", "tiny-bert",
         "strategy.name=features", "strategy.classifier=sklearn", *base], capsys)


def test_a_cnn_teacher_cannot_be_layer_dropped():
    from warmstart.config import ModelConfig
    from warmstart.models import build_model

    adapter = build_model(ModelConfig(name="tiny-cnn"), 3, seed=0)
    with pytest.raises(WarmstartError, match="distill.keep_layers needs a transformer"):
        keep_layers(adapter, "every_other")
