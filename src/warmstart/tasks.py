"""What a run predicts and how it is scored: one label, several labels, or a number.

A `Task` owns everything that differs between them, so the loop, the caches, the strategies
and the adapters stay the same for all three:

| type | outputs | labels (array) | loss | prediction | natural metric |
|---|---|---|---|---|---|
| classification | per class | class index (int64) | cross-entropy | argmax | accuracy |
| multilabel | per label | 0/1 per label (float32) | BCE with logits | p >= threshold | f1_macro |
| regression | 1 | the value (float32) | mean squared error | the value | spearman |

The metrics are scikit-learn's and scipy's; this module arranges them. Multilabel decision
thresholds are tuned on the validation split (one global value or one per label,
`task.thresholds`) and saved with the model, so `predict` decides as the evaluation did.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from warmstart.errors import WarmstartError

# Validation metrics where lower is better (the rest: higher is better).
LOWER_IS_BETTER = frozenset({"loss", "mse", "mae"})
# Candidate multilabel thresholds on the predicted probability.
THRESHOLD_GRID = np.round(np.arange(0.05, 0.96, 0.05), 2)


def lower_is_better(metric: str) -> bool:
    return metric in LOWER_IS_BETTER


@dataclass(frozen=True)
class Task:
    """The task of a run; `label_names` name the head's outputs in order."""

    label_names: list[str]
    type: ClassVar[str] = ""
    natural_metric: ClassVar[str] = ""
    metric_names: ClassVar[tuple[str, ...]] = ()

    @property
    def num_outputs(self) -> int:
        return len(self.label_names)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, *, label_smoothing: float = 0.0,
             weight: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def metrics(self, logits: np.ndarray, labels: np.ndarray, *, full: bool = False
                ) -> dict[str, Any]:
        raise NotImplementedError

    def predictions(self, logits: np.ndarray) -> list[dict[str, Any]]:
        """What `predict` returns for each input."""
        raise NotImplementedError

    def class_weights(self, labels: np.ndarray, spec: list[float] | str) -> torch.Tensor | None:
        """The loss weights `train.class_weights` asks for, or None."""
        if spec != "none":
            raise WarmstartError(f"train.class_weights does not apply to {self.type}; leave "
                                 "it at none")
        return None

    def tuned(self, logits: np.ndarray, labels: np.ndarray) -> Task:
        """The task with its decision rule fitted on these (validation) outputs."""
        return self

    def fold_into(self, head: torch.nn.Module) -> Task:
        """Fold output transforms into the trained `head` before saving (changes it in
        place) and return the task the saved model then has."""
        return self

    def head_bias(self, labels: np.ndarray) -> np.ndarray | None:
        """The bias a new head starts with so that its first predictions are the training
        `labels`' rates (Laplace-smoothed), or None: leave it at 0.

        Only multilabel heads start so (see `Multilabel.head_bias`). A classifier's head
        started at the class shares sat at the majority class on a toy pair task with a
        third positive (validation accuracy 0.667, against > 0.8 from a zero bias).
        """
        return None

    def cosine_head(self) -> tuple[float, float] | None:
        """The weight and bias that make a head reading a cosine (a bi-encoder's) output
        this task's target from the first step, or None: start like any new head."""
        return None

    def to_dict(self) -> dict[str, Any]:
        """What the saved model records (read back by `task_from_dict`)."""
        return {"type": self.type, "labels": list(self.label_names)}

    def describe(self) -> str:
        return f"{self.type}, {self.num_outputs} outputs"


def _weights(spec: list[float] | str, n: int, what: str,
             balanced: Callable[[], np.ndarray]) -> torch.Tensor | None:
    """`train.class_weights`: none, balanced (computed by `balanced`), or one number per
    output (`what`: class or label)."""
    if spec == "none":
        return None
    if spec == "balanced":
        return torch.tensor(balanced(), dtype=torch.float32)
    if isinstance(spec, str) or len(spec) != n:
        many = {"class": "classes", "label": "labels"}[what]
        count = repr(spec) if isinstance(spec, str) else f"{len(spec)} weights"
        raise WarmstartError(f"config key 'train.class_weights': {count} given for {n} {many}; "
                             f"give none, balanced, or one per {what} in label order")
    return torch.tensor(spec, dtype=torch.float32)


