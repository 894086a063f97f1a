"""Validation benchmark: a backfill of N daily partitions in one process vs in worker processes.

GX's cost is per expectation and validation run, hardly per row, so the first validation of a long daily
history (the hotel-bookings lake: 984 partitions) is dominated by it. Both sides validate the same
partitions from scratch (fresh reports), one after the other; the records must agree
(status, counts and failure messages of every partition) and every partition must get its Data Docs page.

    .venv/bin/python benchmarks/bench_validate.py                      # a generated lake, 48 days
    .venv/bin/python benchmarks/bench_validate.py --params profiles/hotel.yaml \\
        --lake /tmp/hotel/lake --partitions 96                         # after `loopline etl` of the hotel data

Writes benchmarks/results/validate.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import table, write_result
from pipelines.config import load_params
from pipelines.etl import lake_dates, run_etl
from pipelines.generate import generate_landing
from pipelines.validate import run_validation

ROOT = Path(__file__).resolve().parents[1]


def _record(reports: Path) -> dict:
    partitions = json.loads((reports / "state" / "validated.json").read_text())["partitions"]
    return {
        d: {k: v for k, v in r.items() if k not in ("validated_at", "docs_page")}
        for d, r in partitions.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--lake", default=None, help="an existing lake (default: generate one)")
    ap.add_argument("--partitions", type=int, default=48, help="the first N partitions of the lake")
    ap.add_argument("--workers", type=int, default=0, help="the parallel side (0: one per core, at most 4)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    params = load_params(args.params)
    work = Path(tempfile.mkdtemp(prefix="bench-validate-"))
    lake = args.lake
    if lake is None:
        cfg = params.synthetic.model_copy(update={"days": args.partitions, "rows_per_day": 2000})
        generate_landing(cfg, out=str(work / "landing"), seed=42, progress=False)
        lake = str(work / "lake")
        run_etl(
            landing=str(work / "landing"),
            lake=lake,
            quarantine=str(work / "q"),
            params=params,
            progress=False,
        )
    dates = lake_dates(lake)[: args.partitions]
    rows, records = [], {}
    for name, workers in (("one process", 1), ("workers", args.workers)):
        cfg = params.validation.model_copy(update={"workers": workers})
        reports = work / f"reports-{workers}"
        t0, c0 = time.perf_counter(), time.process_time()
        s = run_validation(
            lake=lake, reports=str(reports), schema=params.schema, cfg=cfg, dates=dates, progress=False
        )  # fmt: skip
        wall = time.perf_counter() - t0
        pages = len(list((reports / "data_docs" / "validations").rglob("*.html")))
        records[name] = _record(reports)
        rows.append({"side": name, "workers": workers, "partitions": s["partitions_validated"],
                     "seconds": round(wall, 1), "s_per_partition": round(wall / len(dates), 3),
                     "parent_cpu_s": round(time.process_time() - c0, 1), "pages": pages,
                     "critical": s["critical_failures"], "warnings": s["warnings"]})  # fmt: skip
        print(table(rows[-1:], list(rows[-1])), flush=True)
    same = records["one process"] == records["workers"]
    speedup = rows[0]["seconds"] / rows[1]["seconds"]
    print(f"\nworkers vs one process: {speedup:.2f}x faster; same record: {same}; "
          f"pages {rows[0]['pages']} / {rows[1]['pages']} for {len(dates)} partitions ({os.cpu_count()} cores)")  # fmt: skip
    out = write_result("validate", {"params": args.params, "lake": args.lake or "generated", "partitions": len(dates),
                                    "sides": rows, "speedup": speedup, "same_record": same})  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
