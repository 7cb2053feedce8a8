"""Metrics: accuracy, macro precision/recall/F1, per-class report, confusion matrix.

The arithmetic is scikit-learn's; this module only runs the model and arranges the numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    precision_recall_fscore_support,
)
from torch import nn

from warmstart.data.batches import Batches
from warmstart.models.base import logits_of
from warmstart.tensors import move
from warmstart.training.distributed import current, gather_all


@torch.inference_mode()
def predict_logits(
    model: nn.Module, batches: Batches, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels for every example, in the examples' original order.

    Under data parallelism each process runs its share and the shares are gathered, so every
    process ends with the whole split's logits.
    """
    was_training = model.training
    model.eval()
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for ids, batch in batches.epoch():
        labels = batch.pop("labels")
        logits = logits_of(model(**move(batch, device))).float().cpu().numpy()
        parts.append((ids, logits, labels.numpy()))
    model.train(was_training)
    if batches.world > 1:
        parts = [p for rank in gather_all(current(), parts) for p in rank]
    n = batches.num_examples
    if not parts:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    logits_out = np.zeros((n, parts[0][1].shape[1]), dtype=np.float32)
    labels_out = np.zeros(n, dtype=np.int64)
    for ids, logits, labels in parts:
        logits_out[ids] = logits
        labels_out[ids] = labels
    return logits_out, labels_out


def metrics_from_logits(
    logits: np.ndarray, labels: np.ndarray, label_names: list[str], *, full: bool = False
) -> dict[str, Any]:
    """Loss, accuracy and macro P/R/F1; with `full`, the per-class report and confusion matrix.

    Macro averages are over the classes that occur in `labels`: a class the examples do not
    hold has no recall to measure, and counting it as 0 would halve the macro-F1 of a file
    holding half the classes. Those classes are listed under `absent_classes`.
    """
    if len(labels) == 0:
        return {}
    preds = logits.argmax(axis=1)
    loss = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)).item()
    classes = list(range(len(label_names)))
    present = sorted({int(y) for y in labels})
    p, r, f1, _ = precision_recall_fscore_support(
        labels, preds, labels=present, average="macro", zero_division=0
    )
    out: dict[str, Any] = {
        "loss": loss,
        "accuracy": float(accuracy_score(labels, preds)),
        "precision_macro": float(p),
        "recall_macro": float(r),
        "f1_macro": float(f1),
    }
    if len(present) < len(classes):
        out["absent_classes"] = [label_names[i] for i in classes if i not in present]
    if full:
        out["per_class"] = classification_report(
            labels, preds, labels=classes, target_names=label_names,
            output_dict=True, zero_division=0,
        )
        if len(present) < len(classes):  # the report's macro row as the macro scores above
            out["per_class"]["macro avg"].update({
                "precision": float(p), "recall": float(r), "f1-score": float(f1)})
        out["confusion_matrix"] = confusion_matrix(labels, preds, labels=classes).tolist()
    return out


def evaluate(
    model: nn.Module, batches: Batches, device: torch.device, label_names: list[str],
    *, full: bool = False,
) -> dict[str, Any]:
    """Run the model over `batches` and compute the metrics."""
    logits, labels = predict_logits(model, batches, device)
    return metrics_from_logits(logits, labels, label_names, full=full)
