"""Drift statistics on values known by hand, sampling bounds, and per-column method selection."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pipelines.core import drift as D


def test_psi_categorical_by_hand() -> None:
    ref = ["a"] * 50 + ["b"] * 50
    cur = ["a"] * 90 + ["b"] * 10
    # (0.9 - 0.5) ln(0.9/0.5) + (0.1 - 0.5) ln(0.1/0.5) = 0.23511 + 0.64378
    score, drifted = D.psi(ref, cur, kind="categorical")
    assert score == pytest.approx(0.878890, abs=1e-5)
    assert drifted
    assert D.psi(ref, ref, kind="categorical") == (0.0, False)


def test_psi_numeric_identical_is_zero_and_shift_is_large() -> None:
    x = np.arange(1000, dtype=float)
    assert D.psi(x, x).score == pytest.approx(0.0, abs=1e-12)
    assert D.psi(x, x + 500).drifted


def test_jensen_shannon_by_hand() -> None:
    # disjoint supports: JS divergence = ln 2, distance = sqrt(ln 2)
    assert D.jensen_shannon(["a"] * 10, ["b"] * 10).score == pytest.approx(math.sqrt(math.log(2)), abs=1e-12)
    assert D.jensen_shannon(["a", "b"], ["b", "a"]) == (0.0, False)
    # p = (1, 0), q = (1/2, 1/2): m = (3/4, 1/4); JSD = [ln(4/3) + (1/2) ln(2/3) + (1/2) ln 2] / 2
    jsd = (math.log(4 / 3) + 0.5 * math.log(2 / 3) + 0.5 * math.log(2)) / 2
    assert D.jensen_shannon(["a"] * 4, ["a", "a", "b", "b"]).score == pytest.approx(math.sqrt(jsd), abs=1e-12)


def test_wasserstein_normalized_by_hand() -> None:
    ref = np.array([0.0, 1.0, 2.0, 3.0])  # population std sqrt(1.25)
    score, drifted = D.wasserstein_norm(ref, ref + 1)
    assert score == pytest.approx(1 / math.sqrt(1.25), abs=1e-12)
    assert drifted
    assert D.wasserstein_norm(ref, ref).score == 0.0
    with pytest.raises(ValueError, match="numerical"):
        D.wasserstein_norm(["a"], ["b"], kind="categorical")


def test_ks_pvalue() -> None:
    x = np.arange(200, dtype=float)
    assert D.ks_test(x, x) == (1.0, False)
    p, drifted = D.ks_test(x, x + 1000)
    assert p < 1e-10 and drifted  # p-values: drift when BELOW the threshold


def test_chi_square_by_hand() -> None:
    from scipy.stats import chi2

    ref = ["a"] * 50 + ["b"] * 50
    cur = ["a"] * 70 + ["b"] * 30
    # 2x2 table [[50, 50], [70, 30]], expected 60/40 per row: chi2 = 2 * (100/60 + 100/40) = 8.333..., 1 dof
    p, drifted = D.chi_square(ref, cur)
    assert p == pytest.approx(chi2.sf(25 / 3, 1), rel=1e-9)
    assert p == pytest.approx(0.003892, abs=1e-6)
    assert drifted
    assert D.chi_square(ref, ref) == (1.0, False)
    # a category only in the current window is a column of the table, not an infinite term
    assert D.chi_square(["a"] * 100, ["a"] * 90 + ["new"] * 10).drifted


def test_missing_values() -> None:
    assert D.psi([1.0, np.nan, 2.0] * 10, [1.0, 2.0] * 10).score == pytest.approx(0.0, abs=1e-12)
    assert D.jensen_shannon(["a", None] * 5, ["a"] * 10).score > 0.3  # missing is a category
    empty = D.psi([np.nan], [1.0])  # nothing left to compare: reported as NaN, never as drift
    assert math.isnan(empty.score) and not empty.drifted


def test_column_drift_defaults_and_errors() -> None:
    r = D.column_drift([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], kind="numerical")
    assert r["method"] == "psi" and r["threshold"] == D.PSI_THRESHOLD and r["drifted"] is False
    r = D.column_drift(["a"], ["a"], kind="categorical", threshold=0.3)
    assert r["method"] == "jensenshannon" and r["threshold"] == 0.3
    with pytest.raises(ValueError, match="does not apply to categorical"):
        D.column_drift(["a"], ["b"], kind="categorical", method="ks")
    with pytest.raises(ValueError, match="expected one of"):
        D.column_drift([1.0], [1.0], kind="numerical", method="kl")


def test_bounded_indices() -> None:
    rng = np.random.default_rng(0)
    assert D.bounded_indices(100, 200, rng=rng) is None
    assert D.bounded_indices(100, None, rng=rng) is None
    idx = D.bounded_indices(10_000, 500, rng=rng)
    assert idx is not None and len(idx) == 500 and len(np.unique(idx)) == 500 and idx.max() < 10_000
    strata = np.repeat(["a", "b"], [9000, 1000])
    idx = D.bounded_indices(10_000, 500, rng=rng, strata=strata)
    assert idx is not None and len(idx) == 500
    assert (strata[idx] == "b").sum() == 50  # proportional allocation


def test_drift_table_samples_to_budget_and_finds_the_shift() -> None:
    rng = np.random.default_rng(1)
    n = 20_000
    ref = pd.DataFrame({"x": rng.normal(0, 1, n), "c": rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2])})
    cur = pd.DataFrame({"x": rng.normal(0.5, 1, n), "c": rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2])})
    t = D.drift_table(
        ref,
        cur,
        columns={"x": "numerical", "c": "categorical"},
        max_rows=3000,
        seed=0,
        methods={"numerical": "wasserstein"},
    )
    assert t["sampled"] and t["rows"]["reference_checked"] == 3000 and t["rows"]["current_checked"] == 3000
    assert t["columns"]["x"]["reference_rows"] == 3000
    assert D.drifted_columns(t) == ["x"]
    t = D.drift_table(
        ref,
        cur,
        columns={"x": "numerical", "c": "categorical"},
        max_rows=None,
        per_column_threshold={"x": 5.0},
        methods={"numerical": "wasserstein"},
    )
    assert not t["sampled"] and D.drifted_columns(t) == []
