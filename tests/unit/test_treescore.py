"""The compiled tree scorer gives Booster.inplace_predict's float32 scores bit for bit, or says it cannot."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

xgb = pytest.importorskip("xgboost")
pytest.importorskip("numba")

from pipelines.serving import treescore  # noqa: E402


def _data(rows: int = 3000, features: int = 9, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    x[:, 3] = np.round(x[:, 3])  # ties at the thresholds
    x[rng.random(x.shape) < 0.15] = np.nan  # missing values both ways (learned default directions)
    logit = np.nan_to_num(x[:, 0]) - np.nan_to_num(x[:, 1]) * np.nan_to_num(x[:, 2]) + np.isnan(x[:, 4])
    y = (logit + rng.normal(size=rows) > 0.3).astype(int)
    return x, y


def _train(params: dict, rounds: int = 25, seed: int = 0) -> tuple[object, np.ndarray]:
    x, y = _data(seed=seed)
    booster = xgb.train(
        {"objective": "binary:logistic", "tree_method": "hist", "seed": seed, **params},
        xgb.DMatrix(x, label=y),
        rounds,
    )
    return booster, x


@pytest.mark.parametrize(
    "params",
    [
        {"max_depth": 1},
        {"max_depth": 3},
        {"max_depth": 6, "eta": 0.5},
        {"max_depth": 8, "num_parallel_tree": 2, "subsample": 0.7},
        {"max_depth": 4, "base_score": 0.2},
        {"max_depth": 4, "objective": "reg:logistic"},
        {"grow_policy": "lossguide", "max_leaves": 24, "max_depth": 0},
    ],
    ids=["stumps", "depth3", "depth6", "forest-rounds", "base-score", "reg-logistic", "lossguide"],
)
def test_scores_equal_inplace_predict_bit_for_bit(params):
    booster, x = _train(params)
    for rng in [(0, 25), (0, 11), (5, 20)]:
        compiled = treescore.compile_booster(booster, rng)
        ref = booster.inplace_predict(x, iteration_range=rng)
        got = compiled.predict(x)
        assert got.dtype == np.float32 and np.array_equal(got, ref), (params, rng)
        margin = treescore.compile_booster(booster, rng, margin=True).predict(x)
        assert np.array_equal(margin, booster.inplace_predict(x, iteration_range=rng, predict_type="margin"))
        assert compiled.verify(booster, rng) == 4096  # the probe rows agree too


def test_every_split_of_a_complete_layout_is_kept():
    booster, _ = _train({"max_depth": 5})
    compiled = treescore.compile_booster(booster)
    # the real splits, one per internal node of each tree (XGBoost: nodes = 2 * splits + 1)
    import json

    trees = json.loads(bytes(booster.save_raw("json")))["learner"]["gradient_booster"]["model"]["trees"]
    splits = [sum(1 for c in t["left_children"] if c != -1) for t in trees]
    assert np.diff(compiled.node_ptr).tolist() == splits
    assert compiled.depth == 5 and compiled.leaf.shape == (25, 32)


def test_a_one_ulp_change_in_a_threshold_or_a_flipped_default_is_caught_by_the_probe_rows():
    """The probe rows sit on, just below and missing at every threshold: a scorer that is off by the
    smallest step anywhere fails verify (so the check can fail, and it is that sharp)."""
    booster, _ = _train({"max_depth": 4})
    good = treescore.compile_booster(booster)
    thr = good.node_thr.copy()
    thr[7] = np.nextafter(thr[7], np.float32(-np.inf))
    with pytest.raises(treescore.Mismatch, match="differ from XGBoost"):
        dataclasses.replace(good, node_thr=thr).verify(booster, (0, 25))
    dl = good.node_dl.copy()
    dl[3] = not dl[3]
    with pytest.raises(treescore.Mismatch):
        dataclasses.replace(good, node_dl=dl).verify(booster, (0, 25))
    leaf = good.leaf.copy()
    leaf[-1] += np.float32(1e-7)
    with pytest.raises(treescore.Mismatch):
        dataclasses.replace(good, leaf=leaf).verify(booster, (0, 25))


def test_what_it_does_not_reproduce_is_refused_with_the_reason(monkeypatch):
    x, y = _data()
    multi = xgb.train({"objective": "multi:softprob", "num_class": 3, "max_depth": 2},
                      xgb.DMatrix(x, label=y + (x[:, 5] > 1)), 3)  # fmt: skip
    with pytest.raises(treescore.Unsupported, match="objective multi:softprob"):
        treescore.compile_booster(multi)
    dart = xgb.train(
        {"objective": "binary:logistic", "booster": "dart", "max_depth": 2}, xgb.DMatrix(x, label=y), 3
    )
    with pytest.raises(treescore.Unsupported, match="dart"):
        treescore.compile_booster(dart)
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"a": pd.Categorical(np.where(y == 1, "p", "q")), "b": x[:, 0]})
    cat = xgb.train({"objective": "binary:logistic", "max_depth": 2, "tree_method": "hist"},
                    xgb.DMatrix(frame, label=y, enable_categorical=True), 3)  # fmt: skip
    with pytest.raises(treescore.Unsupported, match="categorical"):
        treescore.compile_booster(cat)
    deep, _ = _train({"max_depth": 5}, rounds=3)
    monkeypatch.setattr(treescore, "MAX_DEPTH", 4)
    with pytest.raises(treescore.Unsupported, match="depth 5 > 4"):
        treescore.compile_booster(deep)
    with pytest.raises(treescore.Unsupported, match="outside"):
        treescore.compile_booster(deep, (0, 9))


def test_a_matrix_of_the_wrong_width_is_refused():
    booster, x = _train({"max_depth": 2}, rounds=3)
    compiled = treescore.compile_booster(booster)
    with pytest.raises(ValueError, match="rows x 9 matrix"):
        compiled.predict(x[:, :5])
    assert np.array_equal(compiled.predict(x[:0]), np.zeros(0, dtype=np.float32))
