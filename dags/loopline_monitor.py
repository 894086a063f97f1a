"""loopline_monitor: on each new lake partition, batch prediction + drift monitoring; may emit drift."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Asset, task
from loopline_dvc import DEFAULT_ARGS, DRIFT_ASSET_NAME, LAKE_ASSET_NAME, dvc_stage, emit_drift_if_decided

DRIFT = Asset(DRIFT_ASSET_NAME)

with DAG(
    dag_id="loopline_monitor",
    description="Batch prediction and drift monitoring whenever the lake gets a new partition",
    schedule=Asset(LAKE_ASSET_NAME),  # runs after every loopline_etl run that published data
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["loopline", "monitor", "dvc"],
    doc_md="""
### loopline_monitor

Scheduled on the Asset `loopline_lake`. Runs the DVC stages `predict` and `monitor` in this run's
workspace (the lake hard-linked read-only). The monitor stage writes the Evidently report, a JSON summary
and `reports/monitor/latest/decision.json`; when the decision says *retrain*, the task `drift_event` emits the
Asset `loopline_drift`, which triggers `loopline_retrain`.

Until `predict`/`monitor` exist in `dvc.yaml` their tasks are skipped and no drift event is emitted.
""",
) as dag:

    @task(outlets=[DRIFT], trigger_rule="none_failed")
    def drift_event(**context):
        """Emit the drift Asset when the monitor's decision.json says retrain (skipped otherwise)."""
        return emit_drift_if_decided(context)

    # predict: the lake and the registry's champion in, predictions out (shared, they accumulate);
    # monitor: its cool-down state and decision are shared (loopline_retrain reads the decision).
    dvc_stage("predict", data="predict") >> dvc_stage("monitor", data="monitor") >> drift_event()
