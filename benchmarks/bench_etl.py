"""ETL benchmark.

(a) Incremental cost: ETL of one new day appended to 7 days of history vs to 365 days (same rows per
    day). Target: ratio at most 1.5 (a run's cost grows with the new data, not the history).
(b) Throughput against a floor: the same landing files read with pyarrow and written as Parquet with no
    checks at all. Target: our time at most 3x the floor.

    .venv/bin/python benchmarks/bench_etl.py            # full (a few minutes)
    .venv/bin/python benchmarks/bench_etl.py --quick    # smaller, for a smoke run
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import shutil
import sys
import tempfile
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import table, timed, write_result
from pipelines.core.config import load_params
from pipelines.data.etl import LEDGER_DIR, run_etl
from pipelines.data.generate import generate_landing

ROOT = Path(__file__).resolve().parents[1]


def incremental(work: Path, params, *, history_days: int, rows_per_day: int, repeat: int) -> dict:
    """Time the ETL of one new day on top of ``history_days`` already in the lake."""
    base = work / f"hist{history_days}"
    cfg = params.synthetic.model_copy(
        update={"days": history_days + 1, "rows_per_day": rows_per_day, "start_date": dt.date(2024, 1, 1)}
    )
    cfg = cfg.model_copy(update={"drift": cfg.drift.model_copy(update={"enabled": False})})
    landing, lake, quarantine = base / "landing", base / "lake", base / "q"
    generate_landing(cfg, out=str(landing), seed=params.seed, progress=False)
    new_day = (cfg.start_date + dt.timedelta(days=history_days)).isoformat()
    new_file = landing / f"{new_day}.csv"
    parked = base / "parked.csv"
    shutil.move(new_file, parked)
    run_etl(landing=str(landing), lake=str(lake), quarantine=str(quarantine), params=params, progress=False)

    def setup() -> None:  # forget the new day, so each repeat ingests it afresh
        (lake / LEDGER_DIR / f"{new_day}.csv.json").unlink(missing_ok=True)
        shutil.rmtree(lake / f"date={new_day}", ignore_errors=True)
        shutil.copy(parked, new_file)

    def run() -> None:
        m = run_etl(
            landing=str(landing), lake=str(lake), quarantine=str(quarantine), params=params, progress=False
        )
        assert m["totals"]["files_processed"] == 1, m["totals"]

    return timed(run, repeat=repeat, setup=setup)


def throughput(work: Path, params, *, days: int, rows_per_day: int, repeat: int) -> dict:
    base = work / "throughput"
    cfg = params.synthetic.model_copy(update={"days": days, "rows_per_day": rows_per_day})
    generate_landing(cfg, out=str(base / "landing"), seed=params.seed, progress=False)
    files = sorted((base / "landing").glob("*.csv"))
    rows = days * rows_per_day
    mb = sum(f.stat().st_size for f in files) / 1e6

    def floor() -> None:
        out = base / "floor"
        out.mkdir(exist_ok=True)
        for f in files:
            pq.write_table(pacsv.read_csv(f), out / f"{f.stem}.parquet", compression="zstd")

    def ours() -> None:
        shutil.rmtree(base / "lake", ignore_errors=True)
        shutil.rmtree(base / "q", ignore_errors=True)
        m = run_etl(
            landing=str(base / "landing"),
            lake=str(base / "lake"),
            quarantine=str(base / "q"),
            params=params,
            progress=False,
        )
        assert m["totals"]["rows_loaded"] == rows

    # interleave so both see the same machine load
    f_runs, o_runs = [], []
    for _ in range(repeat):
        f_runs.append(timed(floor))
        o_runs.append(timed(ours))
    fw = sorted(r["wall_s"] for r in f_runs)[len(f_runs) // 2]
    ow = sorted(r["wall_s"] for r in o_runs)[len(o_runs) // 2]
    return {
        "rows": rows,
        "landing_mb": round(mb, 1),
        "floor_wall_s": round(fw, 3),
        "etl_wall_s": round(ow, 3),
        "floor_rows_per_s": round(rows / fw),
        "etl_rows_per_s": round(rows / ow),
        "ratio": round(ow / fw, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    ap.add_argument("--rows-per-day", type=int, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    params = load_params(ROOT / "params.yaml")
    rows_per_day = args.rows_per_day or (2_000 if args.quick else 20_000)
    long_hist = 60 if args.quick else 365
    with tempfile.TemporaryDirectory(prefix="bench-etl-") as tmp:
        work = Path(tmp)
        short = incremental(work, params, history_days=7, rows_per_day=rows_per_day, repeat=5)
        long = incremental(work, params, history_days=long_hist, rows_per_day=rows_per_day, repeat=5)
        tp = throughput(
            work,
            params,
            days=5 if args.quick else 10,
            rows_per_day=20_000 if args.quick else 100_000,
            repeat=3,
        )
    ratio = long["wall_s"] / short["wall_s"]
    rows = [
        {
            "case": "one new day on 7 days",
            "rows/day": rows_per_day,
            "wall_s": round(short["wall_s"], 3),
            "cpu_s": round(short["cpu_s"], 3),
        },
        {
            "case": f"one new day on {long_hist} days",
            "rows/day": rows_per_day,
            "wall_s": round(long["wall_s"], 3),
            "cpu_s": round(long["cpu_s"], 3),
        },
    ]
    print(table(rows, ["case", "rows/day", "wall_s", "cpu_s"]))
    print(f"(a) history ratio {long_hist}d/7d = {ratio:.2f}  (target <= 1.5)")
    print(
        table(
            [tp],
            [
                "rows",
                "landing_mb",
                "floor_wall_s",
                "etl_wall_s",
                "floor_rows_per_s",
                "etl_rows_per_s",
                "ratio",
            ],
        )
    )
    print(f"(b) ETL / floor (pyarrow read CSV + write Parquet) = {tp['ratio']:.2f}  (target <= 3)")
    out = write_result(
        "etl",
        {
            "quick": args.quick,
            "incremental": {
                "rows_per_day": rows_per_day,
                "history_7": short,
                f"history_{long_hist}": long,
                "ratio": round(ratio, 3),
                "target": 1.5,
                "pass": ratio <= 1.5,
            },
            "throughput": {**tp, "target": 3.0, "pass": tp["ratio"] <= 3.0},
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
