"""Training: the Optuna study and the models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipelines.cli.common import ParamsOpt, params_or_exit
from pipelines.training.models import quiet_tensorflow
from pipelines.training.train import run_train
from pipelines.training.tune import run_tune

app = typer.Typer()


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

    p = params_or_exit(params)
    s = run_tune(features=features, out=out, params=p, storage_url=storage)
    typer.echo(f"study {s['study_name']} ({s['storage']}): trials {s['trials']}, "
               f"best {s['metric']} {s['best_value']:.4f} (trial {s['best_trial']}), {s['wall_seconds']:.1f} s")  # fmt: skip


@app.command()
def train(
    features: Annotated[
        str, typer.Option(help="feature stage output ({train,valid}.parquet, spec.json)")
    ] = "data/features",
    best_params: Annotated[
        str, typer.Option(help="tuned XGBoost parameters (tune stage); params defaults when absent")
    ] = "reports/tuning/best_params.json",
    out: Annotated[
        str, typer.Option(help="model directory to write (layout: pipelines/training/models.py)")
    ] = "models/candidate",
    reports: Annotated[
        str, typer.Option(help="folder for metrics.json and the DVCLive curves")
    ] = "reports/train",
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Train the baselines, XGBoost (early stopping) and the Keras edge model (optional distillation)."""

    quiet_tensorflow()
    p = params_or_exit(params)
    m = run_train(features=features, best_params=best_params, out=out, reports=reports, params=p)
    for name, v in m["valid"].items():
        typer.echo(f"{name:20s} valid PR-AUC {v['pr_auc']:.4f}  ROC-AUC {v['roc_auc']:.4f}")
    d = m["distillation"]
    if "delta_pr_auc" in d:
        typer.echo(f"distillation: valid PR-AUC with {d['valid_pr_auc_with']:.4f} vs without "
                   f"{d['valid_pr_auc_without']:.4f} ({'helps' if d['helps'] else 'does not help'})")  # fmt: skip
    typer.echo(f"wrote {out} in {m['wall_seconds']['stage']:.1f} s")
