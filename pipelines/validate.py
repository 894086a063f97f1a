"""Validation stage: Great Expectations 1.x expectations on each new lake partition, with Data Docs.

The expectation suite is derived from params (``schema`` and ``validation``), never written by hand:

- critical (a failure stops the pipeline): the lake's columns, ``event_id`` not null and unique,
  ``event_time`` / ``label_time`` typed as UTC timestamps, every ``event_time`` inside the partition's
  day, ``label_time >= event_time``, label in ``schema.label_values``, non-nullable columns not null,
  numbers inside [min, max], critical vocabularies, the row count inside
  [``min_rows_per_partition``, ``max_rows_per_partition``], and freshness: the newest ``event_time``
  at most ``freshness_max_lag_hours`` before the end of the partition's day;
- warning (recorded and logged, the pipeline goes on): a vocabulary value outside ``allowed`` (new
  categories are legitimate drift), a nullable column's null fraction above ``max_null_fraction``,
  and the label rate over rows whose label is known outside [``min_label_rate``, ``max_label_rate``].

Each expectation carries its severity in GX's ``severity`` field and in ``meta["severity"]``.

Which partitions: by default those written by ETL manifests (``<lake>/_etl/manifests/*.json``) that
this stage has not consumed yet, plus those that failed last time, skipping a partition whose part
files have the same sha256 as when it was last validated. ``dates=[...]`` or ``all_partitions``
overrides that. The record lives in ``<state>/validated.json``; GX's validation results live in
``<state>/gx_results`` so that the Data Docs index keeps every partition's history while a run only
renders the pages of the partitions it validated: the cost grows with the new data.

Partitions are validated in ephemeral GX contexts (building one costs milliseconds; importing GX costs
seconds, so a run with nothing to validate does not import it). GX's cost is per expectation and run,
hardly per row, so a backfill of ``PARALLEL_MIN_PARTITIONS`` or more is spread over worker processes
(``validation.workers``; spawned, each validating groups of partitions and rendering their Data Docs
pages); the results meet in the on-disk store and the Data Docs index is built once at the end.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines import storage
from pipelines.config import SchemaConfig, ValidationConfig
from pipelines.etl import MANIFEST_DIR, lake_dates, lake_schema, partition_path, read_partition

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
    "build_suite",
    "failure_lines",
    "format_failure",
    "partition_parameters",
    "partitions_to_validate",
    "render_overview",
    "run_validation",
    "summarize_result",
]

log = logging.getLogger(__name__)

CRITICAL = "critical"
WARNING = "warning"
SUITE_NAME = "lake_partition"
DATASOURCE_NAME = "lake"
RECORD_FILE = "validated.json"
OVERVIEW_FILE = "overview.html"
GX_RESULTS_DIR = "gx_results"
RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": 20}
# Pandas dtypes of the lake's Arrow types (as GX sees a partition after ``Table.to_pandas()``).
_TIMESTAMP_DTYPES = ["datetime64[us, UTC]", "datetime64[ns, UTC]"]
_PANDAS_DTYPES = {"float": ["float64", "float32"], "int": ["int64", "int32", "float64"], "bool": ["bool"]}
_ARG_NAMES = {
    "min_value": "min", "max_value": "max", "value_set": "set", "type_list": "types", "mostly": "mostly",
    "column_set": "columns", "or_equal": "or_equal",
}  # fmt: skip


class ValidationFailed(RuntimeError):
    """A partition failed expectations at or above ``validation.fail_on``; one line per failure."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        super().__init__("\n".join(lines))


# --------------------------------------------------------------------------- the suite (pure)


@functools.cache
def _dtype_expectation() -> type:
    """``expect_column_values_to_have_dtype``: GX's in-type-list check, comparing the dtype's name.

    GX 1.24's pandas branch cannot match a timezone-aware dtype (``datetime64[us, UTC]`` is reported
    as ``Timestamp`` and no type name is accepted), so the lake's UTC timestamps need this variant.
    """
    import great_expectations.expectations as gxe

    class ExpectColumnValuesToHaveDtype(gxe.ExpectColumnValuesToBeInTypeList):
        """Expect the column's pandas dtype name (e.g. ``datetime64[us, UTC]``) to be in type_list."""

        def _validate_pandas(self, actual_column_type: Any, expected_types_list: Any) -> dict[str, Any]:
            observed = str(actual_column_type)
            ok = expected_types_list is None or observed in expected_types_list
            return {"success": ok, "result": {"observed_value": observed}}

    return ExpectColumnValuesToHaveDtype


def _sev(severity: str) -> dict[str, Any]:
    from great_expectations.expectations.metadata_types import FailureSeverity

    return {"severity": FailureSeverity(severity), "meta": {"severity": severity}}


