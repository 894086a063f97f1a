"""Hotel bookings: the leakage check flags `reservation_status` by name when it is not dropped."""

from __future__ import annotations

import zipfile

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pipelines.core.config import FeaturesConfig, SchemaConfig, load_params
from pipelines.features.build import build_features
from pipelines.features.leakage import LeakageError
from pipelines.data.sources.hotel import booker_ids, booking_times

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


@pytest.fixture(scope="module")
def hotel(hotel_zip, root) -> tuple[dict[str, pd.DataFrame], SchemaConfig]:
    """The raw CSV read with pandas, mapped like the adapter does but keeping reservation_status,
    then split by booking time (70/15/15)."""
    with zipfile.ZipFile(hotel_zip) as zf, zf.open("hotel_bookings.csv") as fh:
        raw = pd.read_csv(fh, dtype=str, keep_default_na=False, na_values=["NULL", "NA", ""])
    text = {c: pa.array(raw[c].where(raw[c].notna(), None), type=pa.string()) for c in raw.columns}
    booking, arrival = booking_times(
        text["arrival_date_year"],
        text["arrival_date_month"],
        text["arrival_date_day_of_month"],
        text["lead_time"],
    )
    profile = load_params(root / "profiles" / "hotel.yaml")
    declared = [c.name for c in profile.schema.columns]
    frame = raw[[c for c in declared if c in raw.columns] + ["reservation_status"]].copy()
    for col in profile.schema.columns:
        if col.type in ("int", "float"):
            frame[col.name] = pd.to_numeric(frame[col.name])
    frame["booker_id"] = booker_ids(text["agent"], text["company"]).to_pandas()
    frame.insert(0, "event_time", booking.to_pandas())
    frame.insert(0, "event_id", [f"hotel-{i + 1}" for i in range(len(frame))])
    frame["label"] = pd.array(raw["is_canceled"].astype(int), dtype="Int8")
    frame["label_time"] = arrival.to_pandas()
    frame = frame.sort_values(["event_time", "event_id"], kind="stable").reset_index(drop=True)
    a, b = int(len(frame) * 0.7), int(len(frame) * 0.85)
    splits = {"train": frame.iloc[:a], "valid": frame.iloc[a:b], "test": frame.iloc[b:]}
    schema = SchemaConfig.model_validate(
        {
            **profile.schema.model_dump(),
            "columns": [
                *profile.schema.model_dump()["columns"],
                {"name": "reservation_status", "type": "category", "nullable": False},
            ],
        }
    )
    return splits, schema


def test_reservation_status_is_flagged_by_name(hotel):
    splits, schema = hotel
    with pytest.raises(LeakageError) as err:
        build_features(splits, history=None, cfg=FeaturesConfig(), schema=schema, seed=42)
    assert err.value.subjects == ["reservation_status"]
    assert "single_feature_auc: reservation_status: predicts the label alone with AUC 1.0000" in str(
        err.value
    )


def test_the_build_passes_once_it_is_dropped(hotel):
    splits, schema = hotel
    build = build_features(
        splits, history=None, cfg=FeaturesConfig(drop=["reservation_status"]), schema=schema, seed=42
    )
    assert build.leakage.passed
    assert "reservation_status" not in build.spec["inputs"]
    assert max(build.leakage.single_auc.values()) < 0.97
    assert np.isfinite(build.matrices["test"]).all()
