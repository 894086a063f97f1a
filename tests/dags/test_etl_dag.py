"""dag.test() runs loopline_etl for two days on a tiny landing folder (2 days x 500 rows)."""

from __future__ import annotations

import json

import pendulum
import pytest
from conftest import asset_events, keep_stages, make_landing


@pytest.mark.slow
def test_etl_dag_loads_each_day_into_the_shared_lake(airflow_db, loopline_env):
    from airflow.dag_processing.dagbag import DagBag

    keep_stages(loopline_env["project"], ["generate", "etl"])
    make_landing(loopline_env["landing"], start="2025-01-01", days=2)
    dag = DagBag().dags["loopline_etl"]
    for t in dag.tasks:  # fail fast here: dag.test() would wait out the production retry delays
        t.retries = 0
    seen = len(asset_events("loopline_lake"))  # the test session's database is shared
    for day in (1, 2):
        run = dag.test(logical_date=pendulum.datetime(2025, 1, day, tz="UTC"))
        states = {ti.task_id: ti.state for ti in run.get_task_instances()}
        assert str(run.state).endswith("success"), states
        assert str(states["etl"]).endswith("success") and str(states["validate"]).endswith("skipped")
        assert str(states["lake_changed"]).endswith("success"), states
    # one lake event per loaded day, naming the partition it wrote
    ours = asset_events("loopline_lake")[seen:]
    assert sorted(e[1]["partitions"][0] for e in ours) == ["2025-01-01", "2025-01-02"]

    lake = loopline_env["lake"]
    assert sorted(p.name for p in lake.glob("date=*")) == ["date=2025-01-01", "date=2025-01-02"]
    manifests = [json.loads(p.read_text()) for p in sorted((lake / "_etl" / "manifests").glob("*.json"))]
    assert len(manifests) == 2
    for m in manifests:
        t = m["totals"]
        assert t["files_processed"] == 1 and t["rows_read"] == 500
        assert t["rows_read"] == t["rows_loaded"] + t["rows_quarantined"]
    assert {p for m in manifests for p in m["partitions_written"]} >= {"2025-01-01", "2025-01-02"}

    # each run has its own workspace with its run record and dvc.lock
    spaces = sorted(p for p in (loopline_env["runs"] / "loopline_etl").iterdir() if p.is_dir())
    assert len(spaces) == 2
    dates = {json.loads((w / "airflow_run.json").read_text())["date"] for w in spaces}
    assert dates == {"2025-01-01", "2025-01-02"}
    assert all((w / "dvc.lock").exists() for w in spaces)

    # re-running a day is idempotent: the shared lake does not change
    before = {p: p.read_bytes() for p in lake.rglob("*.parquet")}
    run = dag.test(logical_date=pendulum.datetime(2025, 1, 1, tz="UTC"))
    assert str(run.state).endswith("success")
    assert {p: p.read_bytes() for p in lake.rglob("*.parquet")} == before
    assert len(list((lake / "_etl" / "manifests").glob("*.json"))) == 2
    # ... and says so: the run's manifest counts 0 new files, and no lake event starts monitoring (before,
    # every re-run emitted one)
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert states["lake_changed"].endswith("skipped"), states
    assert len(asset_events("loopline_lake")) == seen + 2
    rerun = max((loopline_env["runs"] / "loopline_etl").iterdir(), key=lambda p: p.stat().st_mtime)
    totals = json.loads((rerun / "reports" / "etl" / "manifest.json").read_text())["totals"]
    assert totals["files_processed"] == 0 and totals["files_unchanged"] == 1, totals


@pytest.mark.slow
def test_re_running_a_loaded_day_with_validation_succeeds(airflow_db, loopline_env):
    """A day already in the lake, run again (etl loads nothing new): validate has nothing to check and the
    run still succeeds; before, DVC failed it on the missing reports/validation/data_docs output."""
    from airflow.dag_processing.dagbag import DagBag

    keep_stages(loopline_env["project"], ["generate", "etl", "validate"])
    make_landing(loopline_env["landing"], start="2025-01-01", days=1, rows=1500)  # the suite wants >= 1000
    dag = DagBag().dags["loopline_etl"]
    for t in dag.tasks:
        t.retries = 0
    for attempt in ("first", "again"):
        run = dag.test(logical_date=pendulum.datetime(2025, 1, 1, tz="UTC"))
        states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
        assert str(run.state).endswith("success"), (attempt, states)
        assert states["validate"].endswith("success"), (attempt, states)
    spaces = sorted(p for p in (loopline_env["runs"] / "loopline_etl").iterdir() if p.is_dir())
    summaries = [json.loads((w / "reports" / "validation" / "summary.json").read_text()) for w in spaces]
    assert sorted(s["partitions_validated"] for s in summaries) == [0, 1]


@pytest.mark.slow
def test_a_day_that_never_landed_is_skipped_at_once_saying_what_was_expected(airflow_db, loopline_env):
    """Before, the etl task failed on the missing input and retried for minutes (11.5 min seen)."""
    import time

    from airflow.dag_processing.dagbag import DagBag

    keep_stages(loopline_env["project"], ["generate", "etl", "validate"])
    make_landing(loopline_env["landing"], start="2025-01-01", days=1)
    dag = DagBag().dags["loopline_etl"]
    seen = len(asset_events("loopline_lake"))
    started = time.monotonic()
    run = dag.test(logical_date=pendulum.datetime(2025, 1, 3, tz="UTC"))  # 2025-01-03 never landed
    states = {ti.task_id: str(ti.state).rsplit(".", 1)[-1] for ti in run.get_task_instances()}
    assert str(run.state).endswith("success"), states
    assert states == {"landed": "skipped", "etl": "skipped", "validate": "skipped", "lake_changed": "skipped"}
    assert time.monotonic() - started < 60
    assert not (loopline_env["runs"] / "loopline_etl").exists()  # no workspace, no stage ran
    assert len(asset_events("loopline_lake")) == seen


def test_a_day_that_has_not_closed_is_waited_for(loopline_env):
    import datetime as dt

    from loopline_dvc import LandingSensor

    sensor = LandingSensor(task_id="landed")
    assert sensor.mode == "reschedule" and sensor.soft_fail  # no worker slot held; a wait that runs out skips
    today = dt.datetime.now(dt.UTC).date().isoformat()  # closes tonight: within the wait
    assert sensor.poke({"params": {"date": today}}) is False  # not there yet: keep waiting
    make_landing(loopline_env["landing"], start=today, days=1)
    assert sensor.poke({"params": {"date": today}}) is True
