"""Caching what stays frozen: the same model as without the cache, in less work.

`partial` keeps its bottom groups frozen for the whole run, so their output is recorded once
and replayed; these tests compare against `train.cache=false`, which runs the frozen groups
every step (in eval mode too, so the two runs must agree to the last bit of arithmetic).
"""

from __future__ import annotations

import pytest
import torch
from conftest import make_rows, write_csv
from torch import nn

import warmstart.training.cache
import warmstart.training.run
import warmstart.training.session
from warmstart.config import ModelConfig, StrategyConfig, load_config
from warmstart.data.batches import Batches
from warmstart.models import build_model
from warmstart.models.base import LayerGroup
from warmstart.strategies import STRATEGIES
from warmstart.training.cache import _output_form, frozen_prefix, prefix_cache

TINY_TEXT = ["model.name=tiny-bert", "train.epochs=2", "train.batch_size=8", "optim.lr=1e-2",
             "strategy.name=partial", "strategy.k=1", "output.save_model=false"]
TINY_IMAGE = ["model.name=tiny-cnn", "data.name=digits", "data.limit=150", "train.epochs=2",
              "train.batch_size=16", "optim.lr=1e-2", "strategy.name=partial", "strategy.k=1",
              "output.save_model=false",
              "augment.recipe=none"]  # augmentation would turn the cache off


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_csv(tmp_path_factory.mktemp("data") / "toy.csv", make_rows(n_per_class=16))


@pytest.fixture
def built(monkeypatch):
    """Adapters built inside `train`, and how often each layer group's modules ran."""
    adapters, calls = [], {}

    def keep(cfg, num_labels, seed=None):
        adapter = build_model(cfg, num_labels, seed=seed)
        for group in adapter.groups:  # a leaf: a replayed module's own hooks still fire
            leaf = next(m for root in group.modules for m in root.modules()
                        if not list(m.children()) and list(m.parameters(recurse=False)))
            leaf.register_forward_hook(lambda *_a, name=group.name: calls.__setitem__(
                name, calls.get(name, 0) + torch.is_grad_enabled()))  # training steps only
        adapters.append(adapter)
        return adapter

    monkeypatch.setattr(warmstart.training.session, "build_model", keep)
    return adapters, calls


def _train(tmp_path, base, name, *extra):
    cfg = load_config(None, [*base, f"output.dir={tmp_path}", f"output.name={name}", *extra])
    return warmstart.training.run.train(cfg, quiet=True)


def _state(adapter):
    return {k: v.detach().clone() for k, v in adapter.module.state_dict().items()}


@pytest.mark.parametrize("base", [TINY_TEXT, TINY_IMAGE], ids=["text", "image"])
def test_cached_prefix_trains_the_same_model_without_running_the_frozen_groups(
        tmp_path, data, built, base):
    adapters, calls = built
    base = [*base, f"data.name={data}"] if base is TINY_TEXT else base
    plain = _train(tmp_path, base, "plain", "train.cache=false")
    plain_calls, plain_state = dict(calls), _state(adapters[0])
    calls.clear()
    cached = _train(tmp_path, base, "cached")
    cached_calls, cached_state = dict(calls), _state(adapters[1])

    assert cached.cache_seconds > 0 and plain.cache_seconds == 0
    for key, value in plain_state.items():
        assert torch.allclose(value, cached_state[key], atol=1e-6), key
    assert [h["train_loss"] for h in cached.history] == pytest.approx(
        [h["train_loss"] for h in plain.history], abs=1e-6)
    assert cached.test["accuracy"] == plain.test["accuracy"]
    # In training steps, the bottom group ran every step without the cache and never with
    # it (it ran once per example to record, without gradients); the trained top ran alike.
    bottom, top = adapters[0].groups[0].name, adapters[0].groups[-2].name
    assert plain_calls[bottom] == plain.steps > 0 and cached_calls.get(bottom, 0) == 0
    assert cached_calls[top] == plain_calls[top] == plain.steps


