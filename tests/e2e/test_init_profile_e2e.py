"""Bring your own data, end to end: `loopline init` on a CSV the project has never seen, then
`loopline run --profile` through evaluation in a copy of the project; and the hotel profile from the real
data set. Both run real DVC, real stages, no code written for the data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from real_datasets import copy_project

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("dvc_e2e")]


_copy_project = copy_project


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    env.update(DVC_NO_ANALYTICS="1", GX_ANALYTICS_ENABLED="false", TF_CPP_MIN_LOG_LEVEL="2")
    return env


def _run(cmd: list[str], cwd: Path, timeout: int = 1500) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


def _unseen_csv(path: Path, *, days: int = 45, per_day: int = 140, seed: int = 11) -> None:
    """Online orders: a day-first date column, categoricals, missing values, one leaky column
    (`risk_score_final`, a score written once the return was known) and a return label yes/no."""
    rng = np.random.default_rng(seed)
    n = days * per_day
    t = pd.Timestamp("2024-03-01") + pd.to_timedelta(np.sort(rng.integers(0, days * 86400, n)), unit="s")
    region = rng.choice(["north", "south", "east", "west", "islands"], n, p=[0.3, 0.25, 0.2, 0.2, 0.05])
    plan = rng.choice(["basic", "plus", "pro"], n)
    price = np.round(rng.lognormal(3.5, 0.8, n), 2)
    qty = rng.integers(1, 9, n)
    logit = (
        -2.0 + 1.2 * (region == "islands") + 0.015 * (price - 30) + 0.8 * (plan == "basic") + 0.2 * (qty > 5)
    )
    y = rng.random(n) < 1 / (1 + np.exp(-logit))
    df = pd.DataFrame(
        {
            "order_ref": [f"o{i:06d}" for i in range(n)],
            "Customer ID": [f"c{k}" for k in rng.integers(0, 400, n)],
            "ordered at": t.strftime("%d/%m/%Y %H:%M"),
            "region": region,
            "product": [f"P{k:03d}" for k in rng.integers(0, 150, n)],
            "price": price,
            "qty": qty,
            "plan": plan,
            "risk_score_final": np.where(y, rng.normal(0.9, 0.05, n), rng.normal(0.2, 0.08, n)).round(3),
            "returned": np.where(y, "yes", "no"),
        }
    )
    df.loc[rng.random(n) < 0.08, "price"] = np.nan
    df.loc[rng.random(n) < 0.05, "plan"] = None
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)


def test_init_then_the_whole_pipeline_through_evaluation(tmp_path: Path) -> None:
    project = tmp_path / "project"
    _copy_project(project)
    landing = tmp_path / "my_orders"
    _unseen_csv(landing / "orders.csv")

    init = _run([str(BIN / "loopline"), "init", "--from", str(landing / "orders.csv"), "--label", "returned",
                 "--time", "ordered at", "--positive", "yes", "--name", "orders"], project)  # fmt: skip
    assert init.returncode == 0, init.stdout + init.stderr
    assert "WARNING [DROPPED] risk_score_final: predicts_label" in init.stdout
    profile = yaml.safe_load((project / "profiles" / "orders.yaml").read_text())
    assert profile["source"]["generic"]["drop"] == ["risk_score_final"]
    assert profile["source"]["landing"] == str(landing)
    assert "risk_score_final" not in [c["name"] for c in profile["schema"]["columns"]]
    warnings = json.loads((project / "profiles" / "orders.warnings.json").read_text())
    assert [w["column"] for w in warnings["warnings"] if w["strong"]] == ["risk_score_final"]

    t0 = time.perf_counter()
    run = _run([str(BIN / "loopline"), "run", "--profile", "orders", "--until", "predict"], project)
    elapsed = time.perf_counter() - t0
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    ws = project / "runs" / "orders"
    lock = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]
    assert {"etl", "sample", "label", "features", "tune", "train", "evaluate", "register", "predict"} <= set(
        lock
    )
    # the profile leaves predict to the defaults; the workspace's params.yaml carries them for DVC
    assert "predict" not in profile and "predict" in yaml.safe_load((ws / "params.yaml").read_text())
    scored = json.loads((ws / "reports" / "predict" / "summary.json").read_text())
    assert scored.get("skipped") or (scored["rows"] > 0 and scored["scorer"] == "compiled"), scored
    assert "generate" not in lock
    manifest = json.loads((ws / "reports" / "etl" / "manifest.json").read_text())
    assert manifest["totals"]["rows_read"] == 45 * 140 == manifest["totals"]["rows_loaded"]
    features = json.loads((ws / "reports" / "features" / "report.json").read_text())
    assert "risk_score_final" not in json.dumps(features["leakage"]["single_auc"])
    metrics = json.loads((ws / "reports" / "evaluation" / "metrics.json").read_text())
    assert metrics["primary_roc_auc"] > 0.6, metrics  # real signal learnt from region/plan/price
    assert metrics["test"]["xgboost"]["pr_auc"] > metrics["test"]["baseline_random"]["pr_auc"]
    index = (ws / "reports" / "index.html").read_text()
    assert "Evaluation report" in index and "Gate decision" in index and "not run" in index
    assert f"Run report {ws / 'reports' / 'index.html'}" in run.stdout
    print(f"init + run through predict: {elapsed:.0f} s, test ROC-AUC {metrics['primary_roc_auc']:.3f}, "
          f"predict: {scored.get('scorer', 'skipped')}")  # fmt: skip

    # The workspace is a plain DVC project: `dvc repro` there finds everything up to date ...
    again = _run([str(BIN / "dvc"), "repro", "evaluate"], ws)
    assert again.returncode == 0 and "Data and pipelines are up to date" in again.stdout, (
        again.stdout + again.stderr
    )
    # ... and the inferred validation bounds pass on the data they were inferred from.
    val = _run([str(BIN / "loopline"), "run", "--profile", "orders", "--until", "validate"], project)
    assert val.returncode == 0, val.stdout[-3000:] + val.stderr[-3000:]
    summary = json.loads((ws / "reports" / "validation" / "summary.json").read_text())
    assert summary["critical_failures"] == 0


@pytest.mark.realdata
def test_hotel_profile_end_to_end_through_evaluation(tmp_path: Path, hotel_zip: Path) -> None:
    project = tmp_path / "project"
    _copy_project(project)
    t0 = time.perf_counter()
    run = _run([str(BIN / "loopline"), "run", "--profile", "hotel", "--until", "evaluate",
                "--landing", str(hotel_zip.parent)], project)  # fmt: skip
    elapsed = time.perf_counter() - t0
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    ws = project / "runs" / "hotel"
    manifest = json.loads((ws / "reports" / "etl" / "manifest.json").read_text())
    t = manifest["totals"]
    assert t["rows_read"] == 119_390 == t["rows_loaded"] + t["rows_quarantined"]
    metrics = json.loads((ws / "reports" / "evaluation" / "metrics.json").read_text())
    assert metrics["primary_roc_auc"] > 0.75, metrics
    assert metrics["test"]["xgboost"]["pr_auc"] > metrics["test"]["baseline_heuristic"]["pr_auc"]
    print(f"hotel through evaluate: {elapsed:.0f} s, test ROC-AUC {metrics['primary_roc_auc']:.3f}, "
          f"PR-AUC {metrics['primary_pr_auc']:.3f}")  # fmt: skip


def test_a_single_daily_series_runs_through_evaluation_without_an_entity(tmp_path: Path) -> None:
    """A weather-like daily series (one row a day, no id, `NA` for missing values): init once stopped at
    "no entity column found"; now the whole pipeline runs on it with no edits (a constant entity, no
    per-entity windows)."""
    project = tmp_path / "project"
    _copy_project(project)
    rng = np.random.default_rng(3)
    days = 1100
    t = pd.date_range("2012-01-01", periods=days, freq="D")
    season = np.sin(2 * np.pi * np.arange(days) / 365.25)
    humidity = np.clip(60 + 20 * -season + rng.normal(0, 10, days), 5, 100)
    rain = rng.random(days) < 1 / (1 + np.exp(-(humidity - 65) / 8))
    temp = np.round(12 + 8 * season + rng.normal(0, 3, days), 1).astype(object)
    temp[rng.random(days) < 0.03] = "NA"
    land = tmp_path / "weather"
    land.mkdir()
    pd.DataFrame({"date": t.strftime("%Y-%m-%d"), "temp_max": temp, "humidity": np.round(humidity, 1),
                  "rain_tomorrow": np.where(rain, "yes", "no")}).to_csv(land / "seattle.csv", index=False)  # fmt: skip
    init = _run([str(BIN / "loopline"), "init", "--from", str(land / "seattle.csv"), "--label", "rain_tomorrow",
                 "--time", "date", "--positive", "yes", "--name", "weather"], project)  # fmt: skip
    assert init.returncode == 0, init.stdout + init.stderr
    profile = yaml.safe_load((project / "profiles" / "weather.yaml").read_text())
    assert profile["schema"]["entity_key"] == "series"
    assert {c["name"]: c["type"] for c in profile["schema"]["columns"]}["temp_max"] == "float"
    run = _run([str(BIN / "loopline"), "run", "--profile", "weather", "--until", "evaluate"], project)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    ws = project / "runs" / "weather"
    metrics = json.loads((ws / "reports" / "evaluation" / "metrics.json").read_text())
    assert metrics["primary_roc_auc"] > 0.65, metrics  # humidity carries the signal
