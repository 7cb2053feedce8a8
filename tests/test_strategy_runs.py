"""End to end: every registered strategy through `warmstart.training.run.train` on tiny-bert.

Each run builds its own model inside `train`; the tests wrap
`warmstart.training.session.build_model` to keep a handle on that model and look at it after the
run (what trains, how often it ran).
"""

from __future__ import annotations

import pytest
import torch
from conftest import make_rows, write_csv

import warmstart.training.run
import warmstart.training.session
from warmstart.config import ModelConfig, StrategyConfig, load_config
from warmstart.models import build_model, load_adapter
from warmstart.ship.predict import logits_for, predict
from warmstart.strategies import STRATEGIES

EPOCHS = 2
# lr 1e-2: tiny random models learn the toy data in a couple of epochs at this rate.
TINY = ["model.name=tiny-bert", f"train.epochs={EPOCHS}", "train.batch_size=8",
        "optim.lr=1e-2", "log.every=100"]


@pytest.fixture(scope="module")
def rows():
    return make_rows()  # 36 rows: 28 train / 4 validation / 4 test after the split


@pytest.fixture(scope="module")
def data(tmp_path_factory, rows):
    return write_csv(tmp_path_factory.mktemp("data") / "toy.csv", rows)


@pytest.fixture
def built(monkeypatch):
    """Adapters built inside `train`, in build order."""
    adapters = []

    def keep(cfg, num_labels, seed=None):
        adapters.append(build_model(cfg, num_labels, seed=seed))
        return adapters[-1]

    monkeypatch.setattr(warmstart.training.session, "build_model", keep)
    return adapters


def _train(tmp_path, data, name, *extra, save=False):
    cfg = load_config(None, [*TINY, f"data.name={data}", f"strategy.name={name}",
                             f"output.dir={tmp_path}", f"output.name={name}",
                             f"output.save_model={str(save).lower()}", *extra])
    return cfg, warmstart.training.run.train(cfg, quiet=True)


def _trainable(module):
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@pytest.mark.parametrize("strategy", STRATEGIES.names())
def test_every_strategy_runs_and_reports_what_trains(tmp_path, data, built, strategy):
    """The summary's trainable count is what the strategy marks before the first epoch.

    Two epochs of one 28-row batch each: the fewest steps that still cross an epoch
    boundary, where staged strategies change what trains.

    `run.py` counts right after the strategy returns its plan, so for staged strategies
    (gradual; lp-ft with strategy.probe=epochs) the summary reports the state of epoch 0 (head
    only), and more trains later. The state at the end of the run is checked on the model
    the run trained: it must be what `on_epoch_start(EPOCHS - 1)` gives on a fresh copy,
    since the hook depends on the epoch alone.
    """
    cfg, summary = _train(tmp_path, data, strategy, "train.batch_size=32")
    torch.manual_seed(cfg.train.seed)
    fresh = build_model(ModelConfig(name="tiny-bert"), num_labels=3)
    plan = STRATEGIES.get(strategy)(fresh, StrategyConfig(name=strategy).options)
    at_start = _trainable(fresh.module)
    if plan.on_epoch_start is not None:
        plan.on_epoch_start(EPOCHS - 1)
    at_end = _trainable(fresh.module)

    assert summary.params.trainable == at_start > 0
    assert _trainable(built[0].module) == at_end
    assert at_end > at_start if plan.on_epoch_start is not None else at_end == at_start
    lrs = summary.lr.groups
    assert set(lrs) == {g.name for g in plan.groups}
    if plan.calibrate is not None:  # scales set from data before the optimizer was built
        scales = [lr / summary.lr.base for lr in lrs.values()]
        assert max(scales) == pytest.approx(1.0) and len(set(scales)) > 1, scales
    assert len(summary.history) == (1 if plan.solver else EPOCHS)
    assert 0 <= summary.test["accuracy"] <= 1


def _count_backbone_examples(adapter):
    """Count the examples that pass through the first layer group (the embeddings)."""
    seen = [0]
    first = adapter.groups[0].modules[0]
    first.register_forward_hook(lambda _m, _args, out: seen.__setitem__(0, seen[0] + len(out)))
    return seen


