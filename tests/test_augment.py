"""Augmentation: each op keeps shape, dtype and range; the randomness is a function of (seed,
epoch, example) alone; evaluation never sees it; mixed labels go through every task's loss; it
turns the cache off; bad keys are one line. A killed and resumed augmented run ending with the
same weights: `test_strategy_resume.py`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_rows, write_csv

import warmstart.training.loop
from warmstart.cli import main
from warmstart.config import AugmentConfig, ModelConfig, load_config
from warmstart.data.augment import AUTO_IMAGE, Augment, Recipe, make_augment, resolve
from warmstart.data.augment_image import TA_OPS, ImageOps, _colour_op, mix_labels
from warmstart.data.augment_text import TextOps
from warmstart.models import build_model
from warmstart.tasks import Classification, Multilabel, Regression
from warmstart.training.cache import AUGMENT_NOTE, prepare
from warmstart.training.run import train
from warmstart.training.session import setup

MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
EVERYTHING = ImageOps(crop_scale=(0.3, 1.0), flip=0.5, jitter=0.4, trivial=1.0,
                      mixup=0.4, cutmix=1.0, mix_prob=1.0)
IMAGE_RUN = ["model.name=tiny-cnn", "data.name=digits", "data.limit=120", "model.image_size=16",
             "train.epochs=2", "train.batch_size=16", "optim.lr=3e-3", "train.threads=1",
             "output.save_model=false"]


def _images(n: int = 8, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Normalised images whose [0, 1] values span the whole range."""
    x01 = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))
    return (x01 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def _unnormalised(x: torch.Tensor) -> torch.Tensor:
    return x * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)


def _aug(ops: ImageOps, seed: int = 0) -> Augment:
    return Augment(Recipe(image=ops), seed, 10, mean=MEAN, std=STD)


def _batch(n: int = 8) -> dict[str, torch.Tensor]:
    return {"pixel_values": _images(n), "labels": torch.arange(n) % 10}


@pytest.mark.parametrize("ops", [
    ImageOps(crop_scale=(0.2, 0.5)), ImageOps(flip=1.0), ImageOps(jitter=0.8),
    ImageOps(trivial=1.0), ImageOps(mixup=1.0, mix_prob=1.0), ImageOps(cutmix=1.0, mix_prob=1.0),
    EVERYTHING], ids=["crop", "flip", "jitter", "trivial", "mixup", "cutmix", "everything"])
def test_each_image_op_keeps_shape_dtype_and_range_and_changes_the_images(ops):
    batch = _batch()
    out = _aug(ops)(batch, np.arange(8), 0)
    x = out["pixel_values"]
    assert x.shape == batch["pixel_values"].shape and x.dtype == torch.float32
    pixels = _unnormalised(x)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    assert not torch.allclose(x, batch["pixel_values"])
    assert torch.equal(batch["pixel_values"], _batch()["pixel_values"])  # input not changed


@pytest.mark.parametrize("name", [n for n in TA_OPS if n not in (
    "identity", "rotate", "shear_x", "shear_y", "translate_x", "translate_y")])
def test_each_trivialaugment_colour_op_stays_in_range_and_does_something(name):
    x = _unnormalised(_images(4)).clamp(0, 1)
    out = _colour_op(name, x, torch.tensor([1.0, -1.0, 0.7, -0.7]))
    assert out.shape == x.shape and out.min() >= -1e-6 and out.max() <= 1 + 1e-6
    assert not torch.allclose(out, x)


def test_flip_alone_mirrors_exactly():
    batch = _batch()
    out = _aug(ImageOps(flip=1.0))(batch, np.arange(8), 0)["pixel_values"]
    assert torch.allclose(out, batch["pixel_values"].flip(-1), atol=1e-5)


def test_randomness_is_a_function_of_seed_epoch_and_example_alone():
    aug, batch, ids = _aug(EVERYTHING), _batch(), np.arange(8)
    first = aug(batch, ids, 0)
    assert torch.equal(first["pixel_values"], aug(batch, ids, 0)["pixel_values"])
    assert torch.equal(first["labels"], aug(batch, ids, 0)["labels"])
    assert not torch.allclose(first["pixel_values"], aug(batch, ids, 1)["pixel_values"])
    assert not torch.allclose(first["pixel_values"], aug(batch, ids + 8, 0)["pixel_values"])
    assert not torch.allclose(first["pixel_values"], _aug(EVERYTHING, seed=1)(
        batch, ids, 0)["pixel_values"])
    # Without mixing, an example's augmentation does not depend on its batch-mates.
    alone = _aug(AUTO_IMAGE)
    whole = alone(batch, ids, 3)["pixel_values"]
    half = alone({k: v[4:] for k, v in batch.items()}, ids[4:], 3)["pixel_values"]
    assert torch.allclose(whole[4:], half, atol=1e-6)


