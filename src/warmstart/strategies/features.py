"""`features`: frozen pretrained features, a classifier fitted on them.

The backbone is frozen for the whole run, so the run computes each example's features (the
classifier's input) once and fits only the classifier on them (`training/cache.py` sees that
only the head trains).
`strategy.classifier` picks how:

- `torch`: the head trains with the usual loop (AdamW, the schedule, early selection by
  validation metric) on the cached features; several epochs cost little more than one.
- `sklearn`: scikit-learn's `LogisticRegression` is fitted in closed form (`Plan.solver`) and
  its coefficients are copied into the head, which must be a single `nn.Linear`. No learning
  rate or epoch count to tune; the L2 strength `C` is chosen on the validation split from
  `C_GRID`, and `train.class_weights` are honoured.

Either way the trained head stays inside the full model, so it predicts from raw inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from warmstart.errors import WarmstartError
from warmstart.models.base import Adapter
from warmstart.options import option
from warmstart.strategies._select import groups_of, ids, mark_trainable
from warmstart.strategies.base import Plan, SolveData, register_strategy
from warmstart.strategies.head import PROBE_DEFAULTS

# Inverse L2 strengths tried, weakest penalty last; the best on the validation split wins
# (ties go to the stronger penalty). On MiniLM's mean-pooled TREC features scikit-learn's
# default C=1 scored 0.86 and C=10 0.90: the right strength depends on the data, so measure.
C_GRID = (0.1, 1.0, 10.0, 100.0)
MAX_ITER = 1000  # lbfgs needs more than sklearn's 100 on a few hundred feature dimensions
# Logit of a class with no training example: never predicted, and finite so losses stay finite.
ABSENT_LOGIT = -1e4


@dataclass
class FeaturesOptions:
    """`strategy.*` keys of features."""

    classifier: Literal["torch", "sklearn"] = option(
        "torch", "train the head with the torch loop, or fit scikit-learn's logistic "
        "regression on the cached features")


@register_strategy("features", "frozen features; head fitted by the loop or by sklearn "
                               "(strategy.classifier)", FeaturesOptions, PROBE_DEFAULTS)
def features(adapter: Adapter, cfg: FeaturesOptions) -> Plan:
    """Freeze everything but the classifier; cache its inputs; fit it by torch or sklearn.

    Raises:
        WarmstartError: `strategy.classifier=sklearn` and the head is not one nn.Linear.
    """
    head = adapter.head
    # The classifier alone trains, even when the head group holds more new modules (they
    # become part of the frozen feature extractor): the cache needs exactly that.
    chosen = ids(head.parameters())
    mark_trainable(adapter, chosen)
    if cfg.classifier == "sklearn" and not isinstance(head, nn.Linear):
        raise WarmstartError(
            f"strategy.classifier=sklearn copies a logistic regression into the head, but "
            f"this model's head is a {type(head).__name__}, not an nn.Linear; use "
            "strategy.classifier=torch"
        )

    def solver(data: SolveData) -> str:
        return fit_linear(head, data)

    return Plan(groups_of(adapter, chosen), notes=f"frozen features, head fitted by "
                f"{cfg.classifier}", solver=solver if cfg.classifier == "sklearn" else None)


CONSTANT = 1e-4  # a feature whose std is under this share of the median std is constant


def standardiser(x: torch.Tensor, *, center: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and scale of `x` (examples x features) for fitting a linear head on
    standardised features; the fit folds them back (`w' = w / s`, `b' = b - w' . m`). Without
    `center` the mean is 0: a head without a bias has nowhere to fold a mean shift into."""
    mean = x.mean(0) if center else torch.zeros(x.shape[1], dtype=x.dtype)
    scale = x.std(0)
    # A constant feature carries nothing: leave it unscaled. "Constant" is relative: a feature
    # whose spread is float noise would be blown up to unit variance, and folding 1/s back
    # gives huge weights. all-MiniLM-L6-v2's pooled vectors on TREC have three such
    # dimensions; with an exact-zero test the fitted head had weights up to 1e32 (1e8 on the
    # third), against a median of 1.6, and fine-tuning after it (lp-ft's fitted probe)
    # changed no prediction.
    scale[scale <= CONSTANT * scale.median()] = 1.0
    return mean, scale


@torch.no_grad()
def fit_linear(head: nn.Linear, data: SolveData) -> str:
    """Fit a logistic regression on the training features and copy it into `head`; its `C`
    is the one of `C_GRID` with the best validation accuracy. Returns a line saying so.

    Features are standardised for the fit (lbfgs converges far faster and `C` means the same
    for every backbone), then the scaling is folded back into the weights, so the head reads
    raw features: `w' = w / s`, `b' = b - w' . m` for feature means `m` and scales `s`.
    """
    from sklearn.linear_model import LogisticRegression  # heavy import, only when used

    if np.asarray(data.train_y).ndim != 1 or np.asarray(data.train_y).dtype.kind not in "iu":
        raise WarmstartError(
            "strategy.classifier=sklearn fits a logistic regression, which predicts one class; "
            "for multilabel and regression tasks use strategy.classifier=torch")

    x = torch.as_tensor(data.train_x, dtype=torch.float32)
    has_bias = head.bias is not None
    mean, scale = standardiser(x, center=has_bias)
    train_x = ((x - mean) / scale).numpy()
    val_x = ((torch.as_tensor(data.val_x, dtype=torch.float32) - mean) / scale).numpy()
    train_y, val_y = np.asarray(data.train_y), np.asarray(data.val_y)
    present = np.unique(train_y)
    weights = (None if data.class_weights is None
               else {int(c): float(data.class_weights[c]) for c in present})
    # warm_start: each C starts from the previous solution, which cuts lbfgs iterations.
    clf = LogisticRegression(max_iter=MAX_ITER, fit_intercept=has_bias, class_weight=weights,
                             warm_start=True)
    best, scores = None, []
    for c in C_GRID:
        clf.set_params(C=c)
        clf.fit(train_x, train_y)
        score = float((clf.predict(val_x) == val_y).mean()) if len(val_x) else 0.0
        scores.append(score)
        if best is None or score > best[0]:
            best = (score, c, clf.coef_.copy(), np.atleast_1d(clf.intercept_).copy())
    assert best is not None
    _, chosen, coef_, intercept_ = best
    coef = torch.as_tensor(coef_, dtype=torch.float32) / scale
    bias = torch.as_tensor(intercept_, dtype=torch.float32).reshape(-1) - coef @ mean
    classes = torch.as_tensor(clf.classes_, dtype=torch.long)
    if len(classes) == 2:
        # sklearn's binary model is one row, the log-odds of classes_[1]; as softmax logits
        # that is (0, w.x + b): softmax of the pair is exactly the sigmoid of w.x + b.
        coef = torch.cat([torch.zeros_like(coef), coef])
        bias = torch.cat([torch.zeros_like(bias), bias])
    weight = torch.zeros(head.weight.shape)  # on the CPU, like the fit; copy_ moves it
    full_bias = torch.full((head.out_features,), ABSENT_LOGIT)
    weight[classes], full_bias[classes] = coef, bias
    head.weight.copy_(weight)
    if has_bias:
        head.bias.copy_(full_bias)
    tried = ", ".join(f"C={c:g}: {s:.4f}" for c, s in zip(C_GRID, scores))
    return f"logistic regression: C={chosen:g} chosen on validation accuracy ({tried})"
