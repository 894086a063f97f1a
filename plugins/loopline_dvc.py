"""The Airflow operator that runs ONE Loopline DVC stage for a DAG run, in the run's own workspace.

DAG files use :func:`dvc_stage`: ``dvc_stage("etl", data="etl_interval", outlets=[LAKE])``. The task

1. creates the run's workspace once (``plugins/loopline_workspace.py``: a shared git clone overlaid with the
   working tree, sharing the project's DVC cache) and records the run's date, conf and params in it;
2. seeds the stage's inputs from the shared data folders (``data=``), runs
   ``<project>/.venv/bin/dvc repro --single-item <stage>`` with the pipeline environment first on PATH
   (Airflow never imports the ML stack), streaming DVC's and the stage's output into the task log;
3. publishes the stage's changes to the shared folders, logs the ``dvc.lock`` sha256 and the stage's
   output digests, and returns them (XCom) for the grid.

A stage that is not (yet) in dvc.yaml is skipped with a log line, so a DAG can name the stages that are
still being built: adding one later needs no DAG change.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from typing import Any

import loopline_workspace as lw
from airflow.sdk import BaseHook, BaseOperator, BaseSensorOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException, AirflowSkipException

log = logging.getLogger(__name__)

DATA_KINDS = ("etl_interval", "lake", "tune", "register", "registry", "predict", "monitor", "retrain", None)


def run_date(context: Any) -> str:
    """The partition a run is about: the ``date`` param if given, else the run's logical date (UTC).

    For scheduled and backfill runs of the ETL's daily timetable (run at D+1 00:00, data interval [D, D+1))
    the logical date *is* the data interval start; for a manual run it is the date the user picked (its inferred interval would be the
    day before, which surprises people), so the logical date is the one rule for all run types.
    """
    params = context.get("params") or {}
    if params.get("date"):
        return lw.check_date(str(params["date"]))
    start = context.get("logical_date") or context.get("data_interval_start")
    if start is None:
        raise ValueError(
            "this run has no logical date: trigger it with a logical date or a 'date' param (YYYY-MM-DD)"
        )
    return start.astimezone(dt.UTC).date().isoformat()


def _bindings(
    data: str | None, date: str | None, settings: lw.Settings, lookback_days: int
) -> list[lw.Binding]:
    if data is None:
        return []
    if data == "lake":  # stages that read the accumulated lake (sample, label, ...): hard-linked, read-only
        return [lw.Binding("data/lake", "lake", link=True)]
    if data == "etl_interval":
        assert date is not None
        return [
            lw.Binding(
                "data/landing",
                "landing",
                select=lw.landing_for_date(date),
                required=True,
                select_doc=f"file names containing {date}",
            ),
            lw.Binding(
                "data/lake", "lake", select=lw.lake_window(date, lookback_days=lookback_days), publish=True
            ),
            lw.Binding("data/quarantine", "quarantine", select=lambda rel: False, publish=True),
        ]
    # Hand-offs between DAGs: the registry, predictions and a few reports live in shared folders too.
    lake = lw.Binding("data/lake", "lake", link=True)
    registry = lw.Binding("models/registry", "registry", symlink=True)  # its own atomic alias protocol
    if data == "tune":  # best_params.json, read by later retrains
        return [lw.Binding("reports/tuning", "reports", sub="tuning", select=_no_seed, publish=True)]
    if (
        data == "register"
    ):  # the gate reads the current champion; register.json tells predict a version exists
        return [
            registry,
            lw.Binding("reports/registry", "reports", sub="registry", select=_no_seed, publish=True),
        ]
    if data == "registry":  # quantize: attaches the TFLite variants to the version just registered
        return [registry]
    if data == "predict":
        return [
            lake,
            registry,
            lw.Binding("reports/registry", "reports", sub="registry"),
            lw.Binding("data/predictions", "predictions", publish=True),
        ]
    if data == "monitor":  # the cool-down state and window history accumulate; the decision is handed on
        return [lw.Binding("reports/monitor", "reports", sub="monitor", publish=True)]
    if data == "retrain":
        return [
            lake,
            registry,  # the champion to warm-start from; the watermark (retrain_state.json) lives here
            lw.Binding(
                "reports/monitor", "reports", sub="monitor", select=lambda rel: rel == "latest/decision.json"
            ),
            lw.Binding(
                "reports/tuning", "reports", sub="tuning", select=lambda rel: rel == "best_params.json"
            ),
            lw.Binding("reports/retrain", "reports", sub="retrain", select=_no_seed, publish=True),
        ]
    raise ValueError(f"data={data!r}: expected one of {DATA_KINDS}")


AWS_CONN_ID_ENV = "LOOPLINE_AWS_CONN_ID"  # the Airflow connection whose S3 credentials a stage gets


def aws_connection_env() -> dict[str, str]:
    """The S3 credentials (and endpoint) of the Airflow connection ``$LOOPLINE_AWS_CONN_ID`` (default
    ``aws_default``), for the stage's environment only; none when that connection is not defined (the stage
    then uses the worker's own AWS chain: a profile, an instance or task role)."""
    conn_id = os.environ.get(AWS_CONN_ID_ENV, "aws_default")
    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        log.info("no Airflow connection %r: the stage uses the worker's AWS credential chain", conn_id)
        return {}
    env = lw.aws_env(conn.login, conn.password, conn.extra_dejson)
    log.info("S3 credentials from the Airflow connection %r: %s", conn_id, sorted(env))
    return env


