"""The teacher of a distillation: loaded from its run, it makes the student (a layer-dropped
copy of itself, where asked) and the soft targets.

The teacher is read through `ship.predict.load_run` and `logits_for`, the way `warmstart
predict` reads a run, so any folder that function can load (a run, a saved model, an
ensemble) teaches without change here. Its outputs on the training examples are fixed, so
they are computed once and kept in the run directory's `caches/` folder under a fingerprint of
the teacher's files and of the examples: a resumed or repeated run reuses them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from warmstart.config import RunConfig, parse_layers
from warmstart.data.base import Examples, TaskData
from warmstart.data.readers import read_column
from warmstart.errors import WarmstartError
from warmstart.files import CACHES, fingerprint
from warmstart.models import load_adapter
from warmstart.models.base import MODEL_FILE, Adapter, read_model_file
from warmstart.models.layerdrop import keep_layers
from warmstart.models.peft import SOURCE as PEFT_SOURCE
from warmstart.models.peft import merged
from warmstart.ship.predict import load_run, logits_for
from warmstart.tasks import Regression, Task
from warmstart.training.distill_loss import pack_targets
from warmstart.training.run import run_dir_of


@dataclass
class RunTeacher:
    """A teacher read from a finished run (implements `training.session.Teacher`).

    Attributes:
        path: the teacher as given (`distill.teacher`).
        adapter, task: the teacher's model and task, as `load_run` restores them.
        cfg: the distillation run's config.
        unlabelled: extra inputs without labels (`distill.unlabelled`).
        cache_dir: where the teacher's outputs are kept (`<run>/caches`).
        data: the run's data, once `targets` has seen it (the side-by-side report scores
            both models on its test split).
    """

    path: Path
    adapter: Adapter
    task: Task
    cfg: RunConfig
    unlabelled: list[Any]
    cache_dir: Path
    data: TaskData | None = field(default=None, repr=False)

    def student(self, task: Task) -> Adapter | None:
        """With `distill.keep_layers`: a copy of the teacher keeping those blocks, with its
        weights, head and pooling; else None (the student is `model.name`)."""
        spec = self.cfg.distill.keep_layers
        if spec is None:
            return None
        order = self.columns_for(task)
        if not np.array_equal(order, np.arange(len(order))):
            raise WarmstartError(
                f"distill.keep_layers copies the teacher's head, whose labels are in another "
                f"order than the data's ({self.task.label_names[:5]} vs {task.label_names[:5]})"
                "; distil into a model.name student instead")
        student = keep_layers(_fresh_copy(self.path), parse_layers(spec) or spec)
        if isinstance(task, Regression):
            _unfold(student.head, task)
        return student

    def targets(self, data: TaskData, device: torch.device) -> tuple[Examples, np.ndarray]:
        """The training split followed by the unlabelled inputs, and their `targets` rows:
        the teacher's outputs (in the data's label order) and whether a row has a label.

        An unlabelled row's label is the teacher's own answer: the loss ignores it (the row is
        marked unlabelled), and the running train accuracy then reads as agreement with the
        teacher on those rows."""
        self.data = data
        order = self.columns_for(data.task)
        inputs = [*data.train.inputs, *self.unlabelled]
        outputs = self.outputs(inputs, device)[:, order]
        n = len(data.train)
        guess = _answers(self.task, outputs[n:], order, data.train.labels.dtype)
        labels = np.concatenate([data.train.labels, guess]) if len(guess) else data.train.labels
        labelled = np.arange(len(inputs)) < n
        return Examples(inputs, labels), pack_targets(outputs, labelled)

    def outputs(self, inputs: list[Any], device: torch.device) -> np.ndarray:
        """The teacher's outputs for `inputs` in the teacher's label order: logits, or the
        score (regression); read from the cache when this teacher already ran on them."""
        key = _digest(fingerprint(self.path), inputs)
        path = self.cache_dir / f"teacher-outputs-{key[:20]}.npy"
        if path.is_file():
            return np.load(path)
        self.adapter.module.to(device)
        outputs = teacher_outputs(self.adapter, self.task, inputs,
                                  self.cfg.train.eval_batch_size)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, outputs)
        tmp.replace(path)  # atomic: a killed run never leaves half a cache
        return outputs

    def columns_for(self, task: Task) -> np.ndarray:
        """The teacher's output columns in the data's label order.

        Raises:
            WarmstartError: another task type, or other labels than the teacher's.
        """
        if task.type != self.task.type:
            raise WarmstartError(f"teacher {str(self.path)!r} is a {self.task.type} model but "
                                 f"the data is {task.type}; distil on the teacher's kind of "
                                 "data (data.* as the teacher's run) or set task.type")
        if isinstance(task, Regression):
            return np.arange(1)
        mine, theirs = task.label_names, self.task.label_names
        if sorted(mine) != sorted(theirs):
            extra = sorted(set(mine) - set(theirs))[:5]
            missing = sorted(set(theirs) - set(mine))[:5]
            raise WarmstartError(
                f"teacher {str(self.path)!r} knows other labels than the data (data only: "
                f"{extra}, teacher only: {missing}); distil on data with the teacher's labels")
        return np.array([theirs.index(name) for name in mine])


def teacher_outputs(adapter: Adapter, task: Task, inputs: list[Any],
                    batch_size: int) -> np.ndarray:
    """What a model says for `inputs`: its logits, or for regression its score (n, 1)."""
    logits = logits_for(adapter, inputs, batch_size)
    if isinstance(task, Regression):
        return task.values(logits).astype(np.float32)[:, None]
    return logits.astype(np.float32)


def load_teacher(cfg: RunConfig) -> RunTeacher:
    """The teacher `distill.teacher` names, with the unlabelled inputs read.

    Raises:
        WarmstartError: no such run (or an unfinished one), an unreadable unlabelled file.
    """
    assert cfg.distill.teacher is not None, "a distillation needs distill.teacher"
    path = Path(cfg.distill.teacher)
    adapter, task, _ = load_run(path)
    unlabelled = read_unlabelled(cfg) if cfg.distill.unlabelled else []
    if unlabelled and adapter.kind != "text":
        raise WarmstartError("distill.unlabelled holds texts, but the teacher reads images; "
                             "leave distill.unlabelled unset")
    return RunTeacher(path, adapter, task, cfg, unlabelled, run_dir_of(cfg) / CACHES)


def read_unlabelled(cfg: RunConfig) -> list[Any]:
    """The texts of `distill.unlabelled`: a table's `data.text_column` (and pair column), or
    a .txt file's non-blank lines.

    Raises:
        WarmstartError: a missing file or column, or no texts at all.
    """
    path = Path(str(cfg.distill.unlabelled))
    if path.suffix.lower() == ".txt":
        if not path.is_file():
            raise WarmstartError(f"distill.unlabelled {str(path)!r} does not exist; check the "
                                 "path")
        texts: list[Any] = [t.strip() for t in path.read_text(encoding="utf-8").splitlines()
                            if t.strip()]
    else:
        texts = read_column(path, cfg.data.text_column, "data.text_column",
                            pair_column=cfg.data.text_pair_column)
    if not texts:
        raise WarmstartError(f"distill.unlabelled {str(path)!r} holds no texts; give a file "
                             "with one text per row, or leave distill.unlabelled unset")
    return texts


def model_folder(path: Path) -> Path:
    """The folder holding a run's saved model (`<run>/model`, or `path` itself)."""
    return path if (path / MODEL_FILE).is_file() else path / "model"


