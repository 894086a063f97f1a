"""The public hotel-bookings data set through the hotel adapter and ETL (profiles/hotel.yaml)."""

from __future__ import annotations

import datetime as dt
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.core import storage
from pipelines.core.config import Params, load_params
from pipelines.data.etl import lake_dates, read_partition, run_etl

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
AS_OF = dt.datetime(2018, 1, 1, tzinfo=dt.UTC)
LEAKY = [
    "reservation_status",
    "reservation_status_date",
    "assigned_room_type",
    "booking_changes",
    "required_car_parking_spaces",
]
UTC = dt.UTC


@pytest.fixture(scope="module")
def hotel_params() -> Params:
    return load_params(ROOT / "profiles" / "hotel.yaml")


@pytest.fixture(scope="module")
def hotel_run(
    hotel_zip: Path, hotel_params: Params, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("hotel")
    (base / "landing").mkdir()
    shutil.copy(hotel_zip, base / "landing" / hotel_zip.name)
    manifest = run_etl(
        landing=str(base / "landing"),
        lake=str(base / "lake"),
        quarantine=str(base / "quarantine"),
        params=hotel_params,
        as_of=AS_OF,
        progress=False,
    )
    lake = str(base / "lake")
    dates = lake_dates(lake)
    loaded = pa.concat_tables([read_partition(lake, d) for d in dates])  # type: ignore[misc]
    return {"base": base, "manifest": manifest, "lake": lake, "dates": dates, "loaded": loaded}


def test_every_row_is_loaded_or_quarantined(hotel_run: dict[str, Any]) -> None:
    t = hotel_run["manifest"]["totals"]
    assert t["rows_read"] == 119_390 == t["rows_loaded"] + t["rows_quarantined"]
    assert hotel_run["loaded"].num_rows == t["rows_loaded"]
    # The two real anomalies of the data set: an average daily rate of -6.38 and one of 5400.
    assert hotel_run["manifest"]["quarantined_by_reason"] == {"above_max:adr": 1, "below_min:adr": 1}
    q = storage.read_parquet(hotel_run["base"] / "quarantine" / "rows" / "hotel_bookings.csv.zip.parquet")
    assert sorted(q.column("adr").to_pylist()) == ["-6.38", "5400"]


def test_no_leaky_column_reaches_the_lake_or_the_quarantine(hotel_run: dict[str, Any]) -> None:
    parts = storage.list_files(hotel_run["lake"], "part-*.parquet", recursive=True)
    assert len(parts) == len(hotel_run["dates"]) > 900  # one partition per booking date
    for part in parts:
        names = set(pq.read_schema(part).names)
        assert not names & set(LEAKY), f"{part} holds leaky column(s) {names & set(LEAKY)}"
    for q in storage.list_files(hotel_run["base"] / "quarantine", "*.parquet", recursive=True):
        assert not set(pq.read_schema(q).names) & set(LEAKY)


def _row(loaded: pa.Table, n: int) -> dict[str, Any]:
    rows = loaded.filter(pa.compute.equal(loaded.column("event_id"), f"hotel-{n}")).to_pylist()
    assert len(rows) == 1
    return rows[0]


def test_booking_time_and_label_time_checked_by_hand(hotel_run: dict[str, Any]) -> None:
    loaded = hotel_run["loaded"]
    # Data rows 1-3: Resort Hotel arrivals on 1 July 2015 with lead times 342, 737 and 7 days.
    r1, r2, r3 = (_row(loaded, n) for n in (1, 2, 3))
    assert r1["event_time"] == dt.datetime(2014, 7, 24, tzinfo=UTC)
    assert r2["event_time"] == dt.datetime(2013, 6, 24, tzinfo=UTC)
    assert r3["event_time"] == dt.datetime(2015, 6, 24, tzinfo=UTC)
    for r in (r1, r2, r3):
        assert r["label_time"] == dt.datetime(2015, 7, 1, tzinfo=UTC)  # matures at arrival
        assert r["label"] == 0 and r["hotel"] == "Resort Hotel" and r["booker_id"] == "direct"
    # Row 40601: City Hotel, arrival 3 August 2015, lead time 2, cancelled, children "NA" (missing).
    r = _row(loaded, 40_601)
    assert r["event_time"] == dt.datetime(2015, 8, 1, tzinfo=UTC)
    assert r["label_time"] == dt.datetime(2015, 8, 3, tzinfo=UTC)
    assert (r["label"], r["children"], r["arrival_date_month"]) == (1, None, "August")


def test_every_row_matches_arrival_minus_lead_time(hotel_run: dict[str, Any], hotel_zip: Path) -> None:
    with zipfile.ZipFile(hotel_zip) as zf:
        raw = pd.read_csv(zf.open("hotel_bookings.csv"), usecols=[
            "lead_time", "arrival_date_year", "arrival_date_month", "arrival_date_day_of_month",
            "is_canceled", "agent",
        ], keep_default_na=False, dtype=str)  # fmt: skip
    raw["event_id"] = [f"hotel-{i}" for i in range(1, len(raw) + 1)]
    arrival = pd.to_datetime(
        raw["arrival_date_year"] + "-" + raw["arrival_date_month"] + "-" + raw["arrival_date_day_of_month"],
        format="%Y-%B-%d",
        utc=True,
    )
    raw["arrival"] = arrival
    raw["booking"] = arrival - pd.to_timedelta(raw["lead_time"].astype(int), unit="D")
    lake = (
        hotel_run["loaded"].select(["event_id", "event_time", "label", "label_time", "booker_id"]).to_pandas()
    )
    m = lake.merge(raw, on="event_id", validate="one_to_one")
    assert len(m) == len(lake)
    assert (m["event_time"] == m["booking"]).all()
    assert (m["label_time"] == m["arrival"]).all()
    assert (m["label"].astype(int) == m["is_canceled"].astype(int)).all()
    expected_booker = ("agent-" + m["agent"]).where(m["agent"] != "NULL")
    assert (m["booker_id"][expected_booker.notna()] == expected_booker.dropna()).all()
    # Every loaded row sits in the partition of its booking date.
    for date in hotel_run["dates"][:: max(1, len(hotel_run["dates"]) // 20)]:
        part = read_partition(hotel_run["lake"], date, columns=["event_time"])
        assert {t.date().isoformat() for t in part.column(0).to_pylist()} == {date}


def test_label_rate_and_types(hotel_run: dict[str, Any]) -> None:
    loaded = hotel_run["loaded"]
    rate = pa.compute.mean(loaded.column("label")).as_py()
    assert rate == pytest.approx(0.370, abs=0.003)
    assert loaded.schema.field("event_time").type == pa.timestamp("us", tz="UTC")
    assert loaded.schema.field("lead_time").type == pa.int64()
    assert loaded.schema.field("adr").type == pa.float64()
    assert loaded.column("country").null_count == 488 and loaded.column("agent").null_count > 16_000


def test_great_expectations_passes_on_booking_date_partitions(
    hotel_run: dict[str, Any], hotel_params: Params, tmp_path: Path
) -> None:
    validate = pytest.importorskip("pipelines.data.validate")
    dates = hotel_run["dates"]
    # The first booking date (a single row, lead time 737), a busy day and the last arrival date.
    sel = [dates[0], "2016-01-01", dates[-1]]
    summary = validate.run_validation(
        lake=hotel_run["lake"],
        reports=str(tmp_path / "reports"),
        schema=hotel_params.schema,
        cfg=hotel_params.validation,
        dates=sel,
        progress=False,
    )
    assert summary["partitions_validated"] == 3
    assert summary["critical_failures"] == 0, summary["failure_lines"]
    assert {p["date"]: p["rows"] for p in summary["partitions"]}[dates[0]] == 1