def test_mixed_labels_are_soft_targets_that_sum_to_one():
    out = _aug(ImageOps(mixup=1.0, mix_prob=1.0))(_batch(), np.arange(8), 0)
    y = out["labels"]
    assert y.shape == (8, 10) and y.dtype == torch.float32
    assert torch.allclose(y.sum(1), torch.ones(8))
    assert (y > 0).sum(1).max() == 2  # each example holds its own class and a neighbour's


@pytest.mark.parametrize("task, labels", [
    (Classification([str(i) for i in range(4)]), torch.tensor([0, 1, 2, 3])),
    (Multilabel(list("abcd")), torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 0],
                                             [1, 1, 1, 0]], dtype=torch.float32)),
    (Regression(["score"], mean=1.0, scale=2.0), torch.tensor([0.5, 1.5, 3.0, -1.0])),
], ids=["classification", "multilabel", "regression"])
def test_mixed_labels_go_through_each_tasks_loss(task, labels):
    share = torch.tensor([0.25, 1.0, 0.6, 0.9])
    mixed = mix_labels(labels, share, 4)
    partner = torch.roll(torch.arange(4), 1)
    logits = torch.randn(4, 1 if task.type == "regression" else 4,
                         generator=torch.Generator().manual_seed(0))
    loss = task.loss(logits, mixed)
    assert torch.isfinite(loss)
    if task.type == "regression":  # the targets are the mixed values
        assert torch.allclose(mixed, share * labels + (1 - share) * labels[partner])
    else:  # cross-entropy and BCE are linear in the target: the mix of the two losses
        def per_example(y: torch.Tensor) -> torch.Tensor:
            y = torch.nn.functional.one_hot(y, 4).float() if y.dtype == torch.long else y
            return torch.stack([task.loss(logits[i:i + 1], y[i:i + 1]) for i in range(4)])
        expected = share * per_example(labels) + (1 - share) * per_example(labels[partner])
        assert torch.allclose(loss, expected.mean(), atol=1e-5)


def _text_augment(ops: TextOps):
    adapter = build_model(ModelConfig(name="tiny-bert"), 3)
    aug = make_augment(AugmentConfig(recipe="none", **{k: getattr(ops, k) for k in (
        "token_delete", "token_swap", "span_mask")}), adapter, 3, 0, backbone_trains=True)
    texts = ["the quick brown fox jumps over the lazy dog", "a b c d e f", "one"]
    batch = adapter.collate(adapter.encode(texts))
    batch["labels"] = torch.tensor([0, 1, 2])
    return adapter, aug, batch


@pytest.mark.parametrize("ops", [TextOps(token_delete=0.5), TextOps(token_swap=0.9),
                                 TextOps(span_mask=0.5)], ids=["delete", "swap", "span"])
def test_each_text_op_keeps_shape_special_tokens_and_changes_the_text(ops):
    adapter, aug, batch = _text_augment(ops)
    out = aug(batch, np.arange(3), 0)
    tokenizer = adapter.extra["tokenizer"]
    fixed = set(tokenizer.all_special_ids) - {tokenizer.pad_token_id, tokenizer.mask_token_id}
    for key in ("input_ids", "attention_mask"):
        assert out[key].shape == batch[key].shape and out[key].dtype == batch[key].dtype
    assert not torch.equal(out["input_ids"], batch["input_ids"])
    assert torch.equal(out["labels"], batch["labels"])
    for before, after, mask in zip(batch["input_ids"], out["input_ids"], out["attention_mask"]):
        real = after[mask.bool()].tolist()
        assert [t for t in real if t in fixed] == [t for t in before.tolist() if t in fixed]
        assert len(real) > len([t for t in real if t in fixed])  # a text keeps a token
        assert mask[:len(real)].all()  # padding stays at the end
    assert torch.equal(out["input_ids"], aug(batch, np.arange(3), 0)["input_ids"])


