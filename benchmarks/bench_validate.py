"""Validation benchmark: the partitions of a run validated together vs one Great Expectations run each.

GX's cost is mostly per expectation and run (building the metric graph), hardly per row. The stage
validates the partitions of a run in batches of up to ``validation.chunk_rows`` rows (one run over the
rows, one over a row of statistics per partition); the baseline is the same code with ``chunk_rows: 1``
(every partition its own batch, as the stage did before), on the first ``--baseline-partitions``
partitions, in the default worker processes. Both sides start from fresh reports, one after the other;
their records must agree (status, counts and failure messages of the partitions both validated).

    .venv/bin/python benchmarks/bench_validate.py                   # 1,461 generated daily partitions
    .venv/bin/python benchmarks/bench_validate.py --params profiles/hotel.yaml \\
        --lake /tmp/hotel/lake                                      # after `loopline etl` of the hotel data

Writes benchmarks/results/validate.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import table, write_result
from pipelines.core.config import load_params
from pipelines.data.etl import lake_dates, run_etl
from pipelines.data.generate import generate_landing
from pipelines.data.validate import run_validation

ROOT = Path(__file__).resolve().parents[1]


def _record(reports: Path) -> dict:
    partitions = json.loads((reports / "state" / "validated.json").read_text())["partitions"]
    drop = ("validated_at", "docs_page", "docs_pages")
    return {d: {k: v for k, v in r.items() if k not in drop} for d, r in partitions.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--lake", default=None, help="an existing lake (default: generate one)")
    ap.add_argument("--days", type=int, default=1461, help="generated lake: daily partitions")
    ap.add_argument("--rows-per-day", type=int, default=1, help="generated lake: mean rows a day")
    ap.add_argument("--baseline-partitions", type=int, default=96, help="partitions the baseline validates")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    params = load_params(args.params)
    work = Path(tempfile.mkdtemp(prefix="bench-validate-"))
    lake = args.lake
    if lake is None:
        cfg = params.synthetic.model_copy(update={"days": args.days, "rows_per_day": args.rows_per_day})
        generate_landing(cfg, out=str(work / "landing"), seed=42, progress=False)
        lake = str(work / "lake")
        run_etl(
            landing=str(work / "landing"),
            lake=lake,
            quarantine=str(work / "q"),
            params=params,
            progress=False,
        )
    dates = lake_dates(lake)
    sides = (
        ("batched (the stage)", params.validation.chunk_rows, dates),
        ("one run per partition", 1, dates[: args.baseline_partitions]),
    )
    rows, records = [], {}
    for name, chunk_rows, todo in sides:
        cfg = params.validation.model_copy(update={"chunk_rows": chunk_rows})
        reports = work / f"reports-{chunk_rows}"
        t0 = time.perf_counter()
        s = run_validation(
            lake=lake, reports=str(reports), schema=params.schema, cfg=cfg, dates=todo, progress=False
        )  # fmt: skip
        wall = time.perf_counter() - t0
        records[name] = _record(reports)
        n_rows = sum(r["rows"] for r in records[name].values())
        rows.append({"side": name, "chunk_rows": chunk_rows, "partitions": s["partitions_validated"], "rows": n_rows,
                     "seconds": round(wall, 1), "ms_per_partition": round(1000 * wall / len(todo), 1),
                     "critical": s["critical_failures"], "warnings": s["warnings"]})  # fmt: skip
        print(table(rows[-1:], list(rows[-1])), flush=True)
    batched, single = records[sides[0][0]], records[sides[1][0]]
    same = all(batched[d] == single[d] for d in single)
    per_partition = rows[1]["ms_per_partition"] / rows[0]["ms_per_partition"]
    print(f"\nbatched: {rows[0]['seconds']} s for {len(dates)} partitions; per partition {per_partition:.1f}x cheaper "
          f"than one run each ({rows[1]['ms_per_partition']} vs {rows[0]['ms_per_partition']} ms); "
          f"same record on the {len(single)} partitions both validated: {same}")  # fmt: skip
    out = write_result("validate", {"params": args.params, "lake": args.lake or "generated", "partitions": len(dates),
                                    "sides": rows, "per_partition_ratio": per_partition, "same_record": same})  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
