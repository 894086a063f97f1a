"""loopline_retrain: warm-start retraining on a weekly cron OR a drift event -> gate -> promotion."""

from __future__ import annotations

from airflow.sdk import DAG, Asset, AssetOrTimeSchedule, CronTriggerTimetable, task
from loopline_dvc import DEFAULT_ARGS, DRIFT_ASSET_NAME, NEVER_AT_ONCE, dvc_stage, retrain_outcome

with DAG(
    dag_id="loopline_retrain",
    description="Stateful retraining, weekly or when monitoring reports drift",
    # Monday 03:00 UTC, or as soon as loopline_monitor emits the drift Asset, whichever comes first.
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 3 * * 1", timezone="UTC", run_immediately=NEVER_AT_ONCE),
        assets=Asset(DRIFT_ASSET_NAME),
    ),
    # No start_date: with one, Airflow runs last Monday's retrain the moment the DAG is unpaused; without,
    # the first cron run is next Monday's (drift events still trigger it at once).
    catchup=False,  # a missed weekly retrain is not worth replaying: the next one uses all the data
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["loopline", "retrain", "dvc"],
    doc_md="""
### loopline_retrain

Triggered by a cron (Monday 03:00 UTC) **or** the Asset `loopline_drift`. Runs, in its own workspace, the
DVC stage `retrain`: warm start from the champion → evaluation → promotion gate → registry (aliases moved
atomically) → TFLite, driven by the monitor's latest `decision.json` (no retrain: a cheap "skipped" report).
The registry (with the retrain watermark) is published back to the shared registry. The task `outcome`
succeeds only when a candidate was promoted; when nothing was retrained (waiting for matured labels, no
retrain decided, the candidate refused by the gate) it is skipped and its log says why.
""",
) as dag:
    # The retrain stage does the whole loop itself (warm start, evaluation, gate, registry, quantization),
    # from the shared lake, registry and the monitor's decision; it publishes the registry and its report.

    @task(trigger_rule="all_success")
    def outcome(**context):
        """Success only when a candidate was promoted; skipped, with the reason, when nothing was retrained."""
        return retrain_outcome(context)

    dvc_stage("retrain", data="retrain", optional=False) >> outcome()
