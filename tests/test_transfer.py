"""LogME (`training/transfer.py`): the evidence it maximises, and what it ranks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from warmstart.training.transfer import log_evidence, logme


def _direct(f: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """The log evidence per example computed in weight space, without the SVD shortcut."""
    n, d = f.shape
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ y)
    value = (n / 2 * math.log(beta) + d / 2 * math.log(alpha) - n / 2 * math.log(2 * math.pi)
             - beta / 2 * np.sum((f @ m - y) ** 2) - alpha / 2 * m @ m
             - np.linalg.slogdet(a)[1] / 2)
    return value / n


def _svd_terms(f: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    z = u.T @ y
    return s ** 2, z, float(y @ y - z @ z)


@pytest.mark.parametrize("shape", [(40, 8), (6, 10)])  # more examples than dimensions, and fewer
def test_the_svd_form_equals_the_evidence_in_weight_space(shape):
    rng = np.random.default_rng(1)
    f, y = rng.normal(size=shape), rng.normal(size=shape[0])
    sigma, z, outside = _svd_terms(f, y)
    for alpha, beta in ((0.5, 2.0), (3.0, 0.1)):
        assert log_evidence(sigma, z, outside, shape[0], shape[1], alpha, beta) == \
            pytest.approx(_direct(f, y, alpha, beta), rel=1e-9)


def test_the_fixed_point_maximises_the_evidence():
    rng = np.random.default_rng(2)
    f = rng.normal(size=(200, 12))
    y = f @ rng.normal(size=12) + rng.normal(size=200)
    best = logme(f, y, "regression")
    y = (y - y.mean()) / y.std()
    sigma, z, outside = _svd_terms(f, y)
    # Find the optimum's alpha, beta by search and compare: no nearby pair scores higher.
    grid = [(a, b) for a in np.geomspace(1e-3, 1e3, 61) for b in np.geomspace(1e-3, 1e3, 61)]
    searched = max(log_evidence(sigma, z, outside, 200, 12, a, b) for a, b in grid)
    assert best >= searched - 1e-3


def test_features_that_carry_the_labels_score_higher_for_every_task():
    rng = np.random.default_rng(3)
    n, d = 300, 16
    classes = rng.integers(0, 4, n)
    informative = np.eye(4)[classes] @ rng.normal(size=(4, d)) * 2 + rng.normal(size=(n, d))
    noise = rng.normal(size=(n, d))
    assert logme(informative, classes) > logme(noise, classes)
    multi = (rng.random((n, 3)) < 0.3).astype(np.float32)
    informative = multi @ rng.normal(size=(3, d)) * 2 + rng.normal(size=(n, d))
    assert logme(informative, multi, "multilabel") > logme(noise, multi, "multilabel")
    score = rng.normal(size=n)
    informative = np.c_[score, rng.normal(size=(n, d - 1))]
    assert logme(informative, score, "regression") > logme(noise, score, "regression")


def test_regression_scores_do_not_depend_on_the_target_unit():
    rng = np.random.default_rng(4)
    f, y = rng.normal(size=(100, 5)), rng.normal(size=100)
    assert logme(f, y, "regression") == pytest.approx(logme(f, 1000 * y + 7, "regression"))
