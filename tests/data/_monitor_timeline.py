"""Builds the synthetic monitoring timeline for tests/data/test_monitor_synthetic.py (no test in here).

50 days x 2,000 rows from 2025-01-01 (drift from 2025-02-10), ETL'd by the real stages; an XGBoost model on
the real feature spec (no aggregates) fitted on 2025-01-01..14 with the generator's eventual labels (a quick
champion, not the training stage), evaluated on 01-15..21, registered and promoted in a real registry;
every day scored into predictions/date=D/part-<version>.parquet as the batch-prediction stage writes them.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

TRAIN = ("2025-01-01", "2025-01-14")
HOLDOUT = ("2025-01-15", "2025-01-21")


def _frame(lake: str, start: str, end: str) -> pd.DataFrame:
    from pipelines.data.etl import read_partition

    days = pd.date_range(start, end, freq="D")
    return pd.concat(
        [read_partition(lake, d.date().isoformat()).to_pandas() for d in days], ignore_index=True
    )


def build_timeline(base: Path, params, *, days: int = 50, rows_per_day: int = 2000) -> dict:
    import xgboost as xgb

    from pipelines.core import metrics as M
    from pipelines.data.etl import lake_dates, read_partition, run_etl
    from pipelines.features.build import fit_spec, transform_columns
    from pipelines.edge.featurespec import dumps_spec
    from pipelines.data.generate import generate_landing
    from pipelines.registry.store import Registry

    cfg = params.synthetic.model_copy(update={"days": days, "rows_per_day": rows_per_day})
    generate_landing(cfg, out=str(base / "landing"), seed=params.seed, progress=False)
    lake = str(base / "lake")
    run_etl(
        landing=str(base / "landing"),
        lake=lake,
        quarantine=str(base / "quarantine"),
        params=params,
        progress=False,
    )
    train = _frame(lake, *TRAIN)
    train = train[train["label"].notna()]
    hold = _frame(lake, *HOLDOUT)
    hold = hold[hold["label"].notna()]
    spec = fit_spec(train, cfg=params.features.model_copy(update={"crosses": []}), schema=params.schema)
    names = list(spec["feature_names"])
    dtr = xgb.DMatrix(transform_columns(spec, train), label=train["label"].astype(int), feature_names=names)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 4, "eta": 0.1, "nthread": 2, "seed": 0},
        dtr,
        num_boost_round=80,
    )
    p_hold = booster.predict(xgb.DMatrix(transform_columns(spec, hold), feature_names=names))
    y_hold = hold["label"].astype(int).to_numpy()
    offline = M.binary_metrics(y_hold, p_hold, ece_bins=10, ece_strategy="quantile")
    model_dir, ev_dir = base / "candidate", base / "evaluation"
    model_dir.mkdir()
    ev_dir.mkdir()
    (model_dir / "spec.json").write_text(dumps_spec(spec))
    (model_dir / "xgboost.ubj").write_bytes(bytes(booster.save_raw("ubj")))
    (model_dir / "xgboost.json").write_text(json.dumps({"best_iteration": 79, "feature_names": names}))
    t0 = pd.Timestamp(TRAIN[0], tz="UTC").isoformat()
    window = {
        "train": {"start": t0, "end": pd.Timestamp(TRAIN[1] + "T23:59:59", tz="UTC").isoformat()},
        "valid": None,
        "test": {
            "start": pd.Timestamp(HOLDOUT[0], tz="UTC").isoformat(),
            "end": pd.Timestamp(HOLDOUT[1] + "T23:59:59", tz="UTC").isoformat(),
        },
    }
    evaluation = {
        "primary": "xgboost",
        "data_window": window,
        "metrics": {"xgboost": offline},
        "test": {"rows": len(y_hold), "positives": int(y_hold.sum()), "positive_rate": float(y_hold.mean())},
        "settings": {"precision_target": 0.9},
        "slices": {
            "xgboost": {
                "metric": "roc_auc",
                "whole": offline["roc_auc"],
                "min_size": 500,
                "min_positives": 10,
                "margin": 0.05,
                "rows": [],
                "flagged": [],
            }
        },
    }
    (ev_dir / "evaluation.json").write_text(json.dumps(evaluation))
    (ev_dir / "metrics.json").write_text(json.dumps({"summary": {"primary_pr_auc": offline["pr_auc"]}}))
    (ev_dir / "report.html").write_text("<html></html>")
    reg = Registry(str(base / "registry"))
    version = reg.register(
        model_dir=str(model_dir),
        evaluation_dir=str(ev_dir),
        created_at=dt.datetime(2025, 1, 22, tzinfo=dt.UTC),
    )
    reg.promote(version, force=True, reason="test champion", at=dt.datetime(2025, 1, 22, tzinfo=dt.UTC))
    preds = base / "predictions"
    for date in lake_dates(lake):
        t = read_partition(lake, date).to_pandas()
        score = booster.predict(xgb.DMatrix(transform_columns(spec, t), feature_names=names))
        out = pa.table(
            {
                "event_id": t["event_id"],
                "event_time": t["event_time"],
                params.schema.entity_key: t[params.schema.entity_key],
                "score": np.asarray(score, dtype=np.float64),
                "model_version": [version] * len(t),
                "spec_digest": [spec["digest"]] * len(t),
            }
        )
        (preds / f"date={date}").mkdir(parents=True)
        import pyarrow.parquet as pq

        pq.write_table(out, preds / f"date={date}" / f"part-{version}.parquet")
    return {
        "lake": lake,
        "predictions": str(preds),
        "registry": str(base / "registry"),
        "version": version,
        "offline": offline,
    }
