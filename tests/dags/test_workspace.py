"""The per-run workspace helpers (plugins/loopline_workspace.py): naming, params, bindings, pruning."""

from __future__ import annotations

import concurrent.futures as cf
import json
import subprocess
from pathlib import Path

import loopline_workspace as lw
import pytest
import yaml


def test_safe_name_keeps_run_ids_apart_and_inside_the_folder():
    assert lw.safe_name("scheduled__2025-01-01T00:00:00+00:00") == "scheduled__2025-01-01T00-00-00-00-00"
    assert "/" not in lw.safe_name("../../etc/passwd")
    assert lw.safe_name("../../etc/passwd") == "etc-passwd"
    with pytest.raises(ValueError, match="no usable"):
        lw.safe_name("///")


@pytest.mark.parametrize("bad", ["2025-1-01", "../2025-01-01", "2025-02-30", "", "2025-01-01/.."])
def test_check_date_rejects(bad):
    with pytest.raises(ValueError):
        lw.check_date(bad)


def test_set_params_sets_dotted_keys_and_names_bad_ones(tmp_path: Path):
    p = tmp_path / "params.yaml"
    p.write_text("seed: 1\nsynthetic:\n  days: 60\n  drift:\n    enabled: true\n")
    lw.set_params(p, {"seed": 7, "synthetic.drift.enabled": False})
    data = yaml.safe_load(p.read_text())
    assert (
        data["seed"] == 7
        and data["synthetic"]["drift"]["enabled"] is False
        and data["synthetic"]["days"] == 60
    )
    with pytest.raises(ValueError, match="'seed' is not a section"):
        lw.set_params(p, {"seed.x": 1})
    # params.yaml holds only what differs from the defaults: a key under a section it lacks is added
    # (an unknown one is named by check-params, which the workspace runs next)
    lw.set_params(p, {"train.keras.epochs": 3})
    assert yaml.safe_load(p.read_text())["train"] == {"keras": {"epochs": 3}}
    with pytest.raises(ValueError, match="dotted name"):
        lw.set_params(p, {"a b": 1})


def test_selectors():
    sel = lw.landing_for_date("2025-01-02")
    assert sel("2025-01-02.csv") and not sel("2025-01-03.csv") and not sel("sub/2025-01-02.csv")
    win = lw.lake_window("2025-01-10", lookback_days=2)
    assert win("date=2025-01-07/part-a.parquet") and win("date=2025-01-11/part-a.parquet")
    assert not win("date=2025-01-06/part-a.parquet") and not win("date=2025-01-12/part-a.parquet")
    assert win("_etl/ledger/x.json") and not win("_etl/manifests/x.json")


def _settings(tmp_path: Path) -> lw.Settings:
    shared = {k: tmp_path / "shared" / k for k in ("landing", "lake", "quarantine")}
    return lw.Settings(
        project=tmp_path, venv=tmp_path / "venv", runs=tmp_path / "runs", shared=shared, keep=2
    )


def test_binding_publishes_only_what_the_stage_changed(tmp_path: Path):
    s = _settings(tmp_path)
    lake = s.shared["lake"]
    for d in ("2025-01-01", "2025-01-02"):
        (lake / f"date={d}").mkdir(parents=True)
        (lake / f"date={d}" / "part-a.parquet").write_bytes(d.encode())
    ws = tmp_path / "ws"
    b = lw.Binding("data/lake", "lake", select=lambda rel: "2025-01-02" in rel, publish=True)
    assert b.seed(ws, s) == 1
    # the stage: rewrites one file with the same bytes (touches it), adds a new one, deletes none
    (ws / "data/lake/date=2025-01-02/part-a.parquet").write_bytes(b"2025-01-02")
    (ws / "data/lake/date=2025-01-03").mkdir()
    (ws / "data/lake/date=2025-01-03/part-b.parquet").write_bytes(b"new")
    # meanwhile another run changes a shared file this run had seeded: it must not be overwritten
    (lake / "date=2025-01-02" / "part-a.parquet").write_bytes(b"newer from another run")
    out = b.publish_changes(ws, s)
    assert out == {"written": ["date=2025-01-03/part-b.parquet"], "deleted": []}
    assert (lake / "date=2025-01-03/part-b.parquet").read_bytes() == b"new"
    assert (lake / "date=2025-01-02/part-a.parquet").read_bytes() == b"newer from another run"
    assert not list(lake.rglob(".*.tmp-*"))