def test_recipes_resolve_per_kind_and_keys_override():
    auto = AugmentConfig()
    assert resolve(auto, "image", backbone_trains=True).image == AUTO_IMAGE
    assert not resolve(auto, "image", backbone_trains=False).active  # head-only: the cache
    assert not resolve(auto, "text", backbone_trains=True).active
    assert resolve(AugmentConfig(recipe="none"), "image", backbone_trains=True).describe() == \
        "none"
    only_flip = resolve(AugmentConfig(recipe="none", flip=0.5), "image", backbone_trains=True)
    assert only_flip.describe() == "flip p=0.5"
    assert resolve(AugmentConfig(mixup=0.2), "image", backbone_trains=True).image.mix_prob == 1


def test_evaluation_never_sees_augmentation_and_summary_records_it(tmp_path, monkeypatch):
    calls = []
    real_fit = warmstart.training.loop.fit

    def counting_fit(*args, augment=None, **kwargs):
        def counted(batch, ids, epoch):
            calls.append((len(ids), epoch))
            return augment(batch, ids, epoch)
        return real_fit(*args, augment=counted, **kwargs)

    monkeypatch.setattr(warmstart.training.run, "fit", counting_fit)
    cfg = load_config(None, [*IMAGE_RUN, f"output.dir={tmp_path}", "output.name=r",
                             "augment.mixup=0.2"])
    summary = train(cfg, quiet=True)
    session = setup(cfg)
    assert len(calls) == len(session.train) * 2  # one per training step, none for evaluation
    assert sum(n for n, _ in calls) == 2 * session.train.num_examples
    assert {e for _, e in calls} == {0, 1}
    assert "flip p=0.5" in summary.augment and "mixup 0.2" in summary.augment
    assert "augmentation (training only): random resized crop" in (
        tmp_path / "r" / "README.md").read_text(encoding="utf-8")


def test_augmentation_turns_the_frozen_prefix_cache_off(tmp_path, capsys):
    partial = [*IMAGE_RUN, "strategy.name=partial", "strategy.k=1"]
    session = setup(load_config(None, partial))
    assert session.augment is not None
    ready = prepare(session.adapter, session.plan, session.train, session.val, session.device,
                    session.cfg.train, tmp_path / "spill", augmented=True)
    assert ready.notes == AUGMENT_NOTE and ready.model is session.model
    assert ready.train is session.train  # the real inputs, not recorded features
    plain = setup(load_config(None, [*partial, "augment.recipe=none"]))
    assert plain.augment is None
    cached = prepare(plain.adapter, plain.plan, plain.train, plain.val, plain.device,
                     plain.cfg.train, tmp_path / "spill")
    assert "computed once" in cached.notes
    assert main(["train", *partial, f"output.dir={tmp_path}", "output.name=p"]) == 0
    assert AUGMENT_NOTE in " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize("args, words", [
    (["augment.flip=1.5"], "augment.flip"),
    (["augment.crop_scale=[0.8,0.2]"], "augment.crop_scale"),
    (["augment.mixup=-1"], "augment.mixup"),
    (["augment.token_delete=1"], "augment.token_delete"),
    (["augment.flp=0.5"], "augment.flip"),  # unknown: the nearest key is suggested
    (["augment.token_swap=0.1"], "applies to text models"),
    (["model.name=tiny-bert", "data.name=bbc-news", "augment.flip=0.5"],
     "applies to image models"),
    (["strategy.name=features", "strategy.classifier=sklearn", "augment.flip=0.5"],
     "closed form"),
], ids=["range", "crop", "alpha", "delete-all", "unknown", "text-key", "image-key", "solver"])
def test_bad_augment_keys_are_one_line(tmp_path, capsys, args, words):
    assert main(["train", *IMAGE_RUN, f"output.dir={tmp_path}", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err
    assert not (tmp_path / "tiny-cnn-digits-full").exists()


def test_text_augmentation_trains_tiny_bert_end_to_end(tmp_path):
    data = write_csv(tmp_path / "toy.csv", make_rows(n_per_class=8))
    cfg = load_config(None, ["model.name=tiny-bert", f"data.name={data}", "train.epochs=1",
                             "train.batch_size=8", "augment.token_delete=0.1",
                             "augment.span_mask=0.2", f"output.dir={tmp_path}",
                             "output.save_model=false"])
    summary = train(cfg, quiet=True)
    assert summary.augment == "token delete 0.1, span mask 0.2"
    assert summary.steps > 0
