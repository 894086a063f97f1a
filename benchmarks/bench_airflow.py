"""Airflow benchmark: each DAG file's parse time, and the trigger-to-success overhead of a no-op DVC stage.

    .venv-airflow/bin/python benchmarks/bench_airflow.py     (`make bench` re-runs it in that venv)

1. Parse time per DAG file (target < 0.2 s): warm (modules cached, median of 7); first (a fresh
   interpreter with Airflow's SDK already imported, as in the DAG processor; includes importing the
   plugin); and what the running DAG processor reports (last_parse_duration, the whole file process).
2. A no-op DVC stage (`python -c pass`, one cached output) three ways, side by side:
   `dvc repro` in a workspace directly; the operator's path (workspace + dvc repro) without Airflow;
   a real local Airflow (launcher, LocalExecutor): REST trigger -> run success, 3 runs, median.
Writes benchmarks/results/airflow.json.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW_PY = ROOT / ".venv-airflow" / "bin" / "python"
if importlib.util.find_spec("airflow") is None:  # `make bench` runs every benchmark with .venv: hop over
    if not AIRFLOW_PY.exists():
        sys.exit(f"bench_airflow: {AIRFLOW_PY} missing; run `make airflow-venv`")
    os.execv(str(AIRFLOW_PY), [str(AIRFLOW_PY), __file__, *sys.argv[1:]])

sys.path.insert(0, str(ROOT / "plugins"))
_HOME = Path(tempfile.mkdtemp(prefix="loopline-bench-airflow-"))
os.environ.update(AIRFLOW_HOME=str(_HOME / "home0"), AIRFLOW__CORE__LOAD_EXAMPLES="False")

import loopline_airflow_local as launcher  # noqa: E402
import loopline_workspace as lw  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "airflow.json"
NOOP_DAG = """
import pendulum
from airflow.sdk import DAG
from loopline_dvc import DEFAULT_ARGS, dvc_stage

with DAG(dag_id="bench_noop", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
         catchup=False, default_args={**DEFAULT_ARGS, "retries": 0}, tags=["bench"], doc_md="no-op"):
    dvc_stage("noop")
"""
# `params: [seed]` gives the stage a dependency: DVC never run-caches a stage without one.
NOOP_STAGE = "stages:\n  noop:\n    cmd: python -c \"open('out.txt', 'w').write('x')\"\n    params: [seed]\n    outs: [out.txt]\n"


def parse_times() -> list[dict]:
    import runpy

    import airflow.sdk  # noqa: F401  (shared by every DAG file: not part of one file's cost)
    import loopline_dvc  # noqa: F401

    rows = []
    for path in sorted((ROOT / "dags").glob("*.py")):
        warm = []
        for _ in range(7):
            t = time.perf_counter()
            runpy.run_path(str(path))
            warm.append(time.perf_counter() - t)
        rows.append({"dag_file": path.name, "warm_s": statistics.median(warm), "first_s": _first(path)})
    return rows


def _first(path: Path, repeat: int = 3) -> float:
    """First parse in a fresh interpreter that has Airflow's SDK loaded (as the DAG processor has)."""
    code = (
        "import runpy, time; from airflow.sdk import DAG, Asset, AssetOrTimeSchedule, CronTriggerTimetable, "
        "CronDataIntervalTimetable, Param, chain, task; import pendulum; "
        f"t = time.perf_counter(); runpy.run_path({str(path)!r}); print(time.perf_counter() - t)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugins")}
    runs = [
        float(
            subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
            ).stdout.split()[-1]
        )
        for _ in range(repeat)
    ]
    return statistics.median(runs)


def make_project(dest: Path) -> Path:
    git = ["git", "-c", "user.email=bench@loopline.invalid", "-c", "user.name=bench"]
    files = subprocess.run(["git", "ls-files", "-z", "-c", "-o", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")  # fmt: skip
    for rel in files:
        if rel and (ROOT / rel).is_file() and not rel.startswith(("runs/", ".airflow/")):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    (dest / "dvc.yaml").write_text(NOOP_STAGE)
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "bench"]):
        subprocess.run([*git, *args], cwd=dest, check=True)
    return dest


def direct(settings: lw.Settings, n: int = 3) -> tuple[list[float], list[float]]:
    """dvc repro alone (in a ready workspace) and the operator path (new workspace + dvc repro)."""
    repro, operator = [], []
    for i in range(n):
        t = time.perf_counter()
        ws = lw.ensure_workspace(settings, dag_id="bench_direct", run_id=f"r{i}", run_record={})
        r = lw.run_stage(settings, ws, "noop")
        operator.append(time.perf_counter() - t)
        repro.append(r["seconds"])
    return repro, operator


