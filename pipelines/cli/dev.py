"""Development: keep dvc.yaml's code deps true; the offline page template of `dvc plots show`."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Annotated

import typer

from pipelines.cli.common import local_path
from pipelines.core import plots_page
from pipelines.devtools import import_graph

app = typer.Typer()


@app.command("dvc-deps")
def dvc_deps(
    check: Annotated[
        bool, typer.Option("--check", help="exit 1 when a stage's deps miss code it runs")
    ] = False,
    write: Annotated[
        bool, typer.Option("--write", help="rewrite each stage's pipelines/ deps in dvc.yaml")
    ] = False,
    dvc_yaml: Annotated[
        Path, typer.Option("--dvc-yaml", parser=local_path, help="the pipeline file to check or rewrite")
    ] = Path("dvc.yaml"),
    root: Annotated[
        Path | None,
        typer.Option(
            parser=local_path, help="the project whose pipelines/ is read (default: dvc.yaml's folder)"
        ),
    ] = None,
) -> None:
    """Keep dvc.yaml's code deps equal to the modules each stage runs (its import closure)."""

    if check == write:
        typer.echo("error: give exactly one of --check or --write", err=True)
        raise typer.Exit(2)
    root = root or dvc_yaml.resolve().parent
    if write:
        code = import_graph.stage_code(root, dvc_yaml)
        dvc_yaml.write_text(import_graph.write_deps(dvc_yaml, code), encoding="utf-8")
        typer.echo(f"{dvc_yaml}: code deps written for {len(code)} stage(s)")
        return
    missing = import_graph.missing_deps(root, dvc_yaml)
    for stage, files in missing.items():
        typer.echo(f"{dvc_yaml}: stage {stage!r} runs code its deps miss: {', '.join(files)}", err=True)
    if missing:
        typer.echo("fix: loopline dvc-deps --write (then review and commit dvc.yaml)", err=True)
        raise typer.Exit(1)
    typer.echo(f"{dvc_yaml}: every stage's deps cover the code it runs")


@app.command("plots-template")
def plots_template(
    out: Annotated[Path, typer.Option(parser=local_path, help="the page template .dvc/config names")] = Path(
        ".dvc/plots/offline.html"
    ),
) -> None:
    """Write the page template that lets `dvc plots show` draw offline (Vega libraries inlined)."""

    try:
        page = plots_page.offline_template(plots_page.fetch_libraries())
        how = "Vega, Vega-Lite and Vega-Embed inlined: `dvc plots show` works offline"
    except (OSError, subprocess.SubprocessError, ValueError) as err:
        page = plots_page.offline_template(None)
        how = f"WARNING: could not fetch the Vega libraries ({err}); the plots page loads them from a CDN"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    typer.echo(f"{out}: {how}")
