"""lora and ia3 (peft): targets by structure, what trains, saving the adapters with the head,
reloading to the same predictions, merging for export, checkpoint keys that survive a rebuild.

The registry-driven tests in test_strategies.py also run both strategies (one optimizer step
changes exactly the trainable parameters; frozen BatchNorm stays in eval mode).
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import make_rows, write_csv
from safetensors.torch import load_file

import warmstart.training.run
from warmstart.cli import main
from warmstart.config import ModelConfig, StrategyConfig, load_config
from warmstart.errors import WarmstartError
from warmstart.models import build_model, load_adapter, logits_of
from warmstart.ship.export import export
from warmstart.ship.predict import logits_for, predict
from warmstart.strategies import STRATEGIES, train_mode
from warmstart.training.session import setup

peft = pytest.importorskip("peft")
from peft.tuners.tuners_utils import BaseTunerLayer  # noqa: E402
from peft.utils import ModulesToSaveWrapper  # noqa: E402

# (model, strategy, data overrides) of the runs trained once for this module. lr 1e-2 and two
# epochs move LoRA's B well away from zero, so merging has something to fold in.
RUNS = {
    "bert-lora": ("tiny-bert", "lora", []),
    "cnn-lora": ("tiny-cnn", "lora", ["data.name=digits", "data.limit=60"]),
    "cnn-ia3": ("tiny-cnn", "ia3", ["data.name=digits", "data.limit=60"]),
}


def _build(model_name, strategy, **options):
    adapter = build_model(ModelConfig(name=model_name), num_labels=3, seed=0)
    plan = STRATEGIES.get(strategy)(adapter, StrategyConfig.of(strategy, **options).options)
    return plan.adapter, plan  # a PEFT strategy hands back a new, wrapped adapter


def _inputs(adapter, n=6):
    if adapter.kind == "text":
        raw = [f"word{i} " * (i + 2) for i in range(n)]
    else:
        gen = torch.Generator().manual_seed(0)
        raw = [torch.randint(0, 255, (16, 16), generator=gen, dtype=torch.uint8).numpy()
               for _ in range(n)]
    return adapter.collate(adapter.encode(raw))


def _adapted(module):
    """Names of the layers peft put adapters on (names inside the base model)."""
    return sorted(n.removeprefix("base_model.model.") for n, m in module.named_modules()
                  if isinstance(m, BaseTunerLayer))


# --------------------------------------------------------------------------- what is adapted


@pytest.mark.parametrize(("model_name", "strategy", "expected"), [
    ("tiny-bert", "lora", [f"bert.encoder.layer.{i}.attention.self.{m}"
                           for i in (0, 1) for m in ("query", "value")]),
    ("tiny-bert", "ia3", [f"bert.encoder.layer.{i}.{m}" for i in (0, 1) for m in (
        "attention.output.dense", "attention.self.key", "attention.self.value",
        "output.dense")]),
    # The stem (the input group) is left out; the head is never a target.
    ("tiny-cnn", "lora", ["net.block1.0", "net.block2.0"]),
    ("tiny-cnn", "ia3", ["net.block1.0", "net.block2.0"]),
])
def test_targets_by_model_and_only_adapters_and_head_train(model_name, strategy, expected):
    adapter, plan = _build(model_name, strategy)
    module = adapter.module
    assert _adapted(module) == sorted(expected)
    assert f"on {len(expected)} modules" in plan.notes
    # The head trains as a whole copy inside peft's wrapper; the copy is what forward uses.
    wrapper, = [m for m in module.modules() if isinstance(m, ModulesToSaveWrapper)]
    assert adapter.head is wrapper.modules_to_save["default"]
    assert all(p.requires_grad for p in adapter.head.parameters())
    assert not any(p.requires_grad for p in wrapper.original_module.parameters())
    assert [g.name for g in plan.groups] == ["adapters", "head"]
    adapters, head = plan.groups
    assert {id(p) for p in head.params} == {id(p) for p in adapter.head.parameters()}
    trainable = {id(p) for p in module.parameters() if p.requires_grad}
    assert trainable == {id(p) for g in plan.groups for p in g.params}
    # Every adapter weight sits inside an adapter layer, beside its frozen base layer.
    layers = [m for m in module.modules() if isinstance(m, BaseTunerLayer)]
    inside = {id(p) for m in layers for p in m.parameters()}
    base = {id(p) for m in layers for p in m.get_base_layer().parameters()}
    assert {id(p) for p in adapters.params} == inside - base


@pytest.mark.parametrize("strategy", ["lora", "ia3"])
@pytest.mark.parametrize("model_name", ["tiny-bert", "tiny-cnn"])
def test_adapters_start_as_the_identity(model_name, strategy):
    """LoRA's B starts at zero and (IA)^3's scales at one: training starts from the model."""
    torch.manual_seed(0)
    adapter = build_model(ModelConfig(name=model_name), num_labels=3)
    batch = _inputs(adapter)
    adapter.module.eval()
    before = logits_of(adapter.module(**batch))
    torch.manual_seed(0)
    plain = build_model(ModelConfig(name=model_name), num_labels=3)
    STRATEGIES.get(strategy)(plain, StrategyConfig(name=strategy).options)
    plain.module.eval()
    assert torch.allclose(logits_of(plain.module(**batch)), before, atol=1e-6)


def test_target_modules_override_and_its_errors():
    adapter, plan = _build("tiny-bert", "lora", target_modules=["key"])
    assert _adapted(adapter.module) == [f"bert.encoder.layer.{i}.attention.self.key"
                                        for i in (0, 1)]
    assert "by strategy.target_modules" in plan.notes
    for bad in (["nothing_here"], ["classifier"]):  # the head is never adapted
        with pytest.raises(WarmstartError, match="strategy.target_modules"):
            _build("tiny-bert", "lora", target_modules=bad)


@pytest.mark.slow
def test_efficientnet_lora_takes_the_pointwise_convs_and_keeps_the_function():
    """EfficientNet-Lite pads inside its convs' forward; LoRA adapts its 1x1 convs (swapped
    for plain ones computing the same), never the depthwise ones."""
    torch.manual_seed(0)
    cfg = ModelConfig(name="efficientnet-lite0", image_size=64)
    adapter = build_model(cfg, num_labels=3)
    adapter.module.eval()
    batch = _inputs(adapter, n=2)
    before = adapter.module(**batch)
    STRATEGIES.get("lora")(adapter, StrategyConfig(name="lora").options)
    layers = [m for m in adapter.module.modules() if isinstance(m, BaseTunerLayer)]
    assert len(layers) == 32  # 15 expand + 16 project convs + the final 1x1 conv
    assert all(m.get_base_layer().kernel_size == (1, 1) for m in layers)
    adapter.module.eval()
    assert torch.allclose(adapter.module(**batch), before, atol=1e-5)


# --------------------------------------------------------------------------- state-dict keys


@pytest.mark.parametrize("strategy", ["lora", "ia3"])
def test_checkpoint_keys_survive_a_rebuild(strategy):
    """A checkpoint's state_dict loads strictly into the model a resumed run rebuilds."""
    first, plan = _build("tiny-cnn", strategy)
    opt = torch.optim.AdamW([p for g in plan.groups for p in g.params], lr=1e-2)
    batch = _inputs(first)
    train_mode(first.module)
    logits_of(first.module(**batch)).sum().backward()
    opt.step()
    state = {k: v.clone() for k, v in first.module.state_dict().items()}
    second, _ = _build("tiny-cnn", strategy)
    assert list(second.module.state_dict()) == list(state)
    second.module.load_state_dict(state, strict=True)
    first.module.eval()
    second.module.eval()
    assert torch.equal(first.module(**batch), second.module(**batch))


