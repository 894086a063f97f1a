"""The bad-input suite and the lake's guarantees, through the real ETL on real files."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.data.etl import lake_dates, read_partition, run_etl
from pipelines.data.generate import generate_landing


def _bad_cfg(params, days: int = 3, rows: int = 1500):
    cfg = params.synthetic.model_copy(update={"days": days, "rows_per_day": rows})
    return cfg.model_copy(update={"bad_records": cfg.bad_records.model_copy(update={"enabled": True, "rate": 0.02})})


def _etl(base: Path, params, **kw):
    return run_etl(landing=str(base / "landing"), lake=str(base / "lake"), quarantine=str(base / "q"),
                   params=params, progress=False, **kw)


def _digests(lake: Path) -> dict[str, str]:
    return {str(p.relative_to(lake)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(lake.glob("date=*/part-*.parquet"))}


def test_every_injected_bad_record_is_quarantined_with_its_reason(tmp_path: Path, params) -> None:
    gen = generate_landing(_bad_cfg(params), out=str(tmp_path / "landing"), seed=1, progress=False)
    injected = gen["injected_bad_records"]
    m = _etl(tmp_path, params)
    t = m["totals"]
    assert t["rows_read"] == gen["rows"] == t["rows_loaded"] + t["rows_quarantined"]
    for f in m["files"]:
        assert f["rows_read"] == f["rows_loaded"] + f["rows_quarantined"]
    got = m["quarantined_by_reason"]
    assert got["wrong_type:amount"] == injected["wrong_type"]
    assert got["below_min:amount"] == injected["negative_amount"]
    assert got["future_timestamp"] == injected["future_timestamp"]
    assert got["label_out_of_range"] == injected["label_out_of_range"]
    assert got["malformed_line"] == injected["malformed_line"]
    assert got["duplicate_in_file"] == injected["duplicate_within_day"]
    assert got["duplicate_in_lake"] == injected["duplicate_across_days"]
    assert t["rows_quarantined"] == sum(injected.values())
    # the quarantine keeps every rejected row with its reason and source
    q = pq.read_table(tmp_path / "q" / "rows").to_pandas()
    assert len(q) == t["rows_quarantined"]
    assert q["_reason"].notna().all() and q["_source_file"].str.endswith(".csv").all()
    assert q.loc[q["_reason"] == "malformed_line", "_raw_line"].str.len().gt(0).all()
    # and nothing bad reached the lake
    lake = pq.read_table(tmp_path / "lake").to_pandas()
    assert len(lake) == t["rows_loaded"] and lake["event_id"].is_unique
    assert (lake["amount"] >= 0).all() and set(lake["label"].dropna().unique()) <= {0, 1}


def test_one_unterminated_quote_costs_one_line_not_the_rest_of_the_file(tmp_path: Path, params) -> None:
    """An unterminated quote on line 12 of a 101-line file gave "rows read 11 = loaded 10 + quarantined 1",
    the one quarantined record holding the next 89 good lines. Now that line alone is quarantined, with its
    line number, and every other row is loaded; a quote inside an unquoted field (5'10") is no error."""
    gen = generate_landing(params.synthetic.model_copy(update={"days": 1, "rows_per_day": 100}),
                           out=str(tmp_path / "landing"), seed=1, progress=False)  # fmt: skip
    assert gen["rows"] == 100
    path = next((tmp_path / "landing").glob("*.csv"))
    rows = list(csv.reader(path.read_text().splitlines()))  # rewritten unquoted, as most exports are
    rows[12][rows[0].index("merchant_id")] = '"m-broken'  # a quote that never closes
    rows[30][rows[0].index("merchant_id")] = "m-5'10\""  # a quote inside a field: a literal character
    path.write_text("\n".join(",".join(r) for r in rows) + "\n")
    m = _etl(tmp_path, params)
    t = m["totals"]
    assert (t["rows_read"], t["rows_loaded"], t["rows_quarantined"]) == (100, 99, 1), t
    q = pq.read_table(tmp_path / "q" / "rows").to_pandas()
    assert q["_reason"].tolist() == ["malformed_line"] and '"m-broken' in q["_raw_line"].iloc[0]
    assert "m-5'10\"" in pq.read_table(tmp_path / "lake").column("merchant_id").to_pylist()


def test_one_bad_byte_costs_its_line_and_every_other_fault_its_own(tmp_path: Path, params) -> None:
    """One 0xE9 byte in a UTF-8 file stopped the whole ETL (Arrow's "invalid UTF8 data", no file named,
    no manifest) and every later file waited behind it. Now each bad line is quarantined with its reason
    and the rest of the file, and the next day's file, load in the same run."""
    gen = generate_landing(params.synthetic.model_copy(update={"days": 2, "rows_per_day": 200}),
                           out=str(tmp_path / "landing"), seed=1, progress=False)  # fmt: skip
    assert gen["rows"] == 400
    first, second = sorted((tmp_path / "landing").glob("*.csv"))
    rows = list(csv.reader(first.read_text().splitlines()))
    col = {name: i for i, name in enumerate(rows[0])}
    lines = [",".join(r).encode() for r in rows]  # unquoted, as most exports are
    lines[5] = lines[5].replace(rows[5][col["merchant_id"]].encode(), b"caf\xe9", 1)  # Latin-1 byte
    lines[20] = b",".join(lines[20].split(b",")[:-1])  # a field short
    lines[40] = lines[40].replace(rows[40][col["merchant_id"]].encode(), b'"m-broken', 1)  # quote left open
    lines[60] = lines[60].replace(rows[60][col["amount"]].encode(), b"abc", 1)  # not a number
    lines[80] = lines[79]  # the same event twice
    first.write_bytes(b"\n".join(lines) + b"\n")

    m = _etl(tmp_path, params)
    by_name = {f["name"]: f for f in m["files"]}
    bad_file, next_day = by_name[first.name], by_name[second.name]
    assert bad_file["status"] == next_day["status"] == "processed"
    assert (bad_file["rows_read"], bad_file["rows_loaded"], bad_file["rows_quarantined"]) == (200, 195, 5)
    assert bad_file["quarantined_by_reason"] == {
        "duplicate_in_file": 1, "invalid_encoding": 1, "malformed_line": 2, "wrong_type:amount": 1,
    }  # fmt: skip
    assert next_day["rows_loaded"] == 200 and m["totals"]["rows_loaded"] == 395
    assert pq.read_table(tmp_path / "lake").num_rows == 395
    q = pq.read_table(tmp_path / "q" / "rows").to_pandas().set_index("_reason")
    assert q.loc["invalid_encoding", "_line"] == 6  # the header is line 1
    assert "caf\\xe9" in q.loc["invalid_encoding", "_raw_line"]  # the byte kept, escaped
    assert sorted(q.loc["malformed_line", "_line"]) == [21, 41]


def test_a_latin1_file_loads_whole_when_the_source_says_so(tmp_path: Path, params) -> None:
    gen = generate_landing(params.synthetic.model_copy(update={"days": 1, "rows_per_day": 50}),
                           out=str(tmp_path / "landing"), seed=1, progress=False)  # fmt: skip
    path = next((tmp_path / "landing").glob("*.csv"))
    rows = list(csv.reader(path.read_text().splitlines()))
    rows[3][rows[0].index("merchant_id")] = "Café Müller"
    path.write_bytes("\n".join(",".join(r) for r in rows).encode("latin-1") + b"\n")
    latin1 = params.model_copy(update={"source": params.source.model_copy(update={"encoding": "latin-1"})})
    m = _etl(tmp_path, latin1)
    assert (m["totals"]["rows_loaded"], m["totals"]["rows_quarantined"]) == (gen["rows"], 0)
    assert "Café Müller" in pq.read_table(tmp_path / "lake").column("merchant_id").to_pylist()


def test_missing_column_rejects_the_whole_file_and_keeps_it(tmp_path: Path, params) -> None:
    landing = tmp_path / "landing"
    generate_landing(params.synthetic.model_copy(update={"days": 1, "rows_per_day": 300}), out=str(landing),
                     seed=1, progress=False)
    lines = (landing / "2025-01-01.csv").read_text().splitlines()
    header = lines[0].split(",")
    drop = header.index('"amount"')
    cut = [",".join(v for i, v in enumerate(ln.split(",")) if i != drop) for ln in lines]
    (landing / "2025-01-02.csv").write_text("\n".join(cut).replace("20250101", "20250102") + "\n")
    (landing / "2025-01-03.csv").write_bytes(b"")
    (landing / "2025-01-04.csv").write_text(lines[0] + "\n")
    m = _etl(tmp_path, params)
    by_name = {f["name"]: f for f in m["files"]}
    rej = by_name["2025-01-02.csv"]
    assert rej["status"] == "rejected" and rej["rows_read"] == rej["rows_quarantined"] == 300
    assert "missing required column(s) ['amount']" in rej["message"] and "2025-01-02.csv" in rej["message"]
    kept = tmp_path / "q" / "files" / "2025-01-02.csv"
    assert kept.read_bytes() == (landing / "2025-01-02.csv").read_bytes()
    assert json.loads(kept.with_name("2025-01-02.csv.reason.json").read_text())["reason"] == "missing_required_column"
    assert by_name["2025-01-03.csv"]["status"] == "rejected" and by_name["2025-01-03.csv"]["rows_read"] == 0
    assert by_name["2025-01-04.csv"]["status"] == "processed" and by_name["2025-01-04.csv"]["rows_read"] == 0
    t = m["totals"]
    assert t["rows_read"] == 600 == t["rows_loaded"] + t["rows_quarantined"]
    assert lake_dates(str(tmp_path / "lake")) == ["2025-01-01"]


def test_incremental_idempotent_and_byte_identical(tmp_path: Path, params) -> None:
    cfg = params.synthetic.model_copy(update={"days": 3, "rows_per_day": 800})
    generate_landing(cfg, out=str(tmp_path / "landing"), seed=3, progress=False)
    first = _etl(tmp_path, params)
    assert first["totals"]["files_processed"] == 3
    before = _digests(tmp_path / "lake")
    again = _etl(tmp_path, params)
    assert again["totals"]["files_processed"] == 0 and again["totals"]["files_unchanged"] == 3
    # one more day: only that file is read
    generate_landing(cfg.model_copy(update={"days": 4}), out=str(tmp_path / "landing"), seed=3, progress=False)
    more = _etl(tmp_path, params)
    assert [f["name"] for f in more["files"]] == ["2025-01-04.csv"]
    # rebuild from scratch: the same bytes
    import shutil

    shutil.rmtree(tmp_path / "lake")
    _etl(tmp_path, params)
    after = _digests(tmp_path / "lake")
    assert {k: v for k, v in after.items() if k in before} == before


def test_a_changed_file_replaces_its_rows(tmp_path: Path, params) -> None:
    cfg = params.synthetic.model_copy(update={"days": 2, "rows_per_day": 500})
    generate_landing(cfg, out=str(tmp_path / "landing"), seed=3, progress=False)
    _etl(tmp_path, params)
    f = tmp_path / "landing" / "2025-01-02.csv"
    lines = f.read_text().splitlines()
    f.write_text("\n".join(lines[:101]) + "\n")  # a corrected re-delivery with 100 rows
    m = _etl(tmp_path, params)
    assert [x["name"] for x in m["files"]] == ["2025-01-02.csv"]
    assert read_partition(str(tmp_path / "lake"), "2025-01-02").num_rows == 100
    assert read_partition(str(tmp_path / "lake"), "2025-01-01").num_rows == 500


def test_only_date_processes_one_file(tmp_path: Path, params) -> None:
    generate_landing(params.synthetic.model_copy(update={"days": 3, "rows_per_day": 200}),
                     out=str(tmp_path / "landing"), seed=3, progress=False)
    m = _etl(tmp_path, params, only_date="2025-01-02")
    assert [x["name"] for x in m["files"]] == ["2025-01-02.csv"]
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        _etl(tmp_path, params, only_date="../2025")