def test_a_cache_over_the_memory_budget_goes_to_a_file_and_is_removed(tmp_path, data, built,
                                                                        monkeypatch):
    adapters, _ = built
    spilled = []
    original = warmstart.training.cache.DiskRows.__init__

    def spy(self, path, shapes):
        spilled.append(path)
        original(self, path, shapes)

    monkeypatch.setattr(warmstart.training.cache.DiskRows, "__init__", spy)
    base = [*TINY_TEXT, f"data.name={data}"]
    in_memory = _train(tmp_path, base, "memory")
    on_disk = _train(tmp_path, base, "disk", "train.cache_memory_mb=0.001")
    assert [p.name for p in spilled] == ["train.npy", "val.npy"]
    assert spilled[0].parent == tmp_path / "disk" / "cache"
    assert not spilled[0].parent.exists()  # the run deletes its file cache
    assert on_disk.history[-1]["train_loss"] == pytest.approx(
        in_memory.history[-1]["train_loss"], abs=1e-6)


def test_frozen_prefix_runs_in_eval_mode_without_the_cache(tmp_path, data, built):
    adapters, _ = built
    seen = []

    def spy(cfg, num_labels, seed=None):
        adapter = build_model(cfg, num_labels, seed=seed)
        adapter.groups[0].modules[0].register_forward_hook(
            lambda m, *_: seen.append(m.training))
        adapters.append(adapter)
        return adapter

    warmstart.training.session.build_model = spy  # the `built` fixture's monkeypatch restores it
    _train(tmp_path, [*TINY_TEXT, f"data.name={data}"], "plain", "train.cache=false")
    assert seen and not any(seen)  # no dropout in a frozen group, in any step


def test_strategies_that_may_train_everything_have_no_frozen_prefix():
    torch.manual_seed(0)
    for name in ("full", "gradual", "lp-ft", "bitfit", "llrd"):
        adapter = build_model(ModelConfig(name="tiny-bert"), 3)
        plan = STRATEGIES.get(name)(adapter, StrategyConfig(name=name).options)
        assert frozen_prefix(adapter, plan) == [], name
    adapter = build_model(ModelConfig(name="tiny-bert"), 3)
    plan = STRATEGIES.get("partial")(adapter, StrategyConfig.of("partial", k=1).options)
    assert [g.name for g in frozen_prefix(adapter, plan)] == ["embeddings", "block0"]


def test_output_forms_that_cannot_be_replayed():
    t = torch.zeros(2)
    assert _output_form(t).wrap(t) is t
    assert _output_form((t, None)).wrap(t)[1:] == (None,)
    assert _output_form((t, t)) is None  # e.g. attention weights: not recorded
    assert _output_form({"h": t}) is None


class SkipConnection(nn.Module):
    """A skip connection across the frozen groups: the top reads the stem's output as well
    as block1's. Replaying only block1's recorded output cannot reproduce that, and the probe
    must notice."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.block1 = nn.Linear(4, 4), nn.Linear(4, 4)
        self.block2, self.head = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        return self.head(self.block2(self.block1(h) + h))


def _vectors(n: int = 8) -> Batches:
    rows = [torch.randn(4) for _ in range(n)]
    return Batches(rows, torch.zeros(n, dtype=torch.long).numpy(),
                   lambda items: {"x": torch.stack(items)}, 4, shuffle=False)


def test_a_model_the_replay_cannot_reproduce_falls_back_with_the_reason(tmp_path):
    torch.manual_seed(0)
    model = SkipConnection()
    prefix = [LayerGroup("stem", [model.stem]), LayerGroup("block1", [model.block1])]
    batches = _vectors()
    why = prefix_cache(model, prefix, batches, batches, torch.device("cpu"), memory_mb=100,
                       spill_dir=tmp_path, per_token=False)
    assert isinstance(why, str) and "changed the logits" in why
    assert all(m.training for m in model.modules())  # left as it was
    assert all("forward" not in vars(m) for m in model.modules())
    # One frozen group is fine: its output is all the top ever sees of it.
    cached = prefix_cache(model, prefix[:1], batches, batches, torch.device("cpu"),
                          memory_mb=100, spill_dir=tmp_path, per_token=False)
    assert not isinstance(cached, str), cached
    _, batch = next(cached.train.epoch())
    batch.pop("labels")
    with cached.replay.active():
        replayed = model(**batch)
    assert torch.allclose(replayed, model(batch["x"]), atol=1e-6)


def test_replay_restores_the_modules_after_training(tmp_path, data, built):
    adapters, _ = built
    _train(tmp_path, [*TINY_TEXT, f"data.name={data}"], "cached")
    for group in adapters[0].groups:
        for m in group.modules:
            assert "forward" not in vars(m), group.name  # the class's forward again
