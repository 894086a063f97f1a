"""The quantize stage: stratified representative data, the parity/fairness gate, publication and the card."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import edge_support
import eval_support

from pipelines.core.config import QuantizeGateConfig
from pipelines.serving.quantize import (
    card_section,
    edge_behaviour,
    operating_threshold,
    parity_report,
    representative_sample,
    run_quantize,
)

GATE = QuantizeGateConfig()


# --------------------------------------------------------------------------- pure pieces


def test_representative_sample_is_stratified_seeded_and_keeps_the_rare_class():
    y = np.r_[np.zeros(9_800), np.ones(200)].astype(np.float64)
    x = np.arange(10_000, dtype=np.float32).reshape(-1, 1)
    idx = representative_sample(x, y, rows=400, seed=1)
    assert len(idx) == 400 and len(set(idx.tolist())) == 400
    # proportional would give 8 positives; the floor gives the rare class a tenth of the rows
    assert int(y[idx].sum()) == 40
    assert np.array_equal(idx, representative_sample(x, y, rows=400, seed=1))
    assert not np.array_equal(idx, representative_sample(x, y, rows=400, seed=2))
    # a small class contributes every row it has; NaN labels are a stratum of their own
    y2 = np.r_[np.zeros(990), np.ones(3), np.full(7, np.nan)]
    idx2 = representative_sample(np.zeros((1000, 1), np.float32), y2, rows=100, seed=0)
    assert int(np.nansum(y2[idx2])) == 3 and int(np.isnan(y2[idx2]).sum()) == 7 and len(idx2) == 100
    with pytest.raises(ValueError, match="empty"):
        representative_sample(np.zeros((0, 1), np.float32), np.zeros(0), rows=10, seed=0)


def test_operating_threshold_fixed_or_from_alert_rate():
    ref = np.linspace(0, 1, 1001)
    assert operating_threshold(ref, threshold=0.3, alert_rate=0.01) == 0.3
    assert operating_threshold(ref, threshold=None, alert_rate=0.01) == pytest.approx(0.99)


def _case(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.1).astype(np.int64)
    ref = np.clip(0.3 * y + rng.random(n) * 0.7, 0, 1)
    slices = np.where(np.arange(n) % 4 == 0, "small_country", "big_country")
    return y, ref, slices


def test_parity_identical_scores_pass_with_exact_figures():
    y, ref, sl = _case()
    r = parity_report(y, ref, ref.copy(), slices={"country": sl}, threshold=0.8, gate=GATE,
                      min_slice_size=500, min_slice_positives=10)  # fmt: skip
    assert r["passed"] and r["reasons"] == []
    w = r["whole"]
    assert (
        w["roc_auc_drop"] == 0 and w["mean_abs_diff"] == 0 and w["max_abs_diff"] == 0 and w["agreement"] == 1
    )
    assert {s["value"] for s in r["slices"]} == {"small_country", "big_country"}


def test_parity_gate_catches_a_slice_the_whole_split_hides():
    """Compression that hurts only a quarter of the rows: the whole-split numbers stay under their limits
    (ROC-AUC drop and mean diff), the slice check names the slice."""
    y, ref, sl = _case()
    var = ref.copy()
    hurt = sl == "small_country"
    rng = np.random.default_rng(5)
    var[hurt] = np.clip(ref[hurt] + rng.normal(0, 0.05, hurt.sum()), 0, 1)
    gate = GATE.model_copy(update={"max_roc_auc_drop": 0.05, "max_mean_abs_diff": 0.05, "max_abs_diff": 1.0,
                                   "min_agreement": 0.9})  # fmt: skip
    r = parity_report(y, ref, var, slices={"country": sl}, threshold=0.8, gate=gate, min_slice_size=500,
                      min_slice_positives=10)  # fmt: skip
    assert not r["passed"]
    assert all(reason.startswith("slice country=small_country") for reason in r["reasons"]), r["reasons"]
    row = next(s for s in r["slices"] if s["value"] == "small_country")
    assert row["mean_abs_diff"] > GATE.slice_max_mean_abs_diff
    # agreement is the share of rows whose decision at the threshold is unchanged
    expected = float(((ref >= 0.8) == (var >= 0.8)).mean())
    assert r["whole"]["agreement"] == pytest.approx(expected)


def test_parity_small_slices_are_reported_but_not_gated():
    y, ref, sl = _case()
    var = ref.copy()
    small = np.arange(len(y)) < 50
    var[small] = 1 - ref[small]  # a 50-row slice ruined
    sl = np.where(small, "tiny", "rest")
    gate = GATE.model_copy(update={"max_roc_auc_drop": 1, "max_pr_auc_drop": 1, "max_mean_abs_diff": 1,
                                   "max_abs_diff": 1, "min_agreement": 0})  # fmt: skip
    r = parity_report(y, ref, var, slices={"c": sl}, threshold=0.8, gate=gate, min_slice_size=500,
                      min_slice_positives=10)  # fmt: skip
    tiny = next(s for s in r["slices"] if s["value"] == "tiny")
    assert tiny["checked"] is False and tiny["mean_abs_diff"] > 0.1
    assert r["passed"]


# --------------------------------------------------------------------------- the stage on a real model


@pytest.fixture(scope="module")
def case(tmp_path_factory, synthetic_lake, params):
    return edge_support.edge_case(tmp_path_factory, synthetic_lake, params)


@pytest.mark.slow
def test_all_four_variants_with_int8_io_and_float32_parity(case):
    from pipelines.edge.runtime import EdgeModel

    report = json.loads((case["tflite"] / "quantize.json").read_text())
    assert set(report["variants"]) == {"float32", "float16", "dynamic_range", "int8"}
    assert report["representative"]["rows"] == 500 and report["representative"]["positives"] >= 50
    f32, i8 = report["variants"]["float32"], report["variants"]["int8"]
    assert f32["parity"]["whole"]["max_abs_diff"] < 1e-5  # float32 TFLite == Keras up to float rounding
    assert i8["bytes"] < 0.5 * f32["bytes"]
    assert 0 < i8["parity"]["whole"]["mean_abs_diff"] < 0.05
    m = EdgeModel(str(case["tflite"] / "int8.tflite"))
    assert m.input_dtype == np.int8 and m.output_dtype == np.int8 and m.output_kind == "logit"
    assert m.input_quantization[0] > 0
    for name in report["published"]:
        assert (case["tflite"] / f"{name}.tflite").stat().st_size == report["variants"][name]["bytes"]


@pytest.mark.slow
def test_failing_variant_is_not_published_and_the_card_says_why(case, params, tmp_path):
    """A gate int8 cannot meet (mean |diff| <= 1e-7): int8 is absent from the published folder, quantize.json
    and the registered version's model card name the reason; the float variants are still published."""
    from pipelines.registry.store import Registry

    version = _registered(case, tmp_path, keras_tests=[_beh("merchant_id_swap", True)])
    reg = Registry(str(tmp_path / "registry"))
    out = tmp_path / "tflite"
    out.mkdir()
    (out / "int8.tflite").write_bytes(b"published by an earlier run")  # must be withdrawn
    strict = params.quantize.gate.model_copy(update={"max_mean_abs_diff": 1e-7, "max_abs_diff": 1.0})
    cfg = params.quantize.model_copy(update={"gate": strict, "representative_rows": 200,
                                             "variants": ["float32", "int8"]})  # fmt: skip
    report = run_quantize(features=str(case["features"]), model=str(case["model"]), out=str(out),
                          reports=str(tmp_path / "rq"), cfg=cfg, evaluate_cfg=params.evaluate, seed=0,
                          registry=str(reg.root), version=version)  # fmt: skip
    assert report["published"] == ["float32"] and report["unpublished"] == ["int8"]
    assert not (out / "int8.tflite").exists() and (out / "float32.tflite").exists()
    assert (
        report["edge_behaviour"]["passed"]
        and "Behavioural tests of the edge model (keras): passed"
        in (Path(reg.version_dir(version)) / "model_card.md").read_text()
    )
    reason = report["variants"]["int8"]["parity"]["reasons"][0]
    assert reason.startswith("mean |score diff|") and "> 1e-07" in reason
    assert json.loads((tmp_path / "rq" / "quantize.json").read_text())["unpublished"] == ["int8"]
    vdir = Path(reg.version_dir(version))
    assert (vdir / "tflite" / "float32.tflite").exists() and not (vdir / "tflite" / "int8.tflite").exists()
    card = (vdir / "model_card.md").read_text()
    section = card.split("<!-- loopline:quantization:begin -->")[1].split(
        "<!-- loopline:quantization:end -->"
    )[0]
    assert "| int8 |" in section and "| NO |" in section and "Not published" in section and reason in section
    reg.verify(version)  # attaching files next to the artifacts does not break the version's integrity


