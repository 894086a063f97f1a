"""The monitor on the synthetic timeline with its scheduled drift (2025-02-10), through the real stages:
generate -> ETL -> a registered champion -> daily predictions -> `run_monitor` day by day (and weekly)."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _monitor_timeline import build_timeline

ONSET = dt.date(2025, 2, 10)


@pytest.fixture(scope="module")
def timeline(tmp_path_factory, params):
    return build_timeline(tmp_path_factory.mktemp("monitor_timeline"), params)


def test_load_window_stays_within_the_row_budget(synthetic_lake, params) -> None:
    from pipelines.monitoring.monitor import Window, load_window

    lake = str(synthetic_lake / "lake")
    w = Window(dt.date(2025, 1, 1), dt.date(2025, 1, 20))
    cutoff = dt.datetime(2025, 1, 10, tzinfo=dt.UTC)
    for sampling in ("reservoir", "stratified"):
        frame, seen = load_window(
            lake, w, columns=["amount", "channel"], cutoff=cutoff, max_rows=3000, sampling=sampling, seed=1
        )
        assert seen == 40_000 and len(frame) == 3000 and frame["event_id"].is_unique
    days = frame["event_time"].dt.date.value_counts()
    assert days.min() == days.max() == 150  # stratified: proportional per day
    full, seen = load_window(lake, w, columns=["amount"], cutoff=cutoff, max_rows=None)
    assert len(full) == seen == 40_000
    # labels count only once matured: nothing labelled after the cutoff is visible
    assert full.loc[full["label_time"] > cutoff, "label"].isna().all()
    assert full["label"].notna().any()


@pytest.mark.slow
def test_decision_fires_at_the_onset_and_not_before(timeline, params, tmp_path) -> None:
    from pipelines.core.drift import decision_verdict
    from pipelines.monitoring.monitor import run_monitor

    cfg = params.monitor.model_copy(update={"evidently_report": False})
    out = str(tmp_path / "monitor")
    decisions = {}
    d = dt.date(2025, 1, 22)  # the day after the champion's data window
    while d <= dt.date(2025, 2, 19):
        report_cfg = params.monitor if d == ONSET else cfg  # the Evidently page once, on the onset day
        r = run_monitor(
            lake=timeline["lake"],
            predictions=timeline["predictions"],
            registry=timeline["registry"],
            out=out,
            schema=params.schema,
            cfg=report_cfg,
            seed=params.seed,
            date=d.isoformat(),
        )
        decisions[d] = r["decision"]
        d += dt.timedelta(days=1)
    before = {k: v for k, v in decisions.items() if k < ONSET}
    assert not any(v["retrain"] for v in before.values()), [k for k, v in before.items() if v["retrain"]]
    assert not any(v["figures"]["drifted_features"] for v in before.values())
    first = min(k for k, v in decisions.items() if v["retrain"])
    assert ONSET <= first <= ONSET + dt.timedelta(days=1)
    assert decisions[first]["reasons"] and "feature_drift" in decisions[first]["triggers"]
    # the cool-down: no new decision in the next cooldown_periods - 1 days, although drift persists
    k = params.monitor.policy.cooldown_periods
    after = [decisions[first + dt.timedelta(days=i)] for i in range(1, k)]
    assert all(a["drift"] and not a["retrain"] for a in after)
    assert any("cool-down" in reason for reason in after[0]["reasons"])
    state = json.loads((tmp_path / "monitor" / "state.json").read_text())
    assert state["last_retrain_end"] >= first.isoformat()
    onset_dir = tmp_path / "monitor" / "runs" / ONSET.isoformat()
    assert (onset_dir / "report.html").stat().st_size > 10_000  # Evidently's page
    assert (tmp_path / "monitor" / "runs" / "2025-01-22" / "report.html").stat().st_size < 1000  # stub
    html = (onset_dir / "summary.html").read_text()
    assert f'<p class="v">{decision_verdict(decisions[ONSET])}</p>' in html
    summary = json.loads((onset_dir / "summary.json").read_text())
    assert summary["cpu_seconds"] > 0 and "merchant_id" in summary["excluded"]
    assert summary["figures"]["performance"] is not None  # a matured, out-of-sample week exists by then


@pytest.mark.slow
@pytest.mark.parametrize("day", ["2025-02-01", ONSET.isoformat()], ids=["drift_free", "onset"])
def test_every_page_states_the_decision_that_acts(timeline, params, tmp_path, day) -> None:
    """On a drift-free day and on the onset day, the monitor summary, the Evidently page and the run report
    state decision.json's verdict in the same words, and the summary marks exactly the decision's drifted
    columns. Before, the summary said "keep champion" for both "drift" and "no drift", the run report said
    "drift, no retrain" and the Evidently page "Dataset Drift is NOT detected" beside a retrain."""
    import re

    from pipelines.core.drift import decision_verdict
    from pipelines.monitoring.monitor import run_monitor
    from pipelines.lifecycle.run_report import write_run_report

    reports = tmp_path / "reports"
    run_monitor(lake=timeline["lake"], predictions=timeline["predictions"], registry=timeline["registry"],
                out=str(reports / "monitor"), schema=params.schema, cfg=params.monitor, seed=params.seed,
                date=day)  # fmt: skip
    run = reports / "monitor" / "runs" / day
    decision = json.loads((run / "decision.json").read_text())
    assert decision["retrain"] == (day == ONSET.isoformat())
    verdict = decision_verdict(decision)
    summary = (run / "summary.html").read_text()
    assert f'<p class="v">{verdict}</p>' in summary
    marked = set(re.findall(r"<tr class=d><td>([^<]+)</td>", summary))
    assert marked == set(decision["figures"]["drifted_features"])
    assert bool(marked) == (day == ONSET.isoformat())
    evidently = (run / "report.html").read_text()
    assert f"<b>Loopline decision: {verdict}</b>" in evidently
    index = write_run_report(reports=reports, registry=None, benchmarks=None, out=reports / "index.html")
    tile = index.read_text().split("<h3>Drift decision</h3>", 1)[1].split("</div>", 1)[0]
    assert verdict in tile
    assert json.loads((reports / "metrics.json").read_text())["drift"]["decision"] == verdict


@pytest.mark.slow
def test_weekly_windows_and_cli(timeline, tmp_path) -> None:
    from typer.testing import CliRunner

    from pipelines.cli import app

    out = tmp_path / "monitor"
    runner = CliRunner()
    verdicts = []
    for start, end in (
        ("2025-01-27", "2025-02-02"),
        ("2025-02-03", "2025-02-09"),
        ("2025-02-10", "2025-02-16"),
    ):
        res = runner.invoke(
            app,
            [
                "monitor",
                "--lake",
                timeline["lake"],
                "--predictions",
                timeline["predictions"],
                "--registry",
                timeline["registry"],
                "--out",
                str(out),
                "--start",
                start,
                "--end",
                end,
                "--params",
                str(Path(__file__).parents[2] / "params.yaml"),
            ],
        )
        assert res.exit_code == 0, res.output
        verdicts.append(json.loads((out / "latest" / "decision.json").read_text())["retrain"])
    assert verdicts == [False, False, True]
    bad = runner.invoke(
        app, ["monitor", "--lake", timeline["lake"], "--out", str(out), "--date", "2025-13-01"]
    )
    assert bad.exit_code == 2 and "YYYY-MM-DD" in bad.output
