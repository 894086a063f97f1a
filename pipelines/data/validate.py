"""Validation stage: Great Expectations 1.x expectations on the new lake partitions, with Data Docs.

The expectations are derived from params (``schema`` and ``validation``), never written by hand:

- critical (a failure stops the pipeline): the lake's columns, ``event_id`` not null and unique within
  its partition, ``event_time`` / ``label_time`` typed as UTC timestamps, every ``event_time`` inside the
  partition's day, ``label_time >= event_time``, label in ``schema.label_values``, non-nullable columns
  not null, numbers inside [min, max], critical vocabularies, the row count inside
  [``min_rows_per_partition``, ``max_rows_per_partition``], and freshness: the newest ``event_time``
  at most ``freshness_max_lag_hours`` before the end of the partition's day;
- warning (recorded and logged, the pipeline goes on): a vocabulary value outside ``allowed`` (new
  categories are legitimate drift), a nullable column's null fraction above ``max_null_fraction``,
  and the label rate over rows whose label is known outside [``min_label_rate``, ``max_label_rate``].

Each expectation carries its severity in GX's ``severity`` field and in ``meta["severity"]``.

The cost grows with rows, not with partitions. GX's cost is mostly per expectation and run (building
the metric graph), so the partitions of a run are validated together, in batches of up to
``validation.chunk_rows`` rows: the suite ``lake_rows`` runs once over every row of a batch, the
partition's day a column, and ``lake_partitions`` once over a table with one row of statistics per
partition (row count, columns, dtypes, newest event, label rate, null shares). Failures are split back
by partition and reported in the vocabulary of a per-partition check
(``partition date=D: expect_table_row_count_to_be_between(min=1, max=100) observed 150``); Data Docs hold
a page per batch and suite. Batches beyond the first are validated in worker processes
(``validation.workers``).

Which partitions: by default those written by ETL manifests (``<lake>/_etl/manifests/*.json``) that
this stage has not consumed yet, plus those that failed last time, skipping a partition whose part
files have the same sha256 as when it was last validated. ``dates=[...]`` or ``all_partitions``
overrides that. The record lives in ``<state>/validated.json``; GX's validation results live in
``<state>/gx_results`` so that the Data Docs index keeps every run's history while a run only renders
the pages of the batches it validated. Importing GX costs seconds, so a run with nothing to validate
does not import it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from pipelines.core.errors import EXIT_CHECK_FAILED, InputError
from pipelines.core import storage
from pipelines.core.config import SchemaConfig, ValidationConfig
from pipelines.data.etl import MANIFEST_DIR, lake_dates, lake_schema, partition_path, read_partition

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations import ExpectationSuite
    from great_expectations.core import ExpectationSuiteValidationResult

__all__ = [
    "CRITICAL",
    "WARNING",
    "Failure",
    "PartitionResult",
    "ValidationFailed",
    "build_batch",
    "build_suites",
    "chunk_dates",
    "failure_lines",
    "format_failure",
    "partition_parameters",
    "partitions_to_validate",
    "render_overview",
    "run_validation",
    "summarize_batch",
]

log = logging.getLogger(__name__)

CRITICAL = "critical"
WARNING = "warning"
ROWS_SUITE = "lake_rows"
PARTITIONS_SUITE = "lake_partitions"
PARTITION_COLUMN = "_partition"  # the rows batch: the partition's day (UTC midnight)
EVENT_DAY_COLUMN = "_event_day"  # the rows batch: event_time's UTC day
DATASOURCE_NAME = "lake"
RECORD_FILE = "validated.json"
OVERVIEW_FILE = "overview.html"
GX_RESULTS_DIR = "gx_results"
# COMPLETE: every unexpected row's index, to split a batch's failures by partition (trimmed before storing)
RESULT_FORMAT = {"result_format": "COMPLETE", "partial_unexpected_count": 20}
# Pandas dtypes of the lake's Arrow types (as GX sees a partition after ``Table.to_pandas()``).
_TIMESTAMP_DTYPES = ["datetime64[us, UTC]", "datetime64[ns, UTC]"]
_PANDAS_DTYPES = {"float": ["float64", "float32"], "int": ["int64", "int32", "float64"], "bool": ["bool"]}
_ARG_NAMES = {
    "min_value": "min", "max_value": "max", "value_set": "set", "type_list": "types", "mostly": "mostly",
    "column_set": "columns", "or_equal": "or_equal",
}  # fmt: skip


class ValidationFailed(RuntimeError):
    """A partition failed expectations at or above ``validation.fail_on``; one line per failure."""

    exit_code = EXIT_CHECK_FAILED  # a check that ran and refused, not a usage error

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        super().__init__("\n".join(lines))


# --------------------------------------------------------------------------- the suite (pure)


def _sev(severity: str, reports_as: str | None = None, **kwargs: Any) -> dict[str, Any]:
    """GX's severity and meta for an expectation; ``reports_as`` names the per-partition expectation its
    failures are reported as (with ``kwargs``; ``{"$PARAMETER": name}`` filled from
    :func:`partition_parameters`), for the checks that run over the whole batch or the statistics table."""
    from great_expectations.expectations.metadata_types import FailureSeverity

    meta: dict[str, Any] = {"severity": severity}
    if reports_as is not None:
        meta["reports_as"] = {"type": reports_as, "kwargs": kwargs}
    return {"severity": FailureSeverity(severity), "meta": meta}


def _columns_key(names: list[str]) -> str:
    return json.dumps(sorted(names))


def _typed_columns(schema: SchemaConfig) -> dict[str, list[str]]:
    """The pandas dtype names each typed lake column may have."""
    types = {"event_time": _TIMESTAMP_DTYPES, "label_time": _TIMESTAMP_DTYPES}
    for col in schema.columns:
        if col.type == "timestamp":
            types[col.name] = _TIMESTAMP_DTYPES
        elif col.type in _PANDAS_DTYPES:
            types[col.name] = _PANDAS_DTYPES[col.type]
    return types


def _null_share_columns(schema: SchemaConfig, cfg: ValidationConfig) -> list[str]:
    return [c.name for c in schema.columns if c.nullable] if cfg.max_null_fraction < 1 else []


def build_suites(schema: SchemaConfig, cfg: ValidationConfig) -> tuple[ExpectationSuite, ExpectationSuite]:
    """The two expectation suites, derived from params. Pure: no I/O.

    ``lake_rows`` runs once over every row of a batch of partitions (the partition's day a column,
    ``_partition``), so its cost grows with rows, not with partitions: values, vocabularies, nulls, the
    label, ``label_time >= event_time``, ``event_id`` unique within its partition and every
    ``event_time`` inside its partition's day. ``lake_partitions`` runs once over a table with a row of
    statistics per partition: row count, columns, dtypes, newest ``event_time`` (freshness), matured label
    rate and null shares. A failure is reported per partition in the vocabulary of a per-partition suite
    (``meta["reports_as"]``), e.g. ``expect_table_row_count_to_be_between(min=1, max=100)``.
    """
    import great_expectations as gx
    import great_expectations.expectations as gxe

    crit, warn = _sev(CRITICAL), _sev(WARNING)
    day = {"min_value": {"$PARAMETER": "partition_start"}, "max_value": {"$PARAMETER": "partition_end"}}
    rows: list[Any] = [
        gxe.ExpectColumnValuesToNotBeNull(column="event_id", **crit),
        gxe.ExpectCompoundColumnsToBeUnique(
            column_list=[PARTITION_COLUMN, "event_id"],
            **_sev(CRITICAL, "expect_column_values_to_be_unique", column="event_id"),
        ),
        gxe.ExpectColumnValuesToNotBeNull(column="event_time", **crit),
        gxe.ExpectColumnPairValuesToBeEqual(
            column_A=EVENT_DAY_COLUMN,
            column_B=PARTITION_COLUMN,
            ignore_row_if="either_value_is_missing",
            **_sev(CRITICAL, "expect_column_values_to_be_between", column="event_time", **day),
        ),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="label_time",
            column_B="event_time",
            or_equal=True,
            ignore_row_if="either_value_is_missing",
            **crit,
        ),
        gxe.ExpectColumnValuesToBeInSet(column="label", value_set=list(schema.label_values), **crit),
    ]
    for col in schema.columns:
        if not col.nullable:
            rows.append(gxe.ExpectColumnValuesToNotBeNull(column=col.name, **crit))
        if col.min is not None or col.max is not None:
            rows.append(
                gxe.ExpectColumnValuesToBeBetween(
                    column=col.name, min_value=col.min, max_value=col.max, **crit
                )
            )
        if col.allowed is not None:
            sev = crit if col.critical_allowed else warn
            rows.append(gxe.ExpectColumnValuesToBeInSet(column=col.name, value_set=list(col.allowed), **sev))

    names = lake_schema(schema).names
    low, high = cfg.min_rows_per_partition, cfg.max_rows_per_partition
    stats: list[Any] = [
        gxe.ExpectColumnValuesToBeInSet(
            column="columns",
            value_set=[_columns_key(names)],
            **_sev(CRITICAL, "expect_table_columns_to_match_set", column_set=names),
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="rows",
            min_value=low,
            max_value=high,
            **_sev(CRITICAL, "expect_table_row_count_to_be_between", min_value=low, max_value=high),
        ),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="event_time_max",
            column_B="freshness_min",
            or_equal=True,
            ignore_row_if="either_value_is_missing",
            **_sev(
                CRITICAL,
                "expect_column_max_to_be_between",
                column="event_time",
                min_value={"$PARAMETER": "freshness_min"},
            ),
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="label_rate",
            min_value=cfg.min_label_rate,
            max_value=cfg.max_label_rate,
            **_sev(
                WARNING,
                "expect_column_mean_to_be_between",
                column="label",
                min_value=cfg.min_label_rate,
                max_value=cfg.max_label_rate,
            ),
        ),
    ]
    for name, types in _typed_columns(schema).items():
        stats.append(
            gxe.ExpectColumnValuesToBeInSet(
                column=f"dtype__{name}",
                value_set=types,
                **_sev(CRITICAL, "expect_column_values_to_have_dtype", column=name, type_list=types),
            )
        )
    for name in _null_share_columns(schema, cfg):
        stats.append(
            gxe.ExpectColumnValuesToBeBetween(
                column=f"null_share__{name}",
                max_value=cfg.max_null_fraction,
                **_sev(WARNING, "expect_column_values_to_not_be_null", column=name,
                       mostly=1 - cfg.max_null_fraction),
            )
        )  # fmt: skip
    meta = {"source": "derived from params.yaml (schema, validation) by pipelines/data/validate.py"}
    return (
        gx.ExpectationSuite(name=ROWS_SUITE, expectations=rows, meta=meta),
        gx.ExpectationSuite(name=PARTITIONS_SUITE, expectations=stats, meta=meta),
    )


def partition_parameters(date: str, cfg: ValidationConfig) -> dict[str, dt.datetime]:
    """The suite parameters of partition ``date``: its day [start, end) and the freshness bound."""
    start = dt.datetime.combine(dt.date.fromisoformat(date), dt.time(), dt.UTC)
    end = start + dt.timedelta(days=1)
    return {
        "partition_start": start,
        "partition_end": end,
        "freshness_min": end - dt.timedelta(hours=cfg.freshness_max_lag_hours),
    }


# --------------------------------------------------------------------------- results (pure)


@dataclass
class Failure:
    expectation: str  # e.g. expect_column_values_to_be_between
    args: str  # e.g. "amount, min=0, max=1e+06"
    severity: str
    observed: str  # human readable, e.g. "12 unexpected values (0.24%) (e.g. -3.2)"
    observed_value: Any = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    examples: list[Any] = field(default_factory=list)


@dataclass
class PartitionResult:
    date: str
    rows: int
    expectations: int
    failures: list[Failure]
    parts: dict[str, str] = field(default_factory=dict)  # part file name -> sha256

    @property
    def critical(self) -> list[Failure]:
        return [f for f in self.failures if f.severity == CRITICAL]

    @property
    def warnings(self) -> list[Failure]:
        return [f for f in self.failures if f.severity != CRITICAL]

    @property
    def status(self) -> str:
        return "failed" if self.critical else "warning" if self.failures else "passed"


def _fmt(v: Any) -> str:
    """A value as a short, readable string: 0.0 -> 0, 1e6 -> 1e+06, timestamps in ISO 8601."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float) or type(v).__name__.startswith("float"):
        f = float(v)
        return "nan" if math.isnan(f) else f"{f:.6g}"
    if hasattr(v, "isoformat"):
        return str(v.isoformat())
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, (list, tuple, set)):
        items = list(v)
        shown = ", ".join(_fmt(x) for x in items[:5])
        return f"[{shown}{', ...' if len(items) > 5 else ''}]"
    return str(v)


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float) or type(v).__name__.startswith("float"):
        f = float(v)
        return None if math.isnan(f) else f
    if type(v).__name__.startswith("int"):
        return int(v)
    if hasattr(v, "isoformat"):
        return str(v.isoformat())
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set)):
        return [_jsonable(x) for x in v]
    return str(v)


