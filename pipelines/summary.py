"""The short end-of-run summary printed by ``make run``: headline figures and where the reports are."""

from __future__ import annotations

import json
from pathlib import Path


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def summarize(reports: Path) -> str:
    """Read the metrics files the stages wrote under ``reports`` and format a few lines."""
    lines = ["", "Loopline run summary", "--------------------"]
    etl = _load(reports / "etl" / "manifest.json")
    if etl:
        t = etl["totals"]
        lines.append(
            f"ETL        {t['rows_read']:,} rows read = {t['rows_loaded']:,} loaded + {t['rows_quarantined']:,} quarantined "
            f"({t['files_processed']} files, {len(etl['partitions_written'])} partitions)"
        )
    val = _load(reports / "validation" / "summary.json")
    if val:
        lines.append(
            f"Validation {val.get('partitions_validated', 0)} partitions, {val.get('critical_failures', 0)} critical failures, "
            f"{val.get('warnings', 0)} warnings; Data Docs: {val.get('data_docs', '-')}"
        )
    index = reports / "index.html"
    lines.append(f"Reports    {index if index.exists() else reports}/")
    return "\n".join(lines)
