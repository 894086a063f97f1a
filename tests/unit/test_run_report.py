"""The run report: headline figures from the stages' metrics files, "not run" for what is missing."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from pipelines.lifecycle.run_report import markdown_to_html, write_run_report
from pipelines.lifecycle.summary import summarize


def _write(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)


def test_nothing_run_yet_gives_a_page_of_not_run(tmp_path: Path) -> None:
    out = write_run_report(reports=tmp_path / "reports", registry=None, benchmarks=None,
                           out=tmp_path / "reports" / "index.html")  # fmt: skip
    page = out.read_text()
    assert page.count("not run") >= 8
    assert (tmp_path / "reports" / "model_card.html").exists()  # always written: a DVC output


def test_headline_figures_links_card_and_benchmarks(tmp_path: Path) -> None:
    r = tmp_path / "reports"
    _write(r / "etl" / "manifest.json", {"totals": {"rows_read": 1200, "rows_loaded": 1190, "rows_quarantined": 10,
           "files_processed": 2}, "partitions_written": ["2025-01-01"], "quarantined_by_reason": {"wrong_type:amount": 10}})  # fmt: skip
    _write(
        r / "validation" / "summary.json", {"partitions_validated": 3, "critical_failures": 0, "warnings": 2}
    )
    _write(r / "validation" / "data_docs" / "index.html", "<html></html>")
    _write(r / "evaluation" / "report.html", "<html></html>")
    _write(r / "evaluation" / "evaluation.json", {"primary": "xgboost"})
    _write(r / "evaluation" / "metrics.json", {"rows": 500, "positives": 40, "slices_flagged": 0, "behavioural_passed": True,
           "test": {"xgboost": {"pr_auc": 0.8123, "roc_auc": 0.9456, "ece": 0.01},
                    "baseline_heuristic": {"pr_auc": 0.4321, "roc_auc": 0.8, "ece": 0.02}}})  # fmt: skip
    _write(r / "registry" / "register.json", {"version": "v0001", "status": "champion", "passed": True,
           "reasons": [], "champion_after": "v0001"})  # fmt: skip
    _write(
        r / "monitor" / "latest" / "decision.json",
        {"drift": True, "retrain": True, "reasons": ["amount drifted"]},
    )
    _write(r / "monitor" / "latest" / "report.html", "<html></html>")
    reg = tmp_path / "registry"
    _write(
        reg / "versions" / "v0001" / "model_card.md",
        "# Model card v0001\n\n| metric | value |\n|---|---|\n| PR-AUC | 0.81 |\n",
    )
    bench = tmp_path / "bench"
    _write(bench / "etl.json", {"benchmark": "etl", "at": "2026-01-01", "speedup": 2.5,
                                "runs": [{"run": "a", "wall_s": 1.5}, {"run": "b", "wall_s": 0.7}]})  # fmt: skip
    page = write_run_report(reports=r, registry=reg, benchmarks=bench, out=r / "index.html").read_text()
    for text in ("1,190", "10 quarantined", "warnings", "0.8123", "0.9456", "baseline_heuristic", "0.4321",
                 "champion", "retrain", 'href="validation/data_docs/index.html"', 'href="evaluation/report.html"',
                 'href="monitor/latest/report.html"', 'href="model_card.html"', "<h1>Model card v0001</h1>",
                 "<td>PR-AUC</td>", "speedup 2.500", "wall_s"):  # fmt: skip
        assert text in page, text
    assert "Labeling report: not run" in page
    assert "<h1>Model card v0001</h1>" in (r / "model_card.html").read_text()


def test_markdown_subset() -> None:
    out = markdown_to_html("## Title\n\nsome **bold** `code`\n\n- one\n- two\n\n```\nx < 1\n```\n")
    assert "<h2>Title</h2>" in out and "<b>bold</b>" in out and "<code>code</code>" in out
    assert "<ul><li>one</li><li>two</li></ul>" in out and "<pre>x &lt; 1</pre>" in out


def test_summary_prints_the_report_path(tmp_path: Path) -> None:
    assert "Run report not written yet" in summarize(tmp_path)
    write_run_report(reports=tmp_path, registry=None, benchmarks=None, out=tmp_path / "index.html")
    assert f"Run report {tmp_path / 'index.html'}" in summarize(tmp_path)


def test_a_retrain_that_retrained_nothing_says_so_and_the_metrics_agree(tmp_path: Path) -> None:
    """A drift decision said retrain, and the retrain waited for labels: the page must not read as a
    success (before, it showed no retrain outcome at all), and metrics.json carries the same verdicts."""
    r = tmp_path / "reports"
    _write(
        r / "monitor" / "latest" / "decision.json",
        {"drift": True, "retrain": True, "reasons": ["amount drifted"]},
    )
    detail = "0 labelled row(s) in 2025-02-20..2025-02-27, 0 positive: need >= retrain.min_new_rows = 500"
    _write(r / "retrain" / "retrain.json", {"ran": True, "status": "waiting", "mode": "stateful",
                                            "why": "drift", "detail": detail})  # fmt: skip
    page = write_run_report(reports=r, registry=None, benchmarks=None, out=r / "index.html").read_text()
    tile = page[page.index("<h3>Retrain</h3>") :].split("</div>", 2)
    assert "waiting for data" in tile[0] + tile[1] and "0 labelled row(s)" in tile[0] + tile[1]
    assert 'class="kpi warn"><h3>Retrain' in page
    metrics = json.loads((r / "metrics.json").read_text())
    assert metrics["drift"] == {"decision": "retrain", "retrain": True}
    assert metrics["retrain"] == {"status": "waiting", "mode": "stateful"}

    _write(
        r / "retrain" / "retrain.json",
        {"ran": False, "status": "skipped", "reason": "decision: retrain = false"},
    )
    page = write_run_report(reports=r, registry=None, benchmarks=None, out=r / "index.html").read_text()
    assert 'class="kpi na"><h3>Retrain' in page and "retrain = false" in page


def test_a_failed_run_names_its_stage_and_marks_older_figures(tmp_path: Path) -> None:
    """After a failed `loopline run` the summary printed the previous run's gate line as if current, and no
    word of the failure. DVC's own "failed to reproduce" line names the stage (a real dvc repro here)."""
    import os
    import subprocess
    import sys

    from pipelines.lifecycle.profile_run import _repro

    ws = tmp_path / "ws"
    ws.mkdir()
    dvc = str(Path(sys.executable).parent / "dvc")
    subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=ws, check=True)
    (ws / "dvc.yaml").write_text(
        "stages:\n  evaluate:\n    cmd: python -c \"raise SystemExit('slice column x is missing')\"\n"
    )
    rc, failed = _repro([dvc, "repro"], ws)
    assert rc != 0 and failed is not None and failed["failed_stage"] == "evaluate"

    r = tmp_path / "reports"
    _write(r / "registry" / "register.json", {"version": "v1", "status": "champion", "champion_after": "v1"})
    old = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)).timestamp()
    os.utime(r / "registry" / "register.json", (old, old))
    started = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    _write(r / "etl" / "manifest.json", {"totals": {"rows_read": 10, "rows_loaded": 10, "rows_quarantined": 0,
                                                      "files_processed": 1}, "partitions_written": ["d"]})  # fmt: skip
    _write(r / "run_status.json", {"started": started.isoformat(), "returncode": 1, **failed})
    text = summarize(r)
    assert f"FAILED at evaluate: {failed['error']}" in text
    assert "Gate       v1: champion; champion v1  (from an earlier run)" in text
    etl_line = next(line for line in text.splitlines() if line.startswith("ETL"))
    assert "earlier run" not in etl_line
    _write(r / "run_status.json", {"started": started.isoformat(), "returncode": 0})
    assert "FAILED" not in summarize(r) and "earlier run" not in summarize(r)


def test_each_stage_records_its_peak_memory_and_the_summary_prints_it(tmp_path: Path) -> None:
    """Peak RSS per stage, measured by the stage itself (a stage near the machine's memory shows before the
    kernel kills it): a real `loopline generate` run in a project folder writes it, the summary prints it."""
    import os
    import re
    import subprocess
    import sys

    (tmp_path / "reports").mkdir()
    loopline = str(Path(sys.executable).parent / "loopline")
    done = subprocess.run([loopline, "generate", "--out", str(tmp_path / "landing"), "--days", "1",
                           "--rows-per-day", "200", "--params", str(Path(__file__).parents[2] / "params.yaml")],
                          cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "LOOPLINE_RECORD_MEMORY": "1"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "reports" / "resources" / "generate.json").read_text())
    assert record["stage"] == "generate" and record["peak_rss_bytes"] > 50 * 2**20
    # its own peak, not the (larger) pytest worker's that started it: getrusage said 1.38 GiB on a clean clone
    assert record["peak_rss_bytes"] < 800 * 2**20
    assert re.search(r"Peak memory GiB: generate \d+\.\d\d  \(all stages: ", summarize(tmp_path / "reports"))
