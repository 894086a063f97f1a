"""The synthetic source: deterministic, realistic enough to exercise the book, drift on its date."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from pipelines.core.config import SyntheticConfig
from pipelines.data.sources.synthetic import LANDING_COLUMNS, generate_day, make_population, to_csv_bytes

CFG = SyntheticConfig(rows_per_day=5000)


@pytest.fixture(scope="module")
def pop():
    return make_population(CFG, seed=7)


@pytest.fixture(scope="module")
def month(pop) -> pd.DataFrame:
    days = [CFG.start_date + dt.timedelta(days=i) for i in range(30)]
    return pd.concat([generate_day(CFG, pop, d, seed=7)[0] for d in days], ignore_index=True)


def test_same_seed_same_bytes_and_days_are_independent(pop) -> None:
    day = dt.date(2025, 1, 9)
    a = to_csv_bytes(generate_day(CFG, pop, day, seed=7)[0])
    b = to_csv_bytes(generate_day(CFG, make_population(CFG, seed=7), day, seed=7)[0])
    c = to_csv_bytes(generate_day(CFG, pop, day, seed=8)[0])
    assert a == b
    assert a != c


def test_columns_rows_and_fraud_rate(month: pd.DataFrame) -> None:
    assert list(month.columns) == LANDING_COLUMNS
    assert len(month) == 30 * CFG.rows_per_day
    assert month["event_id"].is_unique
    rate = month["label"].astype(float).mean()
    assert 0.01 <= rate <= 0.02, rate


def test_card_histories_support_velocity_features(month: pd.DataFrame) -> None:
    per_card = month.groupby("card_id").size()
    assert per_card.quantile(0.9) >= 15  # active cards have long histories
    assert month["merchant_id"].nunique() > 2000  # high cardinality
    assert month["merchant_category"].nunique() == 12


def test_bursts_make_velocity_predictive(month: pd.DataFrame) -> None:
    m = month.sort_values("event_time")
    prev = m.groupby("card_id")["event_time"].shift()
    fast = (m["event_time"] - prev) < pd.Timedelta(hours=1)
    lab = m["label"].astype(float)
    assert lab[fast].mean() > 3 * lab[~fast].mean()


def test_missingness_mechanisms(month: pd.DataFrame) -> None:
    lab = month["label"].astype(float)
    dist_missing = month["distance_km"].isna()
    assert 0.02 < dist_missing.mean() < 0.04
    # MCAR: missing distance says nothing about fraud
    assert abs(lab[dist_missing].mean() - lab[~dist_missing].mean()) < 0.01
    # MNAR: device age hides exactly when the device is new, which is when fraud is likelier
    dev_missing = month["device_age_days"].isna()
    assert lab[dev_missing].mean() > 3 * lab[~dev_missing].mean()
    assert month.loc[~dev_missing, "device_age_days"].lt(7).mean() < 0.06


def test_labels_mature_after_the_event(month: pd.DataFrame) -> None:
    known = month["label"].notna()
    delay = (month.loc[known, "label_time"] - month.loc[known, "event_time"]).dt.total_seconds() / 86400
    assert (delay > 0).all()
    assert delay.max() <= CFG.clean_label_days + 1e-9
    assert (delay[month.loc[known, "label"] == 0] == CFG.clean_label_days).all()
    assert 0.005 < (~known).mean() < 0.02
    assert month.loc[~known, "label_time"].isna().all()


def test_drift_on_its_date(pop) -> None:
    before, _ = generate_day(CFG, pop, CFG.drift.date - dt.timedelta(days=1), seed=7)
    after, _ = generate_day(CFG, pop, CFG.drift.date, seed=7)
    assert after["amount"].median() > 1.3 * before["amount"].median()
    assert (after["channel"] == "online").mean() > (before["channel"] == "online").mean() + 0.1
    assert "digital_goods" not in set(before["merchant_category"])
    assert (after["merchant_category"] == "digital_goods").sum() > 0


def test_bad_records_are_injected_and_counted(pop) -> None:
    cfg = CFG.model_copy(update={"bad_records": CFG.bad_records.model_copy(update={"enabled": True})})
    df, counts = generate_day(cfg, pop, dt.date(2025, 1, 3), seed=7)
    assert set(counts) == {
        "wrong_type", "future_timestamp", "label_out_of_range", "negative_amount",
        "duplicate_within_day", "duplicate_across_days", "malformed_line",
    }  # fmt: skip
    assert (df["amount"] == "not-a-number").sum() == counts["wrong_type"]
    assert (df["label"] == "2").sum() == counts["label_out_of_range"]
    text = to_csv_bytes(df).decode()
    assert len(text.strip().splitlines()) == 1 + len(df) + counts["malformed_line"]


def test_scales_to_large_days(pop) -> None:
    big = CFG.model_copy(update={"rows_per_day": 200_000})
    df, _ = generate_day(big, pop, dt.date(2025, 1, 2), seed=7)
    assert len(df) == 200_000
    assert np.isfinite(df["amount"]).all()