def _no_seed(rel: str) -> bool:
    """Seed nothing: a folder the stage only writes (and publishes)."""
    return False


class DvcStageOperator(BaseOperator):
    """Run one DVC stage of the run's workspace (see the module docstring)."""

    template_fields = ("stage",)
    ui_color = "#cfe8ff"

    def __init__(
        self,
        *,
        stage: str,
        data: str | None = None,
        optional: bool = True,
        lookback_days: int = 7,
        stage_timeout: float | None = None,
        **kwargs: Any,
    ) -> None:
        if data not in DATA_KINDS:
            raise ValueError(f"dvc_stage({stage!r}, data={data!r}): expected one of {DATA_KINDS}")
        # A skipped optional stage (not built yet) must not skip the stages after it.
        kwargs.setdefault("trigger_rule", "none_failed")
        super().__init__(**kwargs)
        self.stage = stage
        self.data = data
        self.optional = optional
        self.lookback_days = lookback_days
        self.stage_timeout = stage_timeout

    def execute(self, context: Any) -> dict[str, Any]:
        settings = lw.Settings.from_env()
        dag_run = context["dag_run"]
        params = dict(context.get("params") or {})
        date = run_date(context) if self.data == "etl_interval" else None
        record = {
            "logical_date": str(context.get("logical_date")),
            "data_interval_start": str(context.get("data_interval_start")),
            "data_interval_end": str(context.get("data_interval_end")),
            "run_type": str(getattr(dag_run, "run_type", "")),
            "conf": dict(getattr(dag_run, "conf", None) or {}),
            "params": {k: v for k, v in params.items() if k != "overrides"},
            "date": date,
        }
        overrides = dict(params.get("overrides") or {})
        if params.get("seed") is not None:
            overrides["seed"] = int(params["seed"])
        try:
            ws = lw.ensure_workspace(
                settings,
                dag_id=self.dag_id,
                run_id=context["run_id"],
                run_record=record,
                params_overrides=overrides or None,
            )
        except lw.ParamsRejected as err:  # fail now: a retry would only repeat the same error minutes later
            raise AirflowFailException(str(err)) from None
        if self.stage not in lw.dvc_stages(ws):
            msg = f"stage {self.stage!r} is not in dvc.yaml yet: skipped"
            if self.optional:
                raise AirflowSkipException(msg)
            raise ValueError(msg + " (and it is required by this DAG)")
        result = lw.run_stage(
            settings,
            ws,
            self.stage,
            bindings=_bindings(self.data, date, settings, self.lookback_days),
            timeout=self.stage_timeout,
            extra_env=aws_connection_env(),
        )
        result["date"] = date
        if self.outlets and result.get("published"):
            events = context["outlet_events"]
            for asset in self.outlets:
                events[asset].extra = {
                    "dag_run": context["run_id"],
                    "date": date,
                    "dvc_lock_sha256": result["dvc_lock_sha256"],
                }
        result.pop("published_files", None)
        return result


