"""Metrics: macro averages over the classes the examples hold."""

from __future__ import annotations

import numpy as np
import pytest

from warmstart.tasks import Classification

NAMES = ["a", "b", "c", "d"]


def test_macro_scores_average_over_present_classes_and_name_the_absent():
    labels = np.array([0, 0, 1, 1, 1])
    logits = np.eye(4, dtype=np.float32)[[0, 0, 1, 1, 2]] * 5  # one mistake: 1 -> c
    m = Classification(NAMES).metrics(logits, labels, full=True)
    assert m["accuracy"] == pytest.approx(0.8)
    # a: P 1, R 1; b: P 1, R 2/3 -> F1 0.8; (c, d absent from the labels)
    assert m["recall_macro"] == pytest.approx((1 + 2 / 3) / 2)
    assert m["f1_macro"] == pytest.approx((1 + 0.8) / 2)
    assert m["absent_classes"] == ["c", "d"]
    assert m["per_class"]["macro avg"]["f1-score"] == pytest.approx(m["f1_macro"])
    assert m["per_class"]["d"]["support"] == 0  # every class still has its row
    assert np.array(m["confusion_matrix"]).shape == (4, 4)


def test_all_classes_present_lists_none_absent():
    labels = np.array([0, 1, 2, 3])
    m = Classification(NAMES).metrics(np.eye(4, dtype=np.float32), labels)
    assert m["f1_macro"] == pytest.approx(1.0) and "absent_classes" not in m