# --------------------------------------------------------------------------- runs: save, reload


@pytest.fixture(scope="module")
def rows():
    return make_rows()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, rows):
    """Each of RUNS trained through `warmstart.training.run.train`, with the adapter it trained."""
    root = tmp_path_factory.mktemp("runs")
    data = write_csv(root / "toy.csv", rows)
    out = {}
    for key, (model_name, strategy, extra) in RUNS.items():
        built = []

        def keep(cfg, *, built=built, **how):
            built.append(setup(cfg, **how))
            return built[-1]

        cfg = load_config(None, [f"model.name={model_name}", f"strategy.name={strategy}",
                                 f"data.name={data}", "train.epochs=2", "train.batch_size=8",
                                 "optim.lr=1e-2", f"output.dir={root}", f"output.name={key}",
                                 *extra])
        run = warmstart.training.run
        original, run.setup = run.setup, keep
        try:
            run.train(cfg, quiet=True)
        finally:
            run.setup = original
        trained = built[0].adapter  # the wrapped adapter the run trained
        trained.module.eval()
        out[key] = (root / key, trained, cfg)
    return out


def _raw_inputs(adapter, cfg, rows):
    if adapter.kind == "text":
        return [t for t, _ in rows]
    from warmstart.data import load_task

    return list(load_task(cfg.data, cfg.train.seed).test.inputs)