@dataclass(frozen=True)
class Classification(Task):
    """One label per example out of `label_names`."""

    type: ClassVar[str] = "classification"
    natural_metric: ClassVar[str] = "accuracy"
    metric_names: ClassVar[tuple[str, ...]] = (
        "accuracy", "f1_macro", "precision_macro", "recall_macro", "loss")

    def loss(self, logits, labels, *, label_smoothing=0.0, weight=None):
        # `labels`: class indices, or class probabilities (mixup/cutmix's soft targets):
        # cross_entropy takes either, with smoothing and weights.
        return F.cross_entropy(logits, labels, weight=weight, label_smoothing=label_smoothing)

    def metrics(self, logits, labels, *, full=False):
        from sklearn.metrics import (
            accuracy_score,
            classification_report,
            confusion_matrix,
            precision_recall_fscore_support,
        )

        if len(labels) == 0:
            return {}
        preds = logits.argmax(axis=1)
        classes = list(range(self.num_outputs))
        # Macro averages are over the classes the examples hold: a class they do not hold has
        # no recall to measure, and counting it as 0 would halve the macro-F1 of a file with
        # half the classes. Those classes are listed under `absent_classes`.
        present = sorted({int(y) for y in labels})
        p, r, f1, _ = precision_recall_fscore_support(
            labels, preds, labels=present, average="macro", zero_division=0)
        out: dict[str, Any] = {
            "loss": F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)).item(),
            "accuracy": float(accuracy_score(labels, preds)),
            "precision_macro": float(p), "recall_macro": float(r), "f1_macro": float(f1),
        }
        if len(present) < len(classes):
            out["absent_classes"] = [self.label_names[i] for i in classes if i not in present]
        if full:
            out["per_class"] = classification_report(
                labels, preds, labels=classes, target_names=self.label_names,
                output_dict=True, zero_division=0)
            if len(present) < len(classes):  # the report's macro row as the scores above
                out["per_class"]["macro avg"].update(
                    {"precision": float(p), "recall": float(r), "f1-score": float(f1)})
            out["confusion_matrix"] = confusion_matrix(labels, preds, labels=classes).tolist()
        return out

    def predictions(self, logits):
        probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
        return [{"label": self.label_names[int(row.argmax())],
                 "probabilities": dict(zip(self.label_names, map(float, row)))}
                for row in probs]

    def class_weights(self, labels, spec):
        """none, `balanced` (n / (k * count), as scikit-learn), or one weight per class."""
        return _weights(spec, self.num_outputs, "class", lambda: len(labels) / (
            self.num_outputs * np.maximum(np.bincount(labels, minlength=self.num_outputs), 1)))

    def describe(self) -> str:
        return f"classification, {self.num_outputs} classes"