@pytest.mark.parametrize("classifier", ["torch", "sklearn"])
def test_features_runs_the_backbone_once_per_example(tmp_path, data, rows, monkeypatch,
                                                     classifier):
    """The frozen backbone runs once per example, however many epochs.

    Expected examples through the embeddings: train + validation, once each, to cache the
    head's inputs (the epochs then run on the cache: 3 epochs cost no more backbone passes
    than 1); then the final report evaluates the full model on validation and test from raw
    inputs: validation + test more, and on a sample of the training split for the
    train-minus-validation gap (min(train, 256) examples here). Saving the model runs nothing.
    """
    counters = []

    def build_and_count(cfg, num_labels, seed=None):
        adapter = build_model(cfg, num_labels, seed=seed)
        counters.append((adapter, _count_backbone_examples(adapter)))
        return adapter

    monkeypatch.setattr(warmstart.training.session, "build_model", build_and_count)
    _, summary = _train(tmp_path, data, "features", "train.epochs=3",
                        f"strategy.classifier={classifier}", save=True)
    n = summary.examples
    (adapter, seen), = counters
    train_sample = min(n.train, 256)
    assert seen[0] == n.train + 2 * n.validation + n.test + train_sample
    assert (n.train, n.validation, n.test) == (28, 4, 4)

    if classifier == "sklearn":
        assert summary.steps == 0 and len(summary.history) == 1
    else:
        assert summary.steps == 3 * 4 and len(summary.history) == 3  # 28 rows, batch 8
        losses = [h["train_loss"] for h in summary.history]
        assert losses[-1] < losses[0], losses

    # The saved model predicts from raw texts, with the trained head inside it.
    texts = [t for t, _ in rows]
    adapter.module.eval()
    saved = tmp_path / "features" / "model"
    reloaded, labels = load_adapter(saved)
    assert torch.allclose(torch.as_tensor(logits_for(reloaded, texts)),
                          torch.as_tensor(logits_for(adapter, texts)), atol=1e-5)
    out = predict(tmp_path / "features", texts)
    assert len(out) == len(rows) and {o["label"] for o in out} <= set(labels)
    if classifier == "sklearn":  # the fit separates the 28 training rows: most rows right
        hits = sum(o["label"] == y for o, (_, y) in zip(out, rows))
        assert hits >= 28, hits


def _probed_and_fresh(tmp_path, data, *extra):
    """Sessions of lp-ft (its head probed in `setup`) and of full (the same seed: the same new
    head, untouched), with the frozen model's head inputs of the training split."""
    from warmstart.strategies.lpft import head_inputs
    from warmstart.training.session import setup

    def session(name, *options):
        return setup(load_config(None, [*TINY, f"data.name={data}", f"strategy.name={name}",
                                        *options, f"output.dir={tmp_path}", *extra]))

    probed, fresh = session("lp-ft", "strategy.probe=fit"), session("full")
    x, y = head_inputs(probed.adapter.module, probed.adapter.head, probed.train,
                       probed.device)
    assert x is not None and len(x) == len(y) == probed.train.num_examples
    return probed, fresh, x, y


def test_lpft_fits_the_head_on_frozen_features_before_fine_tuning(tmp_path, data):
    """strategy.probe=fit is a logistic regression fitted before the first step: on the
    frozen features it fits the training labels far better than the new head it replaced,
    and the run says so."""
    probed, fresh, x, y = _probed_and_fresh(tmp_path, data)
    with torch.no_grad():
        fitted = float((probed.adapter.head(x).argmax(1) == y).float().mean())
        new = float((fresh.adapter.head(x).argmax(1) == y).float().mean())
    assert fitted >= 0.9 and fitted > new + 0.3, (fitted, new)
    assert any(note.startswith("lp-ft probe: ") for note in probed.notes), probed.notes


def test_lpft_fits_a_multilabel_head_by_its_loss(tmp_path):
    from test_tasks import write_multilabel

    from warmstart.training.loss import make_loss

    data = write_multilabel(tmp_path / "m.csv")
    probed, fresh, x, y = _probed_and_fresh(tmp_path, data, "data.label_column=labels")
    loss = make_loss(probed.data.task)
    with torch.no_grad():
        after = float(loss(probed.adapter.head(x), {"labels": y}))
        before = float(loss(fresh.adapter.head(x), {"labels": y}))
    assert after < 0.8 * before, (after, before)
    assert any("L-BFGS" in note for note in probed.notes), probed.notes
