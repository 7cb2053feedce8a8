"""Training controls: each test fails if its control is broken."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from warmstart.config import OptimConfig, TrainConfig, load_config
from warmstart.data.batches import Batches
from warmstart.strategies.base import Plan
from warmstart.summary import read_summary
from warmstart.tasks import Classification
from warmstart.training.evaluate import evaluate
from warmstart.training.loop import FitSettings, fit, should_stop
from warmstart.training.loss import make_loss
from warmstart.training.optim import SCHEDULES, ParamGroup, make_schedule
from warmstart.training.run import train
from warmstart.training.session import resolve_precision

TESTS = Path(__file__).resolve().parent


# ------------------------------------------------------------------ schedules

def test_cosine_schedule_at_chosen_steps():
    f = make_schedule(OptimConfig(schedule="cosine", warmup_steps=10), total_steps=110)
    assert f(4) == pytest.approx(0.5)  # warmup: (4+1)/10
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5)  # half way through the decay
    assert f(35) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))
    assert f(110) == pytest.approx(0.0, abs=1e-12)


def test_step_onecycle_and_stlr_shapes():
    step = make_schedule(OptimConfig(schedule="step", warmup_steps=0, step_every=10,
                                     step_gamma=0.5), 100)
    assert [step(s) for s in (0, 9, 10, 25)] == pytest.approx([1, 1, 0.5, 0.25])
    one = make_schedule(OptimConfig(schedule="onecycle", warmup_steps=20), 100)
    assert one(0) == pytest.approx(1 / 25) and one(20) == pytest.approx(1.0)
    assert one(99) < 0.01
    stlr = make_schedule(OptimConfig(schedule="stlr", warmup_steps=10, stlr_ratio=32), 100)
    assert stlr(0) == pytest.approx(1 / 32) and stlr(10) == pytest.approx(1.0)
    assert stlr(55) == pytest.approx((1 + 0.5 * 31) / 32)  # half way down the long slope


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_every_schedule_stays_in_range_and_peaks(name):
    f = make_schedule(OptimConfig(schedule=name, warmup_ratio=0.1), 200)
    values = [f(s) for s in range(200)]
    assert all(0 <= v <= 1 + 1e-9 for v in values)
    assert max(values) == pytest.approx(1.0)


# ------------------------------------------------------------------ a tiny loop harness

class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body, self.head = nn.Linear(6, 6), nn.Linear(6, 3)

    def forward(self, features):
        return self.head(torch.relu(self.body(features)))


def _data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    x = [torch.tensor(v, dtype=torch.float32) for v in rng.normal(size=(n, 6))]
    y = rng.integers(0, 3, n)
    return x, y


def _batches(bs, shuffle=True, n=48, accumulate=1):
    x, y = _data(n)
    return Batches(x, y, lambda items: {"features": torch.stack(items)}, bs, shuffle=shuffle,
                   seed=0, accumulate=accumulate)


def _score(model, batches):
    return evaluate(model, batches, torch.device("cpu"), Classification(["a", "b", "c"]))


def _run(model, train_b, val_b=None, *, optim=None, lr=1e-3, loss_fn=None, score=_score,
         precision="fp32", **train_kw):
    """`fit` with every parameter in one group, on the CPU."""
    plan = Plan([ParamGroup("all", list(model.parameters()))])
    train = TrainConfig(**{"epochs": 1, "metric": "accuracy", **train_kw})
    settings = FitSettings(optim or OptimConfig(), train, lr, torch.device("cpu"), precision)
    return fit(model, plan, train_b, val_b or _batches(16, shuffle=False),
               loss_fn or make_loss(), score, settings)


def _fit(model, train_b, val_b=None, score=_score, **train_kw):
    return _run(model, train_b, val_b, optim=OptimConfig(warmup_ratio=0.0, schedule="constant"),
                lr=1e-2, score=score, **train_kw)


def test_accumulating_four_micro_batches_equals_one_big_batch():
    big, small = Linear(), Linear()
    _fit(big, _batches(16), epochs=2)
    _fit(small, _batches(4, accumulate=4), epochs=2)
    for p, q in zip(big.parameters(), small.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
    other = Linear()
    _fit(other, _batches(4), epochs=2)  # without accumulation it differs
    assert not torch.allclose(next(other.parameters()), next(big.parameters()), atol=1e-4)


@pytest.mark.parametrize("kind", ["value", "norm"])
def test_gradient_clipping(kind):
    seen = []

    def record(opt, args, kwargs):
        grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
        seen.append((max(g.abs().max().item() for g in grads),
                     torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item()))

    handle = register_optimizer_step_pre_hook(record)
    try:
        cfg = OptimConfig(clip_value=1e-3 if kind == "value" else None,
                          clip_norm=1e-3 if kind == "norm" else None)
        _run(Linear(), _batches(8), optim=cfg)
    finally:
        handle.remove()
    assert len(seen) == 6
    index = 0 if kind == "value" else 1
    assert all(v[index] <= 1e-3 * (1 + 1e-5) for v in seen)


def test_early_stopping_on_a_crafted_curve():
    curve = iter([0.5, 0.7, 0.6, 0.65, 0.9, 0.95])
    weights_at = {}

    def fake_score(model, batches):
        value = next(curve)
        weights_at[value] = model.head.weight.detach().clone()
        return {"accuracy": value, "loss": 1 - value, "f1_macro": value}

    model = Linear()
    result = _fit(model, _batches(8), score=fake_score, epochs=6, early_stopping=2)
    assert len(result.history) == 4  # epochs 3 and 4 did not beat epoch 2: stop
    assert result.stopped_early and result.best_epoch == 2
    assert torch.equal(result.best_state["head.weight"], weights_at[0.7])


def test_should_stop_respects_min_delta_and_mode():
    def stops(values, metric, patience, min_delta):
        cfg = TrainConfig(metric=metric, early_stopping=patience, min_delta=min_delta)
        return should_stop([{f"val_{metric}": v} for v in values], cfg)

    assert not stops([0.5, 0.6, 0.7], "accuracy", 1, 0.0)
    assert stops([0.5, 0.6, 0.605], "accuracy", 1, 0.01)
    assert stops([1.0, 0.8, 0.9, 0.85], "loss", 2, 0.0)
    assert not stops([1.0, 0.8, 0.9, 0.7], "loss", 2, 0.0)
    assert not stops([0.1, 0.1, 0.1], "accuracy", None, 0.0)


# ------------------------------------------------------------------ precision, class weights

def test_precision_defaults_to_fp32_on_cpu_and_warns_for_bf16(monkeypatch, caplog):
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32"
    monkeypatch.setattr("warmstart.training.session.cpu_has_native_bf16", lambda: False)
    with caplog.at_level(logging.WARNING, logger="warmstart"):
        assert resolve_precision("bf16", cpu) == "bf16"
    assert "train.precision=bf16" in caplog.text


def test_bf16_autocast_runs_on_cpu():
    result = _run(Linear(), _batches(16), precision="bf16")
    assert math.isfinite(result.history[0]["train_loss"])


def test_class_weights_balanced_and_given():
    task = Classification(["a", "b"])
    labels = np.array([0, 0, 0, 1])
    w = task.class_weights(labels, load_config(None, ["train.class_weights=balanced"])
                           .train.class_weights)
    assert w.tolist() == pytest.approx([4 / 6, 2.0])  # n / (k * count)
    assert task.class_weights(labels, load_config(None, []).train.class_weights) is None
    assert task.class_weights(labels, [1.0, 3.0]).tolist() == [1.0, 3.0]
    with pytest.raises(Exception, match="train.class_weights"):
        task.class_weights(labels, [1.0, 2.0, 3.0])


def test_class_weights_change_the_training():
    a, b = Linear(), Linear()
    _run(a, _batches(8), lr=1e-2)
    _run(b, _batches(8), lr=1e-2,
         loss_fn=make_loss(class_weights=torch.tensor([1.0, 0.2, 0.2])))
    assert not torch.allclose(a.head.bias, b.head.bias)


# ------------------------------------------------------------------ runs on disk

def _cli(args, env_extra=None, **kw):
    # The caller's PYTHONPATH stays behind the tests' own (a worktree run with its src on it
    # must run its own warmstart, not the installed one).
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "warmstart", "train", *args],
                            env={**env, **(env_extra or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


SLOW = ["model.name=factories:slow_cnn", "data.name=digits", "data.limit=120",
        "model.image_size=16", "train.epochs=3", "train.batch_size=8", "optim.lr=3e-3",
        "checkpoint.every_steps=4", "checkpoint.keep_last=2", "train.threads=1", "--quiet"]


def test_checkpoints_keep_last_k_plus_best_and_nothing_half_written(tmp_path):
    proc = _cli([*SLOW, "train.epochs=2", f"output.dir={tmp_path}", "output.name=r"])
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    ckpt = tmp_path / "r" / "checkpoints"
    steps = sorted(p.name for p in ckpt.glob("step-*"))
    assert steps == ["step-00000028", "step-00000030"]  # 15 steps/epoch; every 4 + epoch ends
    assert (ckpt / "best.safetensors").is_file()
    assert not list((tmp_path / "r").rglob("*.tmp"))
    env = json.loads((tmp_path / "r" / "environment.json").read_text())
    assert env["seed"] == 0 and env["torch"] == torch.__version__


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tmp_path):
    ref = _cli([*SLOW, f"output.dir={tmp_path}", "output.name=ref"])
    assert ref.wait(timeout=300) == 0, ref.stderr.read()
    victim = _cli([*SLOW, f"output.dir={tmp_path}", "output.name=run"])
    ckpt = tmp_path / "run" / "checkpoints"
    deadline = time.time() + 240
    # Kill in epoch 2 (steps 16-30), after its first mid-epoch checkpoint (step 20).
    while time.time() < deadline and not (ckpt / "step-00000020" / "state.pt").exists():
        time.sleep(0.05)
    time.sleep(0.1)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    assert not (tmp_path / "run" / "summary.json").exists()
    resumed = _cli(["--resume", str(tmp_path / "run"), "--quiet"])
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    a, b = read_summary(tmp_path / "ref"), read_summary(tmp_path / "run")
    assert b.history == a.history
    assert b.test == a.test and b.best_epoch == a.best_epoch
    wa = load_file(str(tmp_path / "ref" / "model" / "model.safetensors"))
    wb = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    log_a = (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()
    log_b = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    strip = [{k: v for k, v in json.loads(x).items() if k != "samples_per_s"} for x in log_a]
    assert strip == [{k: v for k, v in json.loads(x).items() if k != "samples_per_s"}
                     for x in log_b]


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_checkpoint(tmp_path):
    proc = _cli(["model.name=factories:nan_cnn", "data.name=digits", "data.limit=120",
                 "model.image_size=16", "train.batch_size=8", "checkpoint.every_steps=2",
                 f"output.dir={tmp_path}", "output.name=r", "--quiet"])
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2
    assert "at step 5" in err and err.strip().count("\n") == 0
    assert (tmp_path / "r" / "checkpoints" / "step-00000004").is_dir()
    assert not (tmp_path / "r" / "summary.json").exists()


def test_progress_lines_when_not_a_terminal_and_quiet_silences(tmp_path):
    args = ["model.name=tiny-cnn", "data.name=digits", "data.limit=60", "train.epochs=1",
            f"output.dir={tmp_path}"]
    proc = _cli([*args, "output.name=loud"])
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "epoch 1/1: train loss" in err
    proc = _cli([*args, "output.name=quiet", "--quiet"])
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "epoch 1/1" not in err


def test_tensorboard_and_mlflow_logs(tmp_path):
    pytest.importorskip("tensorboard")
    mlflow = pytest.importorskip("mlflow")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = load_config(None, ["model.name=tiny-cnn", "data.name=digits", "data.limit=60",
                             "train.epochs=2", "log.to=tensorboard,mlflow",
                             f"output.dir={tmp_path}", "output.name=r"])
    summary = train(cfg, quiet=True)
    events = EventAccumulator(str(tmp_path / "r" / "tensorboard"))
    events.Reload()
    assert len(events.Scalars("train/loss")) == summary.steps
    assert [e.value for e in events.Scalars("val/accuracy")] == pytest.approx(
        [h["val_accuracy"] for h in summary.history])
    client = mlflow.MlflowClient(tracking_uri=(tmp_path / "r" / "mlruns").resolve().as_uri())
    run = client.search_runs([client.get_experiment_by_name("warmstart").experiment_id])[0]
    history = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert [m.value for m in history] == pytest.approx(
        [h["val_accuracy"] for h in summary.history])
    assert run.data.params["strategy.name"] == "full"
