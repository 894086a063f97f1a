"""The hotel adapter on a few hand-written rows (the real data set is tested in tests/data)."""

from __future__ import annotations

import datetime as dt
import io
import zipfile
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from pipelines.core import storage
from pipelines.core.config import load_params, parse_params
from pipelines.data.etl import lake_dates, read_partition, run_etl
from pipelines.data.sources import adapter_for
from pipelines.data.sources.hotel import booker_ids, booking_times

ROOT = Path(__file__).resolve().parents[2]
HEADER = (
    "hotel,is_canceled,lead_time,arrival_date_year,arrival_date_month,arrival_date_week_number,"
    "arrival_date_day_of_month,stays_in_weekend_nights,stays_in_week_nights,adults,children,babies,meal,"
    "country,market_segment,distribution_channel,is_repeated_guest,previous_cancellations,"
    "previous_bookings_not_canceled,reserved_room_type,assigned_room_type,booking_changes,deposit_type,"
    "agent,company,days_in_waiting_list,customer_type,adr,required_car_parking_spaces,"
    "total_of_special_requests,reservation_status,reservation_status_date"
)
ROWS = [
    "Resort Hotel,0,342,2015,July,27,1,0,0,2,0,0,BB,PRT,Direct,Direct,0,0,0,C,C,3,No Deposit,NULL,NULL,0,"
    "Transient,0,0,0,Check-Out,7/1/2015",
    "City Hotel,1,2,2015,August,32,3,1,0,2,NA,0,BB,PRT,Undefined,Undefined,0,0,0,B,B,0,No Deposit,9,NULL,0,"
    "Transient-Party,12,0,1,Canceled,8/1/2015",
    # February has no 30th: the row is quarantined, not lost.
    "City Hotel,1,10,2016,February,9,30,1,0,2,0,0,BB,PRT,Groups,TA/TO,0,0,0,A,A,0,Non Refund,NULL,40,0,"
    "Transient,80,0,0,Canceled,2/1/2016",
]


def _zip(text: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("hotel_bookings.csv", text)
    return buf.getvalue()


def test_booking_times_parse_month_names_and_reject_impossible_dates() -> None:
    booking, arrival = booking_times(
        pa.array(["2015", "2016", "2016", "2016", "2016"]),
        pa.array(["July", "february", "February", "Febr", "March"]),
        pa.array(["1", "29", "30", "1", "1"]),
        pa.array(["342", "0", "1", "1", "1.5"]),
    )
    utc = dt.UTC
    assert arrival.to_pylist() == [
        dt.datetime(2015, 7, 1, tzinfo=utc), dt.datetime(2016, 2, 29, tzinfo=utc), None, None,
        dt.datetime(2016, 3, 1, tzinfo=utc),
    ]  # fmt: skip
    assert booking.to_pylist() == [
        dt.datetime(2014, 7, 24, tzinfo=utc), dt.datetime(2016, 2, 29, tzinfo=utc), None, None, None,
    ]  # fmt: skip


def test_booker_ids_prefer_the_agent_then_the_company() -> None:
    got = booker_ids(pa.array(["9", None, None, " 240"]), pa.array(["40", "40", None, None]))
    assert got.to_pylist() == ["agent-9", "company-40", "direct", "agent-240"]


def test_zip_landing_file_through_etl(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    storage.write_bytes(landing / "hotel_bookings.csv.zip", _zip("\n".join([HEADER, *ROWS]) + "\n"))
    params = load_params(ROOT / "profiles" / "hotel.yaml")
    lake = str(tmp_path / "lake")
    manifest = run_etl(
        landing=str(landing),
        lake=lake,
        quarantine=str(tmp_path / "q"),
        params=params,
        as_of=dt.datetime(2018, 1, 1, tzinfo=dt.UTC),
        progress=False,
    )
    assert manifest["totals"]["rows_read"] == 3
    assert manifest["quarantined_by_reason"] == {"missing_value:event_time": 1}
    assert lake_dates(lake) == ["2014-07-24", "2015-08-01"]
    rows = pa.concat_tables([read_partition(lake, d) for d in lake_dates(lake)]).to_pylist()  # type: ignore[misc]
    assert [r["event_id"] for r in rows] == ["hotel-1", "hotel-2"]
    assert [r["booker_id"] for r in rows] == ["direct", "agent-9"]
    assert rows[1]["children"] is None and rows[1]["label_time"] == dt.datetime(2015, 8, 3, tzinfo=dt.UTC)
    for leaky in params.source.hotel.drop:
        assert leaky not in rows[0]
    q = storage.read_parquet(tmp_path / "q" / "rows" / "hotel_bookings.csv.zip.parquet").to_pylist()
    assert q[0]["event_id"] == "hotel-3" and q[0]["arrival_date_month"] == "February"


def test_a_schema_declaring_a_leaky_column_is_refused() -> None:
    raw = yaml.safe_load((ROOT / "profiles" / "hotel.yaml").read_text())
    raw["schema"]["columns"].append({"name": "reservation_status", "type": "category"})
    with pytest.raises(ValueError, match="reservation_status"):
        adapter_for(parse_params(raw))
