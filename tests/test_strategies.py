"""Registry-driven: every strategy, on a tiny transformer and a tiny CNN.

A new strategy registered in `warmstart.strategies` is picked up here without editing this file.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from torch import nn

from warmstart.config import ModelConfig, OptimConfig, StrategyConfig
from warmstart.data.batches import Batches
from warmstart.errors import WarmstartError
from warmstart.models import build_model
from warmstart.models.base import Adapter, LayerGroup, logits_of
from warmstart.strategies import STRATEGIES, train_mode
from warmstart.strategies.base import SolveData
from warmstart.strategies.discriminative import importance
from warmstart.strategies.features import C_GRID, MAX_ITER, fit_linear, standardiser
from warmstart.training.cache import head_only
from warmstart.training.loss import make_loss
from warmstart.training.optim import build_optimizer

TINY_MODELS = ["tiny-bert", "tiny-cnn"]


def _inputs(adapter, n=6):
    if adapter.kind == "text":
        raw = [f"word{i} " * (i + 2) for i in range(n)]
    else:
        rngs = [np.random.default_rng(i) for i in range(n)]
        raw = [r.integers(0, 255, (16, 16), dtype=np.uint8) for r in rngs]
    return adapter.collate(adapter.encode(raw)), torch.arange(n) % 3


@pytest.mark.parametrize("model_name", TINY_MODELS)
@pytest.mark.parametrize("strategy", STRATEGIES.names())
def test_one_step_changes_exactly_the_trainable_parameters(model_name, strategy):
    torch.manual_seed(0)
    adapter = build_model(ModelConfig(name=model_name), num_labels=3)
    plan = STRATEGIES.get(strategy)(adapter, StrategyConfig(name=strategy).options)
    model = adapter.module
    named = dict(model.named_parameters())
    in_plan = {id(p) for g in plan.groups for p in g.params}
    trainable = {n for n, p in named.items() if p.requires_grad}
    assert trainable, "a strategy must train something"
    assert all(id(named[n]) in in_plan for n in trainable), "trainable but not in any group"
    before = {n: p.detach().clone() for n, p in named.items()}
    opt = build_optimizer(plan.groups, OptimConfig(), lr=1e-2)
    train_mode(model)
    batch, labels = _inputs(adapter)
    F.cross_entropy(logits_of(model(**batch)), labels).backward()
    opt.step()
    changed = {n for n, p in named.items() if not torch.equal(p, before[n])}
    assert changed == trainable


@pytest.mark.parametrize("strategy", STRATEGIES.names())
def test_frozen_batchnorm_stays_in_eval_mode(strategy):
    adapter = build_model(ModelConfig(name="tiny-cnn"), num_labels=3)
    STRATEGIES.get(strategy)(adapter, StrategyConfig(name=strategy).options)
    train_mode(adapter.module)
    for m in adapter.module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            frozen = not any(p.requires_grad for p in m.parameters())
            assert m.training is not frozen


def test_every_strategy_has_a_description():
    for entry in STRATEGIES:
        assert len(entry.description) > 10, entry.name


# --------------------------------------------------------------------------- per-strategy specs
# Unit tests of what each strategy marks trainable and at what lr scale. Built on the tiny
# models (tiny-bert groups: embeddings, block0, block1, head; tiny-cnn: stem, block1, block2,
# head) or on a hand-made module where structure, not names, must decide.

def _plan(model_name, **options):
    torch.manual_seed(0)
    adapter = build_model(ModelConfig(name=model_name), num_labels=3)
    cfg = StrategyConfig.of(**options)
    return adapter, STRATEGIES.get(cfg.name)(adapter, cfg.options)


def _trainable_groups(adapter):
    """Names of the layer groups whose parameters all train (and check none is half-frozen)."""
    out = set()
    for g in adapter.groups:
        flags = {p.requires_grad for p in g.parameters()}
        assert len(flags) == 1, f"group {g.name} is partly frozen"
        if flags == {True}:
            out.add(g.name)
    return out


def _trainable_names(adapter):
    return {n for n, p in adapter.module.named_parameters() if p.requires_grad}


def _group_names(adapter, *groups):
    wanted = {id(p) for g in adapter.groups if g.name in groups for p in g.parameters()}
    return {n for n, p in adapter.module.named_parameters() if id(p) in wanted}


def test_llrd_scales_are_decay_to_the_distance_below_the_head():
    adapter, plan = _plan("tiny-bert", name="llrd", decay=0.8)
    scales = {g.name: g.lr_scale for g in plan.groups}
    assert scales == {"embeddings": 0.8**3, "block0": 0.8**2, "block1": 0.8, "head": 1.0}
    assert _trainable_groups(adapter) == {"embeddings", "block0", "block1", "head"}


@pytest.mark.parametrize("strategy", ["head", "features"])
def test_probes_train_only_the_classifier_and_cache(strategy):
    adapter, plan = _plan("tiny-bert", name=strategy)
    assert _trainable_names(adapter) == {"classifier.weight", "classifier.bias"}
    assert head_only(adapter, plan) and plan.solver is None


def test_encoder_freezes_only_the_input_group():
    adapter, plan = _plan("tiny-cnn", name="encoder")
    assert _trainable_groups(adapter) == {"block1", "block2", "head"}
    assert [g.name for g in plan.groups] == ["block1", "block2", "head"]


# ------------------------------------------------------------------ partial


def test_partial_k1_trains_exactly_the_last_block_and_head():
    adapter, plan = _plan("tiny-bert", name="partial", k=1)
    assert _trainable_names(adapter) == _group_names(adapter, "block1", "head")
    assert "bert.pooler.dense.weight" in _trainable_names(adapter)  # the pooler joins block1
    assert [g.name for g in plan.groups] == ["block1", "head"]
    assert "block1, head" in plan.notes and not head_only(adapter, plan)


def test_partial_k0_is_a_cached_probe():
    adapter, plan = _plan("tiny-bert", name="partial", k=0)
    assert _trainable_groups(adapter) == {"head"} and head_only(adapter, plan)


def test_partial_explicit_groups_override_k():
    adapter, _ = _plan("tiny-cnn", name="partial", k=2, groups=[0])
    assert _trainable_groups(adapter) == {"stem", "head"}  # the head always trains


def test_partial_patterns_override_groups_and_k():
    adapter, plan = _plan("tiny-bert", name="partial", k=2, groups=[0],
                          patterns=["*.layer.0.attention.self.*"])
    names = _trainable_names(adapter)
    assert names - {"classifier.weight", "classifier.bias"} == {
        f"bert.encoder.layer.0.attention.self.{m}.{w}"
        for m in ("query", "key", "value") for w in ("weight", "bias")}
    # Only the matched parameters are in the plan: block0 holds 6 tensors, not all of it.
    assert [len(g.params) for g in plan.groups] == [6, 2]


@pytest.mark.parametrize(("options", "key", "detail"), [
    ({"k": 4}, "strategy.k", "only 3 layer groups below the head (embeddings, block0, block1)"),
    ({"groups": [1, 9]}, "strategy.groups", "[9] out of range"),
    ({"patterns": ["*.layer.*", "*.nothing_here.*"]}, "strategy.patterns", "'*.nothing_here.*'"),
])
def test_partial_rejects_bad_choices(options, key, detail):
    with pytest.raises(WarmstartError) as err:
        _plan("tiny-bert", name="partial", **options)
    assert key in str(err.value) and detail in str(err.value), str(err.value)


# ------------------------------------------------------------------ staged strategies

ALL_CNN = {"stem", "block1", "block2", "head"}


@pytest.mark.parametrize(("strategy", "options", "expected"), [
    ("gradual", {}, [{"head"}, {"block2", "head"}, {"block1", "block2", "head"}, ALL_CNN,
                     ALL_CNN]),
    ("lp-ft", {"probe": "epochs", "probe_epochs": 2}, [{"head"}, {"head"}] + [ALL_CNN] * 3),
    ("lp-ft", {"probe": "epochs", "probe_epochs": 0}, [ALL_CNN] * 2),
])
def test_staged_strategies_follow_the_epoch(strategy, options, expected):
    adapter, plan = _plan("tiny-cnn", name=strategy, **options)
    # Every group is planned from the start so the optimizer never changes shape.
    assert [g.name for g in plan.groups] == [g.name for g in adapter.groups]
    assert _trainable_groups(adapter) == expected[0]  # the state the run starts in
    for epoch, groups in enumerate(expected):
        plan.on_epoch_start(epoch)
        assert _trainable_groups(adapter) == groups, epoch


@pytest.mark.parametrize(("strategy", "options"), [("gradual", {}),
                                                    ("lp-ft", {"probe": "epochs"})])
def test_staged_state_depends_only_on_the_epoch(strategy, options):
    in_order, plan = _plan("tiny-cnn", name=strategy, **options)
    for epoch in range(4):
        plan.on_epoch_start(epoch)
    resumed, fresh = _plan("tiny-cnn", name=strategy, **options)
    fresh.on_epoch_start(3)  # a run resumed at epoch 3
    assert _trainable_names(resumed) == _trainable_names(in_order)
    plan.on_epoch_start(1)  # and going back gives epoch 1's state, not "one more group"
    again, other = _plan("tiny-cnn", name=strategy, **options)
    other.on_epoch_start(1)
    assert _trainable_names(in_order) == _trainable_names(again)


# ------------------------------------------------------------------ bitfit / norm by structure


class _NotABias(nn.Module):
    """Has a parameter named like a bias and a `bias` that is a buffer: neither is a bias."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(4))
        self.bias_like = nn.Parameter(torch.zeros(4))
        self.register_buffer("bias", torch.zeros(4))

    def forward(self, x):
        return x * self.scale + self.bias_like + self.bias


