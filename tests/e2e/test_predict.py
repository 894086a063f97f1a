"""Batch prediction: lake partitions -> point-in-time aggregates -> spec -> champion -> predictions parquet."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "model"))
import edge_support
import eval_support

from pipelines.serving.predict import PredictError, resolve_dates, run_predict

DATES = [f"2025-01-{d:02d}" for d in range(1, 21)]


def test_resolve_dates_one_range_or_newest_window():
    assert resolve_dates(DATES, date="2025-01-05", start=None, end=None, window_days=3) == ["2025-01-05"]
    assert resolve_dates(DATES, date=None, start="2025-01-18", end="2025-01-25", window_days=3) == DATES[-3:]
    assert resolve_dates(DATES, date=None, start=None, end=None, window_days=2) == DATES[-2:]
    with pytest.raises(PredictError, match="not in the lake"):
        resolve_dates(DATES, date="2024-12-31", start=None, end=None, window_days=1)
    with pytest.raises(PredictError, match="go together"):
        resolve_dates(DATES, date=None, start="2025-01-01", end=None, window_days=1)
    with pytest.raises(PredictError, match="after"):
        resolve_dates(DATES, date=None, start="2025-01-09", end="2025-01-02", window_days=1)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, synthetic_lake, params):
    from pipelines.registry.store import Registry

    case = edge_support.edge_case(tmp_path_factory, synthetic_lake, params)
    base = tmp_path_factory.mktemp("predict")
    ev = base / "ev"
    ev.mkdir()
    (ev / "evaluation.json").write_text(json.dumps(eval_support.minimal_evaluation()))
    (ev / "metrics.json").write_text("{}")
    (ev / "report.html").write_text("<html></html>")
    reg = Registry(str(base / "registry"))
    version = reg.register(model_dir=str(case["model"]), evaluation_dir=str(ev),
                           created_at=dt.datetime(2025, 3, 1, tzinfo=dt.UTC))  # fmt: skip
    reg.promote(version, force=True, reason="test: no gate evidence in this fixture")
    return {**case, "registry": reg.root, "version": version, "lake": synthetic_lake / "lake", "base": base}


@pytest.mark.slow
def test_no_champion_fails_naming_the_registry_and_the_fix(synthetic_lake, params, tmp_path):
    with pytest.raises(PredictError) as err:
        run_predict(lake=str(synthetic_lake / "lake"), registry=str(tmp_path / "empty"), out=str(tmp_path / "p"),
                    cfg=params.predict, params=params, progress=False)  # fmt: skip
    msg = str(err.value)
    assert str(tmp_path / "empty") in msg and "no champion" in msg and "loopline register" in msg


@pytest.mark.slow
def test_predictions_equal_training_path_scores_with_point_in_time_aggregates(setup, params, tmp_path):
    """The newest lake day scored by the batch stage equals the champion's scores of the same rows in the
    features parquet, whose aggregates the feature stage computed over the whole history: aggregates from a
    window of history before the day are the same aggregates."""
    import xgboost as xgb

    out = tmp_path / "pred"
    s = run_predict(lake=str(setup["lake"]), registry=str(setup["registry"]), out=str(out), date="2025-01-20",
                    cfg=params.predict, params=params, progress=False)  # fmt: skip
    assert s["model_version"] == setup["version"] and s["dates"] == ["2025-01-20"] and s["rows"] == 2000
    pred = pd.read_parquet(out / "date=2025-01-20" / f"part-{setup['version']}.parquet")
    for col in (
        "event_id",
        "event_time",
        "card_id",
        "score",
        "model_version",
        "spec_digest",
        "channel",
        "country",
    ):
        assert col in pred.columns, col
    spec = json.loads((setup["model"] / "spec.json").read_text())
    assert (pred["model_version"] == setup["version"]).all() and (pred["spec_digest"] == spec["digest"]).all()
    assert pred["event_id"].is_unique

    test = pd.read_parquet(setup["features"] / "test.parquet")
    day = test[pd.to_datetime(test["event_time"], utc=True).dt.strftime("%Y-%m-%d") == "2025-01-20"]
    assert len(day) > 100
    booster = xgb.Booster()
    booster.load_model(str(setup["model"] / "xgboost.ubj"))
    best = json.loads((setup["model"] / "xgboost.json").read_text())["best_iteration"]
    expected = booster.inplace_predict(
        day[spec["feature_names"]].to_numpy(np.float32), iteration_range=(0, best + 1)
    )
    got = pred.set_index("event_id").loc[day["event_id"], "score"].to_numpy()
    assert np.array_equal(got, np.asarray(expected, dtype=np.float64))
    agg = [c for c in spec["aggregates"]["columns"]]
    assert day[agg[0]].max() > 0  # the day really has entities with earlier events


@pytest.mark.slow
def test_chunked_scoring_gives_identical_rows_and_reruns_identical_bytes(setup, params, tmp_path):
    import pyarrow.parquet as pq

    small = params.predict.model_copy(update={"chunk_rows": 1000})
    kw = {"lake": str(setup["lake"]), "registry": str(setup["registry"]), "start": "2025-01-18",
          "end": "2025-01-19", "params": params, "progress": False}  # fmt: skip
    run_predict(out=str(tmp_path / "a"), cfg=params.predict, **kw)
    run_predict(out=str(tmp_path / "b"), cfg=small, **kw)
    first = {p.relative_to(tmp_path / "b"): p.read_bytes() for p in (tmp_path / "b").rglob("*.parquet")}
    run_predict(out=str(tmp_path / "b"), cfg=small, **kw)  # re-run: same files, same bytes
    assert {
        p.relative_to(tmp_path / "b"): p.read_bytes() for p in (tmp_path / "b").rglob("*.parquet")
    } == first
    for d in ("2025-01-18", "2025-01-19"):
        name = f"date={d}/part-{setup['version']}.parquet"
        whole, chunked = pq.ParquetFile(tmp_path / "a" / name), pq.ParquetFile(tmp_path / "b" / name)
        assert chunked.metadata.num_row_groups > whole.metadata.num_row_groups  # it did score in chunks
        assert chunked.read().equals(whole.read())  # the same rows, order and scores, bit for bit
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["date=2025-01-18", "date=2025-01-19"]


@pytest.mark.slow
def test_without_numba_the_numpy_reference_writes_the_same_predictions(setup, params, tmp_path, monkeypatch):
    """Where numba is not installed, scoring falls back to the numpy transform and aggregates: the same
    file, byte for byte (the compiled kernels change the speed, never a score)."""
    import pipelines.features.build

    small = params.predict.model_copy(update={"chunk_rows": 1500})  # uneven chunks reuse the buffers
    kw = {"lake": str(setup["lake"]), "registry": str(setup["registry"]), "date": "2025-01-19", "cfg": small,
          "params": params, "progress": False}  # fmt: skip
    run_predict(out=str(tmp_path / "compiled"), **kw)
    monkeypatch.setattr(pipelines.features.build, "numba_available", lambda: False)
    run_predict(out=str(tmp_path / "numpy"), **kw)
    name = f"date=2025-01-19/part-{setup['version']}.parquet"
    assert (tmp_path / "compiled" / name).read_bytes() == (tmp_path / "numpy" / name).read_bytes()


@pytest.mark.slow
def test_compiled_trees_and_xgboost_write_the_same_predictions(setup, params, tmp_path, caplog):
    """scorer compiled (pipelines.serving.treescore) and scorer xgboost (Booster.inplace_predict) write the same
    file byte for byte; the summary names the scorer; a compiled scorer that disagrees on the first rows
    of a run is dropped for XGBoost, and the file is still XGBoost's."""
    from pipelines.serving import treescore

    kw = {"lake": str(setup["lake"]), "registry": str(setup["registry"]), "date": "2025-01-19",
          "params": params, "progress": False}  # fmt: skip
    name = f"date=2025-01-19/part-{setup['version']}.parquet"
    files = {}
    for scorer in ("compiled", "xgboost"):
        s = run_predict(
            out=str(tmp_path / scorer), cfg=params.predict.model_copy(update={"scorer": scorer}), **kw
        )
        assert s["scorer"] == scorer
        files[scorer] = (tmp_path / scorer / name).read_bytes()
    assert files["compiled"] == files["xgboost"]
    auto = run_predict(out=str(tmp_path / "auto"), cfg=params.predict, **kw)
    assert params.predict.scorer == "auto" and auto["scorer"] == "compiled"

    # A test double for a fault that cannot be caused otherwise (the scorer is exact): a compiled scorer
    # that passes the probe check at load but is off on real rows.
    real_predict = treescore.CompiledTrees.predict

    def off(self, x, out=None):
        return real_predict(self, x, out) + np.float32(1e-3)

    monkey = pytest.MonkeyPatch()
    monkey.setattr(treescore.CompiledTrees, "verify", lambda self, booster, rng, x=None: 0)
    monkey.setattr(treescore.CompiledTrees, "predict", off)
    try:
        with caplog.at_level("WARNING", logger="pipelines.serving.predict"):
            s = run_predict(out=str(tmp_path / "off"), cfg=params.predict, **kw)
    finally:
        monkey.undo()
    assert s["scorer"].startswith("xgboost (the compiled scores differed")
    assert "using XGBoost" in caplog.text
    assert (tmp_path / "off" / name).read_bytes() == files["xgboost"]
    with pytest.raises(PredictError, match="expected one of"):
        run_predict(out=str(tmp_path / "bad"), cfg=params.predict.model_copy(update={"scorer": "fast"}), **kw)


