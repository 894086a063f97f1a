"""Class imbalance: class weights, XGBoost's ``scale_pos_weight``, and resampling of the train split.

Pure functions on a feature matrix and labels. Resampling runs after the split and after the feature
stage (SMOTE interpolates numeric features), on the training split only: :func:`resample` refuses any
other split, so validation and test keep the class mix the model will meet.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "ResampleResult",
    "class_weights",
    "resample",
    "sample_weights",
    "scale_pos_weight",
]

log = logging.getLogger(__name__)

ResampleMethod = Literal["none", "over", "under", "smote"]


def _check_labels(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or len(y) == 0:
        raise ValueError(f"y must be a non-empty 1-d array of labels, got shape {y.shape}")
    if np.issubdtype(y.dtype, np.floating) and np.isnan(y).any():
        raise ValueError("y contains missing labels; drop unlabelled rows before balancing")
    return y


def class_weights(y: np.ndarray, *, method: Literal["balanced", "sqrt"] = "balanced") -> dict[int, float]:
    """Per-class weights: ``balanced`` = n / (n_classes * n_c) (sklearn's rule); ``sqrt`` its square root,
    a milder correction. Every class then carries the same total weight (balanced)."""
    y = _check_labels(y)
    classes, counts = np.unique(y, return_counts=True)
    w = len(y) / (len(classes) * counts.astype(float))
    if method == "sqrt":
        w = np.sqrt(w)
    elif method != "balanced":
        raise ValueError(f"method={method!r}: use 'balanced' or 'sqrt'")
    return {int(c): float(v) for c, v in zip(classes, w, strict=True)}


def sample_weights(y: np.ndarray, weights: dict[int, float]) -> np.ndarray:
    """The per-row weight array for a class-weight mapping (multiply into any existing sample weight)."""
    y = _check_labels(y)
    missing = sorted(set(np.unique(y).tolist()) - set(weights))
    if missing:
        raise ValueError(f"class weights {weights} have no entry for class(es) {missing}")
    return np.vectorize(weights.__getitem__, otypes=[float])(y)


def scale_pos_weight(y: np.ndarray, *, positive: int = 1) -> float:
    """XGBoost's ``scale_pos_weight``: negatives / positives in the training labels."""
    y = _check_labels(y)
    pos = int((y == positive).sum())
    if pos == 0:
        raise ValueError(f"no rows of the positive class {positive}; scale_pos_weight is undefined")
    return float((y != positive).sum() / pos)


@dataclass(frozen=True)
class ResampleResult:
    X: np.ndarray
    y: np.ndarray
    sample_weight: np.ndarray
    source_index: np.ndarray  # row of the input each output row came from; -1 for a synthetic (SMOTE) row


def resample(
    X: np.ndarray,
    y: np.ndarray,
    *,
    method: ResampleMethod,
    ratio: float = 1.0,
    seed: int,
    split: str,
    sample_weight: np.ndarray | None = None,
    k_neighbors: int = 5,
) -> ResampleResult:
    """Resample the TRAIN split so that minority / majority = ``ratio`` afterwards (binary labels).

    ``over``: random duplicates of minority rows; ``under``: a random subset of majority rows; ``smote``:
    synthetic minority rows interpolated between near neighbours (imbalanced-learn). ``split`` must be
    ``"train"``: resampling valid or test would evaluate on a class mix that production never shows.
    Sample weights follow their rows; a synthetic row gets the mean weight of the minority class.
    """
    if split != "train":
        raise ValueError(
            f"resample(split={split!r}): resampling applies to the train split only, after splitting"
        )
    X = np.asarray(X)
    y = _check_labels(y)
    if X.shape[0] != len(y):
        raise ValueError(f"X has {X.shape[0]} rows but y has {len(y)}")
    w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
    if method == "none":
        return ResampleResult(X, y, w, np.arange(len(y)))
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) != 2:
        raise ValueError(f"resample handles binary labels; got classes {classes.tolist()}")
    minority, majority = classes[np.argmin(counts)], classes[np.argmax(counts)]
    current = counts.min() / counts.max()
    if not current <= ratio <= 1.0:
        raise ValueError(
            f"ratio={ratio} must lie in [{current:.4g}, 1]: the minority/majority ratio now is {current:.4g}, "
            "and resampling only moves it towards balance"
        )
    rng = np.random.default_rng(seed)
    idx_min, idx_maj = np.flatnonzero(y == minority), np.flatnonzero(y == majority)
    if method == "over":
        target = round(ratio * len(idx_maj))
        extra = rng.choice(idx_min, size=target - len(idx_min), replace=True)
        src = np.sort(np.concatenate([np.arange(len(y)), extra]))
    elif method == "under":
        target = round(len(idx_min) / ratio)
        keep = rng.choice(idx_maj, size=target, replace=False)
        src = np.sort(np.concatenate([idx_min, keep]))
    elif method == "smote":
        from imblearn.over_sampling import SMOTE

        if not np.issubdtype(X.dtype, np.number) or not np.isfinite(X).all():
            raise ValueError("SMOTE needs a finite numeric matrix: run it on the feature stage's output")
        k = min(k_neighbors, len(idx_min) - 1)
        if k < 1:
            raise ValueError(f"SMOTE needs at least 2 minority rows, got {len(idx_min)}")
        sm = SMOTE(sampling_strategy=ratio, k_neighbors=k, random_state=int(rng.integers(2**31)))
        X_res, y_res = sm.fit_resample(X, y)
        n_new = len(y_res) - len(y)
        # imbalanced-learn appends the synthetic rows after the originals, in input order
        src = np.concatenate([np.arange(len(y)), np.full(n_new, -1)])
        w_res = np.concatenate([w, np.full(n_new, float(w[idx_min].mean()))])
        log.info("resample: smote added %d synthetic %s rows", n_new, minority)
        return ResampleResult(np.asarray(X_res), np.asarray(y_res), w_res, src)
    else:
        raise ValueError(f"method={method!r}: use none, over, under or smote")
    return ResampleResult(X[src], y[src], w[src], src)
