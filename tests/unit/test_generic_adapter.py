"""The generic adapter: user files of any layout, mapped onto the event table from params alone."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.core import storage
from pipelines.core.config import Params, parse_params
from pipelines.data.etl import lake_dates, read_partition, run_etl
from pipelines.data.sources import adapter_for
from pipelines.data.sources.generic import map_label, parse_times

AS_OF = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
LEAKY = "chargeback_status"


def _params(**generic: Any) -> Params:
    raw = {
        "source": {
            "kind": "generic",
            "generic": {
                "rename": {"cust": "customer_id", "amt": "amount", "shop": "merchant_category"},
                "time_column": "ts",
                "label_column": "fraud",
                "positive_value": "yes",
                "negative_values": ["no"],
                "drop": [LEAKY],
                **generic,
            },
        },
        "schema": {
            "entity_key": "customer_id",
            "columns": [
                {"name": "customer_id", "type": "string", "nullable": False},
                {"name": "amount", "type": "float", "nullable": False, "min": 0},
                {"name": "merchant_category", "type": "category", "nullable": True},
            ],
        },
    }
    return parse_params(raw, source=Path("test-params.yaml"))


def _run(tmp_path: Path, params: Params) -> tuple[dict[str, Any], pa.Table, pa.Table]:
    lake, quarantine = str(tmp_path / "lake"), str(tmp_path / "quarantine")
    manifest = run_etl(
        landing=str(tmp_path / "landing"),
        lake=lake,
        quarantine=quarantine,
        params=params,
        as_of=AS_OF,
        progress=False,
    )
    parts = [read_partition(lake, d) for d in lake_dates(lake)]
    loaded = pa.concat_tables([p for p in parts if p is not None]).sort_by("event_id")
    q_files = storage.list_files(storage.join(quarantine, "rows"), "*.parquet")
    quarantined = pa.concat_tables([storage.read_parquet(f) for f in q_files]) if q_files else pa.table({})
    return manifest, loaded, quarantined


CSV = (
    "ref;ts;cust;amt;shop;fraud;chargeback_status\n"
    "a1;03/02/2025 10:15;c-1;12.50;grocery;no;none\n"
    "a2;03/02/2025 23:59;c-2;99.00;;yes;charged_back\n"
    "a3;04/02/2025 08:00;c-1;5.00;fuel;;pending\n"
    "a4;2025-02-04T09:00:00Z;c-3;7.00;fuel;no;none\n"  # not the declared format: quarantined
    "a5;04/02/2025 12:00;c-4;8.00;fuel;maybe;none\n"  # a label that is neither yes nor no
)


def test_csv_is_mapped_renamed_labelled_and_the_leaky_column_dropped(tmp_path: Path) -> None:
    (tmp_path / "landing").mkdir()
    (tmp_path / "landing" / "orders.csv").write_text(CSV)
    params = _params(event_id="ref", time_format="%d/%m/%Y %H:%M", delimiter=";", label_time_column=None,
                     label_delay_days=30)  # fmt: skip
    manifest, loaded, quarantined = _run(tmp_path, params)

    t = manifest["totals"]
    assert (t["rows_read"], t["rows_loaded"], t["rows_quarantined"]) == (5, 3, 2)
    assert manifest["quarantined_by_reason"] == {"wrong_type:event_time": 1, "wrong_type:label": 1}
    assert loaded.column("event_id").to_pylist() == ["a1", "a2", "a3"]
    assert loaded.column("customer_id").to_pylist() == ["c-1", "c-2", "c-1"]
    assert loaded.column("amount").to_pylist() == [12.5, 99.0, 5.0]
    assert loaded.column("merchant_category").to_pylist() == ["grocery", None, "fuel"]
    assert loaded.column("label").to_pylist() == [0, 1, None]  # "" = not yet known
    assert loaded.column("event_time").to_pylist()[0] == dt.datetime(2025, 2, 3, 10, 15, tzinfo=dt.UTC)
    assert loaded.column("label_time").to_pylist() == [
        dt.datetime(2025, 3, 5, 10, 15, tzinfo=dt.UTC),  # event time + label_delay_days
        dt.datetime(2025, 3, 5, 23, 59, tzinfo=dt.UTC),
        None,  # no label, no label time
    ]
    assert LEAKY not in loaded.column_names and "ts" not in loaded.column_names

    # Nothing lost: the bad rows are in quarantine with their raw values and a reason.
    by_id = {r["event_id"]: r for r in quarantined.to_pylist()}
    assert by_id["a4"]["_reason"] == "wrong_type:event_time"
    assert by_id["a4"]["event_time"] == "2025-02-04T09:00:00Z"
    assert by_id["a4"]["label_time"] is None  # unparseable time: label time left null, not guessed
    assert by_id["a5"]["_reason"] == "wrong_type:label" and by_id["a5"]["label"] == "unmapped:maybe"
    assert LEAKY not in quarantined.column_names


def test_parquet_with_derived_ids_and_typed_columns(tmp_path: Path) -> None:
    (tmp_path / "landing").mkdir()
    table = pa.table(
        {
            "ts": pa.array(["2025-03-01 09:30", "2025-03-02 18:00", "garbage"], pa.string()),
            "cust": ["c-9", "c-8", "c-7"],
            "amt": pa.array([1.5, 2.5, 3.5], pa.float64()),
            "shop": ["retail", "retail", "fuel"],
            "fraud": ["yes", "no", "no"],
            LEAKY: ["charged_back", "none", "none"],
        }
    )
    pq.write_table(table, tmp_path / "landing" / "batch-1.parquet")
    params = _params(format="parquet", pattern="*.parquet", time_format="%Y-%m-%d %H:%M")
    manifest, loaded, quarantined = _run(tmp_path, params)

    assert manifest["totals"]["rows_read"] == 3
    assert manifest["quarantined_by_reason"] == {"wrong_type:event_time": 1}
    # No id column configured: derived from the file name and the row number, stable across runs.
    assert loaded.column("event_id").to_pylist() == ["batch-1.parquet:1", "batch-1.parquet:2"]
    assert quarantined.column("event_id").to_pylist() == ["batch-1.parquet:3"]
    assert loaded.column("label").to_pylist() == [1, 0]
    # label_delay_days defaults to 0: the label is known at the event time.
    assert loaded.column("label_time").to_pylist() == loaded.column("event_time").to_pylist()
    assert loaded.schema.field("amount").type == pa.float64()
    assert LEAKY not in loaded.column_names


def test_a_file_without_a_required_column_is_rejected_whole_with_its_name(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "good.csv").write_text("ts,cust,amt,shop,fraud\n2025-01-05T10:00:00Z,c-1,3.0,fuel,no\n")
    (landing / "no_amount.csv").write_text("ts,cust,shop,fraud\n2025-01-05T10:00:00Z,c-1,fuel,no\n" * 1)
    (landing / "no_time.csv").write_text("when,cust,amt,shop,fraud\n2025-01-05,c-1,3.0,fuel,no\nx,c,1,f,no\n")
    manifest, loaded, _ = _run(tmp_path, _params())

    files = {f["name"]: f for f in manifest["files"]}
    assert files["good.csv"]["status"] == "processed" and loaded.num_rows == 1
    assert files["no_amount.csv"]["status"] == "rejected"
    assert "'amount'" in files["no_amount.csv"]["message"]
    assert "source.generic.rename" in files["no_amount.csv"]["message"]
    assert files["no_time.csv"]["status"] == "rejected"
    assert "'ts'" in files["no_time.csv"]["message"] and "time_column" in files["no_time.csv"]["message"]
    assert files["no_time.csv"]["quarantined_by_reason"] == {"missing_required_column": 2}
    t = manifest["totals"]
    assert t["rows_read"] == 4 == t["rows_loaded"] + t["rows_quarantined"]
    # The rejected file is kept byte for byte beside its reason.
    assert (tmp_path / "quarantine" / "files" / "no_time.csv").read_bytes() == (
        landing / "no_time.csv"
    ).read_bytes()


def test_a_dropped_column_declared_in_the_schema_is_a_config_error() -> None:
    params = _params(drop=["amt"])
    with pytest.raises(ValueError, match=r"drop names \['amt'\].*rename"):
        adapter_for(params)
    params = _params(drop=["amount"])
    with pytest.raises(ValueError, match=r"schema.columns declares"):
        adapter_for(params)


def test_map_label_keeps_nulls_and_marks_unmapped_values() -> None:
    raw = pa.array(["yes", " no ", None, "maybe", "1"])
    assert map_label(raw, positive_value="yes", negative_values=["no"]).to_pylist() == [
        "1", "0", None, "unmapped:maybe", "unmapped:1",
    ]  # fmt: skip
    assert map_label(raw, positive_value="yes", negative_values=None).to_pylist() == [
        "1",
        "0",
        None,
        "0",
        "0",
    ]
    assert map_label(pa.array([True, False, None]), positive_value="true", negative_values=None).to_pylist() == [
        "1", "0", None,
    ]  # fmt: skip


def test_parse_times_iso_and_format() -> None:
    got = parse_times(pa.array(["2025-01-02T03:04:05Z", "2025-01-02T05:04:05+02:00", "nope", None]), None)
    utc = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert got.to_pylist() == [utc, utc, None, None]
    got = parse_times(pa.array(["02.01.2025 03:04", "2025-01-02T03:04:00Z"]), "%d.%m.%Y %H:%M")
    assert got.to_pylist() == [dt.datetime(2025, 1, 2, 3, 4, tzinfo=dt.UTC), None]


def test_a_schema_edit_loads_the_landing_files_again(tmp_path: Path) -> None:
    """The profile changes (a column dropped, as after a leak warning): the unchanged landing file is loaded
    again under the new schema, so the lake never mixes two schemas (before: 'unchanged', and the next stage
    failed with "Target schema's field names are not matching"). Unchanged settings load nothing."""
    (tmp_path / "landing").mkdir()
    (tmp_path / "landing" / "orders.csv").write_text(CSV)
    kw: dict[str, Any] = {"event_id": "ref", "time_format": "%d/%m/%Y %H:%M", "delimiter": ";"}
    first, loaded, _ = _run(tmp_path, _params(**kw))
    assert "merchant_category" in loaded.column_names and first["totals"]["files_processed"] == 1

    again, _, _ = _run(tmp_path, _params(**kw))
    assert again["totals"]["files_processed"] == 0 and not again["reloaded"]

    narrow = _params(**{**kw, "drop": [LEAKY, "shop"], "rename": {"cust": "customer_id", "amt": "amount"}})
    narrow = narrow.model_copy(
        update={"schema_": narrow.schema_.model_copy(update={"columns": narrow.schema_.columns[:2]})}
    )
    edited, loaded, _ = _run(tmp_path, narrow)
    assert edited["reloaded"] and edited["totals"]["files_processed"] == 1
    assert edited["totals"]["rows_loaded"] == first["totals"]["rows_loaded"]
    assert "merchant_category" not in loaded.column_names
    assert loaded.column("event_id").to_pylist() == ["a1", "a2", "a3"]  # its own rows are no duplicates
    assert _run(tmp_path, narrow)[0]["totals"]["files_processed"] == 0
