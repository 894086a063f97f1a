"""Binary-classification metrics, curves and post-hoc calibration: pure numpy (scikit-learn for the AUCs).

Every function takes ``y`` (0/1 labels) and ``p`` (scores in [0, 1], the probability of class 1) as 1-D
arrays and returns plain Python numbers or lists, ready for JSON. Conventions, stated once:

- **PR-AUC** is *average precision* (``sum_n (R_n - R_{n-1}) P_n``, scikit-learn's definition), not the
  trapezoidal area under the PR curve, which is optimistic for step-shaped curves.
- **Recall at precision** is the highest recall over all thresholds whose precision is at least the
  target; 0.0 when no threshold reaches it.
- **Log loss** clips scores to ``[eps, 1 - eps]`` (eps = 1e-15) so a confident miss is finite.
- **Expected calibration error** (ECE) is ``sum_b (n_b / n) |mean(y_b) - mean(p_b)|`` over bins of the
  score: ``uniform`` = equal-width bins on [0, 1] (the default; a bin holds any number of rows, empty
  bins are skipped), ``quantile`` = equal-mass bins (about n / bins rows each; ties can merge bins).
  With scores as skewed as fraud scores, equal-width bins put almost every row in the first bin, so
  the report states which binning it used.
- **Bootstrap of a difference** (``bootstrap_delta``): model A minus model B on the same rows, over
  stratified paired resamples (each resample keeps the numbers of positives and negatives, and both
  models are scored on the same drawn rows); the lower bound is the ``1 - level`` quantile.
- **Calibration** maps raw scores to calibrated probabilities with parameters stored as JSON (never a
  pickle): isotonic regression as its step thresholds ``{"method": "isotonic", "x": [...], "y": [...]}``
  applied by linear interpolation (constant outside the range), or Platt scaling on the score's logit,
  ``{"method": "platt", "a": a, "b": b}`` with ``q = 1 / (1 + exp(-(a * logit(p) + b)))``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

__all__ = [
    "DEFAULT_ECE_BINS",
    "LOGLOSS_EPS",
    "CalibrationMethod",
    "apply_calibration",
    "binary_metrics",
    "bootstrap_delta",
    "brier_score",
    "calibration_curve",
    "expected_calibration_error",
    "fit_calibration",
    "fit_isotonic",
    "fit_platt",
    "log_loss",
    "pr_auc",
    "pr_curve",
    "recall_at_precision",
    "roc_auc",
    "roc_curve",
]

LOGLOSS_EPS = 1e-15
DEFAULT_ECE_BINS = 10
Binning = Literal["uniform", "quantile"]
CalibrationMethod = Literal["isotonic", "platt"]


def _check(y: Any, p: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y)
    p = np.asarray(p, dtype=np.float64)
    if y.ndim != 1 or p.ndim != 1 or y.shape != p.shape:
        raise ValueError(f"y and p must be 1-D arrays of the same length, got shapes {y.shape} and {p.shape}")
    if y.size and not np.isin(y, (0, 1)).all():
        bad = y[~np.isin(y, (0, 1))][:3].tolist()
        raise ValueError(f"y must hold 0/1 labels only, got e.g. {bad}; filter out null/weak labels first")
    if p.size and not np.isfinite(p).all():
        raise ValueError(
            f"p holds {int((~np.isfinite(p)).sum())} non-finite score(s); a scorer returned NaN/inf"
        )
    return y.astype(np.int64), p


def _both_classes(y: np.ndarray) -> bool:
    return bool(y.size) and 0 < int(y.sum()) < y.size


def roc_auc(y: Any, p: Any) -> float:
    """Area under the ROC curve; NaN when only one class is present (undefined)."""
    y, p = _check(y, p)
    if not _both_classes(y):
        return math.nan
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


def pr_auc(y: Any, p: Any) -> float:
    """Average precision (the PR-AUC used throughout Loopline); NaN without positives."""
    y, p = _check(y, p)
    if not y.size or int(y.sum()) == 0:
        return math.nan
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, p))


def _pr_points(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, threshold) at every distinct score, highest threshold first."""
    order = np.argsort(-p, kind="mergesort")
    ys, ps = y[order], p[order]
    last = np.r_[np.flatnonzero(np.diff(ps)), ys.size - 1]  # last index of each run of equal scores
    tp = np.cumsum(ys)[last].astype(np.float64)
    predicted = (last + 1).astype(np.float64)
    return tp / predicted, tp / max(int(y.sum()), 1), ps[last]