class LandingSensor(BaseSensorOperator):
    """Wait until the run's day has landed: a file whose name holds the date in the shared landing folder.

    The ETL's first task. A day that has not landed yet is waited for (``mode="reschedule"``: no worker slot
    is held between pokes) up to ``wait`` after the day closed; a day older than that, or a wait that runs
    out, is *skipped* with the folder and the expected name (the run succeeds, nothing downstream runs), so
    a backfill over a gap or a trigger for a day that never comes ends at once instead of failing after
    minutes of retries.
    """

    ui_color = "#fff3c4"

    def __init__(self, *, wait: dt.timedelta = dt.timedelta(hours=6), **kwargs: Any) -> None:
        kwargs.setdefault("mode", "reschedule")
        kwargs.setdefault("poke_interval", 300)
        kwargs.setdefault("timeout", wait.total_seconds())
        kwargs.setdefault("soft_fail", True)  # a wait that runs out skips: the day is not there, not broken
        super().__init__(**kwargs)
        self.wait = wait

    def poke(self, context: Any) -> bool:
        date = run_date(context)
        folder = lw.Settings.from_env().shared["landing"]
        wanted = lw.landing_for_date(date)
        files = (
            sorted(p.name for p in folder.iterdir() if p.is_file() and wanted(p.name))
            if folder.is_dir()
            else []
        )
        if files:
            log.info("%s has landed: %s", date, files)
            return True
        closed = dt.datetime.combine(dt.date.fromisoformat(date) + dt.timedelta(days=1), dt.time(), dt.UTC)
        since = dt.datetime.now(dt.UTC) - closed
        if since > self.wait:
            raise AirflowSkipException(
                f"no landing file for {date} in {folder} (a file whose name contains {date}); the day closed "
                f"{since.total_seconds() / 3600:.0f} h ago, past the {self.wait} wait: nothing to load. Put the "
                "file there and trigger the day again."
            )
        log.info("waiting for %s to land in %s (a file whose name contains %s)", date, folder, date)
        return False


def dvc_stage(stage: str, **kwargs: Any) -> DvcStageOperator:
    """One task per DVC stage: ``dvc_stage("features", data="lake")`` (task_id defaults to the stage)."""
    kwargs.setdefault("task_id", stage)
    return DvcStageOperator(stage=stage, **kwargs)


# Assets shared by the DAGs (names, not paths: the shared folders are configured by environment).
LAKE_ASSET_NAME = "loopline_lake"
DRIFT_ASSET_NAME = "loopline_drift"

# run_immediately for the cron timetables: False still runs the past tick when it is within 10% of the period
# (Airflow 3.3: 16.8 h for a weekly cron); a zero window never does, so unpausing waits for the next tick.
NEVER_AT_ONCE = dt.timedelta(0)

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "loopline",
    "retries": 2,
    "retry_delay": dt.timedelta(minutes=2),
    "retry_exponential_backoff": True,
    "execution_timeout": dt.timedelta(hours=2),
}


def _run_json(context: Any, rel: str, *, missing: str) -> dict[str, Any]:
    """A JSON file of this run's workspace; the task is skipped (``no <rel> (<missing>``) when it is absent."""
    settings = lw.Settings.from_env()
    path = lw.workspace_path(settings, context["dag"].dag_id, context["run_id"]) / rel
    if not path.exists():
        raise AirflowSkipException(f"no {path} ({missing}")
    return json.loads(path.read_text())


