"""check_rows and friends on frames small enough to read by eye."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from pipelines.data.etl import check_rows, dedupe, lake_schema, split_by_date, validate_date

REF = dt.datetime(2025, 1, 2, tzinfo=dt.UTC)
GOOD = {
    "event_id": "e1", "event_time": "2025-01-01T10:00:00Z", "card_id": "c1", "merchant_id": "m1",
    "merchant_category": "grocery", "country": "PT", "channel": "pos", "amount": "12.5",
    "distance_km": "", "device_age_days": "100", "label": "0", "label_time": "2025-01-22T10:00:00Z",
}  # fmt: skip


def _table(*rows: dict) -> pa.Table:
    cols = list(GOOD)
    return pa.table({c: pa.array([r.get(c) or None for r in rows], pa.string()) for c in cols})


def _one(**changes) -> dict:
    return {**GOOD, **changes}


def test_three_good_rows_are_typed(params) -> None:
    t = _table(GOOD, _one(event_id="e2", amount="3"), _one(event_id="e3", label="", label_time=""))
    res = check_rows(t, params.schema, reference_time=REF)
    assert res.rejected.num_rows == 0
    assert res.valid.schema == lake_schema(params.schema)
    assert res.valid.column("amount").to_pylist() == [12.5, 3.0, 12.5]
    assert res.valid.column("distance_km").null_count == 3
    assert res.valid.column("label").to_pylist() == [0, 0, None]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"amount": "abc"}, "wrong_type:amount"),
        ({"amount": "-1"}, "below_min:amount"),
        ({"amount": ""}, "missing_value:amount"),
        ({"amount": "inf"}, "not_finite:amount"),
        ({"event_time": "yesterday"}, "wrong_type:event_time"),
        ({"event_time": "2025-01-05T00:00:00Z"}, "future_timestamp"),
        ({"label": "2"}, "label_out_of_range"),
        ({"label": "x"}, "wrong_type:label"),
        ({"label_time": ""}, "missing_value:label_time"),
        ({"channel": "carrier-pigeon"}, "not_allowed:channel"),
        ({"event_id": ""}, "missing_value:event_id"),
        ({"card_id": ""}, "missing_value:card_id"),
    ],
)
def test_each_reason(params, change: dict, reason: str) -> None:
    res = check_rows(_table(GOOD, _one(**{"event_id": "bad", **change})), params.schema, reference_time=REF)
    assert res.valid.num_rows == 1
    assert res.rejected.column("_reason").to_pylist() == [reason]
    assert dict(res.reasons) == {reason: 1}
    # quarantine keeps the raw values as they came
    for col, value in change.items():
        assert res.rejected.column(col).to_pylist() == [value or None]


def test_all_reasons_are_kept(params) -> None:
    res = check_rows(_table(_one(amount="-3", label="7")), params.schema, reference_time=REF)
    assert res.rejected.column("_reason").to_pylist() == ["below_min:amount"]
    assert res.rejected.column("_reasons").to_pylist() == ["below_min:amount;label_out_of_range"]


def test_timestamps_with_offsets_and_fallback_formats(params) -> None:
    t = _table(
        _one(event_time="2025-01-01T11:00:00+01:00"), _one(event_id="e2", event_time="2025-01-01 10:00:00")
    )
    res = check_rows(t, params.schema, reference_time=REF)
    assert res.rejected.num_rows == 0
    assert len(set(res.valid.column("event_time").to_pylist())) == 1


def test_dedupe_keeps_first_in_file_and_drops_lake_ids() -> None:
    t = pa.table({"event_id": ["a", "b", "a", "c", "b"], "v": [1, 2, 3, 4, 5]})
    unique, in_file, in_lake = dedupe(t, pa.array(["c"]))
    assert unique.column("v").to_pylist() == [1, 2]
    assert in_file.tolist() == [False, False, True, False, True]
    assert in_lake.tolist() == [False, False, False, True, False]


def test_split_by_date_keeps_order() -> None:
    ts = pa.array(
        np.array(
            ["2025-01-01T23:59:59", "2025-01-02T00:00:00", "2025-01-01T00:00:01"], dtype="datetime64[us]"
        )
    ).cast(pa.timestamp("us", tz="UTC"))
    parts = split_by_date(pa.table({"event_time": ts, "i": [0, 1, 2]}))
    assert {k: v.column("i").to_pylist() for k, v in parts.items()} == {
        "2025-01-01": [0, 2],
        "2025-01-02": [1],
    }


@pytest.mark.parametrize("bad", ["../../etc", "2025-13-01", "2025-01-01/../x", "20250101", "", "2025-02-30"])
def test_dates_from_outside_are_validated(bad: str) -> None:
    with pytest.raises(ValueError, match=r"YYYY-MM-DD|day is out of range|month must be"):
        validate_date(bad)