def recall_at_precision(y: Any, p: Any, *, precision: float) -> float:
    """The highest recall among thresholds with precision >= ``precision``; 0.0 if none reaches it."""
    if not 0 < precision <= 1:
        raise ValueError(f"precision={precision}: must be in (0, 1]")
    y, p = _check(y, p)
    if not y.size or int(y.sum()) == 0:
        return math.nan
    prec, rec, _ = _pr_points(y, p)
    ok = prec >= precision - 1e-12
    return float(rec[ok].max()) if ok.any() else 0.0


def log_loss(y: Any, p: Any, *, eps: float = LOGLOSS_EPS) -> float:
    """Mean negative log-likelihood with scores clipped to [eps, 1 - eps]."""
    y, p = _check(y, p)
    if not y.size:
        return math.nan
    q = np.clip(p, eps, 1 - eps)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log1p(-q)))


def brier_score(y: Any, p: Any) -> float:
    """Mean squared difference between score and label."""
    y, p = _check(y, p)
    return float(np.mean((p - y) ** 2)) if y.size else math.nan


def _bin_index(p: np.ndarray, bins: int, strategy: Binning) -> np.ndarray:
    if bins < 1:
        raise ValueError(f"bins={bins}: must be >= 1")
    if strategy == "uniform":
        return np.minimum((p * bins).astype(np.int64), bins - 1)  # p == 1.0 goes into the last bin
    if strategy == "quantile":
        # Equal mass by rank: row i of n (in score order) goes to bin floor(i * bins / n). Ties share the
        # lowest bin of their run, so equal scores are never split across bins.
        order = np.argsort(p, kind="mergesort")
        rank_bin = np.empty(p.size, dtype=np.int64)
        rank_bin[order] = (np.arange(p.size) * bins) // max(p.size, 1)
        _, first, inverse = np.unique(p, return_index=True, return_inverse=True)
        return rank_bin[first][inverse]
    raise ValueError(f"strategy={strategy!r}: expected 'uniform' (equal width) or 'quantile' (equal mass)")


def calibration_curve(
    y: Any, p: Any, *, bins: int = DEFAULT_ECE_BINS, strategy: Binning = "uniform"
) -> list[dict[str, float]]:
    """Per non-empty bin: mean score, observed positive rate and row count (the reliability diagram)."""
    y, p = _check(y, p)
    if not y.size:
        return []
    idx = _bin_index(p, bins, strategy)
    out = []
    for b in np.unique(idx):
        m = idx == b
        out.append(
            {
                "bin": int(b),
                "mean_predicted": float(p[m].mean()),
                "fraction_positive": float(y[m].mean()),
                "count": int(m.sum()),
            }
        )
    return out


def expected_calibration_error(
    y: Any, p: Any, *, bins: int = DEFAULT_ECE_BINS, strategy: Binning = "uniform"
) -> float:
    """ECE: row-weighted mean |observed rate - mean score| over the bins (see the module docstring)."""
    y, p = _check(y, p)
    if not y.size:
        return math.nan
    curve = calibration_curve(y, p, bins=bins, strategy=strategy)
    return float(sum(c["count"] * abs(c["fraction_positive"] - c["mean_predicted"]) for c in curve) / y.size)


def binary_metrics(
    y: Any,
    p: Any,
    *,
    precision_target: float = 0.9,
    ece_bins: int = DEFAULT_ECE_BINS,
    ece_strategy: Binning = "uniform",
) -> dict[str, float | int]:
    """Every headline metric of one scorer on one split."""
    y, p = _check(y, p)
    return {
        "rows": int(y.size),
        "positives": int(y.sum()),
        "roc_auc": roc_auc(y, p),
        "pr_auc": pr_auc(y, p),
        "recall_at_precision": recall_at_precision(y, p, precision=precision_target),
        "log_loss": log_loss(y, p),
        "brier": brier_score(y, p),
        "ece": expected_calibration_error(y, p, bins=ece_bins, strategy=ece_strategy),
    }


