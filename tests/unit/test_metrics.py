"""pipelines.core.metrics on values computed by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pipelines.core import metrics as M

# The textbook four-row case: scores 0.1 (neg), 0.35 (pos), 0.4 (neg), 0.8 (pos).
Y = [0, 0, 1, 1]
P = [0.1, 0.4, 0.35, 0.8]


def test_roc_auc_counts_correctly_ordered_pairs() -> None:
    # pairs (pos, neg): (0.35,0.1) ok, (0.35,0.4) wrong, (0.8,0.1) ok, (0.8,0.4) ok -> 3/4
    assert M.roc_auc(Y, P) == pytest.approx(0.75)


def test_pr_auc_is_average_precision() -> None:
    # thresholds 0.8: P=1, R=.5; 0.4: P=.5, R=.5; 0.35: P=2/3, R=1 -> AP = .5*1 + .5*(2/3) = 5/6
    assert M.pr_auc(Y, P) == pytest.approx(5 / 6)


def test_recall_at_precision_takes_the_best_recall_reaching_the_target() -> None:
    assert M.recall_at_precision(Y, P, precision=1.0) == pytest.approx(0.5)  # only the 0.8 threshold
    assert M.recall_at_precision(Y, P, precision=0.6) == pytest.approx(1.0)  # 0.35: precision 2/3
    assert M.recall_at_precision([0, 1], [0.9, 0.1], precision=0.9) == 0.0  # never reached
    with pytest.raises(ValueError, match=r"precision=1\.5"):
        M.recall_at_precision(Y, P, precision=1.5)


def test_log_loss_and_brier_by_hand() -> None:
    expected_ll = -(math.log(0.9) + math.log(0.6) + math.log(0.35) + math.log(0.8)) / 4
    assert M.log_loss(Y, P) == pytest.approx(expected_ll)
    assert M.brier_score(Y, P) == pytest.approx((0.01 + 0.16 + 0.4225 + 0.04) / 4)
    # a confident miss is finite thanks to clipping
    assert math.isfinite(M.log_loss([1], [0.0]))
    assert M.log_loss([1], [0.0]) == pytest.approx(-math.log(M.LOGLOSS_EPS))


def test_ece_equal_width_bins() -> None:
    # 2 bins: [0, .5) holds .1, .4, .35 (mean .2833, rate 1/3); [.5, 1] holds .8 (rate 1)
    ece = M.expected_calibration_error(Y, P, bins=2, strategy="uniform")
    assert ece == pytest.approx(3 / 4 * abs(1 / 3 - 0.85 / 3) + 1 / 4 * abs(1 - 0.8))
    curve = M.calibration_curve(Y, P, bins=2, strategy="uniform")
    assert [c["count"] for c in curve] == [3, 1]
    assert curve[0]["mean_predicted"] == pytest.approx(0.85 / 3)


def test_ece_equal_mass_bins() -> None:
    # 2 equal-mass bins: {.1, .35} (mean .225, rate .5) and {.4, .8} (mean .6, rate .5)
    ece = M.expected_calibration_error(Y, P, bins=2, strategy="quantile")
    assert ece == pytest.approx(0.5 * 0.275 + 0.5 * 0.1)
    assert [c["count"] for c in M.calibration_curve(Y, P, bins=2, strategy="quantile")] == [2, 2]


def test_ece_is_zero_when_calibrated_and_ties_stay_in_one_bin() -> None:
    y = [1, 0, 0, 0, 1, 1, 1, 0]
    p = [0.25] * 4 + [0.75] * 4
    assert M.expected_calibration_error(y, p, bins=10, strategy="uniform") == pytest.approx(0.0)
    # equal-mass binning must not split the four tied 0.25 scores across bins
    curve = M.calibration_curve(y, p, bins=8, strategy="quantile")
    assert [c["count"] for c in curve] == [4, 4]
    assert M.expected_calibration_error(y, p, bins=8, strategy="quantile") == pytest.approx(0.0)


def test_undefined_metrics_are_nan_and_bad_inputs_are_named() -> None:
    assert math.isnan(M.roc_auc([0, 0], [0.1, 0.2]))
    assert math.isnan(M.pr_auc([0, 0], [0.1, 0.2]))
    with pytest.raises(ValueError, match="0/1 labels"):
        M.roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="non-finite"):
        M.brier_score([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError, match="same length"):
        M.log_loss([0, 1], [0.1])


def test_binary_metrics_bundle() -> None:
    out = M.binary_metrics(Y, P, precision_target=0.6, ece_bins=2)
    assert out["rows"] == 4 and out["positives"] == 2
    assert out["roc_auc"] == pytest.approx(0.75) and out["recall_at_precision"] == pytest.approx(1.0)


def test_curves_on_a_grid() -> None:
    roc = M.roc_curve(Y, P, grid=5)
    assert roc["fpr"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    # polyline (0,0)-(0,.5)-(.5,.5)-(.5,1)-(1,1): TPR .5 up to FPR .5, where it climbs to 1
    assert roc["tpr"] == pytest.approx([0.5, 0.5, 1.0, 1.0, 1.0])
    # a constant scorer's ROC is the diagonal (one tied block)
    assert M.roc_curve([0, 1, 0, 1], [0.3] * 4, grid=5)["tpr"] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    pr = M.pr_curve(Y, P, grid=5)
    # interpolated precision: best precision at recall >= r -> 1 up to recall .5, then 2/3
    assert pr["precision"] == pytest.approx([1.0, 1.0, 1.0, 2 / 3, 2 / 3])


def test_isotonic_fit_is_stored_as_json_and_applied_by_interpolation() -> None:
    params = M.fit_isotonic(P, Y)
    # pool-adjacent-violators: (.35 -> 1, .4 -> 0) pool to .5
    assert params == {"method": "isotonic", "x": [0.1, 0.35, 0.4, 0.8], "y": [0.0, 0.5, 0.5, 1.0]}
    restored = json.loads(json.dumps(params))
    out = M.apply_calibration(restored, [0.05, 0.375, 0.6, 0.95])
    assert out == pytest.approx([0.0, 0.5, 0.75, 1.0])  # clipped outside, linear inside


def test_platt_recovers_known_coefficients() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(0, 1.5, 200_000)
    p = 1 / (1 + np.exp(-z))  # raw scores whose logit is z
    y = (rng.random(z.size) < 1 / (1 + np.exp(-(2.0 * z - 1.0)))).astype(int)  # true calibration a=2, b=-1
    params = M.fit_platt(p, y)
    assert params["method"] == "platt"
    assert params["a"] == pytest.approx(2.0, abs=0.05)
    assert params["b"] == pytest.approx(-1.0, abs=0.05)
    q = M.apply_calibration(json.loads(json.dumps(params)), p)
    assert M.expected_calibration_error(y, q, bins=20) < M.expected_calibration_error(y, p, bins=20)


def test_calibration_rejects_unknown_methods() -> None:
    with pytest.raises(ValueError, match="'isotonic' or 'platt'"):
        M.apply_calibration({"method": "beta"}, [0.5])
    with pytest.raises(ValueError, match="single class"):
        M.fit_platt([0.1, 0.2], [0, 0])
