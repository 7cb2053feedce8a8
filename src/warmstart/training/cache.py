"""Compute what frozen layers produce once, then train on it for every epoch.

Two caches, one mechanism (a hook records a module's tensors on one pass of the data:
`record.py`):

- **head inputs**: a plan in which only the classifier ever trains (`features`, `head`; seen
  from the plan's groups, `head_only`) records the classifier's input per example; the
  classifier then trains alone on those vectors (`HeadOnly`), or a closed-form solver fits
  it on them (`Plan.solver`).
- **frozen prefix**: a strategy that freezes the bottom layer groups for the whole run
  (`partial`: top k trainable) records the output of the last frozen group per example (for
  text: one vector per real token); during training the frozen groups do not run at all,
  their recorded output is replayed (`Replay`), and only the trainable top runs forward and
  backward. Its cost per epoch is that of the top alone.

Both are exact because the frozen part runs in eval mode (no dropout) with fixed weights:
its output is a pure function of the input, so caching changes the time, not the result
(up to float rounding: the recording pass pads its batches to other lengths than training
batches do, which moves attention sums in the last bits).
For the same reason the run hands `fit` the frozen prefix to keep in eval mode when it is
*not* cached (`Prepared.eval_modules`), so `train.cache=false` trains the very same model.
A replayed model is checked against the real one on a first batch; where anything differs (a
model whose glue code between groups does more than pass tensors on), the run falls back to
the full forward and says why. A cache bigger than `train.cache_memory_mb` is kept in a file in the
run directory; under data parallelism each process computes its shard once and the shards
are gathered, so a too-big cache there falls back instead.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from warmstart.config import TrainConfig
from warmstart.data.batches import Batches
from warmstart.data.rows import DiskRows
from warmstart.models.base import Adapter, LayerGroup, logits_of
from warmstart.strategies.base import Plan
from warmstart.tensors import move
from warmstart.training.record import first_tensor, pad_rows, record, split_rows

PREFIX_KEY = "prefix"  # the batch key that carries a frozen prefix's recorded output


class HeadOnly(nn.Module):
    """Feeds cached head inputs (`features`) to the head."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)


def _stack(items: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"features": torch.stack(items)}


def cached_batches(model: nn.Module, head: nn.Module, batches: Batches,
                   device: torch.device) -> Batches:
    """`batches` with each example replaced by its cached head input."""
    feats = record(model, head, batches, device, inputs=True)
    return Batches(feats, batches.labels.numpy(), _stack, batches.batch_size,
                   shuffle=batches.shuffle, seed=batches.seed, accumulate=batches.accumulate,
                   rank=batches.rank, world=batches.world, targets=batches.targets)


# ------------------------------------------------------------------------------ frozen prefix


def head_only(adapter: Adapter, plan: Plan) -> bool:
    """Whether nothing but the classifier (`adapter.head`) ever trains under `plan`.

    Then the classifier's input is a fixed function of the example and can be recorded once.
    A head group with more new modules (DistilBERT's `pre_classifier`) that train does not
    qualify: the recording would skip them.
    """
    may_train = {id(p) for g in plan.groups for p in g.params}
    return bool(may_train) and may_train <= {id(p) for p in adapter.head.parameters()}


def frozen_prefix(adapter: Adapter, plan: Plan) -> list[LayerGroup]:
    """The layer groups, from the input side, that no group of the plan ever trains."""
    may_train = {id(p) for g in plan.groups for p in g.params}
    prefix = []
    for group in adapter.groups[:-1]:
        if any(id(p) in may_train for p in group.parameters()):
            break
        prefix.append(group)
    return prefix


@dataclass
class _Output:
    """How a frozen module returned its tensor: alone, or first in a tuple of Nones."""

    extra_nones: int | None  # None: a bare tensor

    def wrap(self, tensor: torch.Tensor) -> Any:
        return tensor if self.extra_nones is None else (tensor, *[None] * self.extra_nones)