# --------------------------------------------------------------------------- curves for plots


def roc_curve(y: Any, p: Any, *, grid: int = 101) -> dict[str, list[float]]:
    """TPR of the ROC polyline on a fixed FPR grid (0, 0.01, ..., 1); a constant scorer gives the diagonal."""
    y, p = _check(y, p)
    fpr_grid = np.linspace(0.0, 1.0, grid)
    if not _both_classes(y):
        return {"fpr": fpr_grid.tolist(), "tpr": [math.nan] * grid}
    from sklearn.metrics import roc_curve as sk_roc

    fpr, tpr, _ = sk_roc(y, p, drop_intermediate=False)
    # The ROC polyline (ties make diagonal segments, as for the AUC) at each grid FPR g: interpolate
    # between the last point with fpr <= g (the top of any vertical segment at g) and the next one.
    j = np.searchsorted(fpr, fpr_grid, side="right")
    lo, hi = np.maximum(j - 1, 0), np.minimum(j, fpr.size - 1)
    span = fpr[hi] - fpr[lo]
    frac = np.where(span > 0, (fpr_grid - fpr[lo]) / np.where(span > 0, span, 1.0), 0.0)
    return {"fpr": fpr_grid.tolist(), "tpr": (tpr[lo] + frac * (tpr[hi] - tpr[lo])).tolist()}


def pr_curve(y: Any, p: Any, *, grid: int = 101) -> dict[str, list[float]]:
    """Interpolated precision (the best precision at recall >= r) on a fixed recall grid."""
    y, p = _check(y, p)
    rec_grid = np.linspace(0.0, 1.0, grid)
    if not y.size or int(y.sum()) == 0:
        return {"recall": rec_grid.tolist(), "precision": [math.nan] * grid}
    prec, rec, _ = _pr_points(y, p)
    # best precision among points with recall >= r: a suffix maximum over points sorted by recall
    order = np.argsort(rec, kind="mergesort")
    rec_s, prec_s = rec[order], prec[order]
    suffix_max = np.maximum.accumulate(prec_s[::-1])[::-1]
    pos = np.searchsorted(rec_s, rec_grid - 1e-12, side="left")
    out = np.where(pos < rec_s.size, suffix_max[np.minimum(pos, rec_s.size - 1)], 0.0)
    return {"recall": rec_grid.tolist(), "precision": out.tolist()}


# --------------------------------------------------------------------------- calibration


def fit_isotonic(p: Any, y: Any) -> dict[str, Any]:
    """Isotonic regression of y on p; returned as its step thresholds (JSON, no pickle)."""
    y, p = _check(y, p)
    if not y.size:
        raise ValueError("fit_isotonic: no rows; the valid split has no natural labels")
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(p, y)
    return {
        "method": "isotonic",
        "x": [float(v) for v in iso.X_thresholds_],
        "y": [float(v) for v in iso.y_thresholds_],
    }