def _fresh_copy(path: Path) -> Adapter:
    """A second, independent copy of the teacher's model (adapters merged into the weights),
    which the layer dropping may change."""
    folder = model_folder(path)
    if not (folder / MODEL_FILE).is_file():  # e.g. an ensemble: several models, no blocks
        raise WarmstartError(f"distill.keep_layers copies one model, and teacher {str(path)!r}"
                             " holds no single saved model; give a model.name student")
    meta = read_model_file(folder)
    if meta.get("source") == PEFT_SOURCE:
        return merged(folder, meta)
    return load_adapter(folder)[0]


def _unfold(head: torch.nn.Module, task: Regression) -> None:
    """Undo the saved teacher's folded target scale in a copied head: the student's head
    predicts the standardised target, as every regression run's does (`Regression`)."""
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        linears[-1].weight.div_(task.scale)
        if linears[-1].bias is not None:
            linears[-1].bias.sub_(task.mean).div_(task.scale)


def _answers(task: Task, outputs: np.ndarray, order: np.ndarray,
             dtype: np.dtype) -> np.ndarray:
    """The teacher's answers as labels (data order): class ids, 0/1 rows at its thresholds,
    or its scores."""
    if task.type == "classification":
        return outputs.argmax(axis=1).astype(dtype)
    if task.type == "multilabel":
        cut = np.asarray(task.cut())[order]  # type: ignore[attr-defined]
        return (1 / (1 + np.exp(-outputs)) >= cut).astype(dtype)
    return outputs[:, 0].astype(dtype)


def _digest(teacher: dict[str, Any], inputs: list[Any]) -> str:
    """A fingerprint of the teacher's files and the inputs (texts, pairs, image paths or
    arrays), in order."""
    h = hashlib.sha256(json.dumps(teacher, sort_keys=True).encode())
    for x in inputs:
        h.update(x.tobytes() if isinstance(x, np.ndarray) else json.dumps(x).encode())
        h.update(b"\0")
    return h.hexdigest()
