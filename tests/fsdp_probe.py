"""Run under torchrun by test_distributed.py: FSDP2 sharding and state gathering on 2 ranks.

Exits non-zero (an AssertionError) when a check fails.
"""

from __future__ import annotations

import torch

from warmstart.config import ModelConfig, OptimConfig, StrategyConfig
from warmstart.models import build_model
from warmstart.strategies import STRATEGIES
from warmstart.training import distributed
from warmstart.training.optim import build_optimizer


def main() -> None:
    place, _ = distributed.setup("cpu")
    torch.manual_seed(0)
    adapter = build_model(ModelConfig(name="tiny-bert"), 3)
    plan = STRATEGIES.get("full")(adapter, StrategyConfig().options)
    before = {k: v.clone() for k, v in adapter.module.state_dict().items()}
    sharded, groups = distributed.shard(adapter.module, plan.groups)
    # Every trainable parameter is now a shard of about 1/2 of the whole, owned by the copy.
    params = [p for g in groups for p in g.params]
    assert {id(p) for p in params} == {id(p) for p in sharded.parameters()}
    for p in params:
        assert type(p.data).__name__ == "DTensor", type(p.data)
        assert p.to_local().shape[0] <= (p.shape[0] + 1) // 2
    # Gathered whole, the state is the plain model's.
    state = distributed.full_state(sharded)
    assert state.keys() == before.keys()
    assert all(torch.equal(state[k], before[k]) for k in before)
    # One step, then the optimizer state round-trips through its full (checkpoint) form.
    optimizer = build_optimizer(groups, OptimConfig(), 1e-3)
    batch = adapter.collate(adapter.encode(["a match goal", "bread soup"]))
    sharded(**batch).logits.sum().backward()
    optimizer.step()
    full = distributed.full_optimizer_state(optimizer)
    moment = next(iter(full["state"].values()))["exp_avg"]
    assert type(moment) is torch.Tensor
    again = build_optimizer(groups, OptimConfig(), 1e-3)
    again.load_state_dict(distributed.shard_optimizer_state(again, full))
    for a, b in zip(optimizer.state.values(), again.state.values()):
        assert torch.equal(a["exp_avg"].to_local(), b["exp_avg"].to_local())
    distributed.teardown()
    print(f"rank {place.rank}: fsdp probe ok")


if __name__ == "__main__":
    main()