@pytest.mark.slow
def test_tflite_variant_from_the_registry(setup, params, tmp_path):
    from pipelines.serving.quantize import run_quantize

    with pytest.raises(PredictError, match="no published TFLite model; run `loopline quantize"):
        run_predict(lake=str(setup["lake"]), registry=str(setup["registry"]), out=str(tmp_path / "p"),
                    date="2025-01-20", model="tflite:int8", cfg=params.predict, params=params, progress=False)  # fmt: skip
    loose = params.quantize.gate.model_copy(update={"max_abs_diff": 1.0, "min_agreement": 0.0,
                                                    "slice_min_agreement": 0.0})  # fmt: skip
    cfg = params.quantize.model_copy(update={"variants": ["int8"], "representative_rows": 300, "gate": loose,
                                             "require_behavioural": False})  # fmt: skip
    run_quantize(features=str(setup["features"]), model=str(setup["model"]), out=str(tmp_path / "tfl"),
                 reports=str(tmp_path / "rq"), cfg=cfg, evaluate_cfg=params.evaluate, seed=0,
                 registry=str(setup["registry"]), version="champion")  # fmt: skip
    with pytest.raises(PredictError, match=r"no published 'int4' TFLite model; choose one of tflite:int8 "):
        run_predict(lake=str(setup["lake"]), registry=str(setup["registry"]), out=str(tmp_path / "p"),
                    date="2025-01-20", model="tflite:int4", cfg=params.predict, params=params, progress=False)  # fmt: skip
    s = run_predict(lake=str(setup["lake"]), registry=str(setup["registry"]), out=str(tmp_path / "p"),
                    date="2025-01-20", model="tflite:int8", cfg=params.predict, params=params, progress=False)  # fmt: skip
    pred = pd.read_parquet(
        tmp_path / "p" / "date=2025-01-20" / f"part-{setup['version']}-tflite-int8.parquet"
    )
    assert s["model"] == "tflite:int8" and len(pred) == 2000 and (pred["model"] == "tflite:int8").all()
    assert pred["score"].between(0, 1).all() and pred["score"].nunique() > 50