class _MyLayerNorm(nn.LayerNorm):
    """A model's own norm class: a norm by type though not by name."""


def _odd_adapter():
    torch.manual_seed(0)
    net = nn.Sequential(OrderedDict(
        body=nn.Sequential(OrderedDict(
            proj=nn.Linear(4, 4, bias=False), odd=_NotABias(), ln=_MyLayerNorm(4),
            norm=nn.Linear(4, 4),  # called "norm", but a Linear
            bn=nn.BatchNorm1d(4),
        )),
        head=nn.Linear(4, 3),
    ))
    groups = [LayerGroup("body", [net.body]), LayerGroup("head", [net.head])]
    return Adapter(name="odd", kind="image", module=net, groups=groups, head=net.head,
                   default_lr=1e-3, encode=list, collate=dict, save=lambda d, labels: None)


@pytest.mark.parametrize(("strategy", "expected"), [
    ("bitfit", {"body.ln.bias", "body.norm.bias", "body.bn.bias"}),
    ("norm", {"body.ln.weight", "body.ln.bias", "body.bn.weight", "body.bn.bias"}),
])
def test_bitfit_and_norm_select_by_structure(strategy, expected):
    adapter = _odd_adapter()
    STRATEGIES.get(strategy)(adapter, StrategyConfig(name=strategy).options)
    assert _trainable_names(adapter) == expected | {"head.weight", "head.bias"}


