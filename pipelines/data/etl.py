"""ETL stage: landing files -> lake partitions ``date=YYYY-MM-DD`` in Parquet, with quarantine.

For every landing file that is new or changed since the last run (its size and mtime, then its
sha256, are compared with the ledger), the stage

1. reads it through the source adapter (lines that do not parse are kept for quarantine),
2. coerces every column to the schema's type and checks each row (``check_rows``, pure),
3. de-duplicates on ``event_id`` within the file and against the lake's recent partitions,
4. writes one Parquet part per (partition, landing file): ``date=D/part-<file>.parquet``,
5. writes rejected rows to quarantine with a reason code, and the file's ledger record.

A run writes a manifest: input files with sha256, rows read, loaded and quarantined by reason, and
the partitions written. ``rows_read == rows_loaded + rows_quarantined`` holds for each file and the
run, or the stage fails. Writes are atomic and content is deterministic: re-running a day gives
byte-identical partitions. A run's cost grows with the new files, not with the history: only the
partitions inside the de-duplication look-back window are read.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core.errors import InputError
from pipelines.core import storage
from pipelines.core.config import ColumnSpec, EtlConfig, Params, SchemaConfig, params_file
from pipelines.core.timeparse import TS as TIMESTAMP_UTC
from pipelines.core.timeparse import parse_times
from pipelines.data.sources import FileRejected, RawBatch, SourceAdapter, adapter_for, count_data_lines

__all__ = [
    "CheckResult",
    "NoLandingFiles",
    "check_rows",
    "lake_schema",
    "partition_path",
    "read_partition",
    "run_etl",
    "source_key",
]

log = logging.getLogger(__name__)

LEDGER_DIR = "_etl/ledger"
# One small file caching every ledger record's (bytes, mtime_ns, sha256), so that an unchanged history costs
# one read, not one per landing file. It is only a cache: a file it does not vouch for falls back to its
# own ledger record (so a stale or concurrent copy can cost time, never correctness).
LEDGER_INDEX = "_etl/ledger_index.json"
MANIFEST_DIR = "_etl/manifests"
# a run's marker, written before its first file and removed after its manifest: a marker left behind is an
# interrupted run, whose committed files the next run's manifest counts (``recovered``)
RUNNING_DIR = "_etl/running"
# what the lake's rows were loaded with (see load_fingerprint): when it changes, every file is loaded again
LOADED_WITH = "_etl/loaded_with.json"
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_NUM_RE = r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$"
_INT_RE = r"^\s*[+-]?\d+(\.0*)?\s*$"
_TRUE = ["true", "True", "TRUE", "1", "yes", "t", "y"]
_FALSE = ["false", "False", "FALSE", "0", "no", "f", "n"]
TS = TIMESTAMP_UTC
_ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(), "category": pa.string(), "float": pa.float64(), "int": pa.int64(),
    "bool": pa.bool_(), "timestamp": TS,
}  # fmt: skip


def lake_schema(schema: SchemaConfig) -> pa.Schema:
    """The typed schema of a lake partition."""
    fields = [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("event_time", TS, nullable=False),
        pa.field(schema.entity_key, pa.string()),
    ]
    fields += [pa.field(c.name, _ARROW_TYPES[c.type]) for c in schema.columns if c.name != schema.entity_key]
    fields += [pa.field("label", pa.int8()), pa.field("label_time", TS)]
    return pa.schema(fields)


def validate_date(value: str, *, name: str = "date") -> str:
    """A partition date from outside (CLI, Airflow): strictly YYYY-MM-DD, so no path can be smuggled in."""
    if not isinstance(value, str) or not DATE_RE.match(value):
        raise InputError(f"{name} = {value!r}: expected a date as YYYY-MM-DD")
    try:
        dt.date.fromisoformat(value)
    except ValueError as err:
        raise InputError(f"{name} = {value!r}: not a calendar date ({err}); expected YYYY-MM-DD") from None
    return value


def partition_path(lake: str, date: str) -> str:
    return storage.join(lake, f"date={validate_date(date)}")


def read_partition(lake: str, date: str, columns: list[str] | None = None) -> pa.Table | None:
    """All parts of one lake partition, concatenated in part-name order; None if it does not exist."""
    parts = storage.list_files(partition_path(lake, date), "part-*.parquet")
    if not parts:
        return None
    return pa.concat_tables(
        [storage.read_parquet(p, columns=columns) for p in parts], promote_options="default"
    )


def lake_dates(lake: str) -> list[str]:
    """Dates of the partitions in the lake, sorted."""
    loc = storage.local_path(lake)
    if loc is not None:
        names = [p.name for p in loc.glob("date=*") if p.is_dir()] if loc.is_dir() else []
    else:
        names = {f.split("/")[-2] for f in storage.list_files(lake, "part-*.parquet", recursive=True)}  # type: ignore[assignment]
    return sorted(n.split("=", 1)[1] for n in names if n.startswith("date="))


# --------------------------------------------------------------------------- pure checks


@dataclass
class CheckResult:
    valid: pa.Table  # typed rows that passed, in input order (lake schema)
    rejected: pa.Table  # the raw rows that failed, as strings, with _reason and _reasons
    reasons: Counter[str] = field(default_factory=Counter)


def _is_null(arr: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(pc.is_null(arr).to_numpy(zero_copy_only=False), dtype=bool)


def _to_bool_mask(arr: Any) -> np.ndarray:
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def _coerce(
    arr: pa.ChunkedArray, kind: str, *, time_format: str | None = None
) -> tuple[pa.Array, np.ndarray]:
    """Cast a raw column to ``kind``; returns (typed array with nulls where it failed, failed mask)."""
    target = _ARROW_TYPES[kind]
    if arr.type == target:
        return arr.combine_chunks(), np.zeros(len(arr), dtype=bool)
    if not pa.types.is_string(arr.type) and not pa.types.is_large_string(arr.type):
        try:
            return pc.cast(arr, target).combine_chunks(), np.zeros(len(arr), dtype=bool)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            arr = pc.cast(arr, pa.string())
    present = ~_is_null(arr)
    if kind in ("string", "category"):
        return arr.combine_chunks(), np.zeros(len(arr), dtype=bool)
    if kind in ("float", "int"):
        try:  # fast path: the whole column casts cleanly
            out = pc.cast(arr, pa.float64())
            if kind == "int":
                out = pc.cast(out, target)
            return out.combine_chunks(), np.zeros(len(arr), dtype=bool)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        ok = _to_bool_mask(pc.match_substring_regex(arr, _INT_RE if kind == "int" else _NUM_RE))
        clean = pc.if_else(pa.array(ok), pc.utf8_trim_whitespace(arr), pa.scalar(None, pa.string()))
        out = pc.cast(pc.cast(clean, pa.float64()), target) if kind == "int" else pc.cast(clean, target)
        return out.combine_chunks(), present & ~ok
    if kind == "bool":
        t, f = pc.is_in(arr, pa.array(_TRUE)), pc.is_in(arr, pa.array(_FALSE))
        ok = _to_bool_mask(pc.or_(t, f))
        out = pc.if_else(pa.array(ok), t, pa.scalar(None, pa.bool_()))
        return out.combine_chunks(), present & ~ok
    # timestamps: the fast vectorized ISO-8601 cast first, a tolerant parser for the rest
    out = parse_times(arr, time_format)
    return out, present & _is_null(out)


def check_rows(
    table: pa.Table,
    schema: SchemaConfig,
    *,
    reference_time: dt.datetime,
    time_format: str | None = None,
) -> CheckResult:
    """Coerce a raw batch to the lake schema and check every row. Pure: no I/O.

    A row is rejected with the first of its reasons (all are kept in ``_reasons``): a required value
    missing, a value of the wrong type, a number outside [min, max], a category outside a critical
    vocabulary, a label outside ``schema.label_values``, an event time after ``reference_time``, or a
    label without a ``label_time``.
    """
    n = table.num_rows
    reasons: list[tuple[str, np.ndarray]] = []
    typed: dict[str, pa.Array] = {}
    specs: list[tuple[str, ColumnSpec | None, str]] = [
        ("event_id", None, "string"),
        ("event_time", None, "timestamp"),
        (schema.entity_key, None, "string"),
        *((c.name, c, c.type) for c in schema.columns if c.name != schema.entity_key),
        ("label", None, "int"),
        ("label_time", None, "timestamp"),
    ]
    for name, spec, kind in specs:
        raw = table.column(name)
        is_time = name in ("event_time", "label_time") or kind == "timestamp"
        arr, bad_type = _coerce(raw, kind, time_format=time_format if is_time else None)
        reasons.append((f"wrong_type:{name}", bad_type))
        nullable = spec.nullable if spec is not None else name in ("label", "label_time")
        if not nullable:
            reasons.append((f"missing_value:{name}", _is_null(raw)))
        if spec is not None and kind in ("float", "int"):
            vals = arr.to_numpy(zero_copy_only=False).astype(float)
            with np.errstate(invalid="ignore"):
                reasons.append((f"not_finite:{name}", np.isinf(vals)))
                if spec.min is not None:
                    reasons.append((f"below_min:{name}", vals < spec.min))
                if spec.max is not None:
                    reasons.append((f"above_max:{name}", vals > spec.max))
        if spec is not None and spec.allowed is not None and spec.critical_allowed:
            inset = _to_bool_mask(pc.is_in(arr, pa.array(spec.allowed)))
            reasons.append((f"not_allowed:{name}", ~inset & ~_is_null(arr)))
        typed[name] = arr
    label = typed["label"]
    label_ok = _to_bool_mask(pc.is_in(label, pa.array(schema.label_values, pa.int64())))
    reasons.append(("label_out_of_range", ~label_ok & ~_is_null(label)))
    reasons.append(("missing_value:label_time", ~_is_null(label) & _is_null(typed["label_time"])))
    ref = pa.scalar(reference_time.astimezone(dt.UTC), TS)
    future = _to_bool_mask(pc.greater(typed["event_time"], ref))
    reasons.append(("future_timestamp", future))

    bad_any = np.zeros(n, dtype=bool)
    first = np.full(n, "", dtype=object)
    every = np.full(n, "", dtype=object)
    counts: Counter[str] = Counter()
    for code, mask in reasons:
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            continue
        new = mask & ~bad_any
        first[new] = code
        every[mask] = np.where(every[mask] == "", code, every[mask] + ";" + code)
        bad_any |= mask
    counts.update(first[bad_any].tolist())

    typed["label"] = pc.cast(label, pa.int8(), safe=False)
    keep = pa.array(~bad_any)
    valid_tbl = pa.table(typed).filter(keep).cast(lake_schema(schema))
    rejected = _as_strings(table.filter(pa.array(bad_any)))  # convert only the rejected rows
    rejected = rejected.append_column("_reason", pa.array(first[bad_any].tolist(), pa.string()))
    rejected = rejected.append_column("_reasons", pa.array(every[bad_any].tolist(), pa.string()))
    return CheckResult(valid=valid_tbl, rejected=rejected, reasons=counts)


def _as_strings(table: pa.Table) -> pa.Table:
    """A table's columns as strings (quarantine keeps what came in, readable by anyone)."""
    cols = []
    for col in table.columns:
        if pa.types.is_string(col.type):
            cols.append(col)
        elif pa.types.is_timestamp(col.type):
            cols.append(pc.strftime(col, format="%Y-%m-%dT%H:%M:%SZ"))
        else:
            cols.append(pc.cast(col, pa.string()))
    return pa.table(cols, names=table.column_names)