def test_required_binding_fails_with_the_day_and_folder(tmp_path: Path):
    s = _settings(tmp_path)
    s.shared["landing"].mkdir(parents=True)
    b = lw.Binding("data/landing", "landing", select=lw.landing_for_date("2025-03-01"), required=True,
                   select_doc="file names containing 2025-03-01")  # fmt: skip
    with pytest.raises(FileNotFoundError, match="2025-03-01"):
        b.seed(tmp_path / "ws", s)


def test_workspaces_are_isolated_share_the_cache_and_are_pruned(loopline_env):
    """Two runs create workspaces concurrently; a stage run in one is restored from the run-cache in the other."""
    s = lw.Settings.from_env()
    proj = loopline_env["project"]
    # a tiny cached stage, committed to the throwaway project
    (proj / "dvc.yaml").write_text(
        "stages:\n  noop:\n    cmd: python -c \"open('out.txt','w').write('x')\"\n    params: [seed]\n    outs: [out.txt]\n"
    )
    subprocess.run(
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qam", "noop"], cwd=proj, check=True
    )
    with cf.ThreadPoolExecutor(3) as pool:
        spaces = list(pool.map(
            lambda i: lw.ensure_workspace(s, dag_id="d", run_id=f"run:{i}", run_record={"i": i}), range(3)
        ))  # fmt: skip
    assert len({str(w) for w in spaces}) == 3
    for w in spaces:
        assert json.loads((w / lw.RUN_RECORD).read_text())["dag_id"] == "d"
        assert (w / ".dvc/config.local").read_text().strip().endswith(str(proj / ".dvc" / "cache"))
    first = lw.run_stage(s, spaces[0], "noop")
    assert first["cached"] is False and first["dvc_lock_sha256"]
    with cf.ThreadPoolExecutor(2) as pool:  # two workspaces at once: no rwlock error
        results = list(pool.map(lambda w: lw.run_stage(s, w, "noop"), spaces[1:]))
    assert all(r["cached"] for r in results), results
    assert all(r["outs"] == first["outs"] for r in results)
    # keep=10 by default: one more workspace with keep=2 prunes the oldest
    s2 = lw.Settings(project=s.project, venv=s.venv, runs=s.runs, shared=s.shared, keep=2)
    lw.ensure_workspace(s2, dag_id="d", run_id="run:3", run_record={})
    assert len([p for p in (s.runs / "d").iterdir() if p.is_dir()]) == 2


def test_a_stage_gets_the_s3_credentials_of_the_airflow_connection(loopline_env, monkeypatch):
    """README and the S3 module said a task exports an Airflow AWS connection into the stage's environment;
    no code did. The operator now reads $LOOPLINE_AWS_CONN_ID (default aws_default) and hands its keys and
    endpoint to the stage only; without the connection the stage keeps the worker's own AWS chain."""
    from loopline_dvc import aws_connection_env

    key_id, key = "loopline-test-user", "-".join(("not", "a", "real", "key"))  # made up for the test
    conn = {"conn_type": "aws", "login": key_id, "extra": {"endpoint_url": "http://127.0.0.1:9000",
            "region_name": "eu-west-1"}}  # fmt: skip
    conn["password"] = key
    monkeypatch.setenv("AIRFLOW_CONN_LOOPLINE_S3", json.dumps(conn))
    monkeypatch.setenv("LOOPLINE_AWS_CONN_ID", "loopline_s3")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    env = aws_connection_env()
    assert env["AWS_ACCESS_KEY_ID"] == key_id and env["AWS_SECRET_ACCESS_KEY"] == key
    assert (
        env["AWS_DEFAULT_REGION"] == "eu-west-1"
        and env["LOOPLINE_S3_ENDPOINT_URL"] == "http://127.0.0.1:9000"
    )
    assert len(env) == 4
    monkeypatch.setenv("LOOPLINE_AWS_CONN_ID", "not_defined")
    assert aws_connection_env() == {}

    s = lw.Settings.from_env()
    proj = loopline_env["project"]
    (proj / "dvc.yaml").write_text(
        "stages:\n  creds:\n    cmd: python -c \"import os; open('out.txt','w').write("
        "os.environ.get('AWS_ACCESS_KEY_ID','-') + ' ' + os.environ.get('LOOPLINE_S3_ENDPOINT_URL','-'))\"\n"
        "    outs: [out.txt]\n"
    )
    subprocess.run(
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qam", "creds"], cwd=proj, check=True
    )
    ws = lw.ensure_workspace(s, dag_id="d", run_id="run:creds", run_record={})
    lw.run_stage(s, ws, "creds", extra_env=env)
    assert (ws / "out.txt").read_text() == f"{key_id} http://127.0.0.1:9000"
    assert "AWS_ACCESS_KEY_ID" not in lw.pipeline_env(s)  # the stage's copy only
