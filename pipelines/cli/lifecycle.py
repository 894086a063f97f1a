"""The lifecycle around the stages: profiles, whole runs, retraining, backtests, reports."""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path
from typing import Annotated

import typer

from pipelines.cli.common import ParamsOpt, iso_date, local_path, params_or_exit
from pipelines.core import storage
from pipelines.data.etl import lake_dates, run_etl
from pipelines.data.generate import generate_landing
from pipelines.lifecycle.backtest import load_timeline, markdown_table, run_backtest, write_outputs
from pipelines.lifecycle.init_profile import infer_profile, read_sample, write_profile
from pipelines.lifecycle.profile_run import run_profile
from pipelines.lifecycle.retrain import run_retrain
from pipelines.lifecycle.summary import summarize
from pipelines.registry.store import git_info

app = typer.Typer()


@app.command("init")
def init_profile(
    from_: Annotated[
        Path,
        typer.Option("--from", parser=local_path, help="a sample of your data: CSV (.gz/.zip ok) or Parquet"),
    ],
    label: Annotated[str, typer.Option(help="the label column")],
    time: Annotated[str, typer.Option(help="the event-time column (when the model would score the row)")],
    positive: Annotated[str | None, typer.Option(help="the label value of the positive class")] = None,
    name: Annotated[str | None, typer.Option(help="profile name (default: the file's stem)")] = None,
    entity: Annotated[
        str | None, typer.Option(help="the entity key column (customer, account, card ...)")
    ] = None,
    time_format: Annotated[
        str | None, typer.Option(help="strptime format of --time (default: detected)")
    ] = None,
    landing: Annotated[
        str | None, typer.Option(help="folder of your files for `loopline run` (default: the file's folder)")
    ] = None,
    pattern: Annotated[
        str | None,
        typer.Option(
            help="glob of the landing files to load, e.g. 'orders_*.csv' (default: only the --from file)"
        ),
    ] = None,
    out: Annotated[Path, typer.Option(parser=local_path, help="folder for the profile")] = Path("profiles"),
    max_rows: Annotated[int, typer.Option(min=50, help="rows read from the file")] = 200_000,
    force: Annotated[bool, typer.Option(help="overwrite an existing profile")] = False,
) -> None:
    """Propose a params profile for your data: types, features, sizes, and leakage warnings."""

    stem = from_.name.split(".")[0]
    name = name or re.sub(r"[^A-Za-z0-9_-]", "_", stem)
    suffixes = [x.lower() for x in from_.suffixes]
    fmt = "parquet" if ".parquet" in suffixes else "csv"
    if from_.is_dir():
        typer.echo(f"error: --from {from_} is a folder; pass one of its files, and --pattern GLOB to load "
                   "every file it matches (e.g. --pattern '*.csv')", err=True)  # fmt: skip
        raise typer.Exit(2)
    # Only the file the user named: a glob over its folder once read unrelated CSVs lying beside it.
    pattern = pattern or glob.escape(from_.name)
    folder = from_.resolve().parent
    inside = folder.is_relative_to(Path.cwd().resolve())  # inside the project: relative, portable
    land = landing or (os.path.relpath(folder, Path.cwd()) if inside else str(folder))
    df = read_sample(from_, max_rows=max_rows)
    proposal = infer_profile(df, label=label, time=time, positive=positive, name=name, entity=entity,
                             time_format=time_format, landing=land, pattern=pattern, file_format=fmt)  # fmt: skip
    path, warn_path = write_profile(proposal, out_dir=out, source_file=str(from_), force=force)
    s = proposal.stats
    typer.echo(f"{path}: {len(proposal.params['schema']['columns'])} columns, {s['rows_sampled']:,} rows sampled, "
               f"{s['days']} days, label rate {s['label_rate']:.2%}, entity {s['entity_key']}")  # fmt: skip
    for w in proposal.warnings:
        typer.echo(f"WARNING {w.line()}")
    for note in proposal.notes:
        typer.echo(f"NOTE {note}")
    typer.echo(f"warnings: {warn_path}\nnext: loopline run --profile {name}")


@app.command("run")
def run_profile_cmd(
    profile: Annotated[str, typer.Option("--profile", help="profiles/NAME.yaml (or a path to a profile)")],
    until: Annotated[
        str | None, typer.Option(help="stop after this stage (default: the whole pipeline)")
    ] = None,
    landing: Annotated[
        str | None, typer.Option(help="folder of your files (overrides source.landing)")
    ] = None,
    force: Annotated[bool, typer.Option(help="re-run every stage (dvc repro --force)")] = False,
) -> None:
    """Run the pipeline for a profile with DVC, in its own workspace runs/NAME (a normal DVC project)."""

    rc, ws = run_profile(Path.cwd(), profile, until=until, landing=landing, force=force)
    typer.echo(summarize(ws / "reports"))
    typer.echo(f"workspace: {ws} (cd there and `dvc repro` works too)")
    if rc:
        raise typer.Exit(rc)


