"""DAG tests run in the Airflow environment (.venv-airflow): `make test-dags`.

Under the pipeline environment (no Airflow installed) this folder is not collected. Airflow reads its
configuration at import, so AIRFLOW_HOME and the folders are set here, before any test imports it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PIPELINE_VENV = Path(os.environ.get("LOOPLINE_PIPELINE_VENV", ROOT / ".venv"))

if importlib.util.find_spec("airflow") is None:
    collect_ignore_glob = ["*.py"]
else:
    _home = Path(tempfile.mkdtemp(prefix="loopline-airflow-test-"))
    os.environ.update(
        {
            "AIRFLOW_HOME": str(_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_home / 'airflow.db'}",
            "DVC_NO_ANALYTICS": "1",
        }
    )
    sys.path.insert(0, str(ROOT / "plugins"))


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.email=test@loopline.invalid", "-c", "user.name=Loopline test", *args],
        cwd=cwd, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip


def make_project(dest: Path) -> Path:
    """A throwaway git repository holding the project's current files (tracked and untracked, not ignored)."""
    files = _git(ROOT, "ls-files", "-z", "-c", "-o", "--exclude-standard").split("\0")
    for rel in files:
        src = ROOT / rel
        if rel and src.is_file() and not rel.startswith(("runs/", ".airflow/")):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    _git(dest, "init", "-q")
    _git(dest, "add", "-A")
    _git(dest, "commit", "-q", "-m", "test project")
    return dest


def keep_stages(project: Path, stages: list[str]) -> None:
    """Trim the throwaway project's dvc.yaml to ``stages`` (the DAG skips the others), and commit it.

    The ETL DAG tests need only ``etl``; the later stages are other issues' work, tested there.
    """
    import yaml

    path = project / "dvc.yaml"
    data = yaml.safe_load(path.read_text())
    data["stages"] = {k: v for k, v in data["stages"].items() if k in stages}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    _git(project, "commit", "-q", "-am", f"keep stages {stages}")


def make_landing(dest: Path, *, start: str, days: int, rows: int = 500) -> Path:
    subprocess.run(
        [str(PIPELINE_VENV / "bin" / "loopline"), "generate", "--out", str(dest), "--start", start,
         "--days", str(days), "--rows-per-day", str(rows), "--params", str(ROOT / "params.yaml")],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return dest


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """An initialised metadata database (SQLite in the session's AIRFLOW_HOME)."""
    airflow = Path(sys.executable).parent / "airflow"
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True, env=os.environ.copy())


@pytest.fixture
def loopline_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A throwaway project, its run workspaces and shared data folders, exported to the operator."""
    if not (PIPELINE_VENV / "bin" / "dvc").exists():
        pytest.skip(f"pipeline environment {PIPELINE_VENV} not installed (make venv)")
    paths = {
        "project": make_project(tmp_path / "project"),
        "runs": tmp_path / "runs",
        "landing": tmp_path / "shared" / "landing",
        "lake": tmp_path / "shared" / "lake",
        "quarantine": tmp_path / "shared" / "quarantine",
    }
    env = {
        "LOOPLINE_PROJECT_DIR": paths["project"],
        "LOOPLINE_PIPELINE_VENV": PIPELINE_VENV,
        "LOOPLINE_RUNS_DIR": paths["runs"],
        "LOOPLINE_LANDING": paths["landing"],
        "LOOPLINE_LAKE": paths["lake"],
        "LOOPLINE_QUARANTINE": paths["quarantine"],
    }
    for k, v in env.items():
        monkeypatch.setenv(k, str(v))
    return paths


def asset_events(name: str) -> list[tuple[str, dict]]:
    """(source DAG, extra) of every event of the Asset ``name`` in the test's Airflow database."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        q = (
            select(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.name == name)
            .order_by(AssetEvent.id)
        )
        return [(e.source_dag_id, dict(e.extra or {})) for e in session.scalars(q)]
