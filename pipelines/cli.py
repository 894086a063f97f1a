"""The ``loopline`` command line: one sub-command per lifecycle step, each reading params once."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from pipelines.config import ConfigError, Params, load_params

app = typer.Typer(
    name="loopline",
    help="Loopline: raw events to a monitored, self-retraining model. Every step is a DVC stage.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
log = logging.getLogger("loopline")

ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="params file (a profile) to read")]


def _setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("great_expectations", "urllib3", "botocore", "matplotlib", "h5py", "absl"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _params(path: Path) -> Params:
    try:
        return load_params(path)
    except ConfigError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False) -> None:
    _setup_logging(verbose)


@app.command("check-params")
def check_params(params: ParamsOpt = Path("params.yaml")) -> None:
    """Validate a params file and print its sections."""
    p = _params(params)
    typer.echo(f"{params}: ok (source={p.source.kind}, {len(p.schema.columns)} columns)")


@app.command()
def generate(
    out: Annotated[Path, typer.Option(help="landing folder for the daily CSV files")] = Path("data/landing"),
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
    from pipelines.generate import generate_landing

    p = _params(params)
    overrides: dict[str, object] = {}
    if start is not None:
        overrides["start_date"] = dt.date.fromisoformat(start)
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
        Path | None, typer.Option(help="also write the run manifest here (DVC metric)")
    ] = None,
) -> None:
    """Load new or changed landing files into the lake; quarantine rejected rows with reasons."""
    from pipelines.etl import run_etl, validate_date

    p = _params(params)
    if date is not None:
        try:
            validate_date(date, name="--date")
        except ValueError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None
    ref = dt.datetime.fromisoformat(as_of) if as_of else None
    if ref is not None and ref.tzinfo is None:
        ref = ref.replace(tzinfo=dt.UTC)
    manifest = run_etl(landing=landing, lake=lake, quarantine=quarantine, params=p, as_of=ref, only_date=date)
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
        from pipelines import storage

        storage.write_json(manifest_out, manifest)


@app.command()
def summary(
    reports: Annotated[Path, typer.Option(help="reports folder")] = Path("reports"),
) -> None:
    """Print a short summary of the last pipeline run and where its reports are."""
    from pipelines.summary import summarize

    typer.echo(summarize(reports))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
