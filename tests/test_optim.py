"""Optimizer groups and schedules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from warmstart.config import OptimConfig
from warmstart.training.optim import (
    ParamGroup,
    build_optimizer,
    group_lrs,
    linear_schedule,
    make_schedule,
    set_lr,
)


def test_linear_schedule_warms_up_then_decays_to_zero():
    f = linear_schedule(100, 10, OptimConfig())
    assert f(0) == pytest.approx(0.1)
    assert f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.5)
    assert f(99) == pytest.approx(1 / 90)
    values = [f(s) for s in range(10, 100)]
    assert values == sorted(values, reverse=True)


def test_make_schedule_uses_warmup_ratio():
    f = make_schedule(OptimConfig(warmup_ratio=0.1, schedule="constant"), total_steps=50)
    assert [f(s) for s in (0, 4, 5, 49)] == pytest.approx([0.2, 1.0, 1.0, 1.0])


def test_no_weight_decay_on_biases_and_norms_and_lr_scales():
    body, head = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)), nn.Linear(4, 2)
    groups = [ParamGroup("body", list(body.parameters()), 0.5),
              ParamGroup("head", list(head.parameters()), 1.0)]
    opt = build_optimizer(groups, OptimConfig(weight_decay=0.1), lr=1e-3)
    by_name = {g["name"]: g for g in opt.param_groups}
    assert by_name["body"]["weight_decay"] == 0.1
    assert by_name["body"]["params"] == [body[0].weight]
    assert by_name["body.no_decay"]["weight_decay"] == 0.0
    assert len(by_name["body.no_decay"]["params"]) == 3  # linear bias, norm weight and bias
    set_lr(opt, 1e-3, 0.5)
    assert by_name["body"]["lr"] == pytest.approx(2.5e-4)
    assert by_name["head"]["lr"] == pytest.approx(5e-4)
    assert group_lrs(opt, 1e-3) == pytest.approx({"body": 5e-4, "head": 1e-3})


def test_frozen_parameters_stay_put_but_keep_their_group():
    lin = nn.Linear(3, 3)
    lin.weight.requires_grad_(False)
    opt = build_optimizer([ParamGroup("g", list(lin.parameters()))], OptimConfig(), lr=0.1)
    before = lin.weight.detach().clone()
    lin(torch.ones(2, 3)).sum().backward()
    opt.step()
    assert torch.equal(lin.weight, before)
    assert sum(len(g["params"]) for g in opt.param_groups) == 2
