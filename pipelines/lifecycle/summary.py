"""The short end-of-run summary printed by ``make run``: headline figures and where the reports are."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _stale(path: Path, started: dt.datetime | None) -> str:
    """' (from an earlier run)' when ``path`` predates this run: a failed run must not show old figures as
    its own."""
    if started is None or not path.exists():
        return ""
    written = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
    return "  (from an earlier run)" if written < started else ""


def summarize(reports: Path) -> str:
    """Read the metrics files the stages wrote under ``reports`` and format a few lines. After a failed
    `loopline run` (run_status.json), the first line names the stage and its error, and figures written
    before the run began are marked as an earlier run's."""
    lines = ["", "Loopline run summary", "--------------------"]
    status = _load(reports / "run_status.json") or {}
    started = dt.datetime.fromisoformat(status["started"]) if status.get("started") else None
    if status.get("returncode"):
        where = status.get("failed_stage")
        lines.append(
            f"FAILED at {where}: {status.get('error', '')}".rstrip(": ")
            if where
            else f"FAILED: dvc repro exited with {status['returncode']} (its output above says why)"
        )
    else:
        started = None  # a finished run: every figure is current, or the stage had nothing to do
    etl = _load(reports / "etl" / "manifest.json")
    if etl:
        t = etl["totals"]
        lines.append(
            f"ETL        {t['rows_read']:,} rows read = {t['rows_loaded']:,} loaded + {t['rows_quarantined']:,} quarantined "
            f"({t['files_processed']} files, {len(etl['partitions_written'])} partitions)"
            + _stale(reports / "etl" / "manifest.json", started)
        )
    val = _load(reports / "validation" / "summary.json")
    if val:
        lines.append(
            f"Validation {val.get('partitions_validated', 0)} partitions, {val.get('critical_failures', 0)} critical failures, "
            f"{val.get('warnings', 0)} warnings; Data Docs: {val.get('data_docs', '-')}"
            + _stale(reports / "validation" / "summary.json", started)
        )
    ev = _load(reports / "evaluation" / "metrics.json")
    if ev and ev.get("primary_pr_auc") is not None:
        lines.append(
            f"Evaluation test PR-AUC {ev['primary_pr_auc']:.4f}, ROC-AUC {ev['primary_roc_auc']:.4f} "
            f"({ev.get('rows', 0):,} rows); slices flagged {ev.get('slices_flagged', 0)}"
            + _stale(reports / "evaluation" / "metrics.json", started)
        )
    reg = _load(reports / "registry" / "register.json")
    if reg:
        lines.append(
            f"Gate       {reg.get('version')}: {reg.get('status')}; champion {reg.get('champion_after')}"
            + _stale(reports / "registry" / "register.json", started)
        )
    memory = [(_load(f) or {}) for f in sorted((reports / "resources").glob("*.json"))]
    memory = [m for m in memory if m.get("peak_rss_bytes")]
    if memory:
        top = sorted(memory, key=lambda m: -max(m["peak_rss_bytes"], m.get("largest_worker_rss_bytes") or 0))[
            :4
        ]
        parts = [
            f"{m['stage']} {m['peak_rss_bytes'] / 2**30:.2f}"
            + (
                f" (worker {m['largest_worker_rss_bytes'] / 2**30:.2f})"
                if m.get("largest_worker_rss_bytes")
                else ""
            )
            for m in top
        ]
        lines.append(f"Peak memory GiB: {', '.join(parts)}  (all stages: {reports / 'resources'})")
    index = reports / "index.html"
    if index.exists():
        lines.append(
            f"Run report {index}  (open it in a browser: every report of the run, headline figures on top)"
        )
    else:
        lines.append(
            f"Run report not written yet: `loopline report --reports {reports}`; reports in {reports}/"
        )
    return "\n".join(lines)
