"""Every DAG imports, is documented, retried, tagged, timezone-aware and wires the stages in order."""

from __future__ import annotations

import copy
import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((ROOT / "dags").glob("*.py"))
ML_STACK = ("pandas", "numpy", "pyarrow", "tensorflow", "xgboost", "sklearn", "evidently", "dvc", "pipelines")


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == {"loopline_etl", "loopline_train", "loopline_monitor", "loopline_retrain"}


def test_every_dag_is_documented_tagged_retried_and_tz_aware(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags and "loopline" in dag.tags, dag_id
        assert dag.doc_md and len(dag.doc_md) > 100, dag_id
        assert dag.start_date is None or dag.start_date.utcoffset() is not None, dag_id
        assert dag.catchup is False, f"{dag_id}: catchup must be a deliberate False (history = backfill)"
        for t in dag.tasks:
            assert t.retries >= 1, f"{dag_id}.{t.task_id} has no retries"


def test_schedules(dagbag):
    from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable

    etl = dagbag.dags["loopline_etl"].timetable
    assert isinstance(etl, CronTriggerTimetable) and etl.interval == dt.timedelta(days=1)
    assert dagbag.dags["loopline_train"].timetable.can_be_scheduled is False  # manual only
    retrain = dagbag.dags["loopline_retrain"].timetable
    assert isinstance(retrain, AssetOrTimeSchedule) or type(retrain).__name__ == "AssetOrTimeSchedule"
    etl_outlets = {t.task_id: [a.name for a in t.outlets] for t in dagbag.dags["loopline_etl"].tasks}
    assert etl_outlets == {"landed": [], "etl": [], "validate": [], "lake_changed": ["loopline_lake"]}
    assert [a.name for a in dagbag.dags["loopline_monitor"].get_task("drift_event").outlets] == [
        "loopline_drift"
    ]


def test_unpausing_starts_no_run_for_a_past_date(dagbag):
    """Airflow's own scheduling rule, on the serialized DAGs the scheduler sees: a DAG unpaused for the first
    time schedules its first run in the future (a run for yesterday, or last Monday's retrain, is one nobody
    asked for; before, both started the moment the DAGs were unpaused)."""
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.timetables.base import TimeRestriction

    now = dt.datetime.now(dt.UTC)
    for dag_id, dag in dagbag.dags.items():
        sdag = DagSerialization.from_dict(DagSerialization.to_dict(dag))
        if not sdag.timetable.can_be_scheduled or type(sdag.timetable).__name__ == "AssetTriggeredTimetable":
            continue  # manual, or asset-triggered only: nothing starts by itself
        first = sdag.timetable.next_dagrun_info(
            last_automated_data_interval=None,
            restriction=TimeRestriction(earliest=sdag.start_date, latest=None, catchup=sdag.catchup),
        )
        assert first is None or first.run_after > now, (
            f"{dag_id}: unpausing runs {first.logical_date} at once"
        )


def _chain(dag) -> list[str]:
    order, task = [], next(t for t in dag.tasks if not t.upstream_task_ids)
    while True:
        order.append(task.task_id)
        if not task.downstream_task_ids:
            return order
        (nxt,) = task.downstream_task_ids
        task = dag.get_task(nxt)


def test_stage_order(dagbag):
    assert _chain(dagbag.dags["loopline_etl"]) == ["landed", "etl", "validate", "lake_changed"]
    assert _chain(dagbag.dags["loopline_train"]) == [
        "sample", "label", "features", "tune", "train", "evaluate", "register", "quantize",
    ]  # fmt: skip
    assert _chain(dagbag.dags["loopline_monitor"]) == ["predict", "monitor", "drift_event"]
    assert _chain(dagbag.dags["loopline_retrain"]) == ["retrain", "outcome"]


def test_train_params_form_is_validated(dagbag):
    from airflow.sdk.exceptions import ParamValidationError

    params = copy.deepcopy(dagbag.dags["loopline_train"].params)
    params.validate()  # the defaults are valid
    with pytest.raises(ParamValidationError, match="seed"):
        params["seed"] = -1
    with pytest.raises(ParamValidationError, match="overrides"):
        params["overrides"] = "synthetic.days=3"  # must be an object of dotted keys


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_does_not_import_the_ml_stack(path):
    code = (
        "import runpy, sys; "
        f"runpy.run_path({str(path)!r}); "
        f"bad = [m for m in {ML_STACK!r} if m in sys.modules]; "
        "print(','.join(bad))"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT / "plugins")},
    )  # fmt: skip
    assert res.stdout.strip().splitlines()[-1:] in ([], [""]), f"{path.name} imports {res.stdout.strip()}"


def _readme_dag_table() -> dict[str, tuple[str, list[str]]]:
    """README's DAG table: dag_id -> (schedule cell, tasks) from `a → b → c[: what it does]`."""
    import re

    rows = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        m = re.match(r"^\| `(loopline_\w+)` \| (.+?) \| (.+?) \|$", line)
        if m:
            chain = re.sub(r"\([^)]*\)", "", m.group(3).split(":", 1)[0])
            rows[m.group(1)] = (m.group(2), [t.strip() for t in chain.split("→")])
    return rows


def _schedule_words(timetable) -> list[str]:  # type: ignore[no-untyped-def]
    """What the README must say of a DAG's schedule, from the timetable itself."""
    days = {"1": "Mondays", "*": ""}
    words, cron = [], getattr(getattr(timetable, "timetable", timetable), "expression", None)
    if cron:
        minute, hour, _, _, dow = cron.split()
        words.append(f"{days[dow]} {int(hour):02d}:{int(minute):02d} UTC".strip())
    assets = getattr(timetable, "asset_condition", None) or getattr(timetable, "assets", None)
    if assets is not None and hasattr(assets, "name"):
        words.append(f"`{assets.name}` asset")
    if not cron and assets is None:
        words.append("manual")
    return words


def test_the_readme_quotes_each_dags_tasks_and_schedule(dagbag):
    """Before, the README listed quantize -> register (the DAG: register -> quantize) and four retrain tasks."""
    table = _readme_dag_table()
    assert set(table) == set(dagbag.dag_ids)
    for dag_id, (schedule, tasks) in table.items():
        dag = dagbag.dags[dag_id]
        assert tasks == _chain(dag), f"README lists {tasks} for {dag_id}; the DAG runs {_chain(dag)}"
        for words in _schedule_words(dag.timetable):
            assert words in schedule, f"README's schedule of {dag_id} ({schedule!r}) does not say {words!r}"
