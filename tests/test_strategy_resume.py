"""Strategies across a real kill, and the L2-SP regulariser."""

from __future__ import annotations

import signal
import time

import pytest
import torch
from conftest import make_rows, write_csv
from safetensors.torch import load_file
from test_controls import _cli

from warmstart.config import ModelConfig, load_config
from warmstart.models import build_model
from warmstart.training.run import train
from warmstart.training.session import seed_everything

COMMON = ["data.name=digits", "data.limit=120", "model.image_size=16", "train.epochs=4",
          "train.batch_size=8", "optim.lr=3e-3", "checkpoint.keep_last=10", "train.threads=1",
          "--quiet"]
GRADUAL = ["model.name=factories:slow_deep_cnn", "strategy.name=gradual", *COMMON]
# partial k=1 caches the frozen stem and block1 (recorded again on resume)
PARTIAL = ["model.name=factories:slow_top_cnn", "strategy.name=partial", "strategy.k=1",
           "augment.recipe=none", *COMMON]  # augmentation would turn the cache off


# Every image op and mixing on: each example's augmentation is a function of (seed, epoch,
# example), so a run killed mid-epoch replays the same augmented batches when resumed.
AUGMENTED = ["model.name=factories:slow_cnn", "strategy.name=full", "augment.mixup=0.2",
             "augment.cutmix=1.0", "augment.jitter=0.3", "checkpoint.every_steps=5", *COMMON]


@pytest.mark.parametrize("args, step", [(GRADUAL, 30), (PARTIAL, 30), (AUGMENTED, 20)],
                         ids=["gradual", "partial-cached", "augmented-mid-epoch"])
def test_killed_after_epoch_two_resumes_to_the_same_weights(tmp_path, args, step):
    ref = _cli([*args, f"output.dir={tmp_path}", "output.name=ref"])
    assert ref.wait(timeout=300) == 0, ref.stderr.read()
    victim = _cli([*args, f"output.dir={tmp_path}", "output.name=run"])
    # 15 steps per epoch: step 30 ends epoch two, step 20 is inside it
    epoch2 = tmp_path / "run" / "checkpoints" / f"step-{step:08d}" / "state.pt"
    deadline = time.time() + 240
    while time.time() < deadline and not epoch2.exists():
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=60) == -signal.SIGKILL
    assert not (tmp_path / "run" / "summary.json").exists()
    resumed = _cli(["--resume", str(tmp_path / "run"), "--quiet"])
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    a = load_file(str(tmp_path / "ref" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def _distance_from_start(tmp_path, data, l2sp: float) -> float:
    args = ["model.name=tiny-bert", f"data.name={data}", "train.epochs=2", "optim.lr=1e-2",
            "optim.weight_decay=0", f"regularize.l2sp={l2sp}", f"output.dir={tmp_path}",
            f"output.name=l2sp-{l2sp}"]
    train(load_config(None, args), quiet=True)
    seed_everything(0)  # the run seeds like this before building: the same starting weights
    start = build_model(ModelConfig(name="tiny-bert"), 3)
    head = {f"{n}" for n, _ in start.head.named_parameters(prefix="classifier")}
    trained = load_file(str(tmp_path / f"l2sp-{l2sp}" / "model" / "model.safetensors"))
    total = 0.0
    for name, p0 in start.module.state_dict().items():
        if name in trained and name not in head and p0.dtype.is_floating_point:
            total += (trained[name] - p0).pow(2).sum().item()
    return total


def test_l2sp_pulls_weights_toward_their_pretrained_values(tmp_path):
    data = write_csv(tmp_path / "toy.csv", make_rows(n_per_class=20))
    free = _distance_from_start(tmp_path, data, 0.0)
    pulled = _distance_from_start(tmp_path, data, 1.0)
    assert free > 0
    assert pulled < 0.8 * free, (pulled, free)


@pytest.mark.parametrize("l1", [0.0, 1e-3])
def test_l1_penalty_is_added_only_when_asked(l1):
    from warmstart.config import RegularizeConfig
    from warmstart.strategies import STRATEGIES
    from warmstart.training.regularize import make_penalty

    adapter = build_model(ModelConfig(name="tiny-cnn"), 3)
    plan = STRATEGIES.get("full")(adapter, load_config(None, []).strategy)
    penalty = make_penalty(plan, adapter.head, RegularizeConfig(l1=l1))
    if l1 == 0:
        assert penalty is None
    else:
        weights = [p for g in plan.groups for p in g.params if p.ndim >= 2]
        expected = l1 * sum(p.abs().sum() for p in weights)
        assert penalty().item() == pytest.approx(expected.item(), rel=1e-5)