def airflow_runs(tmp: Path, env: dict[str, str], n: int = 3) -> list[dict]:
    dags = tmp / "dags"
    shutil.copytree(ROOT / "dags", dags, ignore=shutil.ignore_patterns("__pycache__"))
    (dags / "bench_noop.py").write_text(NOOP_DAG)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    home = tmp / "home"
    info = launcher.up(home, port=port, parallelism=4, extra_env=env, dags_folder=dags,
                       components=("api-server", "scheduler", "dag-processor"))  # fmt: skip
    try:
        base = info["url"]

        def call(method: str, path: str, body: dict | None = None, token: str | None = None) -> dict:
            req = urllib.request.Request(
                base + path, method=method, data=json.dumps(body).encode() if body else None
            )
            req.add_header("Content-Type", "application/json")
            if token:
                req.add_header("Authorization", f"Bearer {token}")
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.loads(r.read() or b"{}")

        token = call("POST", "/auth/token", {"username": "admin", "password": info["password"]})[
            "access_token"
        ]
        deadline = time.monotonic() + 120
        while True:
            try:
                call("PATCH", "/api/v2/dags/bench_noop", {"is_paused": False}, token)
                break
            except urllib.error.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)
        rows = []
        for _ in range(n):
            t = time.perf_counter()
            run = call("POST", "/api/v2/dags/bench_noop/dagRuns", {"logical_date": None}, token)
            while True:
                r = call("GET", f"/api/v2/dags/bench_noop/dagRuns/{run['dag_run_id']}", token=token)
                if r["state"] in ("success", "failed"):
                    break
                time.sleep(0.25)
            wall = time.perf_counter() - t
            assert r["state"] == "success", r
            x = call(
                "GET",
                f"/api/v2/dags/bench_noop/dagRuns/{run['dag_run_id']}/taskInstances/noop/xcomEntries/return_value",
                token=token,
            )
            value = x.get("value")
            value = json.loads(value) if isinstance(value, str) else value
            ti = call(
                "GET", f"/api/v2/dags/bench_noop/dagRuns/{run['dag_run_id']}/taskInstances/noop", token=token
            )
            rows.append({"trigger_to_success_s": wall, "task_duration_s": ti["duration"],
                         "dvc_repro_s": value["seconds"], "cached": value["cached"]})  # fmt: skip
        parse = {d: call("GET", f"/api/v2/dags/{d}/details", token=token).get("last_parse_duration")
                 for d in ("loopline_etl", "loopline_train", "loopline_monitor", "loopline_retrain")}  # fmt: skip
        return rows, parse
    finally:
        launcher.down(home)


def main() -> None:
    parse = parse_times()
    tmp = Path(tempfile.mkdtemp(prefix="loopline-bench-", dir=_HOME))
    project = make_project(tmp / "project")
    env = {
        "LOOPLINE_PROJECT_DIR": str(project), "LOOPLINE_PIPELINE_VENV": str(ROOT / ".venv"),
        "LOOPLINE_RUNS_DIR": str(tmp / "runs"), "LOOPLINE_LANDING": str(tmp / "landing"),
        "LOOPLINE_LAKE": str(tmp / "lake"), "LOOPLINE_QUARANTINE": str(tmp / "quarantine"),
    }  # fmt: skip
    settings = lw.Settings.from_env(env)
    repro, operator = direct(settings)
    runs, processor_parse = airflow_runs(tmp, env)
    for r in parse:
        r["dag_processor_s"] = processor_parse.get(r["dag_file"].removesuffix(".py"))
    med = lambda xs: statistics.median(xs)  # noqa: E731
    trig = med([r["trigger_to_success_s"] for r in runs])
    summary = {
        "parse": parse,
        "noop_stage": {
            "dvc_repro_s": med(repro),
            "operator_path_without_airflow_s": med(operator),
            "airflow_trigger_to_success_s": trig,
            "airflow_task_duration_s": med([r["task_duration_s"] for r in runs]),
            "airflow_overhead_s": trig - med([r["dvc_repro_s"] for r in runs]),
            "runs": runs,
        },
        "machine": {"cores": os.cpu_count(), "loadavg": os.getloadavg()},
    }
    print(f"{'DAG file':<22}{'warm (s)':>10}{'first (s)':>11}{'DAG processor (s)':>19}  target < 0.2 s")
    for r in parse:
        ok = "ok" if max(r["warm_s"], r["first_s"]) < 0.2 else "SLOW"
        dp = r["dag_processor_s"]
        print(
            f"{r['dag_file']:<22}{r['warm_s']:>10.4f}{r['first_s']:>11.4f}{dp if dp is None else round(dp, 3)!s:>19}  {ok}"
        )
    n = summary["noop_stage"]
    print(f"\nno-op DVC stage (median of 3; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    print(f"  dvc repro in a ready workspace         {n['dvc_repro_s']:8.2f} s")
    print(f"  operator path (workspace + repro)      {n['operator_path_without_airflow_s']:8.2f} s")
    print(f"  Airflow task duration                  {n['airflow_task_duration_s']:8.2f} s")
    print(f"  Airflow REST trigger -> run success    {n['airflow_trigger_to_success_s']:8.2f} s")
    print(f"  Airflow overhead (trigger - repro)     {n['airflow_overhead_s']:8.2f} s")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nwrote {RESULTS.relative_to(ROOT)}")
    shutil.rmtree(_HOME, ignore_errors=True)


if __name__ == "__main__":
    main()
