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
        str | None, typer.Option(help="also write the run manifest here (DVC metric; path or s3:// URI)")
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
    from pipelines.features import run_features
    from pipelines.leakage import LeakageError

    p = _params(params)
    try:
        report = run_features(
            labeled=labeled, lake=lake, out=out, reports=reports, params=p, importance=importance
        )
    except LeakageError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    s = report["summary"]
    typer.echo(
        f"features: {report['n_features']} features from {report['n_inputs']} inputs, rows {report['rows']}; "
        f"leakage checks passed (max single-input AUC {s['max_single_auc']} on {s['max_single_auc_input']})"
    )


@app.command()
def sample(
    lake: Annotated[str, typer.Option(help="lake root (or s3:// prefix)")] = "data/lake",
    out: Annotated[
        str, typer.Option(help="output folder for train/valid/test/unlabelled.parquet")
    ] = "data/training",
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Time-ordered train/valid/test split as of a cutoff (immature labels become null); sample train."""
    from pipelines.sampling import run_sampling

    p = _params(params)
    try:
        report = run_sampling(lake=lake, out=out, cfg=p.sampling, schema=p.schema, seed=p.seed)
    except ValueError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    for name, c in report["counts"].items():
        typer.echo(f"{name}: {c['rows']} rows, {c['labelled']} labelled, label rate {c['label_rate']}")
    typer.echo(f"unlabelled: {report['unlabelled_rows']} rows (cutoff {report['windows']['cutoff']})")


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
    from pipelines.labeling import run_labeling

    p = _params(params)
    try:
        report = run_labeling(training=training, hand_labels=hand_labels, out=out, reports=reports,
                              cfg=p.labeling, schema=p.schema, seed=p.seed)  # fmt: skip
    except ValueError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    lm = report["label_model"]["gold"]
    typer.echo(f"label model ({report['label_model']['kind']}) on gold: balanced accuracy "
               f"{lm['balanced_accuracy']}; best LF {report['best_lf']['name']}: {report['best_lf']['balanced_accuracy']}")  # fmt: skip
    for name, c in report["label_sources"].items():
        typer.echo(f"{name}: {c}")
    typer.echo(f"hand labels: {report['hand_labels']['accepted']} accepted, {report['hand_labels']['rejected']} rejected; "
               f"active-learning queue: {report['active_learning']['queued']} rows")  # fmt: skip


@app.command()
def validate(
    lake: Annotated[str, typer.Option(help="lake root (or s3:// prefix)")] = "data/lake",
    reports: Annotated[
        Path, typer.Option(help="folder for summary.json, data_docs/ and state/ (local)")
    ] = Path("reports/validation"),
    params: ParamsOpt = Path("params.yaml"),
    date: Annotated[
        str | None, typer.Option(help="validate this partition (YYYY-MM-DD), whatever the record says")
    ] = None,
    all_partitions: Annotated[
        bool, typer.Option("--all", help="validate every partition in the lake")
    ] = False,
    state: Annotated[
        Path | None, typer.Option(help="record of validated partitions (default: REPORTS/state)")
    ] = None,
) -> None:
    """Run the GX expectation suite (derived from params) on new lake partitions; write Data Docs.

    Default: the partitions written by ETL runs not validated yet (and those that failed last time).
    Exits 1 naming each failed critical expectation (validation.fail_on), partition and observed value.
    """
    from pipelines.etl import validate_date
    from pipelines.validate import run_validation

    p = _params(params)
    if date is not None and all_partitions:
        typer.echo("error: pass either --date or --all, not both", err=True)
        raise typer.Exit(2)
    try:
        dates = [validate_date(date, name="--date")] if date is not None else None
        summary_ = run_validation(
            lake=lake, reports=str(reports), schema=p.schema, cfg=p.validation, dates=dates,
            all_partitions=all_partitions, state=str(state) if state else None,
        )  # fmt: skip
    except (ValueError, FileNotFoundError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo(
        f"validate: {summary_['partitions_validated']} partition(s), {summary_['critical_failures']} critical "
        f"failure(s), {summary_['warnings']} warning(s); Data Docs: {summary_['data_docs'] or '-'}"
    )
    if summary_["failure_lines"]:
        typer.echo("\n".join(summary_["failure_lines"]), err=True)
        raise typer.Exit(1)


@app.command()
def evaluate(
    features: Annotated[
        str, typer.Option(help="features folder (test/valid.parquet, spec.json)")
    ] = "data/features",
    model: Annotated[str, typer.Option(help="candidate model directory")] = "models/candidate",
    out: Annotated[
        str, typer.Option(help="output folder (metrics, plots, report.html)")
    ] = "reports/evaluation",
    champion: Annotated[
        str | None, typer.Option(help="compare with <registry>/champion (or a model directory)")
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Evaluate every model and baseline on the test split: metrics, calibration, slices, behavioural tests."""
    from pipelines.evaluate import run_evaluate
    from pipelines.registry import load_champion

    p = _params(params)
    try:
        champ = load_champion(champion) if champion else None
        ev = run_evaluate(
            features=features, model=model, out=out, cfg=p.evaluate, seed=p.seed, champion=champ
        )
    except (ValueError, FileNotFoundError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    for name, m in ev["metrics"].items():
        typer.echo(f"{name:<28} PR-AUC {m['pr_auc']:.4f}  ROC-AUC {m['roc_auc']:.4f}  ECE {m['ece']:.4f}")
    s = ev["summary"]
    typer.echo(f"slices flagged: {s['slices_flagged']}; behavioural tests passed: {s['behavioural_passed']}")


@app.command()
def register(
    model: Annotated[str, typer.Option(help="candidate model directory")] = "models/candidate",
    evaluation: Annotated[str, typer.Option(help="its evaluation folder")] = "reports/evaluation",
    registry: Annotated[str, typer.Option(help="registry root (folder or s3:// prefix)")] = "models/registry",
    features: Annotated[
        str, typer.Option(help="features folder: the holdout the champion is re-scored on")
    ] = ("data/features"),
    parent: Annotated[str | None, typer.Option(help="parent version (warm start)")] = None,
    out: Annotated[str | None, typer.Option(help="also write the decision here (or s3://)")] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Register the candidate as a version, run the promotion gate, promote it to champion if it passes."""
    from pipelines import storage
    from pipelines.registry import RegistryError, file_sha256, git_info, run_register

    p = _params(params)
    try:
        result = run_register(
            model=model, evaluation=evaluation, registry=registry, features=features, gate_cfg=p.gate,
            evaluate_cfg=p.evaluate, seed=p.seed, created_at=dt.datetime.now(dt.UTC), git=git_info(),
            dvc_lock_sha256=file_sha256("dvc.lock"), parent_version=parent,
        )  # fmt: skip
    except (RegistryError, ValueError, FileNotFoundError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{result['version']}: {result['status']} (gate {'passed' if result['passed'] else 'failed'}); "
               f"champion {result['champion_before']} -> {result['champion_after']}")  # fmt: skip
    for reason in result["reasons"]:
        typer.echo(f"  - {reason}")
    if out is not None:
        storage.write_json(out, result)


registry_app = typer.Typer(help="The model registry: versions, aliases (champion, challenger), rollback.")
app.add_typer(registry_app, name="registry")
RegistryOpt = Annotated[str, typer.Option("--registry", "-r", help="registry root (folder or s3:// prefix)")]


def _registry_call(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    from pipelines.registry import RegistryError

    try:
        return fn(*args, **kwargs)
    except RegistryError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None


@registry_app.command("list")
def registry_list(registry: RegistryOpt = "models/registry") -> None:
    """Every version with its gate status and aliases."""
    from pipelines.registry import Registry, format_rows

    reg = Registry(registry)
    typer.echo(format_rows(_registry_call(reg.summary)))
    st = reg.state()
    typer.echo(
        f"aliases (generation {st.generation}): " + ", ".join(f"{a}={v}" for a, v in st.aliases.items())
    )


@registry_app.command("show")
def registry_show(
    version: Annotated[
        str | None, typer.Argument(help="version id or alias; default: the alias history")
    ] = None,
    registry: RegistryOpt = "models/registry",
) -> None:
    """A version's lineage and gate decision (a version id or an alias name), or the alias history."""
    from pipelines.registry import ALIASES, Registry

    reg = Registry(registry)
    if version is None:
        typer.echo(json.dumps({"aliases": reg.state().to_dict(), "history": reg.history()}, indent=2))
        return
    if version in ALIASES:
        resolved = reg.alias(version)
        if resolved is None:
            typer.echo(f"error: no {version} in {registry}", err=True)
            raise typer.Exit(1)
        version = resolved
    lineage = _registry_call(reg.lineage, version)
    typer.echo(json.dumps({"lineage": lineage, "gate": reg.read_json(version, "gate.json")}, indent=2))


@registry_app.command("promote")
def registry_promote(
    version: Annotated[str, typer.Argument(help="version id")],
    alias: Annotated[str, typer.Option(help="champion or challenger")] = "champion",
    force: Annotated[bool, typer.Option(help="override a failed or stale gate (needs --reason)")] = False,
    reason: Annotated[str, typer.Option(help="why (recorded in the alias history)")] = "",
    registry: RegistryOpt = "models/registry",
) -> None:
    """Point an alias at a version; champion requires a passed gate against the current champion."""
    from pipelines.registry import Registry

    if force and not reason:
        typer.echo("error: --force needs --reason (it is recorded in the alias history)", err=True)
        raise typer.Exit(2)
    st = _registry_call(Registry(registry).promote, version, alias=alias, force=force, reason=reason)
    typer.echo(f"{alias} = {version} (generation {st.generation})")


@registry_app.command("rollback")
def registry_rollback(
    alias: Annotated[str, typer.Option(help="champion or challenger")] = "champion",
    reason: Annotated[str, typer.Option(help="why (recorded in the alias history)")] = "",
    registry: RegistryOpt = "models/registry",
) -> None:
    """Restore the alias's previous version from its history."""
    from pipelines.registry import Registry

    st = _registry_call(Registry(registry).rollback, alias=alias, reason=reason)
    typer.echo(f"{alias} = {st.aliases[alias]} (was {st.event['previous']}; generation {st.generation})")


@app.command()
def train(
    features: Annotated[
        str, typer.Option(help="feature stage output ({train,valid}.parquet, spec.json)")
    ] = "data/features",
    best_params: Annotated[
        str, typer.Option(help="tuned XGBoost parameters (tune stage); params defaults when absent")
    ] = "reports/tuning/best_params.json",
    out: Annotated[
        str, typer.Option(help="model directory to write (layout: pipelines/models.py)")
    ] = "models/candidate",
    reports: Annotated[
        str, typer.Option(help="folder for metrics.json and the DVCLive curves")
    ] = "reports/train",
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Train the baselines, XGBoost (early stopping) and the Keras edge model (optional distillation)."""
    from pipelines.models import quiet_tensorflow
    from pipelines.train import run_train

    quiet_tensorflow()
    p = _params(params)
    try:
        m = run_train(features=features, best_params=best_params, out=out, reports=reports, params=p)
    except (ValueError, FileNotFoundError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    for name, v in m["valid"].items():
        typer.echo(f"{name:20s} valid PR-AUC {v['pr_auc']:.4f}  ROC-AUC {v['roc_auc']:.4f}")
    d = m["distillation"]
    if "delta_pr_auc" in d:
        typer.echo(f"distillation: valid PR-AUC with {d['valid_pr_auc_with']:.4f} vs without "
                   f"{d['valid_pr_auc_without']:.4f} ({'helps' if d['helps'] else 'does not help'})")  # fmt: skip
    typer.echo(f"wrote {out} in {m['wall_seconds']['stage']:.1f} s")


@app.command()
def tune(
    features: Annotated[
        str, typer.Option(help="feature stage output ({train,valid}.parquet, spec.json)")
    ] = "data/features",
    out: Annotated[
        str, typer.Option(help="folder for best_params.json, summary.json and DVCLive logs")
    ] = "reports/tuning",
    storage: Annotated[
        str | None,
        typer.Option(help="Optuna storage URL overriding tune.storage (sqlite:///... or postgresql://...)"),
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Optuna TPE + pruning on one shared study; continues the study up to tune.n_trials finished trials."""
    from pipelines.tune import run_tune

    p = _params(params)
    try:
        s = run_tune(features=features, out=out, params=p, storage_url=storage)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"study {s['study_name']} ({s['storage']}): trials {s['trials']}, "
               f"best {s['metric']} {s['best_value']:.4f} (trial {s['best_trial']}), {s['wall_seconds']:.1f} s")  # fmt: skip


@app.command("init")
def init_profile(
    from_: Annotated[
        Path, typer.Option("--from", help="a sample of your data: CSV (.gz/.zip ok) or Parquet")
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
    out: Annotated[Path, typer.Option(help="folder for the profile")] = Path("profiles"),
    max_rows: Annotated[int, typer.Option(min=50, help="rows read from the file")] = 200_000,
    force: Annotated[bool, typer.Option(help="overwrite an existing profile")] = False,
) -> None:
    """Propose a params profile for your data: types, features, sizes, and leakage warnings."""
    import os
    import re

    from pipelines.init_profile import infer_profile, read_sample, write_profile

    stem = from_.name.split(".")[0]
    name = name or re.sub(r"[^A-Za-z0-9_-]", "_", stem)
    suffixes = [x.lower() for x in from_.suffixes]
    fmt = "parquet" if ".parquet" in suffixes else "csv"
    pattern = "*" + "".join(from_.suffixes) if fmt == "csv" else "*.parquet"
    folder = from_.resolve().parent
    inside = folder.is_relative_to(Path.cwd().resolve())  # inside the project: relative, portable
    land = landing or (os.path.relpath(folder, Path.cwd()) if inside else str(folder))
    try:
        df = read_sample(from_, max_rows=max_rows)
        proposal = infer_profile(df, label=label, time=time, positive=positive, name=name, entity=entity,
                                 time_format=time_format, landing=land, pattern=pattern, file_format=fmt)  # fmt: skip
        path, warn_path = write_profile(proposal, out_dir=out, source_file=str(from_), force=force)
    except (ValueError, FileNotFoundError, FileExistsError, ConfigError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    s = proposal.stats
    typer.echo(f"{path}: {len(proposal.params['schema']['columns'])} columns, {s['rows_sampled']:,} rows sampled, "
               f"{s['days']} days, label rate {s['label_rate']:.2%}, entity {s['entity_key']}")  # fmt: skip
    for w in proposal.warnings:
        typer.echo(f"WARNING {w.line()}")
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
    from pipelines.profile_run import run_profile
    from pipelines.summary import summarize

    try:
        rc, ws = run_profile(Path.cwd(), profile, until=until, landing=landing, force=force)
    except (ValueError, FileNotFoundError, FileExistsError, ConfigError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo(summarize(ws / "reports"))
    typer.echo(f"workspace: {ws} (cd there and `dvc repro` works too)")
    if rc:
        raise typer.Exit(rc)


@app.command()
def report(
    reports: Annotated[Path, typer.Option(help="the run's reports folder")] = Path("reports"),
    registry: Annotated[
        str, typer.Option(help="the model registry (for the model card; folder or s3:// prefix)")
    ] = "models/registry",
    benchmarks: Annotated[Path, typer.Option(help="benchmark results folder")] = Path("benchmarks/results"),
    out: Annotated[Path | None, typer.Option(help="the index page (default: REPORTS/index.html)")] = None,
    title: Annotated[
        str | None, typer.Option(help="page title (default: names the profile in runs/NAME)")
    ] = None,
) -> None:
    """Write the one-page run report linking every report, headline figures on top."""
    from pipelines.run_report import write_run_report

    cwd = Path.cwd()
    title = title or ("Loopline run report" + (f": profile {cwd.name}" if cwd.parent.name == "runs" else ""))
    path = write_run_report(reports=reports, registry=registry, benchmarks=benchmarks,
                            out=out or reports / "index.html", title=title)  # fmt: skip
    typer.echo(f"run report: {path}")


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
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """TFLite float32/float16/dynamic-range/int8 variants of the Keras model; publish those passing the parity gate."""
    from pipelines import storage
    from pipelines.models import quiet_tensorflow
    from pipelines.quantize import run_quantize
    from pipelines.registry import RegistryError

    quiet_tensorflow()
    p = _params(params)
    if register_report is not None and version is None:
        if not storage.exists(register_report):
            typer.echo(f"error: {register_report} not found; run `loopline register` first", err=True)
            raise typer.Exit(2)
        version = storage.read_json(register_report).get("version")
    if (registry is None) != (version is None):
        typer.echo("error: --registry and --version (or --register-report) go together", err=True)
        raise typer.Exit(2)
    try:
        r = run_quantize(features=features, model=model, out=out, reports=reports, cfg=p.quantize,
                         evaluate_cfg=p.evaluate, seed=p.seed, registry=registry, version=version)  # fmt: skip
    except (ValueError, FileNotFoundError, RegistryError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"keras float ROC-AUC {r['keras']['roc_auc']:.4f}; threshold {r['threshold']:.6f}")
    for name, v in r["variants"].items():
        w = v["parity"]["whole"]
        typer.echo(f"{name:<14} {v['bytes']:>9} B  ROC-AUC drop {w['roc_auc_drop']:+.5f}  mean|d| "
                   f"{w['mean_abs_diff']:.5f}  agree {w['agreement']:.4f}  "
                   f"{'published' if v['published'] else 'NOT published: ' + '; '.join(v['parity']['reasons'])}")  # fmt: skip


@app.command("edge-predict", context_settings={"allow_extra_args": False})
def edge_predict(
    model: Annotated[str, typer.Option(help="the .tflite file")],
    spec: Annotated[str, typer.Option(help="the feature spec the model was trained with")],
    input: Annotated[str, typer.Option("--input", help="CSV of raw input columns (+ event_id)")],
    output: Annotated[str | None, typer.Option(help="scores CSV (default: standard output)")] = None,
    batch_size: Annotated[int, typer.Option(help="rows per interpreter call")] = 1024,
    threads: Annotated[int | None, typer.Option(help="interpreter threads")] = None,
) -> None:
    """Score a CSV on the edge runtime (numpy + TFLite only); same as `python -m pipelines.edge`."""
    from pipelines.edge import main as edge_main

    argv = ["--model", model, "--spec", spec, "--input", input, "--batch-size", str(batch_size)]
    if output is not None:
        argv += ["--output", output]
    if threads is not None:
        argv += ["--threads", str(threads)]
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
    from pipelines import storage
    from pipelines.predict import NoChampionError, PredictError, run_predict
    from pipelines.registry import RegistryError

    p = _params(params)
    cfg = p.predict if scorer is None else p.predict.model_copy(update={"scorer": scorer})
    try:
        s = run_predict(lake=lake, registry=registry, out=out, date=date, start=start, end=end,
                        model=model or p.predict.model, version=version, cfg=cfg, params=p)  # fmt: skip
    except NoChampionError as err:
        if not skip_without_champion:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None
        log.warning("predict skipped: %s", err)
        storage.ensure_dir(out)
        if summary_out is not None:
            storage.write_json(summary_out, {"skipped": True, "reason": str(err), "rows": 0, "dates": []})
        return
    except (PredictError, RegistryError, ValueError, FileNotFoundError) as err:  # e.g. a tampered artifact
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"predict: {s['rows']} rows, {len(s['dates'])} partition(s) with {s['model']} of "
               f"{s['model_version']} (scorer {s['scorer']}) in {s['wall_seconds']:.1f} s ({s['rows_per_second']:.0f} rows/s)")  # fmt: skip
    if summary_out is not None:
        storage.write_json(summary_out, s)


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
    from pipelines.monitor import run_monitor

    p = _params(params)
    try:
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
    except (ValueError, FileNotFoundError, KeyError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    d = r["decision"]
    typer.echo(
        f"{d['window']['label']}: drift={d['drift']} retrain={d['retrain']} ({r['summary']['cpu_seconds']} CPU-s)"
    )
    for reason in d["reasons"]:
        typer.echo(f"  - {reason}")


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
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Retrain the champion: stateful update (added trees, Keras fine-tune) or a scheduled stateless refit,
    then evaluation, gate, registry and quantization; the watermark advances only on promotion."""
    if mode is not None and mode not in ("auto", "stateful", "stateless"):
        typer.echo(f"error: --mode {mode!r}: expected auto, stateful or stateless", err=True)
        raise typer.Exit(2)
    from pipelines.retrain import RetrainError, run_retrain

    p = _params(params)
    from pipelines.registry import RegistryError, git_info

    try:
        r = run_retrain(lake=lake, registry=registry, features_out=features_out, out=out, reports=reports, params=p,
                        mode=mode, decision=decision, as_of=dt.date.fromisoformat(as_of) if as_of else None,
                        git=git_info(), best_params=best_params)  # fmt: skip
    except (RetrainError, RegistryError, ValueError, FileNotFoundError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    if not r["ran"]:
        typer.echo(f"retrain skipped: {r['reason']}")
        return
    typer.echo(f"retrain {r.get('mode')} ({r.get('why')}): {r.get('status')} {r.get('version', '')}; "
               f"watermark {r['watermark_before']} -> {r['watermark_after']} ({r['cpu_seconds']} CPU-s)")  # fmt: skip
    for reason in r.get("reasons") or []:
        typer.echo(f"  - {reason}")
    if r.get("status") == "failed":
        typer.echo(f"  - {r.get('error')}")
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
    import os

    # CPU seconds should count work, not OpenMP threads spinning at XGBoost's barriers: with the default
    # (active) wait policy the same refits measured 98.7 CPU-s on a busy machine and 58.6 with passive
    # waiting. Set before xgboost (libgomp) loads; an explicit OMP_WAIT_POLICY in the environment wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from pipelines import storage
    from pipelines.backtest import load_timeline, markdown_table, run_backtest, write_outputs

    p = _params(params)
    if drift_date is not None or rows_per_day is not None or generate_days is not None:
        syn = p.synthetic.model_copy(update={k: v for k, v in (
            ("days", generate_days), ("rows_per_day", rows_per_day)) if v is not None})  # fmt: skip
        if drift_date is not None:
            syn = syn.model_copy(
                update={"drift": syn.drift.model_copy(update={"date": dt.date.fromisoformat(drift_date)})}
            )
        p = p.model_copy(update={"synthetic": syn})
    if generate_days is not None:
        from pipelines.etl import lake_dates, run_etl
        from pipelines.generate import generate_landing

        if p.source.kind != "synthetic":
            typer.echo("error: --generate-days needs source.kind synthetic", err=True)
            raise typer.Exit(2)
        if not lake_dates(lake):
            root = lake.rstrip("/").rsplit("/", 1)[0] if "/" in lake.rstrip("/") else "."
            generate_landing(p.synthetic, out=storage.join(root, "landing"), seed=p.seed)
            run_etl(landing=storage.join(root, "landing"), lake=lake, quarantine=storage.join(root, "quarantine"),
                    params=p)  # fmt: skip
    try:
        tl = load_timeline(lake, p)
        result = run_backtest(tl, p, periods=periods, start=dt.date.fromisoformat(start) if start else None,
                              strategies=strategies.split(",") if strategies else None)  # fmt: skip
    except (ValueError, FileNotFoundError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    files = write_outputs(out, result)
    typer.echo(markdown_table(result))
    typer.echo(f"written: {', '.join(files.values())}")


@app.command("dvc-deps")
def dvc_deps(
    check: Annotated[
        bool, typer.Option("--check", help="exit 1 when a stage's deps miss code it runs")
    ] = False,
    write: Annotated[
        bool, typer.Option("--write", help="rewrite each stage's pipelines/ deps in dvc.yaml")
    ] = False,
    dvc_yaml: Annotated[
        Path, typer.Option("--dvc-yaml", help="the pipeline file to check or rewrite")
    ] = Path("dvc.yaml"),
    root: Annotated[
        Path | None, typer.Option(help="the project whose pipelines/ is read (default: dvc.yaml's folder)")
    ] = None,
) -> None:
    """Keep dvc.yaml's code deps equal to the modules each stage runs (its import closure)."""
    from pipelines import import_graph

    if check == write:
        typer.echo("error: give exactly one of --check or --write", err=True)
        raise typer.Exit(2)
    root = root or dvc_yaml.resolve().parent
    try:
        if write:
            code = import_graph.stage_code(root, dvc_yaml)
            dvc_yaml.write_text(import_graph.write_deps(dvc_yaml, code), encoding="utf-8")
            typer.echo(f"{dvc_yaml}: code deps written for {len(code)} stage(s)")
            return
        missing = import_graph.missing_deps(root, dvc_yaml)
    except (OSError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    for stage, files in missing.items():
        typer.echo(f"{dvc_yaml}: stage {stage!r} runs code its deps miss: {', '.join(files)}", err=True)
    if missing:
        typer.echo("fix: loopline dvc-deps --write (then review and commit dvc.yaml)", err=True)
        raise typer.Exit(1)
    typer.echo(f"{dvc_yaml}: every stage's deps cover the code it runs")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
