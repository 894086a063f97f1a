"""Serving: TFLite models for the edge, edge scoring, batch prediction."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipelines.cli.common import ParamsOpt, log, params_or_exit
from pipelines.core import storage
from pipelines.edge.runtime import main as edge_main
from pipelines.serving.predict import NoChampionError, run_predict
from pipelines.serving.quantize import run_quantize
from pipelines.training.models import quiet_tensorflow

app = typer.Typer()


@app.command()
def quantize(
    features: Annotated[
        str, typer.Option(help="features folder (train/test.parquet, spec.json)")
    ] = "data/features",
    model: Annotated[str, typer.Option(help="model directory holding keras.keras")] = "models/candidate",
    out: Annotated[
        str, typer.Option(help="folder for the published .tflite files, spec.json, quantize.json")
    ] = ("models/tflite"),
    reports: Annotated[str, typer.Option(help="folder for quantize.json (DVC metric)")] = "reports/quantize",
    registry: Annotated[
        str | None,
        typer.Option(help="also attach the published variants and the card section to this registry"),
    ] = None,
    version: Annotated[
        str | None, typer.Option(help="registry version id or alias (with --registry)")
    ] = None,
    register_report: Annotated[
        str | None, typer.Option(help="take --version from the register stage's JSON (its 'version')")
    ] = None,
    evaluation: Annotated[
        str | None,
        typer.Option(
            help="the candidate's evaluation.json, for the edge model's behavioural verdict "
            "(default with --registry: the version's own)"
        ),
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """TFLite float32/float16/dynamic-range/int8 variants of the Keras model; publish those passing the parity gate."""

    quiet_tensorflow()
    p = params_or_exit(params)
    if register_report is not None and version is None:
        if not storage.exists(register_report):
            typer.echo(f"error: {register_report} not found; run `loopline register` first", err=True)
            raise typer.Exit(2)
        version = storage.read_json(register_report).get("version")
    if (registry is None) != (version is None):
        typer.echo("error: --registry and --version (or --register-report) go together", err=True)
        raise typer.Exit(2)
    if evaluation is not None and not storage.exists(evaluation):
        typer.echo(f"error: {evaluation} not found; run `loopline evaluate` first", err=True)
        raise typer.Exit(2)
    r = run_quantize(features=features, model=model, out=out, reports=reports, cfg=p.quantize,
                     evaluate_cfg=p.evaluate, seed=p.seed, registry=registry, version=version,
                     evaluation=None if evaluation is None else storage.read_json(evaluation))  # fmt: skip
    typer.echo(f"keras float ROC-AUC {r['keras']['roc_auc']:.4f}; threshold {r['threshold']:.6f}")
    for name, v in r["variants"].items():
        w = v["parity"]["whole"]
        typer.echo(f"{name:<14} {v['bytes']:>9} B  ROC-AUC drop {w['roc_auc_drop']:+.5f}  mean|d| "
                   f"{w['mean_abs_diff']:.5f}  agree {w['agreement']:.4f}  "
                   f"{'published' if v['published'] else 'NOT published: ' + '; '.join(v['reasons'])}")  # fmt: skip


@app.command("edge-predict", context_settings={"allow_extra_args": False})
def edge_predict(
    model: Annotated[str, typer.Option(help="the .tflite file")],
    spec: Annotated[str, typer.Option(help="the feature spec the model was trained with")],
    input: Annotated[str, typer.Option("--input", help="CSV of raw input columns (+ event_id)")],
    output: Annotated[str | None, typer.Option(help="scores CSV (default: standard output)")] = None,
    batch_size: Annotated[int, typer.Option(help="rows per interpreter call")] = 1024,
    threads: Annotated[int | None, typer.Option(help="interpreter threads")] = None,
    strict: Annotated[
        bool, typer.Option(help="stop at a value that is not a number in a numeric column")
    ] = False,
) -> None:
    """Score a CSV on the edge runtime (numpy + TFLite only); same as `python -m pipelines.edge.runtime`."""

    argv = ["--model", model, "--spec", spec, "--input", input, "--batch-size", str(batch_size)]
    if output is not None:
        argv += ["--output", output]
    if threads is not None:
        argv += ["--threads", str(threads)]
    if strict:
        argv += ["--strict"]
    raise typer.Exit(edge_main(argv))


@app.command()
def predict(
    lake: Annotated[str, typer.Option(help="the lake (date=YYYY-MM-DD partitions)")] = "data/lake",
    registry: Annotated[str, typer.Option(help="registry root: the champion scores")] = "models/registry",
    out: Annotated[
        str, typer.Option(help="predictions folder (date=D/part-<version>.parquet)")
    ] = "data/predictions",
    date: Annotated[str | None, typer.Option(help="score one partition")] = None,
    start: Annotated[str | None, typer.Option(help="first date of a range (with --end)")] = None,
    end: Annotated[str | None, typer.Option(help="last date of a range (with --start)")] = None,
    model: Annotated[
        str | None, typer.Option(help="xgboost | keras | tflite:<variant> (default: params predict.model)")
    ] = None,
    version: Annotated[str | None, typer.Option(help="registry version or alias (default: champion)")] = None,
    scorer: Annotated[
        str | None,
        typer.Option(help="XGBoost: auto | compiled | xgboost (default: params predict.scorer)"),
    ] = None,
    summary_out: Annotated[
        str | None, typer.Option("--summary", help="also write the run summary JSON")
    ] = None,
    skip_without_champion: Annotated[
        bool, typer.Option(help="no champion yet (the first model failed its gate): warn and score nothing")
    ] = False,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Batch-score lake partitions with the champion (point-in-time aggregates as in training)."""

    p = params_or_exit(params)
    cfg = p.predict if scorer is None else p.predict.model_copy(update={"scorer": scorer})
    try:
        s = run_predict(lake=lake, registry=registry, out=out, date=date, start=start, end=end,
                        model=model or p.predict.model, version=version, cfg=cfg, params=p)  # fmt: skip
    except NoChampionError as err:
        if not skip_without_champion:
            raise
        log.warning("predict skipped: %s", err)
        storage.ensure_dir(out)
        if summary_out is not None:
            storage.write_json(summary_out, {"skipped": True, "reason": str(err), "rows": 0, "dates": []})
        return
    typer.echo(f"predict: {s['rows']} rows, {len(s['dates'])} partition(s) with {s['model']} of "
               f"{s['model_version']} (scorer {s['scorer']}) in {s['wall_seconds']:.1f} s ({s['rows_per_second']:.0f} rows/s)")  # fmt: skip
    if summary_out is not None:
        storage.write_json(summary_out, s)
