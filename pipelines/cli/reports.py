"""Reports: the one-page run report and the terminal summary (they read metrics files only)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipelines.cli.common import local_path
from pipelines.lifecycle.run_report import write_run_report
from pipelines.lifecycle.summary import summarize

app = typer.Typer()


@app.command()
def report(
    reports: Annotated[Path, typer.Option(parser=local_path, help="the run's reports folder")] = Path(
        "reports"
    ),
    registry: Annotated[
        str, typer.Option(help="the model registry (for the model card; folder or s3:// prefix)")
    ] = "models/registry",
    benchmarks: Annotated[Path, typer.Option(parser=local_path, help="benchmark results folder")] = Path(
        "benchmarks/results"
    ),
    out: Annotated[
        Path | None, typer.Option(parser=local_path, help="the index page (default: REPORTS/index.html)")
    ] = None,
    title: Annotated[
        str | None, typer.Option(help="page title (default: names the profile in runs/NAME)")
    ] = None,
) -> None:
    """Write the one-page run report linking every report, headline figures on top."""

    cwd = Path.cwd()
    title = title or ("Loopline run report" + (f": profile {cwd.name}" if cwd.parent.name == "runs" else ""))
    path = write_run_report(reports=reports, registry=registry, benchmarks=benchmarks,
                            out=out or reports / "index.html", title=title)  # fmt: skip
    typer.echo(f"run report: {path}")


@app.command()
def summary(
    reports: Annotated[Path, typer.Option(parser=local_path, help="reports folder")] = Path("reports"),
) -> None:
    """Print a short summary of the last pipeline run and where its reports are."""

    typer.echo(summarize(reports))
