"""Class imbalance: weights by hand, resampling ratios, and train-only resampling."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.training.imbalance import class_weights, resample, sample_weights, scale_pos_weight


def _data(n: int = 1000, pos: int = 50, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.zeros(n, dtype=int)
    y[:pos] = 1
    X = rng.normal(size=(n, 3)) + y[:, None] * 2.0
    return X, y


def test_class_weights_and_scale_pos_weight_by_hand() -> None:
    y = np.array([0] * 90 + [1] * 10)
    w = class_weights(y)
    assert w == pytest.approx({0: 100 / 180, 1: 100 / 20})
    assert sample_weights(y, w)[y == 0].sum() == pytest.approx(sample_weights(y, w)[y == 1].sum())
    assert class_weights(y, method="sqrt")[1] == pytest.approx(np.sqrt(5.0))
    assert scale_pos_weight(y) == 9.0
    with pytest.raises(ValueError, match="positive class"):
        scale_pos_weight(np.zeros(5))
    with pytest.raises(ValueError, match="missing labels"):
        class_weights(np.array([0.0, np.nan]))


@pytest.mark.parametrize("method", ["over", "under", "smote"])
@pytest.mark.parametrize("ratio", [0.2, 0.5, 1.0])
def test_resample_reaches_the_asked_ratio(method, ratio) -> None:
    X, y = _data()
    w = np.linspace(1, 2, len(y))
    r = resample(X, y, method=method, ratio=ratio, seed=1, split="train", sample_weight=w)
    n_pos, n_neg = (r.y == 1).sum(), (r.y == 0).sum()
    assert n_pos / n_neg == pytest.approx(ratio, abs=1.5 / n_neg + 1e-9)
    real = r.source_index >= 0
    # rows that came from the input are unchanged, weights and labels follow them
    assert np.array_equal(r.X[real], X[r.source_index[real]])
    assert np.array_equal(r.y[real], y[r.source_index[real]])
    assert np.array_equal(r.sample_weight[real], w[r.source_index[real]])
    if method == "over":
        assert n_neg == 950 and set(np.flatnonzero(y == 1)) <= set(r.source_index)
    if method == "under":
        assert n_pos == 50 and len(set(r.source_index)) == len(r.y)  # nothing duplicated
    if method == "smote":
        assert (r.y[~real] == 1).all()
        lo, hi = X[y == 1].min(axis=0), X[y == 1].max(axis=0)  # synthetic rows interpolate minority rows
        assert (r.X[~real] >= lo - 1e-9).all() and (r.X[~real] <= hi + 1e-9).all()


@pytest.mark.parametrize("split", ["valid", "test", "tail"])
def test_resample_refuses_anything_but_train(split) -> None:
    X, y = _data()
    with pytest.raises(ValueError, match="train split only"):
        resample(X, y, method="over", ratio=0.5, seed=0, split=split)


def test_resample_bounds_and_none() -> None:
    X, y = _data()
    with pytest.raises(ValueError, match=r"ratio=0\.01"):
        resample(X, y, method="under", ratio=0.01, seed=0, split="train")
    r = resample(X, y, method="none", seed=0, split="train")
    assert np.array_equal(r.X, X) and np.array_equal(r.source_index, np.arange(len(y)))
    X_bad = X.copy()
    X_bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="finite numeric"):
        resample(X_bad, y, method="smote", ratio=0.5, seed=0, split="train")