def _is_missing(v: Any) -> bool:
    """None, NaN, and pandas' NaT / NA (the batch frame's missing values)."""
    try:
        return v is None or bool(v != v)
    except TypeError:  # pd.NA: its comparisons are NA
        return True


def _args(kwargs: dict[str, Any]) -> str:
    parts = [str(kwargs[k]) for k in ("column", "column_A", "column_B") if kwargs.get(k) is not None]
    for key, short in _ARG_NAMES.items():
        if kwargs.get(key) is not None:
            parts.append(f"{short}={_fmt(kwargs[key])}")
    return ", ".join(parts)


@dataclass
class Batch:
    """Partitions validated together: every row in ``frame`` (the lake's columns, conformed to the lake
    schema, plus the partition's day and the event's day) and one row of statistics each in ``stats``."""

    dates: list[str]
    offsets: np.ndarray  # frame rows [offsets[i], offsets[i + 1]) belong to dates[i]
    frame: pd.DataFrame
    stats: pd.DataFrame

    def per_partition(self, mask: np.ndarray) -> np.ndarray:
        """How many rows of each partition ``mask`` holds."""
        cum = np.concatenate([[0], np.cumsum(mask, dtype=np.int64)])
        return np.asarray(cum[self.offsets[1:]] - cum[self.offsets[:-1]])


