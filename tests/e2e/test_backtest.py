"""The backtest on a small synthetic timeline with its scheduled drift: every strategy scores every period,
CPU is recorded, the policy's decision fires at the onset and not before it, and a model that is never
retrained degrades after the drift while retrained ones recover."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pytest

ONSET = dt.date(2025, 2, 12)  # a period start: warmup 21 days from 2025-01-01 -> periods from 01-22, weekly


@pytest.fixture(scope="module")
def result(tmp_path_factory, params):
    from pipelines.data.etl import run_etl
    from pipelines.data.generate import generate_landing
    from pipelines.lifecycle.backtest import load_timeline, run_backtest, write_outputs

    base = tmp_path_factory.mktemp("backtest")
    syn = params.synthetic.model_copy(
        update={"days": 70, "rows_per_day": 1200, "clean_label_days": 5, "chargeback_delay_days": 2.0,
                "drift": params.synthetic.drift.model_copy(update={"date": ONSET})}
    )  # fmt: skip
    p = params.model_copy(update={"synthetic": syn})
    generate_landing(syn, out=str(base / "landing"), seed=p.seed, progress=False)
    run_etl(landing=str(base / "landing"), lake=str(base / "lake"), quarantine=str(base / "q"), params=p,
            progress=False)  # fmt: skip
    xgb = p.train.xgboost.model_copy(
        update={"num_boost_round": 80, "early_stopping_rounds": 10, "nthread": 2}
    )
    bt = p.retrain.backtest.model_copy(
        update={"warmup_days": 21, "holdout_days": 3, "label_maturity_days": 5, "train_days": 14}
    )
    p = p.model_copy(
        update={
            "train": p.train.model_copy(update={"xgboost": xgb}),
            "retrain": p.retrain.model_copy(update={"backtest": bt}),
        }
    )
    tl = load_timeline(str(base / "lake"), p)
    r = run_backtest(tl, p, periods="weekly", progress=False)
    files = write_outputs(str(base / "out"), r)
    return r, files


@pytest.mark.slow
def test_every_strategy_scores_every_period_and_costs_are_recorded(result) -> None:
    r, files = result
    rows = pd.DataFrame(r["rows"])
    n = r["settings"]["n_periods"]
    assert n >= 6
    for name in ("never", "stateless", "stateful", "stateful_refit", "policy"):
        d = rows[rows["strategy"] == name]
        assert sorted(d["period"]) == list(range(n)), name
        assert d["roc_auc"].notna().all() and d["pr_auc"].notna().all()
    assert (rows.loc[rows["strategy"] == "stateless", "train_cpu"] > 0).all()
    assert (rows.loc[rows["strategy"] == "never", "train_cpu"] == 0).all()
    assert (rows.loc[rows["strategy"] == "policy", "check_cpu"] > 0).all()
    assert (rows.loc[rows["strategy"] != "policy", "check_cpu"] == 0).all()
    s = r["summary"]["strategies"]
    assert s["stateless"]["retrains"] == n and s["never"]["retrains"] == 0
    assert s["stateful"]["final_trees"] > s["never"]["final_trees"]  # continuation adds trees
    assert s["policy"]["cpu"] < s["stateless"]["cpu"]
    assert json.loads(Path(files["json"]).read_text())["summary"] == json.loads(json.dumps(r["summary"]))
    assert len(pd.read_csv(files["csv"])) == 5 * n
    assert Path(files["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_decision_fires_at_the_onset_and_not_before(result) -> None:
    det = result[0]["summary"]["detection"]
    assert det["onset_period"] is not None and det["onset_period"] >= 2  # stable periods before the onset
    assert det["fired_before_onset"] == []
    assert det["within_one_period"], det


@pytest.mark.slow
def test_never_retraining_degrades_after_the_drift(result) -> None:
    r = result[0]
    rows = pd.DataFrame(r["rows"])
    k = r["summary"]["detection"]["onset_period"]
    late = rows[rows["period"] >= k + 2]  # retrained models have seen post-drift labels by then
    mean = late.groupby("strategy")["roc_auc"].mean()
    best_retrained = max(mean["stateless"], mean["stateful_refit"], mean["policy"])
    assert mean["never"] < best_retrained - 0.01, mean.to_dict()