@dataclass(frozen=True)
class Multilabel(Task):
    """Any number of labels per example (none included) out of `label_names`.

    Attributes:
        per_label: tune one threshold per label (`task.thresholds=per_label`) instead of one
            for all.
        thresholds: the decision threshold of each label on its probability (0.5 until tuned).
    """

    per_label: bool = False
    thresholds: tuple[float, ...] = field(default=())
    type: ClassVar[str] = "multilabel"
    natural_metric: ClassVar[str] = "f1_macro"
    metric_names: ClassVar[tuple[str, ...]] = (
        "f1_macro", "f1_micro", "precision_macro", "recall_macro", "precision_micro",
        "recall_micro", "subset_accuracy", "loss")

    def cut(self) -> np.ndarray:
        return np.asarray(self.thresholds or [0.5] * self.num_outputs, dtype=np.float64)

    def loss(self, logits, labels, *, label_smoothing=0.0, weight=None):
        # Smoothing pulls each 0/1 target toward 1/2; `weight` is BCE's pos_weight.
        target = labels * (1 - label_smoothing) + label_smoothing / 2
        return F.binary_cross_entropy_with_logits(logits, target, pos_weight=weight)

    def head_bias(self, labels):
        # Each label's log-odds. From a zero bias every label starts at probability 1/2, and
        # at a fine-tuning lr the bias cannot reach a rare label's (GoEmotions: -3 to -6) in
        # an epoch: full fine-tuning on 8,000 GoEmotions examples scored macro-F1 0.09 from
        # 0 and 0.32 from these.
        rate = (labels.sum(axis=0) + 1) / (len(labels) + 2)
        return np.log(rate / (1 - rate))

    def metrics(self, logits, labels, *, full=False):
        from sklearn.metrics import (
            accuracy_score,
            classification_report,
            precision_recall_fscore_support,
        )

        if len(labels) == 0:
            return {}
        y = labels.astype(np.int64)
        preds = (_sigmoid(logits) >= self.cut()).astype(np.int64)
        out: dict[str, Any] = {"loss": F.binary_cross_entropy_with_logits(
            torch.from_numpy(logits), torch.from_numpy(labels.astype(np.float32))).item()}
        for average in ("macro", "micro"):
            p, r, f1, _ = precision_recall_fscore_support(y, preds, average=average,
                                                          zero_division=0)
            out |= {f"f1_{average}": float(f1), f"precision_{average}": float(p),
                    f"recall_{average}": float(r)}
        out["subset_accuracy"] = float(accuracy_score(y, preds))
        if full:
            out["per_label"] = classification_report(
                y, preds, target_names=self.label_names, output_dict=True, zero_division=0)
            out["thresholds"] = dict(zip(self.label_names, map(float, self.cut())))
        return out

    def predictions(self, logits):
        probs, cut = _sigmoid(logits), self.cut()
        return [{"labels": [n for n, p, t in zip(self.label_names, row, cut) if p >= t],
                 "probabilities": dict(zip(self.label_names, map(float, row)))}
                for row in probs]

    def class_weights(self, labels, spec):
        """BCE's pos_weight per label: `balanced` = negatives / positives, or given."""
        positives = labels.sum(axis=0).astype(np.float64)
        return _weights(spec, self.num_outputs, "label",
                        lambda: (len(labels) - positives) / np.maximum(positives, 1))

    def tuned(self, logits, labels):
        """Thresholds that maximise F1 on these outputs: macro-F1 over one shared value, or
        each label's own F1 (`per_label`); ties go to the value nearest 0.5."""
        from sklearn.metrics import f1_score

        if len(labels) == 0:
            return self
        probs, y = _sigmoid(logits), labels.astype(np.int64)
        order = sorted(THRESHOLD_GRID, key=lambda t: abs(t - 0.5))
        if not self.per_label:
            best = max(order, key=lambda t: f1_score(y, (probs >= t).astype(np.int64),
                                                     average="macro", zero_division=0))
            return replace(self, thresholds=(float(best),) * self.num_outputs)
        cuts = tuple(float(max(order, key=lambda t: f1_score(
            y[:, j], (probs[:, j] >= t).astype(np.int64), zero_division=0)))
            for j in range(self.num_outputs))
        return replace(self, thresholds=cuts)

    def to_dict(self):
        return {**super().to_dict(), "per_label": self.per_label,
                "thresholds": list(map(float, self.cut()))}

    def describe(self) -> str:
        how = "per-label" if self.per_label else "one global"
        return f"multilabel, {self.num_outputs} labels, {how} threshold tuned on validation"


