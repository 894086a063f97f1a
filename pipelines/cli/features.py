"""Features: the feature spec, point-in-time aggregates and leakage checks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from pipelines.cli.common import ParamsOpt, local_path, params_or_exit
from pipelines.core import storage
from pipelines.core.errors import InputError
from pipelines.edge import featurespec as fs
from pipelines.features.build import edge_input, run_features

app = typer.Typer()


@app.command()
def features(
    labeled: Annotated[
        str, typer.Option(help="labelled splits folder ({train,valid,test}.parquet)")
    ] = "data/labeled",
    lake: Annotated[str, typer.Option(help="lake root: full event history for the aggregates")] = "data/lake",
    out: Annotated[str, typer.Option(help="output folder: feature matrices and spec.json")] = "data/features",
    reports: Annotated[
        str, typer.Option(help="report folder (report.json, report.html)")
    ] = "reports/features",
    importance: Annotated[
        str | None, typer.Option(help="optional JSON {feature: importance} from a trained model")
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Fit the feature spec on the train split, check for leakage, write feature matrices and the report."""

    p = params_or_exit(params)
    report = run_features(
        labeled=labeled, lake=lake, out=out, reports=reports, params=p, importance=importance
    )
    s = report["summary"]
    typer.echo(
        f"features: {report['n_features']} features from {report['n_inputs']} inputs, rows {report['rows']}; "
        f"leakage checks passed (max single-input AUC {s['max_single_auc']} on {s['max_single_auc_input']})"
    )


@app.command("edge-input")
def edge_input_cmd(
    rows: Annotated[
        Path,
        typer.Option(parser=local_path, help="CSV of new raw rows (the landing columns; event_id optional)"),
    ],
    out: Annotated[
        Path,
        typer.Option(
            parser=local_path, help="the edge input CSV to write (for `loopline edge-predict --input`)"
        ),
    ],
    spec: Annotated[str, typer.Option(help="the model's feature spec")] = "data/features/spec.json",
    lake: Annotated[
        str, typer.Option(help="lake root: the entity history the aggregates need")
    ] = "data/lake",
) -> None:
    """Build the edge model's input CSV for new raw rows: their columns plus the aggregates from the lake."""

    try:
        frame = pd.read_csv(rows, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise InputError(f"{rows}: {err}") from None
    built = edge_input(
        frame, lake=lake, spec=fs.loads_spec(storage.read_bytes(spec).decode()), source=str(rows)
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    built.to_csv(out, index=False)
    typer.echo(f"{out}: {len(built):,} row(s), {built.shape[1]} column(s) (aggregates from {lake})")
