"""loopline_etl: one day of landing files -> the lake, as the DVC stage `etl` (then `validate`)."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Asset, CronTriggerTimetable, Param, task
from loopline_dvc import (
    DEFAULT_ARGS,
    LAKE_ASSET_NAME,
    NEVER_AT_ONCE,
    LandingSensor,
    dvc_stage,
    emit_lake_if_changed,
)

LAKE = Asset(LAKE_ASSET_NAME)

with DAG(
    dag_id="loopline_etl",
    description="Ingest and validate one day's landing files into the lake (DVC stages etl, validate)",
    # Each run owns the data interval [D, D+1) in UTC (its logical date is D) and runs at D+1 00:00, once the
    # day has closed. No start_date, on purpose: with one, Airflow schedules the newest past day the moment
    # the DAG is unpaused (whatever run_immediately says); without, unpausing waits for the next midnight.
    # History is loaded with an explicit backfill (UI, REST API or `airflow backfill create`).
    schedule=CronTriggerTimetable(
        "0 0 * * *", timezone="UTC", interval=dt.timedelta(days=1), run_immediately=NEVER_AT_ONCE
    ),
    catchup=False,
    max_active_runs=3,
    default_args=DEFAULT_ARGS,
    tags=["loopline", "etl", "dvc"],
    params={
        "date": Param(
            None,
            type=["null", "string"],
            pattern=r"^\d{4}-\d{2}-\d{2}$",
            description="Partition to load (YYYY-MM-DD). Empty: the run's logical date (UTC).",
        )
    },
    doc_md="""
### loopline_etl

Loads **one day** of landing files into the lake: the DVC stage `etl`, then `validate`,
runs in this run's own workspace (`runs/loopline_etl/<run_id>`), seeded with the day's landing file and
the lake's de-duplication window; what the stage writes is published to the shared lake atomically.

* Waits for the day: the sensor `landed` pokes the landing folder every 5 minutes until a file whose name
  holds the date is there, up to 6 h after the day closed; past that (an old day, a gap in a backfill) it
  is skipped at once with the folder and the expected name, and so are the stages after it.
* Partition: the run's logical date (UTC; for scheduled and backfill runs, the data interval start) or the
  `date` param. Re-running a day is idempotent.
* Schedule: daily at 00:00 UTC for the day that just closed. Unpausing starts nothing: the first scheduled
  run is the next midnight's.
* Backfill: `POST /api/v2/backfills` or *Trigger → Backfill* in the UI. The range is of *run times*: the
  run at D+1 00:00 loads day D, so days 2025-01-01..01-03 are `from_date` 2025-01-02, `to_date` 2025-01-04.
  Up to 3 days run at once, each in its own workspace, never sharing DVC's lock.
* Output: the Asset `loopline_lake` (event extra: date, partitions, dvc.lock digest), which schedules
  `loopline_monitor`. The task `lake_changed` emits it only when the run wrote a partition and validation
  passed; a re-run of a loaded day succeeds with `lake_changed` skipped ("the lake did not change: 0 new
  file(s), 1 unchanged"), so no monitoring run starts over unchanged data.
* Reports: the task log (stage output + dvc.lock sha256), the run's manifest in
  `<lake>/_etl/manifests/`, and `runs/loopline_etl/<run_id>/reports/etl/manifest.json`.
""",
) as dag:

    @task(outlets=[LAKE], trigger_rule="none_failed")
    def lake_changed(**context):
        """Emit the lake Asset when the run's ETL wrote a partition (skipped, no event, otherwise)."""
        return emit_lake_if_changed(context)

    # The day waits to land first (skipped, saying what was expected where, when it never does; a skipped
    # wait skips the stages after it). The lake event is for validated data only: a failed validation emits
    # none, so monitoring never scores a suspect day.
    landed = LandingSensor(task_id="landed")
    etl = dvc_stage("etl", data="etl_interval", optional=False, trigger_rule="all_success")
    validate = dvc_stage("validate", trigger_rule="none_failed_min_one_success")
    landed >> etl >> validate >> lake_changed()