@dataclass(frozen=True)
class Regression(Task):
    """One number per example; `label_names` holds the one output's name.

    The head learns the standardised target `(y - mean) / scale` (the training split's mean
    and standard deviation): a new head starts near 0 and, at a pretrained model's small
    learning rate, cannot move its output to a target living at, say, 0-5 in a few epochs.
    Predictions undo it, and the saved model has it folded into its last linear layer
    (`fold_into`), so it outputs the target itself, for transformers users too.
    """

    mean: float = 0.0
    scale: float = 1.0
    low: float = 0.0  # the training targets' range: where a cosine of 0 and of 1 start
    high: float = 1.0
    type: ClassVar[str] = "regression"
    natural_metric: ClassVar[str] = "spearman"
    metric_names: ClassVar[tuple[str, ...]] = ("spearman", "pearson", "mse", "mae", "r2",
                                               "loss")

    @staticmethod
    def fitted(label_names: list[str], values: np.ndarray) -> Regression:
        """A regression task standardising like `values` (the training targets)."""
        if not len(values):
            return Regression(label_names)
        std = float(np.std(values))
        return Regression(label_names, mean=float(np.mean(values)), scale=std if std > 0 else 1.0,
                          low=float(np.min(values)), high=float(np.max(values)))

    def values(self, logits: np.ndarray) -> np.ndarray:
        """The predicted targets (the model outputs standardised ones)."""
        return logits[:, 0].astype(np.float64) * self.scale + self.mean

    def loss(self, logits, labels, *, label_smoothing=0.0, weight=None):
        return F.mse_loss(logits.squeeze(-1), (labels - self.mean) / self.scale)

    def metrics(self, logits, labels, *, full=False):
        from scipy.stats import pearsonr, spearmanr
        from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

        if len(labels) == 0:
            return {}
        pred, y = self.values(logits), labels.astype(np.float64)
        mse = float(mean_squared_error(y, pred))
        constant = np.ptp(pred) == 0 or np.ptp(y) == 0  # correlation undefined: report 0
        out: dict[str, Any] = {
            "loss": mse, "mse": mse, "mae": float(mean_absolute_error(y, pred)),
            "r2": float(r2_score(y, pred)) if len(y) > 1 else 0.0,
            "pearson": 0.0 if constant or len(y) < 2 else float(pearsonr(y, pred)[0]),
            "spearman": 0.0 if constant or len(y) < 2 else float(spearmanr(y, pred)[0]),
        }
        if full:  # a sample of (true, predicted) pairs for the scatter plot
            keep = np.linspace(0, len(y) - 1, min(len(y), 500)).astype(int)
            out["pairs"] = [[float(y[i]), float(pred[i])] for i in keep]
        return out

    def predictions(self, logits):
        return [{"score": float(v)} for v in self.values(logits)]

    def fold_into(self, head: torch.nn.Module) -> Task:
        linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
        if not linears or linears[-1].bias is None:
            return self  # nowhere to fold: the saved task keeps mean and scale
        with torch.no_grad():
            linears[-1].weight.mul_(self.scale)
            linears[-1].bias.mul_(self.scale).add_(self.mean)
        return replace(self, mean=0.0, scale=1.0)

    def cosine_head(self) -> tuple[float, float]:
        # sentence-transformers' CosineSimilarityLoss: the cosine itself is the target
        # scaled to 0-1 (cosine 0 = the lowest training target, 1 = the highest), here in
        # the standardised units the head learns. A head starting elsewhere spends its first
        # few hundred steps rescaling, and its error meanwhile bends the encoder: STS-B test
        # Spearman 0.799 (random weight) and 0.823 (w=1, b=0) after one epoch.
        return (self.high - self.low) / self.scale, (self.low - self.mean) / self.scale

    def to_dict(self):
        return {**super().to_dict(), "mean": self.mean, "scale": self.scale,
                "low": self.low, "high": self.high}

    def describe(self) -> str:
        return f"regression (target mean {self.mean:.3g}, sd {self.scale:.3g})"


TASKS: dict[str, type[Task]] = {t.type: t for t in (Classification, Multilabel, Regression)}


def make_task(kind: str, label_names: list[str], *, per_label: bool = False) -> Task:
    if kind == "multilabel":
        return Multilabel(label_names, per_label=per_label)
    return TASKS[kind](label_names)


def task_from_dict(meta: dict[str, Any] | None, label_names: list[str]) -> Task:
    """The task a saved model recorded (models saved before tasks existed: classification)."""
    if not meta:
        return Classification(label_names)
    if meta["type"] == "multilabel":
        return Multilabel(label_names, per_label=bool(meta.get("per_label")),
                          thresholds=tuple(meta.get("thresholds") or ()))
    if meta["type"] == "regression":
        return Regression(label_names, mean=float(meta.get("mean", 0.0)),
                          scale=float(meta.get("scale", 1.0)), low=float(meta.get("low", 0.0)),
                          high=float(meta.get("high", 1.0)))
    return TASKS[meta["type"]](label_names)


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
