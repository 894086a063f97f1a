"""Project commands that need no stage: check a params file."""

from __future__ import annotations

from pathlib import Path

import typer

from pipelines.cli.common import ParamsOpt, params_or_exit

app = typer.Typer()


@app.command("check-params")
def check_params(params: ParamsOpt = Path("params.yaml")) -> None:
    """Validate a params file and print its sections."""
    p = params_or_exit(params)
    typer.echo(f"{params}: ok (source={p.source.kind}, {len(p.schema.columns)} columns)")