def _beh(name: str, passed: bool) -> dict:
    return {"kind": "invariance", "name": name, "passed": passed,
            "detail": f"{name}: {'97.0' if passed else '60.6'}% of rows moved < 0.02 (need 95%)"}  # fmt: skip


def _registered(case, tmp_path: Path, *, keras_tests: list[dict] | None) -> str:  # type: ignore[no-untyped-def]
    """Register the case's model with an evaluation whose Keras behavioural tests are ``keras_tests``
    (None: Keras was not tested)."""
    from pipelines.registry.store import Registry

    evaluation = eval_support.minimal_evaluation()
    if keras_tests is not None:
        evaluation["behavioural"]["keras"] = {"passed": all(t["passed"] for t in keras_tests), "rows": 10,
                                              "tests": keras_tests}  # fmt: skip
    ev = tmp_path / "ev"
    ev.mkdir()
    (ev / "evaluation.json").write_text(json.dumps(evaluation))
    (ev / "metrics.json").write_text("{}")
    (ev / "report.html").write_text("<html></html>")
    return Registry(str(tmp_path / "registry")).register(
        model_dir=str(case["model"]),
        evaluation_dir=str(ev),
        created_at=dt.datetime(2025, 3, 1, tzinfo=dt.UTC),
    )


def test_edge_behaviour_verdict_from_the_evaluation():
    ok = {"behavioural": {"keras": {"passed": True, "tests": [_beh("swap", True)]}}}
    bad = {"behavioural": {"keras": {"passed": False, "tests": [_beh("swap", False), _beh("noise", True)]}}}
    assert edge_behaviour(ok, required=True) == {"model": "keras", "required": True, "passed": True,
                                                 "failed": [], "detail": "all passed"}  # fmt: skip
    v = edge_behaviour(bad, required=True)
    assert (
        not v["passed"]
        and v["failed"] == ["swap"]
        and v["detail"] == "swap: swap: 60.6% of rows moved < 0.02 (need 95%)"
    )
    missing = edge_behaviour({"behavioural": {"xgboost": {}}}, required=True)
    assert not missing["passed"] and "add it to evaluate.behavioural.models" in missing["detail"]
    assert edge_behaviour(bad, required=False)["passed"]