def _logits(adapter, inputs):
    return torch.as_tensor(logits_for(adapter, inputs))


@pytest.mark.parametrize("key", list(RUNS))
def test_saved_adapters_and_head_reload_to_the_same_predictions(runs, rows, key):
    run, trained, cfg = runs[key]
    model_dir = run / "model"
    assert {p.name for p in model_dir.iterdir()} == {
        "adapter_config.json", "adapter_model.safetensors", "warmstart_model.json"}
    saved = load_file(str(model_dir / "adapter_model.safetensors"))
    wrapper, = [n for n, m in trained.module.named_modules()
                if isinstance(m, ModulesToSaveWrapper)]
    for name, p in trained.head.named_parameters():  # the trained head is in the adapter file
        assert torch.equal(saved[f"{wrapper}.{name}"], p.detach())
    n_adapter = sum(p.numel() for p in trained.module.parameters() if p.requires_grad)
    assert sum(t.numel() for t in saved.values()) == n_adapter  # and nothing else
    meta = json.loads((model_dir / "warmstart_model.json").read_text())
    assert meta["source"] == "peft" and meta["peft"] == RUNS[key][1]

    inputs = _raw_inputs(trained, cfg, rows)
    reloaded, labels = load_adapter(model_dir)
    assert torch.allclose(_logits(reloaded, inputs), _logits(trained, inputs), atol=1e-5)
    out = predict(run, inputs[:3])
    assert len(out) == 3 and {o["label"] for o in out} <= set(labels)


def test_a_changed_base_model_is_refused(runs, tmp_path):
    model_dir = shutil.copytree(runs["cnn-lora"][0] / "model", tmp_path / "model")
    meta_path = model_dir / "warmstart_model.json"
    meta = json.loads(meta_path.read_text())
    meta["seed"] += 1  # tiny-cnn has random weights: another seed is another base model
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(WarmstartError, match="no longer rebuilds"):
        load_adapter(model_dir)


# --------------------------------------------------------------------------- export


@pytest.mark.parametrize("key", list(RUNS))
def test_merged_export_predicts_like_the_adapters(runs, rows, tmp_path, key, capsys):
    run, trained, cfg = runs[key]
    if RUNS[key][1] == "lora":  # B left zero would make merging a no-op the test can't see
        b = [m.lora_B["default"].weight for m in trained.module.modules()
             if isinstance(m, BaseTunerLayer)]
        assert b and all(w.abs().sum() > 0 for w in b)
    inputs = _raw_inputs(trained, cfg, rows)
    unmerged, labels = load_adapter(run / "model")
    expected = _logits(unmerged, inputs)

    assert main(["export", str(run), str(tmp_path / "merged"), "--merge"]) == 0
    assert "written to" in capsys.readouterr().out
    merged, merged_labels = load_adapter(tmp_path / "merged")
    assert merged_labels == labels
    assert not any(isinstance(m, (BaseTunerLayer, ModulesToSaveWrapper))
                   for m in merged.module.modules())  # a plain model, no peft inside
    assert torch.allclose(_logits(merged, inputs), expected, atol=1e-5)

    copied = export(run, tmp_path / "adapters")  # without merge: the adapter layout
    assert (copied / "adapter_config.json").is_file()
    again, _ = load_adapter(copied)
    assert torch.allclose(_logits(again, inputs), expected, atol=1e-5)


def test_merged_text_export_is_a_transformers_folder(runs, tmp_path):
    out = export(runs["bert-lora"][0], tmp_path / "merged", merge=True)
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "food", "1": "sport", "2": "tech"}
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()


def test_export_refusals(runs, tmp_path):
    run = runs["cnn-ia3"][0]
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(WarmstartError, match="not an empty folder"):
        export(run, tmp_path / "full")
    plain = export(run, tmp_path / "merged", merge=True)  # a plain model now
    fake_run = tmp_path / "plain-run"
    shutil.copytree(plain, fake_run / "model")
    shutil.copy(run / "summary.json", fake_run / "summary.json")
    with pytest.raises(WarmstartError, match="without --merge"):
        export(fake_run, tmp_path / "again", merge=True)
    with pytest.raises(WarmstartError, match="no finished run"):
        export(tmp_path / "missing", tmp_path / "out")

