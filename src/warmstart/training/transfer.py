"""LogME: how well frozen features suit a task, from one pass over the data, before training.

You et al. 2021 ("LogME: Practical Assessment of Pre-trained Models for Transfer Learning")
score features by the log marginal evidence of a Bayesian linear model from the features to
each target, with its two precisions (prior `alpha`, noise `beta`) set by evidence
maximisation. It ranked backbones in agreement with their fine-tuned accuracy at up to 3000x
less cost than fine-tuning. `warmstart auto` reports it beside the probe's validation score,
and every run whose head trains on cached features records it in its summary.

Written here rather than imported: no maintained package ships it (the authors publish a
script), and it is a short fixed-point iteration over one SVD of the feature matrix.
"""

from __future__ import annotations

import math

import numpy as np

# The fixed point converges in a handful of steps (the paper uses at most 11 with this
# tolerance on alpha/beta); the cap only guards degenerate inputs.
MAX_STEPS, TOLERANCE = 100, 1e-3


def logme(features: np.ndarray, labels: np.ndarray, task: str = "classification") -> float:
    """The LogME score of `features` for `labels`: mean log evidence per example and target.

    Higher is better; comparable between backbones (or poolings) on the same data, not
    between datasets. Classes become one-hot targets (multilabel: the multi-hot columns);
    regression targets are standardised first, so the score does not depend on their unit.

    Args:
        features: examples x dimensions.
        labels: class indices (classification), examples x labels 0/1 (multilabel), or
            values (regression).
        task: `classification`, `multilabel` or `regression`.
    """
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    if task == "regression":
        y = y.astype(np.float64).reshape(len(y), -1)
        targets = (y - y.mean(0)) / np.maximum(y.std(0), 1e-12)
    elif task == "multilabel":
        targets = y.astype(np.float64).reshape(len(y), -1)
    else:
        classes = np.unique(y.astype(np.int64))
        targets = (y.astype(np.int64)[:, None] == classes[None, :]).astype(np.float64)
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    return float(np.mean([_evidence(u, s ** 2, t, f.shape[1]) for t in targets.T]))


def _evidence(u: np.ndarray, sigma: np.ndarray, y: np.ndarray, dims: int) -> float:
    """Log evidence per example of one target column, at the alpha and beta that maximise it
    (MacKay's fixed point: alpha = gamma / |m|^2, beta = (n - gamma) / |F m - y|^2, with
    gamma the effective number of parameters)."""
    z = u.T @ y
    outside = max(float(y @ y - z @ z), 0.0)
    alpha, beta = 1.0, 1.0
    for _ in range(MAX_STEPS):
        denom = alpha + beta * sigma
        gamma = float(np.sum(beta * sigma / denom))
        m2, res2 = _fit(sigma, z, outside, alpha, beta)
        new_alpha = gamma / (m2 + 1e-5)
        new_beta = (len(y) - gamma) / (res2 + 1e-5)
        done = (abs(new_alpha - alpha) / alpha < TOLERANCE
                and abs(new_beta - beta) / beta < TOLERANCE)
        alpha, beta = new_alpha, new_beta
        if done:
            break
    return log_evidence(sigma, z, outside, len(y), dims, alpha, beta)


def _fit(sigma: np.ndarray, z: np.ndarray, outside: float, alpha: float, beta: float
         ) -> tuple[float, float]:
    """|m|^2 and |F m - y|^2 for the posterior mean m, in the SVD basis (F = U S V^T,
    sigma = S^2, z = U^T y; `outside` is the part of |y|^2 outside the features' span)."""
    denom = alpha + beta * sigma
    m2 = float(np.sum(beta ** 2 * sigma * z ** 2 / denom ** 2))
    res2 = float(np.sum(alpha ** 2 * z ** 2 / denom ** 2)) + outside
    return m2, res2


def log_evidence(sigma: np.ndarray, z: np.ndarray, outside: float, n: int, dims: int,
                 alpha: float, beta: float) -> float:
    """log p(y | F, alpha, beta) / n for the Bayesian linear model y ~ N(F w, 1/beta),
    w ~ N(0, 1/alpha): the log determinant of alpha I + beta F^T F is
    sum(log(alpha + beta sigma)) + (dims - rank) log(alpha)."""
    m2, res2 = _fit(sigma, z, outside, alpha, beta)
    log_det = float(np.sum(np.log(alpha + beta * sigma))) + (dims - len(sigma)) * math.log(alpha)
    evidence = (n / 2 * math.log(beta) + dims / 2 * math.log(alpha)
                - n / 2 * math.log(2 * math.pi) - beta / 2 * res2 - alpha / 2 * m2
                - log_det / 2)
    return evidence / n
