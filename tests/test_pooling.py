"""Pooling follows the checkpoint: a sentence-transformers layout's pooling is read, the head
sits on that vector for every strategy, and a saved model reloads (and reloads outside
warmstart, as its card says) with the same pooling and the same predictions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import make_rows, write_csv

from warmstart.cli import main
from warmstart.config import ModelConfig
from warmstart.errors import WarmstartError
from warmstart.models import build_model, load_adapter
from warmstart.models.pooling import PooledClassifier, from_layout, pool, usage

TEXTS = ["a short one", "a much longer sentence with many more words in it", "mid size text",
         "a text longer than the run's max_length of 12 tokens, which truncates it"]


def _logits(adapter, texts=TEXTS):
    adapter.module.eval()
    with torch.no_grad():
        out = adapter.module(**adapter.collate(adapter.encode(texts)))
    return out.logits if hasattr(out, "logits") else out


def _st_checkpoint(tmp_path: Path, normalize: bool) -> Path:
    """A tiny BERT saved in a sentence-transformers layout (mean pooling)."""
    adapter = build_model(ModelConfig(name="tiny-bert", pooling="mean"), 3, seed=0)
    directory = tmp_path / "st-model"
    adapter.save(directory, ["a", "b", "c"])
    modules = json.loads((directory / "modules.json").read_text())
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
    (directory / "modules.json").write_text(json.dumps(modules))
    return directory


def test_pool_ignores_padding_on_either_side():
    hidden = torch.arange(2 * 4 * 2, dtype=torch.float32).reshape(2, 4, 2)
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert torch.equal(pool(hidden, right, "mean")[0], hidden[0, :2].mean(0))
    assert torch.equal(pool(hidden, left, "mean")[0], hidden[0, 2:].mean(0))
    assert torch.equal(pool(hidden, right, "last")[0], hidden[0, 1])
    assert torch.equal(pool(hidden, left, "last")[0], hidden[0, 3])
    assert torch.equal(pool(hidden, right, "max")[0], hidden[0, 1])
    assert torch.equal(pool(hidden, right, "cls"), hidden[:, 0])


@pytest.mark.parametrize("normalize", [False, True])
def test_auto_pooling_follows_a_sentence_transformers_layout(tmp_path, normalize):
    directory = _st_checkpoint(tmp_path, normalize)
    found = from_layout(directory)
    assert (found.mode, found.normalize) == ("mean", normalize)
    adapter = build_model(ModelConfig(name=str(directory)), 3, seed=0)
    assert isinstance(adapter.module, PooledClassifier)
    assert adapter.module.pooling.normalize == normalize
    # The head reads exactly the (normalised) mean of the real tokens' vectors.
    batch = adapter.collate(adapter.encode(TEXTS))
    with torch.no_grad():
        hidden = adapter.module.base(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        vector = (hidden * mask).sum(1) / mask.sum(1)
        if normalize:
            vector = torch.nn.functional.normalize(vector, dim=-1)
        adapter.module.eval()
        expected = adapter.module.classifier(vector)
    torch.testing.assert_close(_logits(adapter), expected)


def test_without_a_layout_auto_keeps_the_architectures_own_head():
    adapter = build_model(ModelConfig(name="tiny-bert"), 3, seed=0)
    assert type(adapter.module).__name__ == "BertForSequenceClassification"
    assert "own head" in adapter.extra["pooling_note"]
    assert isinstance(build_model(ModelConfig(name="tiny-bert", pooling="cls"), 3).module,
                      PooledClassifier)


def test_pooling_on_an_image_model_is_refused():
    with pytest.raises(WarmstartError, match="model.pooling=mean applies to Hugging Face text"):
        build_model(ModelConfig(name="tiny-cnn", pooling="mean"), 3)


@pytest.mark.parametrize("strategy", ["full", "head", "partial", "lora"])
def test_a_pooled_run_reloads_with_its_pooling(tmp_path, strategy):
    data = write_csv(tmp_path / "d.csv", make_rows(12))
    out = tmp_path / "runs"
    assert main(["train", "--quiet", "model.name=tiny-bert", "model.pooling=mean",
                 f"data.name={data}", "train.epochs=2", "train.batch_size=8", "optim.lr=1e-2",
                 "model.max_length=12",
                 f"strategy.name={strategy}", f"output.dir={out}", "output.name=r"]) == 0
    run = out / "r"
    reloaded, labels = load_adapter(run / "model")
    assert isinstance(reloaded.module.get_base_model() if strategy == "lora" else reloaded.module,
                      PooledClassifier)
    # warmstart's own predictions come from the reloaded model: they must be the trained ones
    preds = json.loads((run / "summary.json").read_text())["test"]
    assert preds["accuracy"] >= 0  # a finished run with test metrics
    before = _logits(reloaded)
    again, _ = load_adapter(run / "model")
    torch.testing.assert_close(_logits(again), before)
    if strategy != "lora":  # the card's recipe: transformers and safetensors alone
        card = (run / "README.md").read_text()
        assert "## Loading without warmstart" in card
        scope = {"d": str(run / "model"), "texts": TEXTS}
        exec(usage(reloaded.module.pooling, 12), scope)  # the code the card shows
        assert usage(reloaded.module.pooling, 12) in card
        torch.testing.assert_close(scope["logits"].detach(), before, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(("strategy", "scale"), [("full", 32 ** 0.5), ("head", 1.0)])
def test_a_head_on_a_normalised_vector_starts_larger_unless_it_trains_alone(
        tmp_path, strategy, scale):
    from warmstart.config import load_config
    from warmstart.training.session import setup

    directory = _st_checkpoint(tmp_path, normalize=True)
    data = write_csv(tmp_path / "toy.csv", make_rows(40))
    session = setup(load_config(None, [f"model.name={directory}", f"data.name={data}",
                                       f"strategy.name={strategy}"]))
    head = session.adapter.module.classifier
    # transformers' 0.02 times sqrt(dims) when the backbone trains with it; a probe (the head
    # alone, on fixed features) starts at 0.02, as a linear model should.
    assert head.weight.std().item() == pytest.approx(0.02 * scale, rel=0.3)
