"""Labels: natural, weak and hand labels; the active-learning queue."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipelines.cli.common import ParamsOpt, params_or_exit
from pipelines.labeling.label import run_labeling

app = typer.Typer()


@app.command()
def label(
    training: Annotated[str, typer.Option(help="the sampling stage's output folder")] = "data/training",
    hand_labels: Annotated[str, typer.Option(help="folder of hand-label CSV files")] = "data/hand_labels",
    out: Annotated[str, typer.Option(help="output folder for the labelled splits")] = "data/labeled",
    reports: Annotated[
        str, typer.Option(help="folder for report.json/html and rejects")
    ] = "reports/labeling",
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Natural + weak (labeling functions, label model) + hand labels with lineage; active-learning queue."""

    p = params_or_exit(params)
    report = run_labeling(training=training, hand_labels=hand_labels, out=out, reports=reports,
                          cfg=p.labeling, schema=p.schema, seed=p.seed)  # fmt: skip
    lm = report["label_model"]["gold"]
    typer.echo(f"label model ({report['label_model']['kind']}) on gold: balanced accuracy "
               f"{lm['balanced_accuracy']}; best LF {report['best_lf']['name']}: {report['best_lf']['balanced_accuracy']}")  # fmt: skip
    for name, c in report["label_sources"].items():
        typer.echo(f"{name}: {c}")
    typer.echo(f"hand labels: {report['hand_labels']['accepted']} accepted, {report['hand_labels']['rejected']} rejected; "
               f"active-learning queue: {report['active_learning']['queued']} rows")  # fmt: skip
