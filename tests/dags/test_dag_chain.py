"""dag.test() runs the four DAGs in order on a tiny lake: etl -> train -> monitor -> retrain (issue 7).

Tiny data (45 days x 600 rows, drift from 2025-02-10) and budgets as in tests/e2e/test_dvc_pipeline.py. The
lake is pre-loaded for the first 44 days with one `loopline etl` run (a 45-run backfill would only repeat
test_etl_dag.py, slowly); loopline_etl then loads the last day through Airflow. Every hand-off goes through
the shared folders, as in production: lake -> train workspace; registry -> monitor; decision -> retrain.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pendulum
import pytest
import yaml
from conftest import PIPELINE_VENV, _git, asset_events, make_landing
from tiny_params import shrink_for_wiring

DAYS, ROWS, LAST = 45, 600, "2025-02-14"


def _shrink_params(project: Path) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    shrink_for_wiring(params, days=DAYS, rows_per_day=ROWS)
    # The drift from 2025-02-10 moves `amount`, a feature a 60-tree model barely uses (importance share ~0.02):
    # any drifted importance triggers here, so the chain takes the drift -> retrain path end to end.
    params["monitor"].setdefault("policy", {})["importance_threshold"] = 0.0  # params.yaml: only non-defaults
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    _git(project, "commit", "-q", "-am", "tiny params")


def _run(dag_id: str, **kwargs):
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag().dags[dag_id]
    for t in dag.tasks:  # fail fast: dag.test() would wait out the production retry delays
        t.retries = 0
    run = dag.test(**kwargs)
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert str(run.state).endswith("success"), (dag_id, states)
    return run, {k: v.rsplit(".", 1)[-1] for k, v in states.items()}


@pytest.mark.slow
def test_etl_train_monitor_retrain_chain(airflow_db, loopline_env, tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    for key in ("registry", "predictions", "reports"):
        monkeypatch.setenv(f"LOOPLINE_{key.upper()}", str(shared / key))
    project = loopline_env["project"]
    _shrink_params(project)
    landing, lake = loopline_env["landing"], loopline_env["lake"]
    make_landing(landing, start="2025-01-01", days=DAYS, rows=ROWS)

    # history: days 1..44 in one ETL run straight into the shared lake
    history = tmp_path / "history"
    history.mkdir()
    files = sorted(p for p in landing.iterdir() if p.is_file())
    assert len(files) == DAYS and LAST in files[-1].name
    for f in files[:-1]:
        shutil.copy2(f, history / f.name)
    subprocess.run(
        [str(PIPELINE_VENV / "bin" / "loopline"), "etl", "--landing", str(history), "--lake", str(lake),
         "--quarantine", str(loopline_env["quarantine"]), "--params", str(project / "params.yaml")],
        check=True, capture_output=True, text=True, cwd=project,
    )  # fmt: skip
    assert len(list(lake.glob("date=*"))) == DAYS - 1

    # 1. loopline_etl: the last day, via Airflow (etl + validate)
    seen = len(asset_events("loopline_lake"))  # the test session's database is shared
    _, states = _run("loopline_etl", logical_date=pendulum.parse(LAST))
    assert states == {"landed": "success", "etl": "success", "validate": "success", "lake_changed": "success"}
    assert (lake / f"date={LAST}").is_dir() and len(list(lake.glob("date=*"))) == DAYS
    assert [e[1]["partitions"] for e in asset_events("loopline_lake")[seen:]] == [[LAST]]

    # 2. loopline_train: every stage runs and the registry gets a champion
    _, states = _run("loopline_train", logical_date=pendulum.parse(LAST))
    assert set(states.values()) == {"success"}, states
    registry = shared / "registry"
    register = json.loads((shared / "reports" / "registry" / "register.json").read_text())
    assert register["status"] == "champion", register
    from_registry = subprocess.run(
        [str(PIPELINE_VENV / "bin" / "python"), "-c",
         f"from pipelines.registry.store import Registry; print(Registry({str(registry)!r}).alias('champion'))"],
        check=True, capture_output=True, text=True, cwd=project,
    ).stdout.strip()  # fmt: skip
    assert from_registry == register["version"]
    assert (shared / "reports" / "tuning" / "best_params.json").exists()

    # 3. loopline_monitor: predictions with that champion, then the drift decision
    _, states = _run("loopline_monitor", logical_date=pendulum.parse(LAST))
    assert states["predict"] == states["monitor"] == "success"
    assert sorted(p.name for p in (shared / "predictions").glob("date=*"))[-1] == f"date={LAST}"
    assert list((shared / "predictions").glob("date=*/part-*.parquet"))
    decision = json.loads((shared / "reports" / "monitor" / "latest" / "decision.json").read_text())
    assert (shared / "reports" / "monitor" / "state.json").exists()
    assert decision["retrain"] is True, decision["reasons"]  # the drift above the (zero) importance threshold
    assert states["drift_event"] == "success", states
    drift_events = [e for e in asset_events("loopline_drift") if e[0] == "loopline_monitor"]
    assert len(drift_events) == 1 and drift_events[0][1]["reasons"] == decision["reasons"], drift_events

    # 4. loopline_retrain: the decision drives it; too few matured labels since the watermark is "waiting"
    _, states = _run("loopline_retrain", logical_date=pendulum.parse(LAST))
    report = json.loads((shared / "reports" / "retrain" / "retrain.json").read_text())
    assert report["ran"] is True, report
    assert report["status"] in {"champion", "challenger", "rejected", "waiting"}, report
    # the grid tells a promotion from a retrain that changed no model (before: green either way)
    promoted = report["status"] == "champion"
    assert states == {"retrain": "success", "outcome": "success" if promoted else "skipped"}, (states, report)
    assert report["watermark_before"] is not None  # from the champion's training window, read in the registry
    retrain_state = registry / "retrain_state.json"
    if report["status"] == "champion":  # promoted: the shared registry has the new champion and watermark
        assert json.loads(retrain_state.read_text())["champion"] == report["version"]
    else:  # the watermark did not move
        assert report["watermark_after"] == report["watermark_before"]
