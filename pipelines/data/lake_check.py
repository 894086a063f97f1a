"""`loopline lake check`: recount the lake against its ledgers and the ETL run manifests.

Three records of the same rows must agree, per landing file: the rows of its parts in the lake
(``date=*/part-<file>.parquet``, counted from the Parquet footers), its ledger record
(``_etl/ledger/<file>.json``: rows loaded, partitions) and the newest manifest entry that loaded it
(``_etl/manifests/*.json``, ``files`` and ``recovered``). It also lists what an interrupted run left: parts
no ledger claims, partitions a ledger claims but the lake lacks, and run markers not yet counted by a
manifest (``_etl/running/``; the next ETL run counts them).

Read-only: it changes nothing. Exit code 1 when a count disagrees.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from pipelines.core import storage
from pipelines.data.etl import LEDGER_DIR, MANIFEST_DIR, RUNNING_DIR, source_key

__all__ = ["LakeCheck", "check_lake"]

PART_RE = re.compile(r"date=(\d{4}-\d{2}-\d{2})[/\\]part-(.+)\.parquet$")


@dataclass
class LakeCheck:
    files: int = 0  # landing files the ledgers know
    lake_rows: int = 0
    ledger_rows: int = 0
    manifest_rows: int = 0  # newest manifest entry per file
    manifests_total_rows: int = 0  # rows loaded, summed over every run's manifest (replaced rows included)
    files_recovered: int = 0  # files an interrupted run committed, counted by a later run's manifest
    pending_runs: list[str] = field(default_factory=list)  # interrupted runs the next ETL run will count
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "ok": self.ok}


def _read_manifests(lake: str, out: LakeCheck) -> dict[str, dict[str, Any]]:
    """Per landing-file key, the newest manifest entry (run ids sort by start time); totals into ``out``."""
    newest: dict[str, dict[str, Any]] = {}
    for loc in sorted(storage.list_files(storage.join(lake, MANIFEST_DIR), "*.json")):
        manifest = storage.read_json(loc)
        out.manifests_total_rows += int(manifest.get("totals", {}).get("rows_loaded", 0))
        out.files_recovered += len(manifest.get("recovered", []))
        for entry in [*manifest.get("files", []), *manifest.get("recovered", [])]:
            newest[source_key(entry["name"])] = {**entry, "run_id": manifest.get("run_id")}
    return newest


def check_lake(lake: str) -> LakeCheck:
    out = LakeCheck()
    rows_by_key: dict[str, int] = defaultdict(int)
    dates_by_key: dict[str, set[str]] = defaultdict(set)
    for part in storage.list_files(lake, "part-*.parquet", recursive=True):
        m = PART_RE.search(part)
        if not m:
            continue
        rows_by_key[m.group(2)] += storage.parquet_rows(part)
        dates_by_key[m.group(2)].add(m.group(1))
    ledgers = {}
    for loc in storage.list_files(storage.join(lake, LEDGER_DIR), "*.json"):
        key = loc.replace("\\", "/").rsplit("/", 1)[-1][: -len(".json")]
        ledgers[key] = storage.read_json(loc)
    manifests = _read_manifests(lake, out)
    out.files = len(ledgers)
    out.lake_rows = sum(rows_by_key.values())
    out.ledger_rows = sum(int(r.get("rows_loaded", 0)) for r in ledgers.values())
    out.manifest_rows = sum(int(e.get("rows_loaded", 0)) for k, e in manifests.items() if k in ledgers)

    for key in sorted(set(rows_by_key) - set(ledgers)):
        out.problems.append(
            f"{key}: {rows_by_key[key]} row(s) in partitions {sorted(dates_by_key[key])} but no ledger record "
            "(an interrupted ETL run: run `loopline etl` again, it loads that file afresh)"
        )
    for key, rec in sorted(ledgers.items()):
        lake_rows, loaded = rows_by_key.get(key, 0), int(rec.get("rows_loaded", 0))
        if lake_rows != loaded:
            out.problems.append(f"{key}: the lake holds {lake_rows} row(s), its ledger record says {loaded}")
        missing = sorted(set(rec.get("partitions", [])) - dates_by_key.get(key, set()))
        if missing:
            out.problems.append(f"{key}: ledger lists partition(s) {missing} that hold none of its rows")
        entry = manifests.get(key)
        if entry is None:
            out.problems.append(f"{key}: loaded ({loaded} row(s)) but counted by no run manifest")
        elif entry.get("sha256") != rec.get("sha256") or int(entry.get("rows_loaded", 0)) != loaded:
            out.problems.append(
                f"{key}: its newest manifest entry (run {entry.get('run_id')}) says {entry.get('rows_loaded')} "
                f"row(s) of sha256 {str(entry.get('sha256'))[:12]}, the ledger {loaded} of "
                f"{str(rec.get('sha256'))[:12]}"
            )
    for loc in storage.list_files(storage.join(lake, RUNNING_DIR), "*.json"):
        marker = storage.read_json(loc)
        out.pending_runs.append(str(marker.get("run_id")))
    if out.pending_runs and any("counted by no run manifest" in p for p in out.problems):
        out.problems.append(
            f"interrupted ETL run(s) {out.pending_runs}: the next `loopline etl` counts the files they committed"
        )
    return out
