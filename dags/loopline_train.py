"""loopline_train: lake -> training set -> features -> (tune, train, evaluate, quantize, registry)."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param, chain
from loopline_dvc import DEFAULT_ARGS, dvc_stage

with DAG(
    dag_id="loopline_train",
    description="Train a model from the lake: one task per DVC stage, in the run's own workspace",
    schedule=None,  # manual (UI form or REST API); loopline_retrain covers the cron and drift triggers
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["loopline", "train", "dvc"],
    params={
        "seed": Param(42, type="integer", minimum=0, description="random seed (params.yaml: seed)"),
        "overrides": Param(
            {},
            type="object",
            description=(
                'params.yaml overrides for this run as dotted keys, e.g. {"synthetic.days": 30}. '
                "Validated by `loopline check-params` before any stage runs."
            ),
        ),
    },
    render_template_as_native_obj=True,
    doc_md="""
### loopline_train

Runs the training stages of `dvc.yaml` on the accumulated lake (hard-linked read-only into this run's
workspace, `runs/loopline_train/<run_id>`). The params form's `overrides` (and `seed`) are written into the
workspace's `params.yaml`, validated, and recorded in `airflow_run.json`, so the run is reproducible with
`dvc repro` in that folder. Unchanged stages are restored from the shared DVC run-cache, not recomputed.

Stages not yet in `dvc.yaml` are skipped (grey in the grid): add a stage there and it runs here.
""",
) as dag:
    # One line per stage, in dvc.yaml's order (quantize reads register's report). `data=` names the shared
    # folders a stage reads or publishes: the lake in, best_params.json and the registry out.
    chain(
        dvc_stage("sample", data="lake"),
        dvc_stage("label"),
        dvc_stage("features"),
        dvc_stage("tune", data="tune"),
        dvc_stage("train"),
        dvc_stage("evaluate"),
        dvc_stage("register", data="register"),
        dvc_stage("quantize", data="registry"),
    )