def _output_form(output: Any) -> _Output | None:
    if isinstance(output, torch.Tensor):
        return _Output(None)
    if (isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor)
            and all(o is None for o in output[1:])):
        return _Output(len(output) - 1)
    return None  # anything richer (attention weights, caches) cannot be replayed


class Replay:
    """While active, the frozen prefix modules skip their computation and return the batch's
    recorded prefix output (the `prefix` key, which a pre-hook on the model takes out of the
    call's arguments).

    Why the forward of each frozen module is overridden on the instance (as Accelerate's
    hooks do) instead of swapping modules: swapped modules would change the model's
    `state_dict` keys, and checkpoints, resume and the best-epoch weights must not depend on
    whether the run cached. Everything is restored on exit.
    """

    def __init__(self, model: nn.Module, modules: list[nn.Module], forms: list[_Output]) -> None:
        self.model, self.modules, self.forms = model, modules, forms
        self.value: torch.Tensor | None = None

    def _take(self, _module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> Any:
        self.value = kwargs.pop(PREFIX_KEY, None)
        return args, kwargs

    def _emit(self, form: _Output) -> Callable[..., Any]:
        def forward(*_args: Any, **_kwargs: Any) -> Any:
            if self.value is None:
                raise RuntimeError("a replayed frozen module ran without a cached prefix")
            return form.wrap(self.value)
        return forward

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        hook = self.model.register_forward_pre_hook(self._take, with_kwargs=True)
        for module, form in zip(self.modules, self.forms):
            module.forward = self._emit(form)  # type: ignore[method-assign]
        try:
            yield
        finally:
            hook.remove()
            for module in self.modules:
                del module.forward  # back to the class's forward
            self.value = None


@dataclass
class PrefixCache:
    """A frozen prefix ready to replay: the batches that carry it and the replay switch."""

    train: Batches
    val: Batches
    replay: Replay
    notes: str
    seconds: float  # recording the training split (the validation split's is evaluation)


def _row_shapes(batches: Batches, unit: tuple[int, ...], per_token: bool
                ) -> list[tuple[int, ...]]:
    """The shape of each example's recorded row: (its tokens, *unit) or unit."""
    if per_token:
        return [(int(n), *unit) for n in batches.lengths]  # type: ignore[union-attr]
    return [unit] * batches.num_examples


def _with_rows(batches: Batches, rows: Sequence[torch.Tensor], per_token: bool) -> Batches:
    """`batches` whose examples also carry their recorded prefix output."""
    collate = batches.collate

    def collate_rows(items: list[tuple[Any, torch.Tensor]]) -> dict[str, torch.Tensor]:
        batch = collate([encoded for encoded, _ in items])
        mask = batch["attention_mask"] if per_token else None
        batch[PREFIX_KEY] = pad_rows([row for _, row in items], mask)
        return batch

    lengths = batches.lengths.tolist() if batches.lengths is not None else None
    return Batches(list(zip(batches.encoded, rows)), batches.labels.numpy(), collate_rows,
                   batches.batch_size, shuffle=batches.shuffle, seed=batches.seed,
                   lengths=lengths, accumulate=batches.accumulate, rank=batches.rank,
                   world=batches.world, targets=batches.targets)


def _probe(model: nn.Module, modules: list[nn.Module], batches: Batches,
           device: torch.device, per_token: bool
           ) -> tuple[list[_Output], tuple[int, ...]] | str:
    """Run one batch for real and replayed: the frozen modules' output forms and the shape
    of one recorded row (per token, or per example), or why the replay cannot work."""
    _, batch = next(batches.epoch())
    batch.pop("labels")
    batch = move(batch, device)
    if per_token and "attention_mask" not in batch:
        return "the text batches have no attention_mask to locate real tokens"
    outputs: dict[int, Any] = {}
    hooks = [m.register_forward_hook(lambda m, _a, out: outputs.__setitem__(id(m), out))
             for m in modules]  # (a hook that returns a value would replace the output)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            expected = logits_of(model(**batch)).float()
        for h in hooks:
            h.remove()
        forms = [_output_form(outputs.get(id(m))) for m in modules]
        if any(f is None for f in forms):
            return "a frozen module returns more than one tensor"
        last = first_tensor(outputs[id(modules[-1])])
        unit = tuple(last.shape[2:] if per_token else last.shape[1:])
        mask = batch.get("attention_mask") if per_token else None
        if mask is not None:  # the round trip training will make: trimmed, then padded
            last = pad_rows(split_rows(last, mask), mask)
        replay = Replay(model, modules, forms)  # type: ignore[arg-type]
        with torch.inference_mode(), replay.active():
            replayed = logits_of(model(**batch, **{PREFIX_KEY: last})).float()
    finally:
        for h in hooks:
            h.remove()  # (again on success: removing twice is a no-op)
        model.train(was_training)
    if not torch.allclose(expected, replayed, rtol=1e-4, atol=1e-4):
        gap = (expected - replayed).abs().max().item()
        return f"replaying the frozen layers changed the logits by {gap:.1e}"
    return forms, unit  # type: ignore[return-value]


def prefix_cache(model: nn.Module, prefix: list[LayerGroup], train: Batches, val: Batches,
                 device: torch.device, *, memory_mb: float, spill_dir: Path,
                 per_token: bool) -> PrefixCache | str:
    """Record the frozen prefix's output for both splits, or say why it cannot be cached.

    Args:
        model: the whole network.
        prefix: the frozen layer groups from the input side (`frozen_prefix`).
        train, val: the batches of the training and validation splits.
        device: where the model runs.
        memory_mb: the largest cache kept in memory; a bigger one goes to `spill_dir`.
        spill_dir: a directory for a cache over the budget (deleted by the caller).
        per_token: text models: keep one row per real token (`record`).

    Returns:
        The cache, or a one-line reason for running the frozen layers every epoch instead.
    """
    start = time.perf_counter()
    modules = [m for g in prefix for m in g.modules]
    probed = _probe(model, modules, train, device, per_token)
    if isinstance(probed, str):
        return probed
    forms, unit = probed
    shapes = {name: _row_shapes(b, unit, per_token) for name, b in (("train", train),
                                                                    ("val", val))}
    size_mb = 4 * sum(math.prod(s) for split in shapes.values() for s in split) / 2**20
    stores: dict[str, DiskRows] = {}
    where = f"{size_mb:.0f} MB in memory"
    if size_mb > memory_mb:  # decided before recording: the budget holds while recording too
        if train.world > 1:
            return (f"the cache needs {size_mb:.0f} MB, over train.cache_memory_mb="
                    f"{memory_mb:g}, and a file cache is not shared between processes")
        stores = {name: DiskRows(spill_dir / f"{name}.npy", s) for name, s in shapes.items()}
        where = f"{size_mb:.0f} MB in {spill_dir} (over train.cache_memory_mb={memory_mb:g})"
    rows = {"train": record(model, modules[-1], train, device, inputs=False,
                            per_token=per_token, store=stores.get("train"))}
    seconds = time.perf_counter() - start
    rows["val"] = record(model, modules[-1], val, device, inputs=False, per_token=per_token,
                         store=stores.get("val"))
    names = ", ".join(g.name for g in prefix)
    return PrefixCache(_with_rows(train, rows["train"], per_token),
                       _with_rows(val, rows["val"], per_token),
                       Replay(model, modules, forms),
                       notes=f"frozen {names}: output computed once ({where})",
                       seconds=seconds)


@dataclass
class Prepared:
    """What `fit` trains and on which batches, after any caching."""

    model: nn.Module  # the whole network, or `HeadOnly` on cached head inputs
    train: Batches
    val: Batches
    replay: contextlib.AbstractContextManager  # active around `fit` (a no-op without a prefix)
    seconds: float  # time spent caching the training split: part of training time
    notes: str  # one line for the log: what was cached, or why not
    # The frozen prefix's modules, which `fit` keeps in eval mode (cached or not).
    eval_modules: list[nn.Module] = field(default_factory=list)
    head_inputs: bool = False  # `model` is `HeadOnly`: the batches carry the head's inputs


# Why an augmented run does not cache (printed once, in place of what was cached).
AUGMENT_NOTE = ("augmentation is on: frozen layers run every epoch, uncached (a cache would "
                "hold the output of unaugmented inputs)")


def prepare(adapter: Adapter, plan: Plan, train: Batches, val: Batches, device: torch.device,
            cfg: TrainConfig, spill_dir: Path, *, augmented: bool = False) -> Prepared:
    """Cache what stays frozen for the whole run, where valid; hand a frozen prefix to `fit`
    to keep in eval mode either way, so caching never changes the result.

    With `augmented` (the training batches change every epoch) nothing is cached: a cache
    would replay features of the unaugmented inputs. The session refuses augmentation with a
    closed-form solver, which has no epochs to augment.

    Raises:
        ValueError: the plan has a closed-form solver but more than the head trains (a bug
            in the strategy: the solver needs the head's inputs).
    """
    model = adapter.module
    prefix = frozen_prefix(adapter, plan)
    frozen = [m for g in prefix for m in g.modules]
    none = contextlib.nullcontext()
    only_head = head_only(adapter, plan)
    if plan.solver is not None and not only_head:
        raise ValueError("a plan with a solver must train the classifier alone")
    if augmented and plan.solver is None and cfg.cache and (prefix or only_head):
        return Prepared(model, train, val, none, 0.0, AUGMENT_NOTE, frozen)
    if only_head and (cfg.cache or plan.solver is not None):  # a solver needs the features
        start = time.perf_counter()
        cached_train = cached_batches(model, adapter.head, train, device)
        seconds = time.perf_counter() - start
        return Prepared(HeadOnly(adapter.head), cached_train,
                        cached_batches(model, adapter.head, val, device), none, seconds,
                        "backbone frozen for the whole run: head inputs computed once",
                        frozen, head_inputs=True)
    if not cfg.cache or not prefix:
        return Prepared(model, train, val, none, 0.0, "", frozen)
    if adapter.extra.get("pair_encoding") == "bi":  # the replay holds one prefix per call
        return Prepared(model, train, val, none, 0.0, "frozen layers run every epoch (not "
                        "cached: a bi-encoder runs them once per text of a pair)", frozen)
    if cfg.parallel == "fsdp":  # the sharded copy that trains runs its own, unpatched forward
        return Prepared(model, train, val, none, 0.0,
                        "frozen layers run every epoch (not cached under train.parallel=fsdp)",
                        frozen)
    cached = prefix_cache(model, prefix, train, val, device, memory_mb=cfg.cache_memory_mb,
                          spill_dir=spill_dir,
                          per_token=adapter.kind == "text" and train.lengths is not None)
    if isinstance(cached, str):
        return Prepared(model, train, val, none, 0.0,
                        f"frozen layers run every epoch (not cached: {cached})", frozen)
    return Prepared(model, cached.train, cached.val, cached.replay.active(), cached.seconds,
                    cached.notes, frozen)


def head_features(batches: Batches) -> tuple[np.ndarray, np.ndarray]:
    """All cached head inputs and labels of `batches` (from `prepare`, `head_inputs`) as
    arrays, for a closed-form solver.

    Collated in one go from every example, not through `batches.epoch`, which under data
    parallelism yields only this process's share: every process then fits the same model.
    """
    x = batches.collate(list(batches.encoded))["features"]
    return x.float().cpu().numpy(), batches.labels.cpu().numpy()