def emit_lake_if_changed(
    context: Any, *, etl_task: str = "etl", manifest_file: str = "reports/etl/manifest.json"
) -> dict[str, Any]:
    """Emit the lake Asset only when this run's ETL wrote a partition; skip (no event) otherwise.

    The callable of the task whose outlet is ``loopline_lake``: a re-run or backfill of a day already in the
    lake loads nothing, and an event for it would start a monitoring run over unchanged data. The run's
    manifest (``reports/etl/manifest.json`` in its workspace) is the record of what the stage did.
    """
    manifest = _run_json(context, manifest_file, missing="the etl stage did not run): no lake event")
    totals = manifest.get("totals") or {}
    partitions = list(manifest.get("partitions_written") or [])
    etl = context["ti"].xcom_pull(task_ids=etl_task) or {}
    summary = (
        f"{totals.get('files_processed', 0)} new file(s), {totals.get('files_unchanged', 0)} unchanged, "
        f"{totals.get('rows_loaded', 0)} row(s) loaded, {totals.get('rows_quarantined', 0)} quarantined"
    )
    if not partitions:
        raise AirflowSkipException(f"the lake did not change ({summary}): no loopline_lake event")
    for asset in context["task"].outlets:
        context["outlet_events"][asset].extra = {
            "dag_run": context["run_id"],
            "date": etl.get("date"),
            "partitions": partitions,
            "dvc_lock_sha256": etl.get("dvc_lock_sha256"),
        }
    log.info("lake changed: partitions %s (%s)", partitions, summary)
    return {"partitions": partitions, "totals": totals}


def retrain_outcome(context: Any, *, report_file: str = "reports/retrain/retrain.json") -> dict[str, Any]:
    """Show the retrain's outcome as a task state: success only when a candidate was promoted.

    The retrain stage succeeds also when it retrained nothing (waiting for matured labels, skipped by the
    monitor's decision, or its candidate refused by the gate); this task is then *skipped* with the reason,
    so the grid does not show a green run that changed no model.
    """
    r = _run_json(context, report_file, missing="the retrain stage did not run)")
    status = r.get("status")
    if status == "champion":
        log.info("retrain promoted %s (%s: %s)", r.get("version"), r.get("mode"), r.get("why"))
        return {k: r.get(k) for k in ("status", "mode", "version", "watermark_after")}
    if status == "waiting":
        raise AirflowSkipException(f"nothing retrained, waiting for data: {r.get('detail')}")
    if status == "skipped":
        raise AirflowSkipException(f"nothing retrained: {r.get('reason')}")
    reasons = "; ".join(map(str, r.get("reasons") or [])) or r.get("detail") or "-"
    raise AirflowSkipException(
        f"the {r.get('mode')} candidate {r.get('version')} was {status}, not promoted: {reasons}"
    )


def emit_drift_if_decided(
    context: Any, *, decision_file: str = "reports/monitor/latest/decision.json"
) -> dict[str, Any]:
    """Read the monitor stage's retrain decision in the run's workspace; skip unless it says retrain.

    Used as the callable of a task whose outlet is the drift Asset: a skipped task emits no event, a
    successful one emits ``loopline_drift`` with the decision's reasons, which schedules loopline_retrain.
    """
    decision = _run_json(context, decision_file, missing="the monitor stage has not run): no drift event")
    if not decision.get("retrain"):
        raise AirflowSkipException(f"decision: no retrain ({decision.get('reasons')})")
    for asset in context["task"].outlets:
        context["outlet_events"][asset].extra = {
            "reasons": decision.get("reasons"),
            "dag_run": context["run_id"],
        }
    log.info("decision says retrain: %s", decision.get("reasons"))
    return decision