@pytest.mark.slow
def test_predict_cli_without_champion_exits_2_with_the_fix(synthetic_lake, tmp_path):
    import subprocess

    root = Path(__file__).resolve().parents[2]
    r = subprocess.run(
        [str(root / ".venv" / "bin" / "loopline"), "predict", "--lake", str(synthetic_lake / "lake"),
         "--registry", str(tmp_path / "reg"), "--out", str(tmp_path / "p")],
        capture_output=True, text=True, cwd=root, timeout=300,
    )  # fmt: skip
    assert r.returncode == 2
    assert f"registry {tmp_path / 'reg'} has no champion yet" in r.stderr and "loopline register" in r.stderr
    assert not (tmp_path / "p").exists()


@pytest.mark.slow
def test_predict_cli_scorer_option_overrides_params(setup, tmp_path):
    from typer.testing import CliRunner

    from pipelines.cli import app

    root = Path(__file__).resolve().parents[2]
    args = ["predict", "--lake", str(setup["lake"]), "--registry", str(setup["registry"]), "--date", "2025-01-18",
            "--params", str(root / "params.yaml")]  # fmt: skip
    ok = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "p"), "--scorer", "xgboost",
                                  "--summary", str(tmp_path / "s.json")])  # fmt: skip
    assert ok.exit_code == 0, ok.output
    assert (
        "(scorer xgboost)" in ok.output
        and json.loads((tmp_path / "s.json").read_text())["scorer"] == "xgboost"
    )
    bad = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "q"), "--scorer", "fast"])
    assert bad.exit_code == 2 and "scorer 'fast'" in bad.output and "expected one of" in bad.output
