"""Test support for the evaluation and registry tests: a small features folder built by the real feature
stage from the session's synthetic lake, and tiny real XGBoost candidates written in the model-directory
layout of pipelines.training.models (xgboost.ubj + xgboost.json, baselines.json, spec.json).

Not a conftest: the tests import it, so the fixtures stay next to the tests that use them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines.core import storage
from pipelines.core.config import EvaluateConfig, Params

# day index (0-based) ranges of the 20-day session lake
TRAIN_DAYS, VALID_DAYS, TEST_DAYS = range(0, 12), range(12, 15), range(15, 20)
BASELINE_COLUMNS = ["amount", "distance_km", "device_age_days", "channel", "country", "merchant_category"]


def build_features(
    lake: Path, out: Path, params: Params, *, features_update: dict[str, Any] | None = None
) -> Path:
    """Time-split the lake's labelled rows into train/valid/test and run the real feature stage on them."""
    from pipelines.data.etl import lake_dates, read_partition
    from pipelines.features.build import run_features

    dates = lake_dates(str(lake))
    labeled = out / "labeled"
    for name, days in (("train", TRAIN_DAYS), ("valid", VALID_DAYS), ("test", TEST_DAYS)):
        frames = [read_partition(str(lake), dates[d]).to_pandas() for d in days]
        df = pd.concat(frames, ignore_index=True)
        df = df[df["label"].notna()].reset_index(drop=True)
        df["label_source"] = "natural"
        df["label_weight"] = 1.0
        df["sample_weight"] = 1.0
        df["split"] = name
        storage.write_parquet(labeled / f"{name}.parquet", pa.Table.from_pandas(df, preserve_index=False))
    p = params
    if features_update:
        p = params.model_copy(update={"features": params.features.model_copy(update=features_update)})
    run_features(
        labeled=str(labeled), lake=str(lake), out=str(out / "features"), reports=str(out / "rep"), params=p
    )
    return out / "features"


def make_candidate(
    features: Path,
    out: Path,
    *,
    shuffle_labels: bool = False,
    seed: int = 0,
    rounds: int = 80,
    max_depth: int = 4,
    train_fraction: float = 1.0,
) -> Path:
    """Train a small XGBoost (and fit the baselines) on the features folder; write a model directory."""
    import xgboost as xgb

    from pipelines.training.baselines import fit_baselines

    spec = json.loads((features / "spec.json").read_text())
    names = list(spec["feature_names"])
    train = pd.read_parquet(features / "train.parquet")
    valid = pd.read_parquet(features / "valid.parquet")
    rng = np.random.default_rng(seed)
    if train_fraction < 1:
        train = train.sample(frac=train_fraction, random_state=seed).reset_index(drop=True)
    y = train["label"].astype(int).to_numpy()
    if shuffle_labels:
        y = rng.permutation(y)  # the deliberately bad candidate: labels unrelated to the inputs
    dtr = xgb.DMatrix(train[names].to_numpy(np.float32), label=y, feature_names=names)
    dva = xgb.DMatrix(
        valid[names].to_numpy(np.float32), label=valid["label"].astype(int), feature_names=names
    )
    booster = xgb.train(
        {"objective": "binary:logistic", "tree_method": "hist", "max_depth": max_depth, "eta": 0.1,
         "eval_metric": "aucpr", "seed": seed, "nthread": 2},
        dtr, num_boost_round=rounds, evals=[(dva, "valid")], early_stopping_rounds=20, verbose_eval=False,
    )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "xgboost.ubj").write_bytes(bytes(booster.save_raw("ubj")))
    best = int(getattr(booster, "best_iteration", rounds - 1))
    (out / "xgboost.json").write_text(json.dumps({"best_iteration": best, "feature_names": names}))
    base = fit_baselines(train, y, np.ones(len(y)), columns=BASELINE_COLUMNS, seed=seed)
    (out / "baselines.json").write_text(json.dumps(base))
    shutil.copy(features / "spec.json", out / "spec.json")
    return out


def test_evaluate_config(**update: Any) -> EvaluateConfig:
    """The params defaults with behavioural tests sized for the small test data (xgboost only)."""
    from pipelines.core.config import load_params

    cfg = load_params(Path(__file__).resolve().parents[2] / "params.yaml").evaluate
    beh = cfg.behavioural.model_copy(update={"models": ["xgboost"], "max_rows": 2000})
    return cfg.model_copy(update={"behavioural": beh, "min_slice_size": 300, **update})


test_evaluate_config.__test__ = False  # type: ignore[attr-defined]  # a helper, not a pytest test


def minimal_evaluation(pr_auc: float = 0.4) -> dict[str, Any]:
    """A small but complete evaluation.json document (for registry tests that need no real model)."""
    row = {"column": "channel", "value": "pos", "rows": 10, "positives": 2, "metric": 0.8, "delta": 0.0,
           "eligible": True, "flagged": False}  # fmt: skip
    return {
        "primary": "xgboost",
        "spec_digest": None,
        "data_window": {"train": None, "valid": None, "test": {"start": "a", "end": "b"}},
        "test": {"rows": 10, "positives": 2, "positive_rate": 0.2},
        "settings": {"precision_target": 0.9, "ece_bins": 10, "ece_strategy": "uniform"},
        "metrics": {"xgboost": {"pr_auc": pr_auc, "roc_auc": 0.8}, "baseline_zero_rule": {"pr_auc": 0.2, "roc_auc": 0.5}},
        "calibration": {"method": "none", "params": {}},
        "slices": {"xgboost": {"metric": "roc_auc", "whole": 0.8, "margin": 0.05, "min_size": 1, "min_positives": 1,
                               "rows": [row], "flagged": []}},
        "behavioural": {"xgboost": {"passed": True, "rows": 10, "tests": []}},
        "champion": None,
        "summary": {"primary_pr_auc": pr_auc},
    }  # fmt: skip
