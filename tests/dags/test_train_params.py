"""dag.test(): the train DAG checks its params overrides before any stage runs."""

from __future__ import annotations

import pendulum
import pytest


@pytest.mark.slow
def test_a_bad_params_override_fails_the_first_task_at_once_without_retries(airflow_db, loopline_env):
    """`overrides` are checked before any stage runs; a bad key is a user error, so the task fails on its
    first try although it has retries left (before, it sat in up-for-retry for minutes, then failed)."""
    import datetime as dt

    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag().dags["loopline_train"]
    for t in dag.tasks:
        t.retries, t.retry_delay, t.retry_exponential_backoff = 2, dt.timedelta(seconds=1), False
    run = dag.test(
        logical_date=pendulum.datetime(2025, 1, 1, tz="UTC"), run_conf={"overrides": {"tune.n_trialz": 3}}
    )
    tis = {ti.task_id: ti for ti in run.get_task_instances()}
    first = tis["sample"]
    assert str(run.state).endswith("failed")
    assert str(first.state).endswith("failed") and first.try_number == 1, (first.state, first.try_number)
    record = loopline_env["runs"] / "loopline_train"
    assert not any(record.glob("*/airflow_run.json")), "no workspace was made ready for a stage to run in"