def _conform(table: pa.Table, target: pa.Schema) -> pa.Table:
    """``table`` with exactly the lake's columns and types: a missing column, or one whose values do not
    cast, is all null here (the statistics table reports the partition's own columns and dtypes)."""
    columns = []
    for f in target:
        col = None
        if f.name in table.schema.names:
            try:
                col = table.column(f.name).cast(f.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                col = None
        columns.append(col if col is not None else pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(columns, schema=pa.schema([pa.field(f.name, f.type) for f in target]))


def _partition_stats(
    date: str, table: pa.Table, schema: SchemaConfig, cfg: ValidationConfig
) -> dict[str, Any]:
    """One row of the statistics table: what the per-partition expectations look at."""
    import pyarrow.compute as pc

    names = table.schema.names
    n = table.num_rows
    dtypes = table.schema.empty_table().to_pandas().dtypes
    row: dict[str, Any] = {
        "partition": date,
        "rows": n,
        "columns": _columns_key(names),
        "event_time_max": pc.max(table.column("event_time")).as_py() if "event_time" in names else None,
        "freshness_min": partition_parameters(date, cfg)["freshness_min"],
        "label_rate": None,
    }
    if "label" in names and n:
        row["label_rate"] = pc.mean(table.column("label").cast(pa.float64())).as_py()
    for name in _typed_columns(schema):
        row[f"dtype__{name}"] = str(dtypes[name]) if name in names else None
    for name in _null_share_columns(schema, cfg):
        nulls = table.column(name).null_count if name in names else n
        row[f"nulls__{name}"] = nulls
        row[f"null_share__{name}"] = nulls / n if n else 0.0
    return row


def build_batch(tables: dict[str, pa.Table], schema: SchemaConfig, cfg: ValidationConfig) -> Batch:
    """The rows and statistics of the partitions ``tables`` (date -> its parts, concatenated). Pure."""
    import pandas as pd

    dates = list(tables)
    target = lake_schema(schema)
    counts = np.array([tables[d].num_rows for d in dates], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    if dates:
        combined = pa.concat_tables([_conform(tables[d], target) for d in dates])
    else:
        combined = target.empty_table()
    frame = combined.to_pandas()
    days = np.array([np.datetime64(d, "us") for d in dates], dtype="datetime64[us]")
    frame[PARTITION_COLUMN] = pd.DatetimeIndex(np.repeat(days, counts)).tz_localize("UTC")
    frame[EVENT_DAY_COLUMN] = frame["event_time"].dt.floor("D")
    stats = pd.DataFrame([_partition_stats(d, tables[d], schema, cfg) for d in dates])
    for col in ("event_time_max", "freshness_min"):
        if col in stats:
            stats[col] = pd.to_datetime(stats[col], utc=True)
    return Batch(dates=dates, offsets=offsets, frame=frame, stats=stats)


def _reported(cfg: Any, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The per-partition expectation (type, kwargs with this partition's parameters) a result stands for."""
    reports_as = (cfg.meta or {}).get("reports_as")
    if not reports_as:
        return cfg.type, dict(cfg.kwargs)
    kwargs = {
        k: params[v["$PARAMETER"]] if isinstance(v, dict) and "$PARAMETER" in v else v
        for k, v in reports_as["kwargs"].items()
    }
    return reports_as["type"], kwargs


def _denominators(batch: Batch, kwargs: dict[str, Any], expectation: str) -> np.ndarray:
    """Per partition, the rows an expectation judged (GX's percentages exclude missing values, except for
    the not-null and uniqueness checks)."""
    frame = batch.frame
    if expectation == "expect_column_values_to_not_be_null" or kwargs.get("column_list"):
        return np.diff(batch.offsets)
    if kwargs.get("column_A") is not None:
        mask = frame[kwargs["column_A"]].notna().to_numpy() & frame[kwargs["column_B"]].notna().to_numpy()
    else:
        mask = frame[kwargs["column"]].notna().to_numpy()
    return batch.per_partition(mask)


def _row_failures(batch: Batch, r: Any, cfg: ValidationConfig) -> dict[str, Failure]:
    """A failed ``lake_rows`` expectation, split into the partitions its unexpected rows belong to."""
    conf = r.expectation_config
    severity = str((conf.meta or {}).get("severity") or getattr(conf, "severity", CRITICAL))
    kwargs = dict(conf.kwargs)
    idx = np.sort(np.asarray((r.result or {}).get("unexpected_index_list") or [], dtype=np.int64))
    bounds = np.searchsorted(idx, batch.offsets)
    denominators = _denominators(batch, kwargs, conf.type)
    out = {}
    for i, date in enumerate(batch.dates):
        rows = idx[bounds[i] : bounds[i + 1]]
        if not len(rows):
            continue
        kind, shown = _reported(conf, partition_parameters(date, cfg))
        column = shown.get("column") or kwargs.get("column") or kwargs.get("column_A")
        values = batch.frame[column].iloc[rows[:200]] if column in batch.frame else []
        examples = list(dict.fromkeys(x for x in (_plain(v) for v in values) if not _is_missing(x)))[:5]
        n = len(rows)
        pct = 100.0 * n / denominators[i] if denominators[i] else 100.0
        what = "null values" if kind == "expect_column_values_to_not_be_null" else "unexpected values"
        observed = f"{n} {what} ({pct:.2f}%)"
        if examples:
            observed += f" (e.g. {', '.join(_fmt(x) for x in examples[:3])})"
        out[date] = Failure(
            expectation=kind, args=_args(shown), severity=severity, observed=observed,
            unexpected_count=n, unexpected_percent=pct, examples=examples,
        )  # fmt: skip
    return out


def _stat_failures(batch: Batch, r: Any, cfg: ValidationConfig) -> dict[str, Failure]:
    """A failed ``lake_partitions`` expectation: one failure per partition whose statistic broke it."""
    conf = r.expectation_config
    severity = str((conf.meta or {}).get("severity") or getattr(conf, "severity", CRITICAL))
    column = conf.kwargs.get("column") or conf.kwargs.get("column_A")
    row_of = {str(d): i for i, d in enumerate(batch.stats["partition"])}
    out = {}
    for entry in (r.result or {}).get("unexpected_index_list") or []:  # {"partition": date, ...}
        stat = batch.stats.iloc[row_of[str(entry["partition"])]]
        date = str(stat["partition"])
        kind, shown = _reported(conf, partition_parameters(date, cfg))
        value = _plain(stat[column])
        fail = Failure(expectation=kind, args=_args(shown), severity=severity, observed="")
        if kind == "expect_table_columns_to_match_set":
            names = json.loads(value)
            expected = list(shown["column_set"])
            fail.observed_value = names
            mismatched = {
                "unexpected": [c for c in names if c not in expected],
                "missing": [c for c in expected if c not in names],
            }
            fail.observed = f"{_fmt(names)} (mismatched: {_fmt(_jsonable(mismatched))})"
        elif kind == "expect_column_values_to_not_be_null":
            nulls, rows = int(stat[f"nulls__{shown['column']}"]), int(stat["rows"])
            pct = 100.0 * nulls / rows if rows else 0.0
            fail.unexpected_count, fail.unexpected_percent = nulls, pct
            fail.observed = f"{nulls} null values ({pct:.2f}%)"
        else:
            fail.observed_value = value
            fail.observed = _fmt(value)
        out[date] = fail
    return out


def summarize_batch(
    batch: Batch,
    rows_result: ExpectationSuiteValidationResult,
    stats_result: ExpectationSuiteValidationResult,
    cfg: ValidationConfig,
    *,
    parts: dict[str, dict[str, str]] | None = None,
) -> list[PartitionResult]:
    """GX's two results for a batch, turned into each partition's failures worth reporting. Pure."""
    failures: dict[str, list[Failure]] = {d: [] for d in batch.dates}
    for result, split in ((rows_result, _row_failures), (stats_result, _stat_failures)):
        for r in result.results:
            if r.success or r.expectation_config is None:
                continue
            exc = r.exception_info or {}
            if exc.get("raised_exception"):  # e.g. a column GX cannot compare: every partition of the batch
                for date in batch.dates:
                    conf = r.expectation_config
                    kind, shown = _reported(conf, partition_parameters(date, cfg))
                    severity = str((conf.meta or {}).get("severity") or CRITICAL)
                    observed = f"an error: {exc.get('exception_message')}"
                    failures[date].append(Failure(kind, _args(shown), severity, observed))
                continue
            for date, fail in split(batch, r, cfg).items():
                failures[date].append(fail)
    n_expectations = len(rows_result.results) + len(stats_result.results)
    counts = np.diff(batch.offsets)
    out = []
    for i, date in enumerate(batch.dates):
        fails = sorted(failures[date], key=lambda f: (f.severity != CRITICAL, f.expectation, f.args))
        out.append(
            PartitionResult(
                date=date, rows=int(counts[i]), expectations=n_expectations, failures=fails,
                parts=dict((parts or {}).get(date) or {}),
            )
        )  # fmt: skip
    return out


def _plain(v: Any) -> Any:
    """A numpy/pandas scalar as the Python value (a Timestamp stays a Timestamp)."""
    item = getattr(v, "item", None)
    if callable(item) and type(v).__module__ == "numpy":
        return item()
    return v


def format_failure(date: str, failure: Failure) -> str:
    """``partition date=D: expect_x(column, min=0) observed 12 unexpected values (0.24%) (e.g. -3.2)``."""
    return f"partition date={date}: {failure.expectation}({failure.args}) observed {failure.observed}"


def grouped_warnings(results: list[PartitionResult]) -> list[str]:
    """One line per distinct warning (expectation and arguments), with the partitions it hit and the first
    partition's observation: the same warning on 20 days is one line, not 20 (Data Docs hold each)."""
    groups: dict[tuple[str, str], list[tuple[str, Failure]]] = {}
    for pr in results:
        for f in pr.warnings:
            groups.setdefault((f.expectation, str(f.args)), []).append((pr.date, f))
    lines = []
    for hits in groups.values():
        dates = sorted(d for d, _ in hits)
        first = format_failure(*hits[0])
        if len(hits) == 1:
            lines.append(first)
        else:
            lines.append(f"{len(hits)} partitions ({dates[0]} .. {dates[-1]}); e.g. {first}")
    return lines


def failure_lines(results: list[PartitionResult], fail_on: str) -> list[str]:
    """The lines of the stage's error message: failures at or above ``fail_on`` (none for ``never``)."""
    if fail_on == "never":
        return []
    lines = []
    for pr in results:
        for f in pr.failures:
            if f.severity == CRITICAL or fail_on == "warning":
                lines.append(f"validation failed: {format_failure(pr.date, f)}")
    return lines


def partition_summary(pr: PartitionResult) -> dict[str, Any]:
    return {
        "date": pr.date,
        "status": pr.status,
        "rows": pr.rows,
        "expectations": pr.expectations,
        "critical_failures": len(pr.critical),
        "warnings": len(pr.warnings),
        "failures": [
            {
                "expectation": f.expectation,
                "args": f.args,
                "severity": f.severity,
                "observed": f.observed,
                "observed_value": _jsonable(f.observed_value),
                "unexpected_count": f.unexpected_count,
                "unexpected_percent": f.unexpected_percent,
                "examples": _jsonable(f.examples),
                "message": format_failure(pr.date, f),
            }
            for f in pr.failures
        ],
    }


# --------------------------------------------------------------------------- which partitions


def empty_record() -> dict[str, Any]:
    return {"version": 1, "manifests": [], "partitions": {}}


def partition_digest(lake: str, date: str) -> dict[str, str]:
    """sha256 of each part file of a partition (empty when the partition does not exist)."""
    parts = storage.list_files(partition_path(lake, date), "part-*.parquet")
    return {Path(p).name: storage.sha256_of(p) for p in parts}


def suite_digest(schema: SchemaConfig, cfg: ValidationConfig) -> str:
    """A fingerprint of everything the suites are derived from (``fail_on`` only changes the verdict,
    ``workers`` and ``chunk_rows`` only the speed)."""
    basis = {
        "schema": schema.model_dump(mode="json"),
        "validation": cfg.model_dump(mode="json", exclude={"fail_on", "workers", "chunk_rows"}),
    }
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:16]


def partitions_to_validate(
    lake: str,
    record: dict[str, Any],
    *,
    dates: list[str] | None = None,
    all_partitions: bool = False,
    suite: str | None = None,
) -> tuple[list[str], list[str], dict[str, dict[str, str]]]:
    """(dates to validate, manifest names consumed, digests of those dates).

    Default: the partitions written by manifests not in the record, plus those that failed last time;
    a partition whose parts are byte-identical to its last passing validation is skipped. When the
    suite (``suite``, see :func:`suite_digest`) differs from the record's, every partition on record
    is validated again. ``dates`` or ``all_partitions`` validate those partitions whatever the record says.
    """
    manifest_names = [Path(p).name for p in storage.list_files(storage.join(lake, MANIFEST_DIR), "*.json")]
    new_manifests = [m for m in manifest_names if m not in set(record.get("manifests", []))]
    known = record.get("partitions", {})
    if all_partitions:
        candidates, forced = lake_dates(lake), True
    elif dates:
        candidates, forced = sorted(set(dates)), True
    else:
        written: set[str] = set()
        for m in new_manifests:
            written.update(
                storage.read_json(storage.join(lake, MANIFEST_DIR, m)).get("partitions_written", [])
            )
        failed = {d for d, r in known.items() if r.get("status") == "failed"}
        if suite is not None and known and record.get("suite") != suite:
            log.info("the suite changed since the last run (params schema/validation): re-validating all")
            failed = set(known)
        candidates, forced = sorted(written | failed), False
    todo, digests = [], {}
    for d in candidates:
        digest = partition_digest(lake, d)
        if not digest:
            log.warning("partition date=%s has no part files in %s; nothing to validate", d, lake)
            continue
        prev = known.get(d)
        if not forced and prev and prev.get("parts") == digest and prev.get("status") != "failed":
            log.info("partition date=%s unchanged since it was validated; skipped", d)
            continue
        todo.append(d)
        digests[d] = digest
    consumed = new_manifests if (not dates or all_partitions) else []
    return todo, consumed, digests


# --------------------------------------------------------------------------- GX context and run


def _make_context(*, data_docs: Path, results_dir: Path) -> Any:
    """An ephemeral GX context: in-memory stores, except validation results and Data Docs on disk."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    defaults = InMemoryStoreBackendDefaults()
    stores = dict(defaults.stores)
    stores[defaults.validation_results_store_name] = {
        "class_name": "ValidationResultsStore",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(results_dir)},
    }
    config = DataContextConfig(
        store_backend_defaults=defaults,
        stores=stores,
        data_docs_sites={
            "loopline": {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(data_docs),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        },
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(project_config=config, mode="ephemeral")


def run_validation(
    *,
    lake: str,
    reports: str,
    schema: SchemaConfig,
    cfg: ValidationConfig,
    dates: list[str] | None = None,
    all_partitions: bool = False,
    state: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Validate the selected partitions, update the record, Data Docs and ``<reports>/summary.json``.

    Returns the summary. Does not raise on failed expectations: the caller applies
    ``failure_lines(...)`` (kept in ``summary["failure_lines"]``) and stops the pipeline.
    """
    started = time.time()
    reports_dir = storage.local_path(reports)
    if reports_dir is None:
        raise InputError(f"--reports {reports!r}: Data Docs are written to a local folder; pass a local path")
    state = state or storage.join(reports, "state")
    state_dir = storage.local_path(state)
    if state_dir is None:
        raise InputError(f"--state {state!r}: GX's result store is a local folder; pass a local path")
    record_loc = storage.join(state, RECORD_FILE)
    record = storage.read_json(record_loc) if storage.exists(record_loc) else empty_record()
    suite = suite_digest(schema, cfg)
    todo, consumed, digests = partitions_to_validate(
        lake, record, dates=dates, all_partitions=all_partitions, suite=suite
    )
    data_docs = reports_dir / "data_docs"
    index = data_docs / "index.html"
    log.info("validating %d partition(s)%s", len(todo), f": {todo[0]} .. {todo[-1]}" if todo else "")

    results: list[PartitionResult] = []
    pages: dict[str, list[str]] = {}
    if todo:
        results, pages = _validate_partitions(
            lake=lake, dates=todo, digests=digests, schema=schema, cfg=cfg,
            data_docs=data_docs.resolve(), results_dir=(state_dir / GX_RESULTS_DIR).resolve(),
            progress=progress,
        )  # fmt: skip
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    for pr in results:
        record["partitions"][pr.date] = {
            "parts": pr.parts,
            "status": pr.status,
            "rows": pr.rows,
            "critical_failures": len(pr.critical),
            "warnings": len(pr.warnings),
            "messages": [format_failure(pr.date, f) for f in pr.failures],
            "docs_page": next(iter(pages.get(pr.date, [])), None),  # the rows batch's page
            "docs_pages": pages.get(pr.date, []),
            "validated_at": now,
        }
    record["manifests"] = sorted(set(record["manifests"]) | set(consumed))
    if not dates or all_partitions:
        record["suite"] = suite
    storage.write_json(record_loc, record)
    overview = data_docs / OVERVIEW_FILE
    if results or not overview.exists():
        # also when nothing was left to validate: data_docs/ is the stage's declared output and DVC fails a
        # run whose output is missing (an Airflow re-run of a loaded day, in a workspace seeded with state/)
        storage.write_bytes(str(overview), render_overview(record).encode())

    for line in grouped_warnings(results):
        log.warning("validation warning: %s", line)
    lines = failure_lines(results, cfg.fail_on)
    on_record = record["partitions"].values()
    summary = {
        "partitions_validated": len(results),
        "critical_failures": sum(len(pr.critical) for pr in results),
        "warnings": sum(len(pr.warnings) for pr in results),
        "failed_partitions": [pr.date for pr in results if pr.critical],
        "fail_on": cfg.fail_on,
        "failure_lines": lines,
        "data_docs": str(index) if index.exists() else None,
        "overview": str(data_docs / OVERVIEW_FILE) if (data_docs / OVERVIEW_FILE).exists() else None,
        "partitions": [partition_summary(pr) for pr in results],
        "on_record": {
            "partitions": len(record["partitions"]),
            "failed": sum(r["status"] == "failed" for r in on_record),
            "with_warnings": sum(r["status"] == "warning" for r in on_record),
        },
        "seconds": round(time.time() - started, 3),
    }
    storage.write_json(storage.join(reports, "summary.json"), summary)
    return summary


def _workers(requested: int, chunks: int) -> int:
    """Worker processes for ``chunks`` batches: ``requested`` (0: one per core, at most 4), and one when
    there is a single batch (a worker's GX import costs seconds)."""
    n = requested or min(os.cpu_count() or 1, 4)
    return 1 if chunks < 2 else max(1, min(n, chunks))


def chunk_dates(dates: list[str], rows: dict[str, int], limit: int) -> list[list[str]]:
    """Consecutive partitions in batches of at most ``limit`` rows (a larger partition is a batch alone)."""
    chunks: list[list[str]] = []
    current: list[str] = []
    total = 0
    for d in dates:
        if current and total + rows[d] > limit:
            chunks.append(current)
            current, total = [], 0
        current.append(d)
        total += rows[d]
    if current:
        chunks.append(current)
    return chunks


def _run_name(dates: list[str]) -> str:
    return f"date={dates[0]}" if len(dates) == 1 else f"date={dates[0]}..{dates[-1]}"


def _trim(result: Any) -> None:
    """Drop the full lists of unexpected values and row indices (COMPLETE format: needed to split a batch's
    failures by partition, too large to store); GX keeps its partial lists for Data Docs."""
    for r in result.results:
        for key in ("unexpected_list", "unexpected_index_list", "unexpected_index_query"):
            (r.result or {}).pop(key, None)


def _validate_chunk(
    *,
    lake: str,
    dates: list[str],
    digests: dict[str, dict[str, str]],
    schema: SchemaConfig,
    cfg: ValidationConfig,
    data_docs: Path,
    results_dir: Path,
    run_time: dt.datetime,
) -> tuple[list[PartitionResult], dict[str, list[str]]]:
    """Validate the partitions ``dates`` together: one GX run over their rows, one over their statistics,
    both results in the on-disk store with their Data Docs pages. Runs in the stage's process or in a worker
    process (spawned: everything it takes is plain data). Returns the results and each date's pages."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # before GX's first import
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    tables = {}
    for date in dates:
        table = read_partition(lake, date)
        if table is None:
            raise FileNotFoundError(f"{partition_path(lake, date)}: no part files; run the etl stage first")
        tables[date] = table
    batch = build_batch(tables, schema, cfg)
    del tables
    ctx = _make_context(data_docs=data_docs, results_dir=results_dir)
    source = ctx.data_sources.add_pandas(DATASOURCE_NAME)
    run_name = _run_name(dates)
    results = {}
    # the statistics' Data Docs page names each unexpected row's partition
    stats_format = {**RESULT_FORMAT, "unexpected_index_column_names": ["partition"]}
    for suite, frame, result_format in zip(
        build_suites(schema, cfg), (batch.frame, batch.stats), (RESULT_FORMAT, stats_format), strict=True
    ):
        suite = ctx.suites.add(suite)
        definition = source.add_dataframe_asset(name=suite.name).add_batch_definition_whole_dataframe("batch")
        vd = ctx.validation_definitions.add(
            gx.ValidationDefinition(name=suite.name, data=definition, suite=suite)
        )
        results[suite.name] = vd.run(
            batch_parameters={"dataframe": frame},
            result_format=result_format,  # type: ignore[arg-type]
            run_id=RunIdentifier(run_name=run_name, run_time=run_time),
        )
    out = summarize_batch(batch, results[ROWS_SUITE], results[PARTITIONS_SUITE], cfg, parts=digests)
    store = ctx.validation_results_store
    keys = [k for k in store.list_keys() if k.run_id.run_name == run_name and k.run_id.run_time == run_time]
    pages = []
    for key in sorted(keys, key=lambda k: k.expectation_suite_identifier.name != ROWS_SUITE):
        result = results[key.expectation_suite_identifier.name]
        _trim(result)
        store.set(key, result)
        suite_name, run, run_time_s, batch_id = key.to_tuple()
        pages.append(f"validations/{suite_name}/{run}/{run_time_s}/{batch_id}.html")
    # this batch's Data Docs pages, here (in parallel with the other batches); the index, which lists every
    # result on disk, is built once by the caller
    ctx.build_data_docs(resource_identifiers=keys, build_index=False)
    return out, {d: pages for d in dates}


def _validate_partitions(
    *,
    lake: str,
    dates: list[str],
    digests: dict[str, dict[str, str]],
    schema: SchemaConfig,
    cfg: ValidationConfig,
    data_docs: Path,
    results_dir: Path,
    progress: bool,
) -> tuple[list[PartitionResult], dict[str, list[str]]]:
    """Validate ``dates`` in batches of up to ``validation.chunk_rows`` rows; returns their results and
    Data Docs pages (by date).

    GX's cost is per expectation and run, hardly per row (building the metric graph of the suite takes
    most of a small run's half second), so the partitions are validated together: 1,461 one-row daily
    partitions are one run, not 1,461. Batches beyond the first go to worker processes, each its own GX
    context rendering its pages; the results land in the shared on-disk store and the Data Docs index is
    built once, here.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    from tqdm import tqdm

    t0 = time.time()
    rows = {d: sum(storage.parquet_rows(p) for p in storage.list_files(partition_path(lake, d), "part-*.parquet"))
            for d in dates}  # fmt: skip
    chunks = chunk_dates(dates, rows, cfg.chunk_rows)
    n_workers = _workers(cfg.workers, len(chunks))
    results_dir.mkdir(parents=True, exist_ok=True)
    run_time = dt.datetime.now(dt.UTC)
    kw: dict[str, Any] = {"lake": lake, "schema": schema, "cfg": cfg, "data_docs": data_docs,
                          "results_dir": results_dir, "run_time": run_time}  # fmt: skip
    by_date: dict[str, PartitionResult] = {}
    pages: dict[str, list[str]] = {}

    def collect(found: tuple[list[PartitionResult], dict[str, list[str]]]) -> None:
        by_date.update((pr.date, pr) for pr in found[0])
        pages.update(found[1])

    with tqdm(
        total=len(dates), desc="validate", unit="partition", disable=not progress or len(chunks) < 2
    ) as bar:
        if n_workers == 1:
            for chunk in chunks:
                collect(_validate_chunk(dates=chunk, digests=_only(digests, chunk), **kw))
                bar.update(len(chunk))
        else:
            try:
                with ProcessPoolExecutor(n_workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                    futures = {pool.submit(_validate_chunk, dates=c, digests=_only(digests, c), **kw): c
                               for c in chunks}  # fmt: skip
                    for fut in as_completed(futures):
                        collect(fut.result())
                        bar.update(len(futures[fut]))
            except BrokenProcessPool as err:
                # e.g. a script calling run_validation without `if __name__ == "__main__":` (spawned workers
                # re-import it) or a worker killed for memory: the rest is validated here, nothing is lost
                rest = [c for c in chunks if c[0] not in by_date]
                log.warning(
                    "validation worker processes failed (%s); validating the remaining %d batch(es) in this "
                    "process. Set validation.workers: 1 to skip the workers; from a script, guard the call with "
                    "`if __name__ == '__main__':`", err, len(rest),
                )  # fmt: skip
                n_workers = 1
                for chunk in rest:
                    collect(_validate_chunk(dates=chunk, digests=_only(digests, chunk), **kw))
                    bar.update(len(chunk))
    out = [by_date[d] for d in dates]
    for (
        pr
    ) in out:  # a line per partition only when it failed; the summary counts warnings, Data Docs show them
        log.log(
            logging.WARNING if pr.status not in ("passed", "warning") else logging.DEBUG,
            "partition date=%s: %s (%d rows, %d expectations)", pr.date, pr.status, pr.rows, pr.expectations,
        )  # fmt: skip
    log.info(
        "validated %d partition(s), %d row(s), in %d batch(es) in %.1fs with %d process(es)",
        len(out), sum(rows.values()), len(chunks), time.time() - t0, n_workers,
    )  # fmt: skip
    t1 = time.time()
    ctx = _make_context(data_docs=data_docs, results_dir=results_dir)
    for suite in build_suites(schema, cfg):
        ctx.suites.add(suite)
    ctx.build_data_docs(
        resource_identifiers=[*ctx.expectations_store.list_keys()]
    )  # the suite pages, the index
    log.info("Data Docs: index of %d result(s) built in %.1fs -> %s", len(ctx.validation_results_store.list_keys()),
             time.time() - t1, data_docs)  # fmt: skip
    return out, pages


def _only(digests: dict[str, dict[str, str]], dates: list[str]) -> dict[str, dict[str, str]]:
    return {d: digests[d] for d in dates if d in digests}


# --------------------------------------------------------------------------- offline overview page

_STATUS_COLOURS = {"failed": "#c62828", "warning": "#b26a00", "passed": "#2e7d32"}


def render_overview(record: dict[str, Any]) -> str:
    """A self-contained HTML page (no scripts, no CDN) listing every partition on record. Pure.

    GX's own index page draws its tables with JavaScript loaded from CDNs, so it is blank offline;
    this page is readable anywhere and links to GX's per-partition pages, which are static HTML.
    """
    from html import escape

    rows = []
    parts = record.get("partitions", {})
    for date in sorted(parts, reverse=True):
        r = parts[date]
        colour = _STATUS_COLOURS.get(r.get("status", ""), "#000")
        found = r.get("docs_pages") or [r.get("docs_page")]
        link = " ".join(
            f'<a href="{escape(page)}">{label}</a>'
            for page, label in zip(found, ("rows", "partition statistics"), strict=False)
            if page
        )
        msgs = "<br>".join(escape(m.split(": ", 1)[-1]) for m in r.get("messages", []))
        rows.append(
            f"<tr><td class=n>date={escape(date)}</td><td style='color:{colour};font-weight:bold'>"
            f"{escape(str(r.get('status')))}</td><td>{r.get('rows', '')}</td>"
            f"<td>{r.get('critical_failures', 0)}</td><td>{r.get('warnings', 0)}</td>"
            f"<td class=m>{msgs}</td><td class=n>{escape(str(r.get('validated_at', '')))}</td><td>{link}</td></tr>"
        )
    counts = {s: sum(p.get("status") == s for p in parts.values()) for s in _STATUS_COLOURS}
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Loopline data validation</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; width: 100%; font-size: 14px; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }}
th {{ background: #f3f3f3; }} td.m {{ font-family: monospace; font-size: 12px; }} td.n {{ white-space: nowrap; }}
</style></head><body>
<h1>Loopline data validation</h1>
<p>{len(parts)} partitions on record: {counts["passed"]} passed, {counts["warning"]} with warnings,
{counts["failed"]} failed. Suites (derived from params.yaml):
<a href="expectations/{ROWS_SUITE}.html">{ROWS_SUITE}</a> over every row of a batch of partitions,
<a href="expectations/{PARTITIONS_SUITE}.html">{PARTITIONS_SUITE}</a> over a row of statistics per partition;
a batch's result page holds the partitions validated with it. Full Great Expectations Data Docs: <a href="index.html">index.html</a>
(needs internet access for its styles and tables).</p>
<table><thead><tr><th>partition</th><th>status</th><th>rows</th><th>critical</th><th>warnings</th>
<th>failed expectations (observed)</th><th>validated at</th><th>details</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table></body></html>
"""
