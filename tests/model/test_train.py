"""The training stage on a small features directory with a known signal (tests/synthetic_features.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from synthetic_features import SCHEMA, make_features, write_features_dir

from pipelines.training.baselines import average_precision, baselines_from_dict, fit_baselines
from pipelines.training.models import feature_matrix, labels, load_scorers, train_mask, weights

pytestmark = pytest.mark.slow


def _small(params, **imbalance):
    """Params with a small, fast Keras model and a generous XGBoost budget (so early stopping bites)."""
    train = params.train.model_copy(
        update={
            "keras": params.train.keras.model_copy(
                update={"hidden_units": [32, 16], "epochs": 4, "batch_size": 256, "patience": 2}
            ),
            "xgboost": params.train.xgboost.model_copy(
                update={"num_boost_round": 300, "early_stopping_rounds": 10}
            ),
            "imbalance": params.train.imbalance.model_copy(update=imbalance),
        }
    )
    return params.model_copy(update={"train": train, "schema_": SCHEMA})


@pytest.fixture(scope="module")
def trained(tmp_path_factory, params):
    from pipelines.training.train import run_train

    base = tmp_path_factory.mktemp("train")
    features = write_features_dir(base / "features", n_train=8000, n_valid=4000, n_test=4000, seed=3)
    metrics = run_train(
        features=str(features),
        best_params=str(base / "absent.json"),
        out=str(base / "model"),
        reports=str(base / "reports"),
        params=_small(params),
    )
    return base, metrics


def test_model_directory_holds_every_artifact_and_no_pickle(trained):
    base, metrics = trained
    files = sorted(p.name for p in (base / "model").iterdir())
    assert files == [
        "baselines.json",
        "keras.json",
        "keras.keras",
        "spec.json",
        "train_metrics.json",
        "xgboost.json",
        "xgboost.ubj",
    ]
    assert not list(base.rglob("*.pkl")) and not list(base.rglob("*.pickle"))
    assert metrics["xgboost"]["params_source"] == "defaults"  # best_params.json absent: params defaults
    assert (base / "reports" / "metrics.json").exists()
    assert (base / "reports" / "dvclive" / "plots" / "metrics").is_dir()


def test_xgboost_ubj_round_trip_respects_best_iteration(trained):
    import xgboost as xgb

    base, _ = trained
    meta = json.loads((base / "model" / "xgboost.json").read_text())
    booster = xgb.Booster()
    booster.load_model(str(base / "model" / "xgboost.ubj"))
    assert meta["best_iteration"] < booster.num_boosted_rounds() - 1, (
        "early stopping should have kept extra rounds"
    )
    test = __import__("pandas").read_parquet(base / "features" / "test.parquet")
    scorer = load_scorers(str(base / "model"))["xgboost"]
    p = scorer.predict(test)
    dm = xgb.DMatrix(test[meta["feature_names"]].to_numpy(np.float32), feature_names=meta["feature_names"])
    expected = booster.predict(dm, iteration_range=(0, meta["best_iteration"] + 1))
    all_trees = booster.predict(dm)
    np.testing.assert_array_equal(p, expected.astype(np.float64))
    assert not np.allclose(p, all_trees), "prediction must stop at the best iteration, not use every tree"
    # the raw inputs alone give the same scores (the spec is applied on the fly)
    raw = test.drop(columns=meta["feature_names"])
    np.testing.assert_allclose(scorer.predict(raw), p, rtol=1e-6)


def test_keras_round_trip_and_distillation_report(trained):
    base, metrics = trained
    from pipelines.training.models import KerasScorer, load_spec

    test = __import__("pandas").read_parquet(base / "features" / "test.parquet")
    loaded = load_scorers(str(base / "model"))["keras"]
    again = KerasScorer.from_file(str(base / "model" / "keras.keras"), spec=load_spec(str(base / "model")))
    p = loaded.predict(test)
    assert p.shape == (len(test),) and np.all((p >= 0) & (p <= 1))
    np.testing.assert_allclose(again.predict(test), p, rtol=1e-6, atol=1e-7)
    assert metrics["valid"]["keras"]["pr_auc"] > 2 * metrics["valid"]["baseline_zero_rule"]["pr_auc"]
    meta = json.loads((base / "model" / "keras.json").read_text())
    d = meta["distillation"]
    assert d["enabled"] and {"valid_pr_auc_with", "valid_pr_auc_without", "helps"} <= set(d)
    assert d["helps"] == (d["valid_pr_auc_with"] > d["valid_pr_auc_without"])
    assert meta["architecture"]["hidden_units"] == [32, 16]
    assert set(meta["history"]) == {"distilled", "plain"}


def test_xgboost_beats_heuristic_beats_zero_rule_on_test(trained):
    base, _ = trained
    test = __import__("pandas").read_parquet(base / "features" / "test.parquet")
    test = test[train_mask(test)]
    y = labels(test)
    scorers = load_scorers(str(base / "model"))
    assert set(scorers) == {"xgboost", "keras", "baseline_random", "baseline_zero_rule", "baseline_heuristic"}
    ap = {name: average_precision(y, s.predict(test)) for name, s in scorers.items()}
    assert ap["xgboost"] > ap["baseline_heuristic"] > ap["baseline_zero_rule"], ap
    from sklearn.metrics import roc_auc_score

    assert abs(roc_auc_score(y, scorers["baseline_random"].predict(test)) - 0.5) < 0.08
    np.testing.assert_allclose(scorers["baseline_zero_rule"].predict(test), y.mean(), atol=0.03)


def test_baselines_are_plain_parameters_and_deterministic():
    frames, _ = make_features(n_train=3000, seed=5)
    tr = frames["train"][train_mask(frames["train"])]
    doc = fit_baselines(tr, labels(tr), weights(tr), columns=["channel", "amount", "distance_km"], seed=7)
    assert json.loads(json.dumps(doc)) == doc  # JSON-serialisable, no objects
    a, b = baselines_from_dict(doc), baselines_from_dict(json.loads(json.dumps(doc)))
    te = frames["test"]
    for name in a:
        np.testing.assert_array_equal(a[name].predict(te), b[name].predict(te))
    # random scores depend on event_id, not on row order
    shuffled = te.sample(frac=1.0, random_state=1)
    np.testing.assert_array_equal(
        a["baseline_random"].predict(shuffled), a["baseline_random"].predict(te.loc[shuffled.index])
    )
    assert doc["baseline_heuristic"]["column"] in {"channel", "amount", "distance_km"}
    with pytest.raises(ValueError, match="not in the train frame"):
        fit_baselines(tr, labels(tr), weights(tr), columns=["nope"], seed=7)


def test_imbalance_resampling_touches_train_only(params):
    from pipelines.training.train import train_models

    frames, spec = make_features(n_train=4000, n_valid=2000, n_test=10, seed=11)
    p = _small(params, resample="over", resample_ratio=0.5)
    result = train_models(
        frames["train"], frames["valid"], spec=spec, cfg=p.train, schema=SCHEMA, seed=1, train_keras=False
    )
    rows = result.metrics["rows"]
    n_train = int(train_mask(frames["train"]).sum())
    assert rows["train_labelled"] == n_train
    assert rows["train_fit"] > n_train  # oversampled minority rows added to train
    assert rows["valid_labelled"] == int(train_mask(frames["valid"]).sum())  # valid untouched
    # the oversampled train mix is what the baseline rate is NOT fitted on: baselines see natural train rows
    assert result.baselines["baseline_zero_rule"]["rate"] == pytest.approx(
        labels(frames["train"][train_mask(frames["train"])]).mean()
    )


def test_tuned_parameters_override_defaults_and_unknown_keys_fail(params):
    from pipelines.training.train import resolve_xgb_params

    merged, source = resolve_xgb_params(
        params.train.xgboost.params, {"xgboost": {"max_depth": 3}, "value": 0.5}
    )
    assert source == "tuned" and merged["max_depth"] == 3
    assert merged["learning_rate"] == params.train.xgboost.params.learning_rate
    assert resolve_xgb_params(params.train.xgboost.params, None)[1] == "defaults"
    with pytest.raises(ValueError, match="unknown XGBoost parameters"):
        resolve_xgb_params(params.train.xgboost.params, {"xgboost": {"max_dept": 3}})


def test_feature_matrix_uses_spec_order():
    frames, spec = make_features(n_train=500, seed=2)
    df = frames["valid"]
    shuffled = df[list(reversed(df.columns))]
    np.testing.assert_array_equal(
        feature_matrix(shuffled, spec), df[spec["feature_names"]].to_numpy(np.float32)
    )
