"""Model factories for tests that go through `model.name=factories:NAME` (the custom path)."""

from __future__ import annotations

import time
from collections import OrderedDict

from torch import nn


class Sleep(nn.Module):
    """Makes each forward take a while, so a test can kill a run mid-epoch."""

    def forward(self, x):
        time.sleep(0.02)
        return x


class NanAfter(nn.Module):
    """Returns NaN once it has run `steps` training forwards (a diverging run)."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.steps, self.calls = steps, 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls > self.steps:
                return x * float("nan")
        return x


def _body() -> list[nn.Module]:
    return [nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]


def slow_cnn() -> nn.Module:
    """A small CNN with dropout whose forward sleeps 20 ms."""
    return nn.Sequential(OrderedDict(
        stem=nn.Sequential(Sleep(), *_body()), drop=nn.Dropout(0.3), head=nn.Linear(8, 10)))


def nan_cnn() -> nn.Module:
    """A small CNN whose logits turn NaN at the 5th training step."""
    return nn.Sequential(OrderedDict(
        stem=nn.Sequential(*_body(), NanAfter(4)), head=nn.Linear(8, 10)))


def slow_deep_cnn() -> nn.Module:
    """Four layer groups (stem, block1, block2, head) and a slow forward: for staged runs."""
    return nn.Sequential(OrderedDict(
        stem=nn.Sequential(Sleep(), nn.Conv2d(3, 8, 3, 1, 1), nn.ReLU()),
        block1=nn.Sequential(nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU()),
        block2=nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten()),
        head=nn.Linear(16, 10)))


def slow_top_cnn() -> nn.Module:
    """Like `slow_deep_cnn`, but the sleep is in the top block: a `partial` run that caches its
    frozen stem and block1 still takes a while per step."""
    return nn.Sequential(OrderedDict(
        stem=nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.ReLU()),
        block1=nn.Sequential(nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU()),
        block2=nn.Sequential(Sleep(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten()),
        head=nn.Linear(16, 10)))