def _logit(p: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    q = np.clip(p, eps, 1 - eps)
    return np.log(q) - np.log1p(-q)


def fit_platt(p: Any, y: Any, *, max_iter: int = 100, tol: float = 1e-10) -> dict[str, Any]:
    """Platt scaling on the score's logit: maximum-likelihood (a, b) by Newton's method.

    A tiny ridge (1e-9) keeps the Hessian invertible when the classes are separable.
    """
    y, p = _check(y, p)
    if not _both_classes(y):
        raise ValueError("fit_platt: the labels hold a single class; Platt scaling needs both")
    z = _logit(p)
    a, b = 1.0, 0.0
    for _ in range(max_iter):
        q = 1.0 / (1.0 + np.exp(-(a * z + b)))
        g = np.array([np.sum((q - y) * z), np.sum(q - y)])
        w = q * (1 - q)
        h = np.array([[np.sum(w * z * z), np.sum(w * z)], [np.sum(w * z), np.sum(w)]]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(h, g)
        a, b = a - float(step[0]), b - float(step[1])
        if float(np.abs(step).max()) < tol:
            break
    return {"method": "platt", "a": a, "b": b}


def fit_calibration(p: Any, y: Any, *, method: CalibrationMethod) -> dict[str, Any]:
    if method == "isotonic":
        return fit_isotonic(p, y)
    if method == "platt":
        return fit_platt(p, y)
    raise ValueError(f"calibration method {method!r}: expected 'isotonic' or 'platt'")


def apply_calibration(params: Mapping[str, Any], p: Any) -> np.ndarray:
    """Calibrated probabilities from stored parameters (see :func:`fit_isotonic`, :func:`fit_platt`)."""
    p = np.asarray(p, dtype=np.float64)
    method = params.get("method")
    if method == "isotonic":
        x, yv = np.asarray(params["x"], dtype=np.float64), np.asarray(params["y"], dtype=np.float64)
        if x.size == 0 or x.size != yv.size:
            raise ValueError(
                f"isotonic calibration: x ({x.size}) and y ({yv.size}) must be non-empty and equal"
            )
        return np.interp(p, x, yv)  # constant beyond the fitted range, like out_of_bounds="clip"
    if method == "platt":
        return 1.0 / (1.0 + np.exp(-(float(params["a"]) * _logit(p) + float(params["b"]))))
    raise ValueError(f"calibration parameters: method={method!r}; expected 'isotonic' or 'platt'")


class _Ranked:
    """One model's scores sorted once (descending), so a resample's AUCs cost a weighted cumulative sum."""

    def __init__(self, y: np.ndarray, p: np.ndarray) -> None:
        self.order = np.argsort(-p, kind="stable")
        sp = p[self.order]
        self.y = y[self.order].astype(np.float64)
        # the last position of each run of tied scores: metrics are read at distinct thresholds only
        self.ends = np.r_[np.flatnonzero(np.diff(sp) != 0), sp.size - 1]

    def aucs(self, weights: np.ndarray) -> tuple[float, float]:
        """(ROC-AUC, average precision) with per-row ``weights`` (bootstrap counts), sklearn's definitions."""
        w = weights[self.order]
        tp = np.cumsum(w * self.y)[self.ends]
        fp = np.cumsum(w * (1.0 - self.y))[self.ends]
        pos, neg = tp[-1], fp[-1]
        tpr, fpr = np.r_[0.0, tp / pos], np.r_[0.0, fp / neg]
        roc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
        precision = tp / np.maximum(tp + fp, 1e-300)
        ap = float(np.sum(np.diff(np.r_[0.0, tp / pos]) * precision))
        return roc, ap


def bootstrap_delta(
    y: Any, p_a: Any, p_b: Any, *, resamples: int = 200, level: float = 0.95, seed: int = 0
) -> dict[str, dict[str, float]]:
    """ROC-AUC and PR-AUC of A minus B on the same rows, with a one-sided lower bound at ``level``.

    ``{"roc_auc": {"delta", "lower", "p_not_better"}, "pr_auc": {...}}``; ``delta`` is on the rows as they
    are, ``lower`` the ``1 - level`` quantile over stratified paired resamples, ``p_not_better`` the share of
    resamples in which A does not beat B. NaNs without both classes.
    """
    y, a = _check(y, p_a)
    _, b = _check(y, p_b)
    nan = {"delta": math.nan, "lower": math.nan, "p_not_better": math.nan}
    if not _both_classes(y):
        return {"roc_auc": dict(nan), "pr_auc": dict(nan)}
    ra, rb = _Ranked(y, a), _Ranked(y, b)
    ones = np.ones(y.size)
    base = np.subtract(ra.aucs(ones), rb.aucs(ones))
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    draws = np.empty((resamples, 2))
    for i in range(resamples):
        w = np.bincount(rng.choice(pos, pos.size), minlength=y.size) + np.bincount(
            rng.choice(neg, neg.size), minlength=y.size
        )
        draws[i] = np.subtract(ra.aucs(w.astype(np.float64)), rb.aucs(w.astype(np.float64)))
    out = {}
    for j, name in enumerate(("roc_auc", "pr_auc")):
        out[name] = {
            "delta": float(base[j]),
            "lower": float(np.quantile(draws[:, j], 1 - level)),
            "p_not_better": float(np.mean(draws[:, j] <= 0)),
        }
    return out