def dedupe(valid: pa.Table, seen: pa.Array) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """Keep the first occurrence of each event_id in file order, and drop ids already in the lake.

    Returns (unique rows, duplicate-in-file mask, duplicate-in-lake mask) over ``valid``'s rows.
    Both look-ups are hash based, so the cost is linear in the rows.
    """
    import pandas as pd

    ids = valid.column("event_id")
    if len(pc.unique(ids)) == len(ids):  # the common case: no duplicate in the file
        in_file = np.zeros(len(ids), dtype=bool)
    else:
        in_file = pd.Series(ids.to_pandas(types_mapper=pd.ArrowDtype)).duplicated(keep="first").to_numpy()
    if len(seen):
        in_lake = _to_bool_mask(pc.is_in(ids, value_set=seen)) & ~in_file
    else:
        in_lake = np.zeros(len(ids), dtype=bool)
    keep = ~(in_file | in_lake)
    return valid.filter(pa.array(keep)), in_file, in_lake


def split_by_date(table: pa.Table) -> dict[str, pa.Table]:
    """Rows grouped by the UTC date of event_time, each group in input order."""
    if table.num_rows == 0:
        return {}
    days = pc.cast(pc.cast(table.column("event_time"), pa.int64()), pa.int64()).to_numpy() // 86_400_000_000
    uniq = np.unique(days)
    out = {}
    for d in uniq:
        date = (dt.date(1970, 1, 1) + dt.timedelta(days=int(d))).isoformat()
        out[date] = table if len(uniq) == 1 else table.filter(pa.array(days == d))
    return out


