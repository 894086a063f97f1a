"""Data: generate landing files, load the lake, validate it, sample the training splits."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated

import typer

from pipelines.cli.common import ParamsOpt, iso_date, iso_time, local_path, params_or_exit
from pipelines.core import storage
from pipelines.data.etl import run_etl, validate_date
from pipelines.data.generate import generate_landing
from pipelines.data.lake_check import check_lake
from pipelines.data.sampling import run_sampling
from pipelines.data.validate import run_validation

app = typer.Typer()
lake_app = typer.Typer(
    help="The lake's own records: `lake check` recounts rows in the lake vs ledgers vs run manifests."
)
app.add_typer(lake_app, name="lake")


@app.command()
def generate(
    out: Annotated[
        str, typer.Option(help="landing folder (or s3:// prefix) for the daily CSV files")
    ] = "data/landing",
    params: ParamsOpt = Path("params.yaml"),
    start: Annotated[
        str | None, typer.Option(help="first day, YYYY-MM-DD (default: synthetic.start_date)")
    ] = None,
    days: Annotated[int | None, typer.Option(min=1, help="number of days (default: synthetic.days)")] = None,
    rows_per_day: Annotated[
        int | None, typer.Option(min=1, help="rows per day (default: synthetic.rows_per_day)")
    ] = None,
    bad_records: Annotated[
        bool | None, typer.Option("--bad-records/--no-bad-records", help="inject bad records")
    ] = None,
) -> None:
    """Write the synthetic card-payment landing files, one CSV per day (existing identical files kept)."""

    p = params_or_exit(params)
    overrides: dict[str, object] = {}
    if start is not None:
        overrides["start_date"] = iso_date(start, "--start")
    if days is not None:
        overrides["days"] = days
    if rows_per_day is not None:
        overrides["rows_per_day"] = rows_per_day
    cfg = p.synthetic.model_copy(update=overrides)
    if bad_records is not None:
        cfg = cfg.model_copy(
            update={"bad_records": cfg.bad_records.model_copy(update={"enabled": bad_records})}
        )
    summary = generate_landing(cfg, out=str(out), seed=p.seed)
    typer.echo(json.dumps(summary, indent=2))


@app.command()
def etl(
    landing: Annotated[str, typer.Option(help="landing folder (or s3:// prefix)")] = "data/landing",
    lake: Annotated[str, typer.Option(help="lake root (or s3:// prefix)")] = "data/lake",
    quarantine: Annotated[str, typer.Option(help="quarantine root (or s3:// prefix)")] = "data/quarantine",
    params: ParamsOpt = Path("params.yaml"),
    date: Annotated[str | None, typer.Option(help="only landing files for this day (YYYY-MM-DD)")] = None,
    as_of: Annotated[
        str | None, typer.Option(help="reference time for files without a date (ISO 8601)")
    ] = None,
    manifest_out: Annotated[
        str | None, typer.Option(help="also write the run manifest here (DVC metric; path or s3:// URI)")
    ] = None,
    allow_empty: Annotated[
        bool,
        typer.Option(
            "--allow-empty", help="a landing folder with no file is a run over nothing, not an error"
        ),
    ] = False,
) -> None:
    """Load new or changed landing files into the lake; quarantine rejected rows with reasons."""

    p = params_or_exit(params)
    if date is not None:
        validate_date(date, name="--date")
    ref = iso_time(as_of, "--as-of") if as_of else None
    if ref is not None and ref.tzinfo is None:
        ref = ref.replace(tzinfo=dt.UTC)
    manifest = run_etl(
        landing=landing,
        lake=lake,
        quarantine=quarantine,
        params=p,
        as_of=ref,
        only_date=date,
        allow_empty=allow_empty,
    )
    t = manifest["totals"]
    typer.echo(
        f"etl: {t['files_processed']} file(s) processed, {t['files_rejected']} rejected, "
        f"{t['files_unchanged']} unchanged; rows read {t['rows_read']} = loaded {t['rows_loaded']} "
        f"+ quarantined {t['rows_quarantined']}"
    )
    if manifest["quarantined_by_reason"]:
        typer.echo(
            "quarantined by reason: "
            + ", ".join(f"{k}={v}" for k, v in manifest["quarantined_by_reason"].items())
        )
    if manifest_out is not None:
        storage.write_json(manifest_out, manifest)


@lake_app.command("check")
def lake_check(
    lake: Annotated[str, typer.Option(help="lake root (or s3:// prefix)")] = "data/lake",
    as_json: Annotated[bool, typer.Option("--json", help="print the full result as JSON")] = False,
) -> None:
    """Recount the lake: rows per landing file in the parts, its ledger record and the newest manifest
    entry must agree. Read-only; exits 1 naming each file whose counts differ."""
    result = check_lake(lake)
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
    else:
        typer.echo(
            f"lake check {lake}: {result.files} landing file(s); rows in the lake {result.lake_rows}, "
            f"in ledgers {result.ledger_rows}, in run manifests {result.manifest_rows}"
            + (f"; interrupted run(s) not yet counted: {result.pending_runs}" if result.pending_runs else "")
        )
        for problem in result.problems:
            typer.echo(f"  {problem}", err=True)
        typer.echo("ok" if result.ok else f"{len(result.problems)} problem(s)")
    if not result.ok:
        raise typer.Exit(1)


@app.command()
def validate(
    lake: Annotated[str, typer.Option(help="lake root (or s3:// prefix)")] = "data/lake",
    reports: Annotated[
        Path, typer.Option(parser=local_path, help="folder for summary.json, data_docs/ and state/ (local)")
    ] = Path("reports/validation"),
    params: ParamsOpt = Path("params.yaml"),
    date: Annotated[
        str | None, typer.Option(help="validate this partition (YYYY-MM-DD), whatever the record says")
    ] = None,
    all_partitions: Annotated[
        bool, typer.Option("--all", help="validate every partition in the lake")
    ] = False,
    state: Annotated[
        Path | None,
        typer.Option(parser=local_path, help="record of validated partitions (default: REPORTS/state)"),
    ] = None,
) -> None:
    """Run the GX expectation suite (derived from params) on new lake partitions; write Data Docs.

    Default: the partitions written by ETL runs not validated yet (and those that failed last time).
    Exits 1 naming each failed critical expectation (validation.fail_on), partition and observed value.
    """

    p = params_or_exit(params)
    if date is not None and all_partitions:
        typer.echo("error: pass either --date or --all, not both", err=True)
        raise typer.Exit(2)
    dates = [validate_date(date, name="--date")] if date is not None else None
    summary_ = run_validation(
        lake=lake, reports=str(reports), schema=p.schema, cfg=p.validation, dates=dates,
        all_partitions=all_partitions, state=str(state) if state else None,
    )  # fmt: skip
    typer.echo(
        f"validate: {summary_['partitions_validated']} partition(s), {summary_['critical_failures']} critical "
        f"failure(s), {summary_['warnings']} warning(s); Data Docs: {summary_['data_docs'] or '-'}"
    )
    if summary_["failure_lines"]:
        typer.echo("\n".join(summary_["failure_lines"]), err=True)
        raise typer.Exit(1)


@app.command()
def sample(
    lake: Annotated[str, typer.Option(help="lake root (or s3:// prefix)")] = "data/lake",
    out: Annotated[
        str, typer.Option(help="output folder for train/valid/test/unlabelled.parquet")
    ] = "data/training",
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Time-ordered train/valid/test split as of a cutoff (immature labels become null); sample train."""

    p = params_or_exit(params)
    report = run_sampling(lake=lake, out=out, cfg=p.sampling, schema=p.schema, seed=p.seed)
    for name, c in report["counts"].items():
        typer.echo(f"{name}: {c['rows']} rows, {c['labelled']} labelled, label rate {c['label_rate']}")
    typer.echo(f"unlabelled: {report['unlabelled_rows']} rows (cutoff {report['windows']['cutoff']})")