def build_suite(schema: SchemaConfig, cfg: ValidationConfig, *, name: str = SUITE_NAME) -> ExpectationSuite:
    """The expectation suite for one lake partition, derived from params. Pure: no I/O.

    Bounds that depend on the partition's date are suite parameters (``$PARAMETER``), filled per
    partition from :func:`partition_parameters`, so one suite serves every partition.
    """
    import great_expectations as gx
    import great_expectations.expectations as gxe

    dtype = _dtype_expectation()
    crit, warn = _sev(CRITICAL), _sev(WARNING)
    exps: list[Any] = [
        gxe.ExpectTableColumnsToMatchSet(column_set=lake_schema(schema).names, exact_match=True, **crit),
        gxe.ExpectTableRowCountToBeBetween(
            min_value=cfg.min_rows_per_partition, max_value=cfg.max_rows_per_partition, **crit
        ),
        gxe.ExpectColumnValuesToNotBeNull(column="event_id", **crit),
        gxe.ExpectColumnValuesToBeUnique(column="event_id", **crit),
        gxe.ExpectColumnValuesToNotBeNull(column="event_time", **crit),
        dtype(column="event_time", type_list=_TIMESTAMP_DTYPES, **crit),
        gxe.ExpectColumnValuesToBeBetween(
            column="event_time",
            min_value={"$PARAMETER": "partition_start"},
            max_value={"$PARAMETER": "partition_end"},
            strict_max=True,
            **crit,
        ),
        gxe.ExpectColumnMaxToBeBetween(
            column="event_time", min_value={"$PARAMETER": "freshness_min"}, **crit
        ),
        dtype(column="label_time", type_list=_TIMESTAMP_DTYPES, **crit),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="label_time",
            column_B="event_time",
            or_equal=True,
            ignore_row_if="either_value_is_missing",
            **crit,
        ),
        gxe.ExpectColumnValuesToBeInSet(column="label", value_set=list(schema.label_values), **crit),
        gxe.ExpectColumnMeanToBeBetween(
            column="label", min_value=cfg.min_label_rate, max_value=cfg.max_label_rate, **warn
        ),
    ]
    for col in schema.columns:
        if not col.nullable:
            exps.append(gxe.ExpectColumnValuesToNotBeNull(column=col.name, **crit))
        elif cfg.max_null_fraction < 1:
            exps.append(
                gxe.ExpectColumnValuesToNotBeNull(column=col.name, mostly=1 - cfg.max_null_fraction, **warn)
            )
        if col.type == "timestamp":
            exps.append(dtype(column=col.name, type_list=_TIMESTAMP_DTYPES, **crit))
        elif col.type in _PANDAS_DTYPES:
            exps.append(dtype(column=col.name, type_list=_PANDAS_DTYPES[col.type], **crit))
        if col.min is not None or col.max is not None:
            exps.append(
                gxe.ExpectColumnValuesToBeBetween(
                    column=col.name, min_value=col.min, max_value=col.max, **crit
                )
            )
        if col.allowed is not None:
            sev = crit if col.critical_allowed else warn
            exps.append(gxe.ExpectColumnValuesToBeInSet(column=col.name, value_set=list(col.allowed), **sev))
    return gx.ExpectationSuite(
        name=name,
        expectations=exps,
        meta={"source": "derived from params.yaml (schema, validation) by pipelines/validate.py"},
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
    return v is None or (isinstance(v, float) and math.isnan(v))


def _args(kwargs: dict[str, Any]) -> str:
    parts = [str(kwargs[k]) for k in ("column", "column_A", "column_B") if kwargs.get(k) is not None]
    for key, short in _ARG_NAMES.items():
        if kwargs.get(key) is not None:
            parts.append(f"{short}={_fmt(kwargs[key])}")
    return ", ".join(parts)


def summarize_result(
    date: str, result: ExpectationSuiteValidationResult, *, rows: int, parts: dict[str, str] | None = None
) -> PartitionResult:
    """Turn GX's suite result for one partition into the failures worth reporting. Pure."""
    failures = []
    for r in result.results:
        if r.success:
            continue
        cfg = r.expectation_config
        if cfg is None:  # GX fills it for every suite result; guard for the type checker
            continue
        kwargs = dict(cfg.kwargs)
        meta = cfg.meta or {}
        severity = str(meta.get("severity") or getattr(cfg, "severity", CRITICAL))
        res = dict(r.result or {})
        exc = r.exception_info or {}
        fail = Failure(expectation=cfg.type, args=_args(kwargs), severity=severity, observed="")
        if exc.get("raised_exception"):
            fail.observed = f"an error: {exc.get('exception_message')}"
        elif res.get("unexpected_count") is not None:
            n = int(res["unexpected_count"])
            pct = float(res.get("unexpected_percent") or 0.0)
            examples = list(
                dict.fromkeys(x for x in res.get("partial_unexpected_list") or [] if not _is_missing(x))
            )
            fail.unexpected_count, fail.unexpected_percent, fail.examples = n, pct, examples[:5]
            what = "null values" if cfg.type == "expect_column_values_to_not_be_null" else "unexpected values"
            fail.observed = f"{n} {what} ({pct:.2f}%)"
            if examples:
                fail.observed += f" (e.g. {', '.join(_fmt(x) for x in examples[:3])})"
        else:
            fail.observed_value = res.get("observed_value")
            fail.observed = _fmt(fail.observed_value)
            details = res.get("details") or {}
            if isinstance(details.get("mismatched"), dict):
                fail.observed += f" (mismatched: {_fmt(_jsonable(details['mismatched']))})"
        failures.append(fail)
    failures.sort(key=lambda f: (f.severity != CRITICAL, f.expectation, f.args))
    return PartitionResult(
        date=date, rows=rows, expectations=len(result.results), failures=failures, parts=dict(parts or {})
    )


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
    """A fingerprint of everything the suite is derived from (``fail_on`` only changes the verdict,
    ``workers`` only the speed)."""
    basis = {
        "schema": schema.model_dump(mode="json"),
        "validation": cfg.model_dump(mode="json", exclude={"fail_on", "workers"}),
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


def _load_frame(lake: str, date: str) -> pd.DataFrame:
    table = read_partition(lake, date)
    if table is None:
        raise FileNotFoundError(f"{partition_path(lake, date)}: no part files; run the etl stage first")
    return table.to_pandas()


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
        raise ValueError(f"--reports {reports!r}: Data Docs are written to a local folder; pass a local path")
    state = state or storage.join(reports, "state")
    state_dir = storage.local_path(state)
    if state_dir is None:
        raise ValueError(f"--state {state!r}: GX's result store is a local folder; pass a local path")
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
    pages: dict[str, str] = {}
    if todo:
        results, pages = _validate_partitions(
            lake=lake, dates=todo, digests=digests, schema=schema, cfg=cfg,
            data_docs=data_docs.resolve(), results_dir=(state_dir / GX_RESULTS_DIR).resolve(),
            progress=progress, workers=cfg.workers,
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
            "docs_page": pages.get(pr.date),
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


PARALLEL_MIN_PARTITIONS = 16  # fewer: one process (a worker's GX import costs seconds)
_GROUP = 8  # partitions per worker task: the progress bar moves, the load stays balanced


def _workers(requested: int, todo: int) -> int:
    """Worker processes for ``todo`` partitions: ``requested`` (0: one per core, at most 4), and one when
    there are too few partitions to pay for the workers' start."""
    n = requested or min(os.cpu_count() or 1, 4)
    return 1 if todo < PARALLEL_MIN_PARTITIONS else max(1, min(n, todo // _GROUP))


def _validate_group(
    *,
    lake: str,
    dates: list[str],
    digests: dict[str, dict[str, str]],
    schema: SchemaConfig,
    cfg: ValidationConfig,
    data_docs: Path,
    results_dir: Path,
    run_time: dt.datetime,
    bar: Any = None,
) -> list[PartitionResult]:
    """Validate ``dates`` in one GX context, each result written to the on-disk results store. Runs in
    the stage's process or in a worker process (spawned: everything it takes is plain data)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # before GX's first import
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    ctx = _make_context(data_docs=data_docs, results_dir=results_dir)
    suite = ctx.suites.add(build_suite(schema, cfg))
    source = ctx.data_sources.add_pandas(DATASOURCE_NAME)
    out = []
    for date in dates:
        frame = _load_frame(lake, date)
        batch = source.add_dataframe_asset(name=f"date={date}").add_batch_definition_whole_dataframe(
            "partition"
        )
        vd = ctx.validation_definitions.add(
            gx.ValidationDefinition(name=f"date={date}", data=batch, suite=suite)
        )
        result = vd.run(
            batch_parameters={"dataframe": frame},
            expectation_parameters=partition_parameters(date, cfg),  # type: ignore[arg-type]
            result_format=RESULT_FORMAT,  # type: ignore[arg-type]
            run_id=RunIdentifier(run_name=f"date={date}", run_time=run_time),
        )
        out.append(summarize_result(date, result, rows=len(frame), parts=digests.get(date)))
        if bar is not None:
            bar.update(1)
    # this group's Data Docs pages, here (in parallel with the other groups); the index, which lists every
    # result on disk, is built once by the caller
    runs = {f"date={d}" for d in dates}
    keys = [
        k
        for k in ctx.validation_results_store.list_keys()
        if k.run_id.run_name in runs and k.run_id.run_time == run_time
    ]
    ctx.build_data_docs(resource_identifiers=keys, build_index=False)
    return out


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
    workers: int = 0,
) -> tuple[list[PartitionResult], dict[str, str]]:
    """Validate ``dates``; returns their results and Data Docs pages (by date).

    GX's cost is per expectation and run, hardly per row (building the metric graph of ~100 expectations
    takes most of a partition's half second), so a backfill of hundreds of daily partitions is spread over
    worker processes, each validating groups of partitions in its own context and rendering their pages;
    the results land in the shared on-disk store and the Data Docs index is built once, here.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    from tqdm import tqdm

    t0 = time.time()
    n_workers = _workers(workers, len(dates))
    results_dir.mkdir(parents=True, exist_ok=True)
    keys_before = _result_keys(results_dir)
    run_time = dt.datetime.now(dt.UTC)
    kw: dict[str, Any] = {"lake": lake, "schema": schema, "cfg": cfg, "data_docs": data_docs,
                          "results_dir": results_dir, "run_time": run_time}  # fmt: skip
    by_date: dict[str, PartitionResult] = {}
    with tqdm(
        total=len(dates), desc="validate", unit="partition", disable=not progress or len(dates) < 2
    ) as bar:
        if n_workers == 1:
            for pr in _validate_group(dates=dates, digests=digests, bar=bar, **kw):
                by_date[pr.date] = pr
        else:
            groups = [dates[i : i + _GROUP] for i in range(0, len(dates), _GROUP)]
            try:
                with ProcessPoolExecutor(n_workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                    futures = {
                        pool.submit(_validate_group, dates=g, digests={d: digests[d] for d in g if d in digests},
                                    **kw): g
                        for g in groups
                    }  # fmt: skip
                    for fut in as_completed(futures):
                        for pr in fut.result():
                            by_date[pr.date] = pr
                        bar.update(len(futures[fut]))
            except BrokenProcessPool as err:
                # e.g. a script calling run_validation without `if __name__ == "__main__":` (spawned workers
                # re-import it) or a worker killed for memory: the rest is validated here, nothing is lost
                rest = [d for d in dates if d not in by_date]
                log.warning(
                    "validation worker processes failed (%s); validating the remaining %d partition(s) in this "
                    "process. Set validation.workers: 1 to skip the workers; from a script, guard the call with "
                    "`if __name__ == '__main__':`", err, len(rest),
                )  # fmt: skip
                n_workers = 1
                for pr in _validate_group(dates=rest, digests=digests, bar=bar, **kw):
                    by_date[pr.date] = pr
    out = [by_date[d] for d in dates]
    for (
        pr
    ) in out:  # a line per partition only when it failed; the summary counts warnings, Data Docs show them
        log.log(
            logging.WARNING if pr.status not in ("passed", "warning") else logging.DEBUG,
            "partition date=%s: %s (%d rows, %d expectations)", pr.date, pr.status, pr.rows, pr.expectations,
        )  # fmt: skip
    log.info("validated %d partition(s) in %.1fs with %d process(es)", len(out), time.time() - t0, n_workers)
    t1 = time.time()
    ctx = _make_context(data_docs=data_docs, results_dir=results_dir)
    ctx.suites.add(build_suite(schema, cfg))
    store = ctx.validation_results_store
    new_keys = [k for k in store.list_keys() if k.to_tuple() not in keys_before]
    ctx.build_data_docs(
        resource_identifiers=[*ctx.expectations_store.list_keys()]
    )  # the suite page, the index
    log.info("Data Docs: index of %d result(s) built in %.1fs -> %s", len(store.list_keys()), time.time() - t1,
             data_docs)  # fmt: skip
    pages = {}
    for key in new_keys:  # (suite, run name, run time, batch id) -> the page GX wrote for it
        suite_name, run_name, run_time_s, batch_id = key.to_tuple()
        pages[run_name.removeprefix("date=")] = (
            f"validations/{suite_name}/{run_name}/{run_time_s}/{batch_id}.html"
        )
    return out, pages


def _result_keys(results_dir: Path) -> set[tuple[str, ...]]:
    """The keys of the results already in the on-disk store (read through a GX store, as GX lists them)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    from great_expectations.data_context.store import ValidationResultsStore

    store = ValidationResultsStore(
        store_backend={"class_name": "TupleFilesystemStoreBackend", "base_directory": str(results_dir)}
    )
    return {k.to_tuple() for k in store.list_keys()}


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
        page = r.get("docs_page")
        link = f'<a href="{escape(page)}">GX result</a>' if page else ""
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
{counts["failed"]} failed. Suite: <a href="expectations/{SUITE_NAME}.html">{SUITE_NAME}</a>
(derived from params.yaml). Full Great Expectations Data Docs: <a href="index.html">index.html</a>
(needs internet access for its styles and tables).</p>
<table><thead><tr><th>partition</th><th>status</th><th>rows</th><th>critical</th><th>warnings</th>
<th>failed expectations (observed)</th><th>validated at</th><th>details</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table></body></html>
"""
