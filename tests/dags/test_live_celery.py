"""Live: loopline_etl on PostgreSQL (metadata) + CeleryExecutor + Redis (broker), all on 127.0.0.1.

Uses the machine's PostgreSQL (127.0.0.1:5432, trust auth) with a throwaway database, and Redis
(127.0.0.1:6379) database 11, which must be empty; skips with a reason where either is absent.
"""

from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path

import loopline_airflow_local as launcher
import pytest
from conftest import keep_stages, make_landing
from test_live_airflow import Api, free_port

pytestmark = [pytest.mark.live, pytest.mark.slow]
REDIS_DB = 11


def _reachable(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def postgres_db():
    if not _reachable(5432):
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    import psycopg2

    name = f"loopline_airflow_test_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    finally:
        cur = admin.cursor()
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()


@pytest.fixture
def redis_url():
    if not _reachable(6379):
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    if client.dbsize():
        pytest.skip(f"Redis database {REDIS_DB} is not empty: not ours to use")
    try:
        yield f"redis://127.0.0.1:6379/{REDIS_DB}"
    finally:
        client.flushdb()  # only the spare database this test used


def test_etl_on_postgres_celery_redis(loopline_env, postgres_db, redis_url, tmp_path: Path):
    keep_stages(loopline_env["project"], ["generate", "etl"])
    make_landing(loopline_env["landing"], start="2025-01-01", days=3)
    home = tmp_path / "airflow-home"
    result_backend = "db+" + postgres_db.replace("+psycopg2", "")
    info = launcher.up(
        home,
        port=free_port(),
        parallelism=4,
        sql_conn=postgres_db,
        executor="CeleryExecutor",
        components=("api-server", "scheduler", "dag-processor"),
        extra_commands={"celery-worker": ["celery", "worker", "--concurrency", "2", "--skip-serve-logs"]},
        extra_env={
            "AIRFLOW__CELERY__BROKER_URL": redis_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": result_backend,
        },
    )
    pids = list(info["pids"].values())
    try:
        api = Api(info["url"], info["user"], info["password"])
        api.retry("GET", "/api/v2/dags/loopline_etl", seconds=120)
        api.call("PATCH", "/api/v2/dags/loopline_etl", {"is_paused": False})
        manual = api.call(
            "POST", "/api/v2/dags/loopline_etl/dagRuns", {"logical_date": "2025-01-01T00:00:00Z"}
        )
        # on PostgreSQL a backfill is created at once (SQLite may answer 409 while busy); the range is of run
        # times: the runs at 01-03 and 01-04 00:00 load 01-02 and 01-03
        api.call("POST", "/api/v2/backfills", {"dag_id": "loopline_etl", "from_date": "2025-01-03T00:00:00Z",
                                               "to_date": "2025-01-04T00:00:00Z", "max_active_runs": 2})  # fmt: skip
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            runs = api.call("GET", "/api/v2/dags/loopline_etl/dagRuns?limit=50")["dag_runs"]
            ours = [r for r in runs if r["run_type"] == "backfill" or r["dag_run_id"] == manual["dag_run_id"]]
            if len(ours) == 3 and all(r["state"] in ("success", "failed") for r in ours):
                break
            time.sleep(3)
        assert len(ours) == 3 and {r["state"] for r in ours} == {"success"}, [
            (r["dag_run_id"], r["state"]) for r in ours
        ]
        ti = api.call("GET", f"/api/v2/dags/loopline_etl/dagRuns/{manual['dag_run_id']}/taskInstances/etl")
        assert ti["executor"] in (None, "CeleryExecutor") and ti["queue"] == "default"
    finally:
        stopped = launcher.down(home)
    assert sorted(stopped) == sorted(pids)
    assert not any(launcher._alive(p) for p in pids)
    lake = loopline_env["lake"]
    assert sorted(p.name for p in lake.glob("date=*")) == [
        "date=2025-01-01",
        "date=2025-01-02",
        "date=2025-01-03",
    ]
    # the tasks really went through the broker to the Celery worker
    worker_log = (home / "logs" / "celery-worker.log").read_text()
    assert worker_log.count("execute_workload") >= 3, worker_log[-2000:]