def test_bitfit_on_bert_takes_every_bias_and_no_weight():
    adapter, _ = _plan("tiny-bert", name="bitfit")
    names = _trainable_names(adapter) - {"classifier.weight"}
    all_biases = {n for n, _ in adapter.module.named_parameters() if n.endswith(".bias")}
    assert names == all_biases  # 2 blocks x 8 + embeddings LayerNorm + pooler + classifier
    assert len(names) == 2 * 8 + 3


# ------------------------------------------------------------------ discriminative


def _image_batches(n, seed, batch_size=4):
    rng = np.random.default_rng(seed)
    adapter = build_model(ModelConfig(name="tiny-cnn"), num_labels=3)
    images = [rng.integers(0, 255, (16, 16), dtype=np.uint8) for _ in range(n)]
    return Batches(adapter.encode(images), rng.integers(0, 3, n), adapter.collate, batch_size,
                   shuffle=True, seed=seed)


@pytest.mark.parametrize("measure", ["fisher", "grad_norm"])
def test_discriminative_calibration_sets_scales_and_leaves_weights(measure, caplog):
    caplog.set_level("INFO", logger="warmstart")
    adapter, plan = _plan("tiny-cnn", name="discriminative", importance=measure,
                          calibration_batches=3, min_scale=0.2)
    model = adapter.module
    before = {k: v.clone() for k, v in model.state_dict().items()}  # BN statistics included
    model.train()
    scales = plan.calibrate(model, _image_batches(16, seed=1), torch.device("cpu"), make_loss())
    assert model.training  # the mode is restored
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert [g.lr_scale for g in plan.with_scales(scales).groups] == scales
    assert all(0.2 <= s <= 1 for s in scales) and max(scales) == 1.0, scales
    assert len(set(scales)) > 1, scales  # not all left at the default
    assert f"head={scales[-1]:.3g}" in caplog.text  # and the user is told


def test_discriminative_scales_depend_on_the_data():
    def scales(seed):
        adapter, plan = _plan("tiny-cnn", name="discriminative", min_scale=1e-9)
        return plan.calibrate(adapter.module, _image_batches(12, seed=seed),
                              torch.device("cpu"), make_loss())

    assert scales(1) == scales(1)  # eval mode: no dropout, the same data gives the same scales
    assert scales(1) != scales(2)


def test_importance_is_the_mean_squared_gradient_per_element():
    adapter, plan = _plan("tiny-cnn", name="discriminative")
    batches = _image_batches(8, seed=3, batch_size=8)  # one batch: the mean is over elements
    _, batch = next(batches.epoch(0))
    labels = batch.pop("labels")
    adapter.module.eval()
    F.cross_entropy(logits_of(adapter.module(**batch)), labels).backward()
    expected = [sum(float(p.grad.pow(2).sum()) for p in g.params) /
                sum(p.numel() for p in g.params) for g in plan.groups]
    adapter.module.zero_grad(set_to_none=True)
    got = importance(adapter.module, plan.groups, batches, torch.device("cpu"), make_loss(),
                     "fisher", 5)
    assert got == pytest.approx(expected, rel=1e-5)