@pytest.mark.slow
def test_an_edge_model_failing_its_behavioural_tests_publishes_no_variant(case, params, tmp_path):
    """The gate judges the model that ships: a Keras model failing an invariance test gets no TFLite variant,
    though every variant passes parity; a variant published by an earlier run is withdrawn; quantize.json and
    the card name the test. Without an evaluation, quantize refuses and names the fix."""
    from pipelines.registry.store import Registry

    version = _registered(case, tmp_path, keras_tests=[_beh("merchant_id_swap", False)])
    reg = Registry(str(tmp_path / "registry"))
    out = tmp_path / "tflite"
    out.mkdir()
    (out / "float32.tflite").write_bytes(b"published by an earlier run")
    cfg = params.quantize.model_copy(update={"representative_rows": 200, "variants": ["float32"]})
    report = run_quantize(features=str(case["features"]), model=str(case["model"]), out=str(out),
                          reports=str(tmp_path / "rq"), cfg=cfg, evaluate_cfg=params.evaluate, seed=0,
                          registry=str(reg.root), version=version)  # fmt: skip
    assert report["published"] == [] and report["unpublished"] == ["float32"]
    assert report["variants"]["float32"]["parity"]["passed"]  # blocked by the behaviour, not by parity
    assert report["variants"]["float32"]["reasons"] == [
        "edge model behavioural tests: merchant_id_swap: merchant_id_swap: 60.6% of rows moved < 0.02 (need 95%)"
    ]
    assert not (out / "float32.tflite").exists()
    vdir = Path(reg.version_dir(version))
    assert not (vdir / "tflite" / "float32.tflite").exists()
    card = (vdir / "model_card.md").read_text()
    assert "(keras): FAILED, no variant is published" in card and "- float32: edge model behavioural" in card
    with pytest.raises(ValueError, match=r"--evaluation reports/evaluation/evaluation\.json"):
        run_quantize(features=str(case["features"]), model=str(case["model"]), out=str(out),
                     reports=str(tmp_path / "rq"), cfg=cfg, evaluate_cfg=params.evaluate, seed=0)  # fmt: skip


def test_card_section_lists_every_variant():
    w = {"roc_auc_drop": 0.001, "pr_auc_drop": 0.002, "mean_abs_diff": 0.003, "max_abs_diff": 0.04,
         "agreement": 0.999}  # fmt: skip
    report = {"test_rows": 10, "keras": {"roc_auc": 0.9}, "threshold": 0.5, "threshold_source": "x",
              "slices": {"columns": ["country"]},
              "variants": {"float32": {"bytes": 100, "published": True, "parity": {"whole": w, "reasons": []}},
                           "int8": {"bytes": 30, "published": False,
                                    "parity": {"whole": w, "reasons": ["slice country=NG: ROC-AUC drop 0.03 > 0.02"]}}}}  # fmt: skip
    text = card_section(report)
    assert "| float32 | 100 |" in text and "| int8 | 30 |" in text
    assert "- int8: slice country=NG: ROC-AUC drop 0.03 > 0.02" in text
    assert pd.notna(text)
