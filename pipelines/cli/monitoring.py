"""Monitoring: drift and matured-label performance, the retrain decision."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipelines.cli.common import ParamsOpt, params_or_exit
from pipelines.monitoring.monitor import run_monitor

app = typer.Typer()


@app.command()
def monitor(
    lake: Annotated[str, typer.Option(help="lake root (date=YYYY-MM-DD partitions)")] = "data/lake",
    predictions: Annotated[
        str, typer.Option(help="batch predictions (date=D/part-<version>.parquet)")
    ] = "data/predictions",
    registry: Annotated[
        str, typer.Option(help="model registry (the champion's offline figures)")
    ] = "models/registry",
    out: Annotated[
        str, typer.Option(help="reports folder: runs/<window>/, latest/, state.json")
    ] = "reports/monitor",
    date: Annotated[str | None, typer.Option(help="monitor one day YYYY-MM-DD")] = None,
    start: Annotated[str | None, typer.Option(help="first day of the window (with --end)")] = None,
    end: Annotated[str | None, typer.Option(help="last day of the window (with --start)")] = None,
    model_version: Annotated[
        str | None, typer.Option(help="model version to monitor (default: the champion)")
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Drift, prediction drift and matured-label performance of the champion; writes the retrain decision.

    Default window: monitor.period_days up to the newest lake partition."""

    p = params_or_exit(params)
    r = run_monitor(
        lake=lake,
        predictions=predictions,
        registry=registry,
        out=out,
        schema=p.schema,
        cfg=p.monitor,
        seed=p.seed,
        date=date,
        start=start,
        end=end,
        model_version=model_version,
    )
    d = r["decision"]
    typer.echo(
        f"{d['window']['label']}: drift={d['drift']} retrain={d['retrain']} ({r['summary']['cpu_seconds']} CPU-s)"
    )
    for reason in d["reasons"]:
        typer.echo(f"  - {reason}")
