"""What the benchmark's orchestrator and its workers share: cases, paths, FLOP arithmetic.

Kept free of transformers and warmstart imports so the orchestrator stays light: every
measured run happens in a worker subprocess (see `_workers.py`).
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# bench/ -> repo -> the folder holding `shared/`: the data are read in place, never copied.
DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Case:
    """One benchmark setting, run by both the anchor and warmstart.

    Attributes:
        data: a folder under `DATA_ROOT` holding train.csv and test.csv.
        strategy: warmstart's strategy name; the anchor freezes the same layers by hand.
        epochs: training epochs.
        limit: training examples (stratified subset, warmstart's `data.limit`); None = all.
        max_length: tokens kept per example.
        batch_size: examples per optimizer step.
        lr: peak learning rate (both sides).
        seed: one seed for split, subset, head initialisation, data order and dropout.
        k: `partial` only: top blocks that train.
    """

    data: str
    strategy: str
    epochs: int
    limit: int | None = 2000
    max_length: int = 128
    batch_size: int = 32
    lr: float = 5e-5
    seed: int = 0
    k: int = 2

    @property
    def name(self) -> str:
        size = "all" if self.limit is None else f"{self.limit // 1000}k" if self.limit >= 1000 \
            else str(self.limit)
        return f"{self.data}-{size}-{self.strategy}-{self.epochs}ep"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Case:
        return cls(**json.loads(text))

    def anchor_key(self) -> tuple[Any, ...]:
        """Cases with equal keys share one anchor run per pair: the anchor trains exactly the
        same thing for `head` and `features` (only the classifier), so one run serves both."""
        trains = "classifier" if self.strategy in ("head", "features") else self.strategy
        return (self.data, trains, self.epochs, self.limit, self.max_length, self.batch_size,
                self.lr, self.seed, self.k)


def warmstart_overrides(case: Case, out_dir: Path) -> list[str]:
    """The dotted overrides that make warmstart run `case` (the anchor reads its data split
    from the same overrides, so both train on the very same examples)."""
    folder = DATA_ROOT / case.data
    return [
        "model.name=minilm-l6",
        f"model.max_length={case.max_length}",
        f"data.name={folder / 'train.csv'}",
        f"data.test={folder / 'test.csv'}",
        f"data.limit={'null' if case.limit is None else case.limit}",
        "data.val_fraction=0.1",
        f"strategy.name={case.strategy}",
        f"strategy.k={case.k}",
        f"optim.lr={case.lr}",
        "optim.warmup_ratio=0.06",
        "optim.weight_decay=0.01",
        "optim.schedule=linear",
        f"train.batch_size={case.batch_size}",
        f"train.epochs={case.epochs}",
        f"train.seed={case.seed}",
        "train.device=cpu",
        "train.precision=fp32",
        f"output.dir={out_dir}",
        f"output.name={case.name}",
        "output.overwrite=true",
        "output.save_model=false",
        "log.quiet=true",
    ]


# --------------------------------------------------------------------------- FLOPs

def block_params(config: dict[str, Any]) -> int:
    """Parameters of one BERT block that multiply every token (weights and biases of the
    attention's q/k/v/o and the feed-forward pair, plus two LayerNorms)."""
    d, inner = config["hidden_size"], config["intermediate_size"]
    return 4 * (d * d + d) + (d * inner + inner) + (inner * d + d) + 2 * 2 * d


def training_flops(case: Case, config: dict[str, Any], tokens: int, tokens_sq: int,
                   *, cached: bool) -> float:
    """Estimated FLOPs of a whole training run (all epochs); the formula is in README.md.

    Per token, a dense layer with N weights costs 2N forward and 4N backward (input and
    weight gradients). Attention scores and the weighted sum cost 4*d*t per token per block
    forward for an example of t tokens (so 4*d*t^2 per example), twice that backward.
    Embedding lookups, the pooler and the classifier (per example, not per token) are left
    out: under 2% here. `tokens` and `tokens_sq` are sums over one epoch's examples of t and
    t^2 (non-padding tokens only: padding is waste, not useful work).

    Args:
        case: the setting (strategy and epochs decide what runs backward).
        config: the model's config.json.
        tokens, tokens_sq: sum of t and of t^2 over the training examples.
        cached: the frozen part ran once (warmstart's head/features: the backbone; partial:
            the frozen bottom blocks).
    """
    n_block, d, layers = block_params(config), config["hidden_size"], config["num_hidden_layers"]
    forward = layers * (2 * n_block * tokens + 4 * d * tokens_sq)
    backward_per_block = 4 * n_block * tokens + 8 * d * tokens_sq
    if case.strategy in ("head", "features"):
        return forward if cached else forward * case.epochs
    if case.strategy == "partial":
        if cached:  # the frozen blocks run once; the top k run forward and backward per epoch
            top = forward * case.k / layers + case.k * backward_per_block
            return forward * (layers - case.k) / layers + top * case.epochs
        return (forward + case.k * backward_per_block) * case.epochs
    if case.strategy == "lora":  # input gradients through every block, weight gradients none
        return (forward + layers * (2 * n_block * tokens + 8 * d * tokens_sq)) * case.epochs
    return (forward + layers * backward_per_block) * case.epochs  # full


def matmul_peak(threads: int, n: int = 2048, repeats: int = 12) -> float:
    """This machine's fp32 matmul rate in FLOP/s: best of `repeats` timings of an n x n mm.

    Best, not mean: the peak is what the hardware can do when nothing else runs; load from
    other processes only ever slows a timing down.
    """
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    for _ in range(3):  # warm up: thread pool, page faults, MKL's dispatch
        torch.mm(a, b, out=out)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


# --------------------------------------------------------------------------- environment

def cpu_model() -> str:
    """The CPU's model name (warmstart's own reader of /proc/cpuinfo, as in model cards)."""
    from warmstart.report.card import cpu_model as read

    return read() or platform.processor() or "unknown"


def environment() -> dict[str, Any]:
    """CPU, cores, library versions and thread counts, printed with the table."""
    import torch

    versions = {}
    for name in ("transformers", "accelerate", "peft"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = "absent"
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__,
            **versions, "threads": torch.get_num_threads(),
            "python": platform.python_version(), "loadavg": os.getloadavg()}