@app.command()
def retrain(
    lake: Annotated[str, typer.Option(help="the lake (date=YYYY-MM-DD partitions)")] = "data/lake",
    registry: Annotated[
        str, typer.Option(help="registry root: the champion, retrain_state.json")
    ] = "models/registry",
    features_out: Annotated[
        str, typer.Option(help="features of the retrain (train/valid/test.parquet, spec.json)")
    ] = ("data/retrain_features"),
    out: Annotated[str, typer.Option(help="candidate model directory")] = "models/retrain_candidate",
    reports: Annotated[str, typer.Option(help="reports folder: retrain.json, evaluation/, quantize/")] = (
        "reports/retrain"
    ),
    decision: Annotated[
        str | None,
        typer.Option(help="monitor decision.json: in auto mode, no retrain unless it says retrain"),
    ] = None,
    mode: Annotated[
        str | None, typer.Option(help="auto | stateful | stateless (default: params retrain.mode)")
    ] = None,
    as_of: Annotated[
        str | None, typer.Option(help="cutoff day YYYY-MM-DD (default: sampling.as_of or newest)")
    ] = None,
    best_params: Annotated[str | None, typer.Option(help="tuned XGBoost parameters for a refit")] = (
        "reports/tuning/best_params.json"
    ),
    hand_labels: Annotated[
        str | None, typer.Option(help="hand-label CSVs a refit's label stage ingests (as `loopline label`)")
    ] = "data/hand_labels",
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Retrain the champion (stateful update or stateless refit), then evaluate, gate, register, quantize.

    A stateful update adds trees and fine-tunes the Keras model; a scheduled stateless refit trains anew. The
    watermark advances only on promotion."""
    if mode is not None and mode not in ("auto", "stateful", "stateless"):
        typer.echo(f"error: --mode {mode!r}: expected auto, stateful or stateless", err=True)
        raise typer.Exit(2)

    p = params_or_exit(params)

    r = run_retrain(lake=lake, registry=registry, features_out=features_out, out=out, reports=reports, params=p,
                    mode=mode, decision=decision, as_of=iso_date(as_of, "--as-of") if as_of else None,
                    git=git_info(), best_params=best_params, hand_labels=hand_labels)  # fmt: skip
    if not r["ran"]:
        typer.echo(f"retrain skipped: {r['reason']}")
        return
    typer.echo(f"retrain {r.get('mode')} ({r.get('why')}): {r.get('status')} {r.get('version', '')}; "
               f"watermark {r['watermark_before']} -> {r['watermark_after']} ({r['cpu_seconds']} CPU-s)")  # fmt: skip
    for reason in r.get("reasons") or []:
        typer.echo(f"  - {reason}")
    if r.get("status") == "failed":
        typer.echo(f"  - {r.get('detail')}")
        raise typer.Exit(1)


@app.command()
def backtest(
    lake: Annotated[
        str, typer.Option(help="the lake holding the timeline (date=YYYY-MM-DD partitions)")
    ] = "data/lake",
    out: Annotated[str, typer.Option(help="output folder: backtest.json/.csv/.md/.png")] = "reports/backtest",
    periods: Annotated[
        str | None, typer.Option(help="daily | weekly | monthly (default: retrain.backtest.periods)")
    ] = None,
    start: Annotated[str | None, typer.Option(help="first period's day YYYY-MM-DD (default: params)")] = None,
    strategies: Annotated[
        str | None,
        typer.Option(help="comma-separated subset of never,stateless,stateful,stateful_refit,policy"),
    ] = None,
    generate_days: Annotated[
        int | None,
        typer.Option(min=1, help="synthetic only: generate + ETL this many days into an empty --lake"),
    ] = None,
    rows_per_day: Annotated[int | None, typer.Option(min=1, help="with --generate-days")] = None,
    drift_date: Annotated[str | None, typer.Option(help="with --generate-days: synthetic.drift.date")] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Replay a timeline period by period; compare never / stateless / stateful / stateful+refit / policy."""

    # CPU seconds should count work, not OpenMP threads spinning at XGBoost's barriers: with the default
    # (active) wait policy the same refits measured 98.7 CPU-s on a busy machine and 58.6 with passive
    # waiting. Set before xgboost (libgomp) loads; an explicit OMP_WAIT_POLICY in the environment wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    p = params_or_exit(params)
    if drift_date is not None or rows_per_day is not None or generate_days is not None:
        syn = p.synthetic.model_copy(update={k: v for k, v in (
            ("days", generate_days), ("rows_per_day", rows_per_day)) if v is not None})  # fmt: skip
        if drift_date is not None:
            syn = syn.model_copy(
                update={"drift": syn.drift.model_copy(update={"date": iso_date(drift_date, "--drift-date")})}
            )
        p = p.model_copy(update={"synthetic": syn})
    if generate_days is not None:
        if p.source.kind != "synthetic":
            typer.echo("error: --generate-days needs source.kind synthetic", err=True)
            raise typer.Exit(2)
        if not lake_dates(lake):
            root = lake.rstrip("/").rsplit("/", 1)[0] if "/" in lake.rstrip("/") else "."
            generate_landing(p.synthetic, out=storage.join(root, "landing"), seed=p.seed)
            run_etl(landing=storage.join(root, "landing"), lake=lake, quarantine=storage.join(root, "quarantine"),
                    params=p)  # fmt: skip
    tl = load_timeline(lake, p)
    result = run_backtest(tl, p, periods=periods, start=iso_date(start, "--start") if start else None,
                          strategies=strategies.split(",") if strategies else None)  # fmt: skip
    files = write_outputs(out, result)
    typer.echo(markdown_table(result))
    typer.echo(f"written: {', '.join(files.values())}")
