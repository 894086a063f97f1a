"""Live: the local launcher starts Airflow; the REST API triggers loopline_etl and a 3-day backfill.

Starts real processes on 127.0.0.1 (a free port) and stops every one of them by PID at the end.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import loopline_airflow_local as launcher
import pytest
from conftest import keep_stages, make_landing

pytestmark = [pytest.mark.live, pytest.mark.slow]

DAG_IDS = ("loopline_etl", "loopline_train", "loopline_monitor", "loopline_retrain")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Api:
    def __init__(self, base: str, user: str, password: str) -> None:
        self.base = base
        body = self.call("POST", "/auth/token", {"username": user, "password": password}, auth=False)
        self.token = body["access_token"]

    def call(self, method: str, path: str, body: dict | None = None, *, auth: bool = True) -> dict:
        req = urllib.request.Request(
            self.base + path, method=method, data=json.dumps(body).encode() if body else None
        )
        req.add_header("Content-Type", "application/json")
        if auth:
            req.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read() or b"{}")

    def retry(self, method: str, path: str, body: dict | None = None, *, seconds: float = 60) -> dict:
        """Retry while the API answers 404 (DAG not parsed yet), 409 or 503 "Database is locked".

        Airflow answers 503 when SQLite is locked by the scheduler while a backfill is created; on
        PostgreSQL this does not happen (README: backfills on SQLite).
        """
        deadline = time.monotonic() + seconds
        while True:
            try:
                return self.call(method, path, body)
            except urllib.error.HTTPError as err:
                detail = err.read()[:300]
                busy = err.code == 503 and b"locked" in detail
                if not (err.code in (404, 409) or busy) or time.monotonic() > deadline:
                    raise AssertionError(f"{method} {path}: {err.code} {detail!r}") from None
            time.sleep(2)

    def wait_run(self, dag_id: str, run_id: str, *, seconds: float = 180) -> str:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            state = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}")["state"]
            if state in ("success", "failed"):
                return state
            time.sleep(2)
        raise AssertionError(f"{dag_id} run {run_id} still not finished after {seconds:.0f} s")


def _parse(ts: str) -> dt.datetime:
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))


def test_rest_trigger_and_three_day_backfill(loopline_env, tmp_path: Path):
    keep_stages(loopline_env["project"], ["generate", "etl"])
    make_landing(loopline_env["landing"], start="2025-01-01", days=4)
    home = tmp_path / "airflow-home"
    started = time.monotonic()
    info = launcher.up(home, port=free_port(), parallelism=4)
    pids = list(info["pids"].values())
    try:
        assert info["url"].startswith("http://127.0.0.1:")
        with pytest.raises(urllib.error.HTTPError) as denied:  # authentication is on
            urllib.request.urlopen(info["url"] + "/api/v2/dags", timeout=10)
        assert denied.value.code == 401
        api = Api(info["url"], info["user"], info["password"])
        api.retry("GET", "/api/v2/dags/loopline_etl", seconds=120)
        for dag_id in DAG_IDS:  # unpausing starts nothing by itself
            api.retry("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False}, seconds=60)
        time.sleep(15)  # a few scheduler loops
        unasked = {d: api.call("GET", f"/api/v2/dags/{d}/dagRuns")["total_entries"] for d in DAG_IDS}
        assert not any(unasked.values()), f"unpausing started runs nobody asked for: {unasked}"
        manual = api.call(
            "POST", "/api/v2/dags/loopline_etl/dagRuns", {"logical_date": "2025-01-01T00:00:00Z"}
        )
        # the manual run first: SQLite refuses a backfill while the scheduler holds its lock
        assert api.wait_run("loopline_etl", manual["dag_run_id"]) == "success"
        backfill = api.retry(
            "POST",
            "/api/v2/backfills",
            # run times: the runs at 01-03..01-05 00:00 load the days 01-02..01-04
            {"dag_id": "loopline_etl", "from_date": "2025-01-03T00:00:00Z", "to_date": "2025-01-05T00:00:00Z",
             "max_active_runs": 3, "reprocess_behavior": "completed"},
        )  # fmt: skip
        assert backfill["max_active_runs"] == 3

        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            runs = api.call("GET", "/api/v2/dags/loopline_etl/dagRuns?limit=50")["dag_runs"]
            ours = [r for r in runs if r["run_type"] == "backfill" or r["dag_run_id"] == manual["dag_run_id"]]
            if len(ours) == 4 and all(r["state"] in ("success", "failed") for r in ours):
                break
            time.sleep(3)
        states = {r["dag_run_id"]: r["state"] for r in ours}
        assert len(ours) == 4 and set(states.values()) == {"success"}, states

        # the three backfill runs ran at the same time, each in its own workspace (run spans: the etl tasks
        # alone take ~2 s each, staggered by the landing sensors)
        spans = [
            (_parse(r["start_date"]), _parse(r["end_date"])) for r in ours if r["run_type"] == "backfill"
        ]
        assert max(s for s, _ in spans) < min(e for _, e in spans), f"backfill runs did not overlap: {spans}"
        spaces = [p for p in (loopline_env["runs"] / "loopline_etl").iterdir() if p.is_dir()]
        assert len(spaces) == 4, spaces
        # re-running a loaded day succeeds, says "0 new files" and emits no lake event
        again = api.call(
            "POST",
            "/api/v2/dags/loopline_etl/dagRuns",
            {"logical_date": None, "conf": {"date": "2025-01-02"}},
        )
        assert api.wait_run("loopline_etl", again["dag_run_id"]) == "success"
        path = f"/api/v2/dags/loopline_etl/dagRuns/{urllib.parse.quote(again['dag_run_id'])}/taskInstances"
        states = {t["task_id"]: t["state"] for t in api.call("GET", path)["task_instances"]}
        assert states == {
            "landed": "success",
            "etl": "success",
            "validate": "skipped",
            "lake_changed": "skipped",
        }, states
        ws = max((loopline_env["runs"] / "loopline_etl").iterdir(), key=lambda p: p.stat().st_mtime)
        totals = json.loads((ws / "reports" / "etl" / "manifest.json").read_text())["totals"]
        assert totals["files_processed"] == 0 and totals["files_unchanged"] >= 1, totals
        events = api.call("GET", "/api/v2/assets/events?source_dag_id=loopline_etl&limit=100")["asset_events"]
        dates = sorted(e["extra"]["date"] for e in events)
        assert dates == ["2025-01-01", "2025-01-02", "2025-01-03", "2025-01-04"], dates  # one per loaded day

        # a bad params override fails the run's first task at once, naming the key (no retries)
        t0 = time.monotonic()
        bad = api.call("POST", "/api/v2/dags/loopline_train/dagRuns",
                       {"logical_date": None, "conf": {"overrides": {"tune.n_trialz": 3}}})  # fmt: skip
        assert api.wait_run("loopline_train", bad["dag_run_id"], seconds=120) == "failed"
        took = time.monotonic() - t0
        path = f"/api/v2/dags/loopline_train/dagRuns/{urllib.parse.quote(bad['dag_run_id'])}/taskInstances/sample"
        ti = api.call("GET", path)
        assert ti["state"] == "failed" and ti["try_number"] == 1, ti
        log_text = json.dumps(api.call("GET", path + "/logs/1?full_content=true"))
        assert "tune.n_trialz" in log_text, log_text[-2000:]
        assert took < 30, f"a bad override took {took:.0f} s to fail"
        # After a backfill Airflow's catchup=False schedules the newest closed day (yesterday, which never
        # lands here). Past the sensor's 6 h wait it must end at once, skipped at the landing sensor, not
        # fail after retries; within 6 h of the day's close (00:00-06:00 UTC) the day may still land, so
        # the sensor waits for it (rescheduled, no worker slot held) and the ETL has not started.
        for r in api.call("GET", "/api/v2/dags/loopline_etl/dagRuns")["dag_runs"]:
            if r["run_type"] != "scheduled":
                continue
            path = f"/api/v2/dags/loopline_etl/dagRuns/{urllib.parse.quote(r['dag_run_id'])}/taskInstances"
            day = dt.datetime.fromisoformat(r["logical_date"].replace("Z", "+00:00")).date()
            closed = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.UTC)
            if dt.datetime.now(dt.UTC) - closed > dt.timedelta(hours=6, minutes=-2):
                assert api.wait_run("loopline_etl", r["dag_run_id"], seconds=60) == "success"
                states = {t["task_id"]: t["state"] for t in api.call("GET", path)["task_instances"]}
                assert states["landed"] == "skipped" and states["etl"] == "skipped", states
            else:
                deadline = time.monotonic() + 90
                states: dict[str, str | None] = {}
                while time.monotonic() < deadline and states.get("landed") != "up_for_reschedule":
                    states = {t["task_id"]: t["state"] for t in api.call("GET", path)["task_instances"]}
                    time.sleep(2)
                assert states.get("landed") == "up_for_reschedule", states
                assert states.get("etl") in (None, "scheduled", "none"), states
    finally:
        stopped = launcher.down(home)
    assert sorted(stopped) == sorted(pids)
    assert not any(launcher._alive(p) for p in pids)

    lake = loopline_env["lake"]
    days = ["2025-01-01", "2025-01-02", "2025-01-03", "2025-01-04"]
    assert sorted(p.name for p in lake.glob("date=*")) == [f"date={d}" for d in days]
    manifests = [json.loads(p.read_text()) for p in (lake / "_etl" / "manifests").glob("*.json")]
    assert len(manifests) == 4
    assert sorted(d for m in manifests for d in m["partitions_written"] if d in days) == days
    for m in manifests:
        assert m["totals"]["files_processed"] == 1 and m["totals"]["rows_read"] == 500
    print(f"live test: {time.monotonic() - started:.0f} s from launcher up to down")