# --------------------------------------------------------------------------- I/O


def source_key(path: str) -> str:
    """A file-name-safe key for a landing file: its stem, with anything unusual replaced."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", Path(path).name)


@dataclass
class FileReport:
    name: str
    sha256: str
    bytes: int
    status: str  # processed | rejected | unchanged
    rows_read: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    partitions: list[str] = field(default_factory=list)
    message: str = ""


def _file_stat(path: str) -> tuple[int, int]:
    return storage.stat(path)  # one HEAD on S3: a changed object of the same size is still seen


def _seen_ids(lake: str, dates: list[str], lookback_days: int, *, exclude_part: str) -> pa.Array:
    """event_ids already in the lake near these dates (other landing files' parts only)."""
    if not dates:
        return pa.array([], pa.string())
    lo = dt.date.fromisoformat(min(dates)) - dt.timedelta(days=lookback_days)
    hi = dt.date.fromisoformat(max(dates)) + dt.timedelta(days=lookback_days)
    chunks: list[pa.Array] = []
    day = lo
    while day <= hi:
        loc = partition_path(lake, day.isoformat())
        for part in storage.list_files(loc, "part-*.parquet"):
            if Path(part).name != exclude_part:
                chunks.extend(storage.read_parquet(part, columns=["event_id"]).column(0).chunks)
        day += dt.timedelta(days=1)
    return pa.concat_arrays(chunks) if chunks else pa.array([], pa.string())


def _reference_time(batch: RawBatch, as_of: dt.datetime, cfg: EtlConfig) -> dt.datetime:
    """Events after this are 'from the future': the end of the file's day (or the run's as-of) + tolerance."""
    if batch.file_date:
        end = dt.datetime.combine(
            dt.date.fromisoformat(batch.file_date) + dt.timedelta(days=1), dt.time(), dt.UTC
        )
    else:
        end = as_of
    return end + dt.timedelta(hours=cfg.future_tolerance_hours)


def process_file(
    path: str,
    *,
    adapter: SourceAdapter,
    lake: str,
    quarantine: str,
    cfg: EtlConfig,
    as_of: dt.datetime,
    sha256: str,
    nbytes: int,
    time_format: str | None = None,
) -> FileReport:
    """ETL one landing file into the lake and quarantine; returns its report."""
    key = source_key(path)
    part_name = f"part-{key}.parquet"
    report = FileReport(name=Path(path).name, sha256=sha256, bytes=nbytes, status="processed")
    try:
        try:
            batch = adapter.read(path)
        except (pa.ArrowException, UnicodeError, csv.Error) as err:  # no line of it can be told apart
            raise FileRejected(
                "unreadable_file",
                f"{path}: could not be read as the source's format ({type(err).__name__}: {err}); it is "
                "quarantined whole and the other files load. Fix or re-export it, then put it back in the "
                "landing folder",
                _data_lines(path),
            ) from None
    except FileRejected as rej:
        # The whole file is kept, byte for byte, with the reason beside it.
        storage.copy_file(path, storage.join(quarantine, "files", Path(path).name))
        storage.write_json(
            storage.join(quarantine, "files", Path(path).name + ".reason.json"),
            {"reason": rej.reason, "message": str(rej), "rows": rej.rows, "sha256": sha256},
        )
        log.error("rejected whole file %s: %s", path, rej)
        report.status, report.message = "rejected", str(rej)
        report.rows_read = report.rows_quarantined = rej.rows
        report.quarantined_by_reason = {rej.reason: rej.rows} if rej.rows else {}
        _drop_old_parts(lake, key)
        return report

    checked = check_rows(
        batch.table,
        adapter.schema,
        reference_time=_reference_time(batch, as_of, cfg),
        time_format=time_format,
    )
    by_date = split_by_date(checked.valid)
    seen = _seen_ids(lake, list(by_date), cfg.dedup_lookback_days, exclude_part=part_name)
    unique, dup_file, dup_lake = dedupe(checked.valid, seen)
    reasons = Counter(checked.reasons)
    if dup_file.any():
        reasons["duplicate_in_file"] += int(dup_file.sum())
    if dup_lake.any():
        reasons["duplicate_in_lake"] += int(dup_lake.sum())
    reasons.update(bad.reason for bad in batch.malformed)

    quarantined = _quarantine_table(checked, dup_file | dup_lake, dup_lake, batch, adapter.schema)
    q_loc = storage.join(quarantine, "rows", f"{key}.parquet")
    if quarantined.num_rows:
        quarantined = quarantined.append_column(
            "_source_file", pa.array([report.name] * quarantined.num_rows)
        )
        quarantined = quarantined.append_column("_source_sha256", pa.array([sha256] * quarantined.num_rows))
        storage.write_parquet(
            q_loc, quarantined, compression=cfg.compression
        )  # before the lake: nothing lost
    elif storage.exists(q_loc):
        storage.delete(q_loc)

    written = []
    for date, rows in split_by_date(unique).items():
        storage.write_parquet(
            storage.join(partition_path(lake, date), part_name), rows, compression=cfg.compression
        )
        written.append(date)
    _drop_old_parts(lake, key, keep=set(written))

    report.rows_read = batch.rows_read
    report.rows_loaded = unique.num_rows
    report.rows_quarantined = int(sum(reasons.values()))
    report.quarantined_by_reason = dict(sorted(reasons.items()))
    report.partitions = written
    if report.rows_read != report.rows_loaded + report.rows_quarantined:
        raise RuntimeError(
            f"{path}: row accounting broke: read {report.rows_read} != loaded {report.rows_loaded} + "
            f"quarantined {report.rows_quarantined}; this is a bug in Loopline, please report it"
        )
    return report


def _data_lines(path: str) -> int:
    """Data lines of a plain-text landing file that could not be parsed (0 when compressed or binary)."""
    if not path.endswith((".csv", ".txt", ".tsv")):
        return 0
    return count_data_lines(storage.read_bytes(path))


def _quarantine_table(
    checked: CheckResult, dup_mask: np.ndarray, dup_lake: np.ndarray, batch: RawBatch, schema: SchemaConfig
) -> pa.Table:
    cols = [*lake_schema(schema).names, "_reason", "_reasons"]
    parts = [checked.rejected.select(cols)] if checked.rejected.num_rows else []
    if dup_mask.any():
        dups = _as_strings(checked.valid.filter(pa.array(dup_mask)))
        why = np.where(dup_lake[dup_mask], "duplicate_in_lake", "duplicate_in_file").tolist()
        dups = dups.append_column("_reason", pa.array(why, pa.string()))
        parts.append(dups.append_column("_reasons", pa.array(why, pa.string())))
    table = pa.concat_tables(parts) if parts else pa.table({c: pa.array([], pa.string()) for c in cols})
    table = table.append_column("_raw_line", pa.nulls(table.num_rows, pa.string()))
    table = table.append_column("_line", pa.nulls(table.num_rows, pa.int64()))  # known for unparsed lines
    if batch.malformed:
        n = len(batch.malformed)
        mal = {c: pa.nulls(n, pa.string()) for c in cols}
        mal["_reason"] = mal["_reasons"] = pa.array([bad.reason for bad in batch.malformed], pa.string())
        mal["_raw_line"] = pa.array([bad.text for bad in batch.malformed], pa.string())
        mal["_line"] = pa.array([bad.line for bad in batch.malformed], pa.int64())
        table = pa.concat_tables([table, pa.table(mal)])
    return table


def _drop_old_parts(lake: str, key: str, keep: set[str] | None = None) -> None:
    """Remove this landing file's parts from partitions it no longer feeds (a changed file)."""
    ledger = storage.join(lake, LEDGER_DIR, f"{key}.json")
    if not storage.exists(ledger):
        return
    for date in storage.read_json(ledger).get("partitions", []):
        if keep is None or date not in keep:
            storage.delete(storage.join(partition_path(lake, date), f"part-{key}.parquet"))


class NoLandingFiles(ValueError):
    """The landing folder or prefix is missing or holds no file the source reads."""


def _no_files_message(landing: str, params: Params, only_date: str | None) -> str:
    local = storage.local_path(landing)
    if local is not None and not local.is_dir():
        where = f"--landing {landing}: no such folder"
    else:
        kind = params.source.kind
        pattern = {"generic": params.source.generic.pattern, "hotel": "*.csv, *.csv.zip"}.get(kind, "*.csv")
        what = f"no landing file for --date {only_date}" if only_date else "no landing file"
        where = f"--landing {landing}: {what} (source.kind {kind}, files matching {pattern})"
        if kind == "generic":
            where += f"; check source.generic.pattern in {params_file()}"
    return f"{where}. Check the path, or pass --allow-empty when no file is an expected outcome"


def _manifest_loc(lake: str, run_id: str) -> str:
    return storage.join(lake, MANIFEST_DIR, f"{run_id}.json")


def _interrupted_runs(lake: str, *, exclude: str) -> list[dict[str, Any]]:
    """Markers of ETL runs that started and did not remove them (killed, or the store went away), each
    with ``counted``: whether a manifest already counts its files (its own, or the run that recovered it)."""
    runs = []
    for loc in storage.list_files(storage.join(lake, RUNNING_DIR), "*.json"):
        marker = storage.read_json(loc)
        if marker.get("run_id") == exclude:
            continue
        by = marker.get("recovered_by")
        counted = storage.exists(_manifest_loc(lake, marker["run_id"])) or (
            by is not None and storage.exists(_manifest_loc(lake, by))
        )
        runs.append({"loc": loc, "marker": marker, "counted": counted})
    return runs


def _recovered_reports(
    lake: str, runs: list[dict[str, Any]], *, skip: set[str]
) -> list[tuple[FileReport, str]]:
    """The files interrupted runs committed (their ledger record holds the sha256 the run started with) and
    no manifest counts, with the run's id; files this run loads again (``skip``) are counted by this run."""
    found: dict[str, tuple[FileReport, str]] = {}
    for run in sorted(runs, key=lambda r: r["marker"]["run_id"]):
        if run["counted"]:
            continue
        for key, sha in run["marker"].get("files", {}).items():
            loc = storage.join(lake, LEDGER_DIR, f"{key}.json")
            if key in skip or not storage.exists(loc):
                continue
            rec = storage.read_json(loc)
            if rec.get("sha256") != sha:
                continue  # not committed by that run
            found[key] = (
                FileReport(
                    name=rec.get("name", key),
                    sha256=sha,
                    bytes=rec.get("bytes", 0),
                    status=rec.get("status", "processed"),
                    rows_read=rec.get("rows_read", 0),
                    rows_loaded=rec.get("rows_loaded", 0),
                    rows_quarantined=rec.get("rows_quarantined", 0),
                    quarantined_by_reason=rec.get("quarantined_by_reason", {}),
                    partitions=rec.get("partitions", []),
                    message=rec.get("message", ""),
                ),
                run["marker"]["run_id"],
            )
    return list(found.values())


def load_fingerprint(params: Params) -> str:
    """A digest of every setting that shapes the rows a landing file gives the lake: the schema (columns,
    types, checks), the source mapping (renames, drops, label, time) and the ETL checks. Not the landing
    folder (other files are other files) nor the compression (same rows, other bytes)."""
    basis = {
        "schema": params.schema_.model_dump(mode="json"),
        "source": params.source.model_dump(mode="json", exclude={"landing"}),
        "etl": params.etl.model_dump(mode="json", exclude={"compression"}),
    }
    return hashlib.sha256(json.dumps(basis, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_etl(
    *,
    landing: str,
    lake: str,
    quarantine: str,
    params: Params,
    as_of: dt.datetime | None = None,
    only_date: str | None = None,
    progress: bool = True,
    allow_empty: bool = False,
) -> dict[str, Any]:
    """Process every new or changed landing file; write ledger records and the run manifest.

    A landing folder or prefix that is missing or holds no landing file raises :class:`NoLandingFiles` (a
    mistyped path is not a green run over nothing) unless ``allow_empty``.
    """

    started = time.time()
    as_of = as_of or dt.datetime.now(dt.UTC)
    adapter = adapter_for(params)
    storage.ensure_dir(lake)
    storage.ensure_dir(quarantine)
    time_format = params.source.generic.time_format if params.source.kind == "generic" else None
    files = adapter.list_files(landing)
    if only_date:
        validate_date(only_date, name="--date")
        files = [f for f in files if only_date in Path(f).name]
    if not files and not allow_empty:
        raise NoLandingFiles(_no_files_message(landing, params, only_date))
    reports: list[FileReport] = []
    todo: list[tuple[str, str, int]] = []
    index_loc = storage.join(lake, LEDGER_INDEX)
    index: dict[str, Any] = storage.read_json(index_loc) if storage.exists(index_loc) else {}
    new_index: dict[str, Any] = {}
    fingerprint = load_fingerprint(params)
    loaded_with_loc = storage.join(lake, LOADED_WITH)
    loaded_with = (
        storage.read_json(loaded_with_loc).get("fingerprint") if storage.exists(loaded_with_loc) else None
    )
    # a lake loaded before fingerprints were recorded is taken as loaded with today's settings
    reload = loaded_with is not None and loaded_with != fingerprint
    if reload:
        log.info(
            "etl: the schema, source or etl settings changed since the lake was loaded: loading every "
            "landing file again (their partitions are rewritten)"
        )
    for f in files:
        key = source_key(f)
        size, mtime = _file_stat(f)
        if reload:
            todo.append((f, storage.sha256_of(f), size))
            continue
        cached = index.get(key)
        if cached and cached.get("bytes") == size and cached.get("mtime_ns") == mtime:
            new_index[key] = cached
            continue  # unchanged: neither hashed nor its ledger record read
        ledger_loc = storage.join(lake, LEDGER_DIR, f"{key}.json")
        prev = storage.read_json(ledger_loc) if storage.exists(ledger_loc) else None
        if prev and prev.get("bytes") == size and prev.get("mtime_ns") == mtime:
            new_index[key] = {"bytes": size, "mtime_ns": mtime, "sha256": prev.get("sha256")}
            continue
        sha = storage.sha256_of(f)
        if prev and prev.get("sha256") == sha:
            storage.write_json(ledger_loc, {**prev, "mtime_ns": mtime})
            new_index[key] = {"bytes": size, "mtime_ns": mtime, "sha256": sha}
            continue
        todo.append((f, sha, size))

    run_id = (
        dt.datetime.fromtimestamp(started, dt.UTC).strftime("%Y%m%dT%H%M%S")
        + "-"
        + hashlib.sha256("".join(sha for _, sha, _ in todo).encode()).hexdigest()[:8]
    )
    stale = _interrupted_runs(lake, exclude=run_id)
    recovered = _recovered_reports(lake, stale, skip={source_key(f) for f, _, _ in todo})
    marker = storage.join(lake, RUNNING_DIR, f"{run_id}.json")
    if todo:
        storage.write_json(
            marker,
            {
                "run_id": run_id,
                "started_at": dt.datetime.fromtimestamp(started, dt.UTC).isoformat(),
                "files": {source_key(f): sha for f, sha, _ in todo},
            },
        )

    from tqdm import tqdm

    for f, sha, size in tqdm(todo, desc="etl", unit="file", disable=not progress or len(todo) < 2):
        rep = process_file(
            f,
            adapter=adapter,
            lake=lake,
            quarantine=quarantine,
            cfg=params.etl,
            as_of=as_of,
            sha256=sha,
            nbytes=size,
            time_format=time_format,
        )
        _, mtime = _file_stat(f)
        new_index[source_key(f)] = {"bytes": size, "mtime_ns": mtime, "sha256": sha}
        storage.write_json(
            storage.join(lake, LEDGER_DIR, f"{source_key(f)}.json"),
            {
                "sha256": sha,
                "bytes": size,
                "mtime_ns": mtime,
                "partitions": rep.partitions,
                "rows_read": rep.rows_read,
                "rows_loaded": rep.rows_loaded,
                "rows_quarantined": rep.rows_quarantined,
                "quarantined_by_reason": rep.quarantined_by_reason,
                "status": rep.status,
                "name": rep.name,
                "message": rep.message,
            },
        )
        reports.append(rep)
        log.log(  # a line per file only when rows were quarantined; the run's summary counts the rest
            logging.INFO if rep.rows_quarantined or rep.status != "processed" else logging.DEBUG,
            "%s: read %d, loaded %d, quarantined %d %s",
            rep.name,
            rep.rows_read,
            rep.rows_loaded,
            rep.rows_quarantined,
            rep.quarantined_by_reason or "",
        )

    if loaded_with is None or (
        reload and not only_date
    ):  # a one-day run leaves the other days' files as they were
        storage.write_json(loaded_with_loc, {"fingerprint": fingerprint})
    merged = {**index, **new_index}
    if merged != index:  # compact: read and written on every run, its size grows with the history
        storage.write_bytes(index_loc, json.dumps(merged, separators=(",", ":"), sort_keys=True).encode())

    counted = [*reports, *(r for r, _ in recovered)]  # an interrupted run's committed files, counted once
    by_reason: Counter[str] = Counter()
    for r in counted:
        by_reason.update(r.quarantined_by_reason)
    totals = {
        "files_seen": len(files),
        "files_processed": sum(r.status == "processed" for r in reports),
        "files_rejected": sum(r.status == "rejected" for r in reports),
        "files_unchanged": len(files) - len(reports) - len(recovered),
        "files_recovered": len(recovered),
        "rows_read": sum(r.rows_read for r in counted),
        "rows_loaded": sum(r.rows_loaded for r in counted),
        "rows_quarantined": sum(r.rows_quarantined for r in counted),
    }
    assert totals["rows_read"] == totals["rows_loaded"] + totals["rows_quarantined"]
    partitions = sorted({d for r in counted for d in r.partitions})
    finished = time.time()
    for old_run in stale:  # counted by this manifest (a kill before it is written: recovered again)
        if not old_run["counted"]:
            storage.write_json(old_run["loc"], {**old_run["marker"], "recovered_by": run_id})
    manifest = {
        "run_id": run_id,
        "started_at": dt.datetime.fromtimestamp(started, dt.UTC).isoformat(),
        "finished_at": dt.datetime.fromtimestamp(finished, dt.UTC).isoformat(),
        "seconds": round(finished - started, 3),
        "as_of": as_of.isoformat(),
        "source": params.source.kind,
        "landing": landing,
        "files": [r.__dict__ for r in reports],
        # files an interrupted run committed (lake and ledger) before it could write its manifest
        "recovered": [{**r.__dict__, "from_run": run} for r, run in recovered],
        "totals": totals,
        "quarantined_by_reason": dict(sorted(by_reason.items())),
        "partitions_written": partitions,
        "reloaded": reload,  # every file loaded again: the schema, source or etl settings changed
    }
    if reports or recovered:
        storage.write_json(_manifest_loc(lake, run_id), manifest)
    for loc in [marker, *(old_run["loc"] for old_run in stale)]:
        if storage.exists(loc):
            storage.delete(loc)
    return manifest
