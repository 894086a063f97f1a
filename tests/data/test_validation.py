"""Validation stage: the GX suite derived from params, run on real lake partitions (no mocks).

The session's ``synthetic_lake`` (20 days x 2,000 rows) is copied per test; problems are planted by
writing part files straight into a partition, as a buggy writer would.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from pipelines.core import storage
from pipelines.data.etl import MANIFEST_DIR, lake_dates, read_partition

pytest.importorskip("great_expectations")

# GX's import alone takes several seconds and every test here runs the real suite.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def vparams(params):
    """Params with thresholds the 2,000-row synthetic days satisfy (min_rows is 1,000 in params.yaml)."""
    return params.model_copy(
        update={"validation": params.validation.model_copy(update={"min_rows_per_partition": 100})}
    )


@pytest.fixture
def lake(synthetic_lake, tmp_path) -> str:
    """A private copy of 4 days of the session lake, with the ETL manifest that wrote them."""
    src = synthetic_lake / "lake"
    dst = tmp_path / "lake"
    dates = lake_dates(str(src))[:4]
    for d in dates:
        shutil.copytree(src / f"date={d}", dst / f"date={d}")
    manifests = sorted((src / MANIFEST_DIR).glob("*.json"))
    m = json.loads(manifests[0].read_text())
    m["partitions_written"] = dates
    storage.write_json(dst / MANIFEST_DIR / manifests[0].name, m)
    return str(dst)


def _run(lake: str, reports: Path, p, **kw):
    from pipelines.data.validate import run_validation

    return run_validation(
        lake=lake, reports=str(reports), schema=p.schema, cfg=p.validation, progress=False, **kw
    )


def _plant(lake: str, date: str, name: str, table: pa.Table) -> None:
    storage.write_parquet(storage.join(lake, f"date={date}", f"part-{name}.parquet"), table)


def _with_column(table: pa.Table, name: str, values: list) -> pa.Table:
    i = table.schema.get_field_index(name)
    return table.set_column(i, table.schema.field(i), pa.array(values, table.schema.field(i).type))


def test_suite_follows_params(vparams):
    """Each check, in the per-partition vocabulary its failures are reported in, follows params."""
    from pipelines.data.validate import build_suites

    rows, stats = build_suites(vparams.schema, vparams.validation)
    by_key = {}
    for e in [*rows.expectations, *stats.expectations]:
        c = e.configuration
        shown = c.meta.get("reports_as") or {"type": c.type, "kwargs": c.kwargs}
        by_key[(shown["type"], shown["kwargs"].get("column"))] = (shown["kwargs"], c.meta["severity"], c)
    amount = by_key[("expect_column_values_to_be_between", "amount")]
    assert (amount[0]["min_value"], amount[1]) == (0, "critical")
    assert by_key[("expect_column_values_to_be_in_set", "country")][1] == "warning"
    assert by_key[("expect_column_values_to_be_in_set", "channel")][1] == "critical"
    nulls = by_key[("expect_column_values_to_not_be_null", "distance_km")]
    assert nulls[1] == "warning"
    assert nulls[0]["mostly"] == pytest.approx(1 - vparams.validation.max_null_fraction)
    assert nulls[2].kwargs["max_value"] == vparams.validation.max_null_fraction  # on the statistics table
    assert by_key[("expect_column_values_to_not_be_null", "amount")][1] == "critical"
    unique = by_key[("expect_column_values_to_be_unique", "event_id")]
    assert unique[1] == "critical" and unique[2].kwargs["column_list"] == ["_partition", "event_id"]
    row_count = by_key[("expect_table_row_count_to_be_between", None)]
    assert row_count[0]["min_value"] == 100 and row_count[2].kwargs["column"] == "rows"
    assert all(
        e.configuration.meta["severity"] in ("critical", "warning")
        for s in (rows, stats)
        for e in s.expectations
    )
    assert {e.severity.value for s in (rows, stats) for e in s.expectations} == {"critical", "warning"}


def test_clean_lake_passes_and_rerun_validates_nothing(lake, tmp_path, vparams):
    reports = tmp_path / "reports"
    s = _run(lake, reports, vparams)
    assert s["partitions_validated"] == 4
    assert s["critical_failures"] == 0 and s["failure_lines"] == []
    assert [p["status"] for p in s["partitions"]] == ["passed"] * 4
    assert Path(s["data_docs"]).name == "index.html" and Path(s["data_docs"]).exists()
    assert json.loads((reports / "summary.json").read_text())["partitions_validated"] == 4
    pages = list((reports / "data_docs" / "validations").rglob("*.html"))
    assert len(pages) == 2, "one batch: a page for its rows, one for its partition statistics"
    record = json.loads((reports / "state" / "validated.json").read_text())["partitions"]
    assert {r["docs_page"] for r in record.values()} == {
        str(p.relative_to(reports / "data_docs")) for p in pages if "/lake_rows/" in str(p)
    }
    assert "date=" in (reports / "data_docs" / "overview.html").read_text()

    again = _run(lake, reports, vparams)
    assert again["partitions_validated"] == 0
    assert again["on_record"]["partitions"] == 4


def test_nothing_left_to_validate_still_writes_the_stage_outputs(lake, tmp_path, vparams):
    """A re-run in a fresh workspace that holds only state/ (Airflow re-running a loaded day) validates
    nothing and still leaves data_docs/ (the DVC stage's output) with the overview of what is on record."""
    first = tmp_path / "first"
    _run(lake, first, vparams)
    rerun = tmp_path / "rerun"
    shutil.copytree(first / "state", rerun / "state")
    s = _run(lake, rerun, vparams)
    assert s["partitions_validated"] == 0 and s["on_record"]["partitions"] == 4
    overview = rerun / "data_docs" / "overview.html"
    assert overview.exists(), "DVC fails the stage when its declared output data_docs/ is missing"
    assert overview.read_text().count("date=") == (first / "data_docs" / "overview.html").read_text().count(
        "date="
    )
    assert s["overview"] == str(overview)


def test_planted_critical_problems_fail_naming_expectation_partition_and_value(lake, tmp_path, vparams):
    from pipelines.data.validate import failure_lines

    first = _run(lake, tmp_path / "reports", vparams)
    assert first["critical_failures"] == 0
    d0, d1 = lake_dates(lake)[0], lake_dates(lake)[2]
    base = read_partition(lake, d0).slice(0, 30)
    amounts = base.column("amount").to_pylist()
    amounts[3] = -3.2
    _plant(lake, d0, "bad-amount", _with_column(base, "amount", amounts))  # also repeats 30 event_ids
    # a stale partition: day d1's folder holding only events from d0, two days (> 48 h) older
    shutil.rmtree(Path(lake) / f"date={d1}")
    _plant(lake, d1, "stale", read_partition(lake, d0).slice(100, 200))

    s = _run(lake, tmp_path / "reports", vparams, dates=[d0, d1])
    assert s["failed_partitions"] == [d0, d1]
    lines = s["failure_lines"]
    assert (
        f"validation failed: partition date={d0}: expect_column_values_to_be_between(amount, min=0, "
        "max=1e+06) observed 1 unexpected values (0.05%) (e.g. -3.2)"
    ) in lines, lines
    assert any(
        f"date={d0}: expect_column_values_to_be_unique(event_id) observed 60 unexpected" in x for x in lines
    )
    assert any(f"date={d1}: expect_column_max_to_be_between(event_time, min=" in x for x in lines)
    assert any(
        f"date={d1}: expect_column_values_to_be_between(event_time" in x and "200 unexpected" in x
        for x in lines
    )
    # fail_on=never records the same failures but stops nothing
    assert failure_lines([], "never") == []
    # a failed partition is validated again on the next default run, and still fails
    again = _run(lake, tmp_path / "reports", vparams)
    assert sorted(again["failed_partitions"]) == [d0, d1]


def test_new_category_is_a_warning_not_a_failure(lake, tmp_path, vparams):
    d0 = lake_dates(lake)[0]
    table = read_partition(lake, d0)
    shutil.rmtree(Path(lake) / f"date={d0}")
    cats = table.column("merchant_category").to_pylist()
    cats[:7] = ["space_tourism"] * 7
    _plant(lake, d0, "drift", _with_column(table, "merchant_category", cats))
    s = _run(lake, tmp_path / "reports", vparams, dates=[d0])
    assert s["critical_failures"] == 0 and s["failure_lines"] == []
    assert s["warnings"] == 1
    (f,) = s["partitions"][0]["failures"]
    assert (f["expectation"], f["severity"], f["unexpected_count"]) == (
        "expect_column_values_to_be_in_set",
        "warning",
        7,
    )
    assert f["examples"] == ["space_tourism"]
    # with fail_on=warning the same result stops the pipeline
    strict = vparams.validation.model_copy(update={"fail_on": "warning"})
    from pipelines.data.validate import run_validation

    s2 = run_validation(
        lake=lake, reports=str(tmp_path / "r2"), schema=vparams.schema, cfg=strict, dates=[d0], progress=False
    )
    assert len(s2["failure_lines"]) == 1 and "space_tourism" in s2["failure_lines"][0]


def test_changed_partition_is_revalidated_by_default(lake, tmp_path, vparams):
    reports = tmp_path / "reports"
    _run(lake, reports, vparams)
    d2 = lake_dates(lake)[2]
    table = read_partition(lake, d2)
    _plant(lake, d2, "late-file", table.slice(0, 0))  # a new (empty) part: the partition changed
    m = {"partitions_written": [d2]}
    storage.write_json(storage.join(lake, MANIFEST_DIR, "20990101T000000-late.json"), m)
    s = _run(lake, reports, vparams)
    assert [p["date"] for p in s["partitions"]] == [d2]


def test_cli_exits_nonzero_with_one_line_per_failure(lake, tmp_path, params):
    from pipelines.cli import app

    d0 = lake_dates(lake)[0]
    params_file = tmp_path / "params.yaml"
    raw = params.model_dump(mode="json", by_alias=True)
    raw["validation"]["min_rows_per_partition"] = 100
    raw["validation"]["max_rows_per_partition"] = 1500  # every 2,000-row day breaks it
    params_file.write_text(json.dumps(raw))
    reports = tmp_path / "reports"
    result = CliRunner().invoke(
        app,
        ["validate", "--lake", lake, "--reports", str(reports), "--date", d0, "--params", str(params_file)],
    )
    assert result.exit_code == 1, result.output
    assert (
        f"validation failed: partition date={d0}: expect_table_row_count_to_be_between(min=100, max=1500) observed 2000"
        in result.output
    )
    assert json.loads((reports / "summary.json").read_text())["critical_failures"] == 1
    bad = CliRunner().invoke(
        app, ["validate", "--lake", lake, "--date", "2025-1-1", "--params", str(params_file)]
    )
    assert bad.exit_code == 2 and "--date = '2025-1-1'" in bad.output


def test_a_backfill_in_worker_processes_records_what_one_process_does(synthetic_lake, tmp_path, vparams):
    """Twenty partitions in batches of 5, one of them broken: two spawned workers (each its own GX context,
    results in the shared store) give the same record and failure lines as one process, Data Docs pages for
    every batch."""
    from pipelines.data.validate import _workers

    src = synthetic_lake / "lake"
    dates = lake_dates(str(src))
    assert _workers(2, 4) == 2 and _workers(2, 1) == 1
    lake = tmp_path / "lake"
    for d in dates:
        shutil.copytree(src / f"date={d}", lake / f"date={d}")
    bad = dates[13]
    base = read_partition(str(lake), bad).slice(0, 10)
    _plant(str(lake), bad, "bad-amount", _with_column(base, "amount", [-1.0] * 10))
    rows_per_day = read_partition(str(lake), dates[0]).num_rows
    records, summaries = [], []
    for workers in (1, 2):
        cfg = vparams.validation.model_copy(update={"workers": workers, "chunk_rows": 5 * rows_per_day})
        p = vparams.model_copy(update={"validation": cfg})
        reports = tmp_path / f"reports-{workers}"
        summaries.append(_run(str(lake), reports, p, all_partitions=True))
        records.append(json.loads((reports / "state" / "validated.json").read_text())["partitions"])
        batches = len(dates) // 5 + 1  # the broken day holds 10 more rows: its batch ends with it
        assert len(list((reports / "data_docs" / "validations").rglob("*.html"))) == 2 * batches
    one, two = summaries
    assert one["failed_partitions"] == two["failed_partitions"] == [bad]
    assert one["failure_lines"] == two["failure_lines"] and one["failure_lines"]
    drop = ("validated_at", "docs_page", "docs_pages")
    assert [{k: v for k, v in r.items() if k not in drop} for r in records[1].values()] == [
        {k: v for k, v in r.items() if k not in drop} for r in records[0].values()
    ]
    assert all(r["docs_page"] for r in records[1].values())


def test_a_partition_with_other_columns_or_types_fails_alone_in_its_batch(lake, tmp_path, vparams):
    """Partitions are validated together, yet a partition whose columns or types differ from the lake's
    fails by itself, named, while the others in its batch pass."""
    d0, d1 = lake_dates(lake)[:2]
    t0 = read_partition(lake, d0)
    shutil.rmtree(Path(lake) / f"date={d0}")
    i = t0.schema.get_field_index("amount")
    _plant(lake, d0, "text", t0.set_column(i, "amount", t0.column("amount").cast(pa.string())))
    t1 = read_partition(lake, d1)
    shutil.rmtree(Path(lake) / f"date={d1}")
    _plant(lake, d1, "narrow", t1.drop_columns(["country"]))

    s = _run(lake, tmp_path / "reports", vparams)
    assert s["partitions_validated"] == 4 and s["failed_partitions"] == [d0, d1]
    by_date = {p["date"]: p for p in s["partitions"]}
    assert [p["status"] for p in s["partitions"][2:]] == ["passed", "passed"]
    (dtype,) = [f for f in by_date[d0]["failures"] if f["severity"] == "critical"]
    assert dtype["message"] == (
        f"partition date={d0}: expect_column_values_to_have_dtype(amount, types=['float64', 'float32']) "
        "observed 'object'"
    )
    critical = {f["expectation"]: f for f in by_date[d1]["failures"] if f["severity"] == "critical"}
    assert "'missing': ['country']" in critical["expect_table_columns_to_match_set"]["observed"]
    assert set(critical) <= {"expect_table_columns_to_match_set", "expect_column_values_to_not_be_null"}