# ------------------------------------------------------------------ features / sklearn


def _feature_batches(num_classes, n_per_class=20, dim=6, seed=0):
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(num_classes, dim, generator=gen) * 3
    gen.manual_seed(seed)
    xs = [centres[c] + torch.randn(dim, generator=gen) * 2 + 10  # off-centre, as real features
          for c in range(num_classes) for _ in range(n_per_class)]
    ys = np.repeat(np.arange(num_classes), n_per_class)
    return Batches(xs, ys, lambda items: {"features": torch.stack(items)}, 16, shuffle=True)


def _solve_data(num_classes, weights=None):
    train, val = _feature_batches(num_classes), _feature_batches(num_classes, 8, seed=1)
    return SolveData(torch.stack(train.encoded).numpy(), np.asarray(train.labels),
                     torch.stack(val.encoded).numpy(), np.asarray(val.labels), weights)


@pytest.mark.parametrize("num_classes, weights", [(2, None), (3, None), (3, [1.0, 4.0, 0.5])])
def test_sklearn_fit_with_c_chosen_on_validation_is_copied_into_the_head(num_classes, weights):
    data = _solve_data(num_classes, None if weights is None else np.array(weights))
    head = nn.Linear(6, num_classes)
    note = fit_linear(head, data)
    x = torch.as_tensor(data.train_x)
    mean, std = x.mean(0), x.std(0)
    std_train, std_val = ((x - mean) / std).numpy(), ((torch.as_tensor(data.val_x) - mean)
                                                     / std).numpy()
    class_weight = None if weights is None else dict(enumerate(weights))
    refs = [LogisticRegression(C=c, max_iter=MAX_ITER, class_weight=class_weight)
            .fit(std_train, data.train_y) for c in C_GRID]
    accuracy = [float((r.predict(std_val) == data.val_y).mean()) for r in refs]
    best = int(np.argmax(accuracy))  # the first best: ties go to the stronger penalty
    assert f"C={C_GRID[best]:g} chosen on validation accuracy" in note
    with torch.no_grad():
        probs = torch.softmax(head(x), 1).numpy()  # the head reads raw features
    np.testing.assert_allclose(probs, refs[best].predict_proba(std_train), atol=2e-3)


def test_a_feature_whose_spread_is_float_noise_is_left_unscaled():
    """A dimension that is constant up to float noise (all-MiniLM-L6-v2's pooled vectors have
    some) must not be standardised to unit variance: folded back, its 1/std gave a head with
    weights of 1e32."""
    data = _solve_data(3)
    noise = np.random.default_rng(0).normal(0, 1e-20, (len(data.train_x), 1))
    train_x = np.hstack([data.train_x, noise]).astype(np.float32)
    val_x = np.hstack([data.val_x, np.zeros((len(data.val_x), 1))]).astype(np.float32)
    mean, scale = standardiser(torch.as_tensor(train_x))
    assert scale[-1] == 1.0 and torch.all(scale[:-1] != 1.0)
    head = nn.Linear(7, 3)
    fit_linear(head, SolveData(train_x, data.train_y, val_x, data.val_y))
    assert head.weight.abs().max() < 1e3
    plain = nn.Linear(6, 3)
    fit_linear(plain, data)  # the same fit without the constant feature
    with torch.no_grad():
        np.testing.assert_allclose(head(torch.as_tensor(val_x)).softmax(1).numpy(),
                                   plain(torch.as_tensor(data.val_x)).softmax(1).numpy(),
                                   atol=1e-4)


def test_sklearn_leaves_classes_without_examples_unpredicted():
    head = nn.Linear(6, 4)  # class 3 never occurs in training
    batches = _feature_batches(3)
    fit_linear(head, SolveData(torch.stack(batches.encoded).numpy(), batches.labels,
                               torch.stack(batches.encoded).numpy(), batches.labels))
    with torch.no_grad():
        preds = head(torch.stack(_feature_batches(3).encoded)).argmax(1)
    assert (preds != 3).all() and torch.count_nonzero(head.weight[3]) == 0


def test_sklearn_needs_a_linear_head():
    adapter = _odd_adapter()
    adapter.head = nn.Sequential(adapter.module.head)  # a head that is not one nn.Linear
    with pytest.raises(WarmstartError, match="strategy.classifier"):
        STRATEGIES.get("features")(
            adapter, StrategyConfig.of("features", classifier="sklearn").options)
    # classifier=torch: fine
    plan = STRATEGIES.get("features")(adapter, StrategyConfig(name="features").options)
    assert plan.solver is None
