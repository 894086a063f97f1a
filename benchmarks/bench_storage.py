"""Storage benchmark: lake write and read throughput, local disk against a local S3 server, side by side.

The same lake tables (real ETL output: 20 partitions x 50,000 rows by default) are written one partition
after another through ``pipelines.core.storage`` (as the ETL does: atomic temp+rename on disk, one PUT on S3),
then read back (``storage.read_parquet``). MB/s counts Parquet bytes (zstd); rows/s counts lake rows. The
"encode/decode only" row is the same work with no storage at all: the floor both sit on.

The S3 server is moto's on 127.0.0.1 (the one the tests use; a Python server, so expect a real MinIO or
S3 to be faster per request, and S3 across a network to be bound by bandwidth and latency instead). Local
reads come from the page cache.

    .venv/bin/python benchmarks/bench_storage.py            # 20 x 50k rows
    .venv/bin/python benchmarks/bench_storage.py --quick    # 5 x 20k rows, a smoke run
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from benchmarks._common import table, timed, write_result  # noqa: E402
from pipelines.core import storage  # noqa: E402
from pipelines.core.config import load_params  # noqa: E402
from pipelines.data.etl import lake_dates, read_partition, run_etl  # noqa: E402
from pipelines.data.generate import generate_landing  # noqa: E402


def lake_tables(work: Path, *, partitions: int, rows: int) -> list[pa.Table]:
    """Real lake partitions: the synthetic source through the ETL stage."""
    params = load_params(ROOT / "params.yaml")
    cfg = params.synthetic.model_copy(update={"days": partitions, "rows_per_day": rows})
    generate_landing(cfg, out=str(work / "landing"), seed=params.seed, progress=False)
    lake = str(work / "lake")
    run_etl(
        landing=str(work / "landing"), lake=lake, quarantine=str(work / "q"), params=params, progress=False
    )
    tables = [read_partition(lake, d) for d in lake_dates(lake)[:partitions]]
    return [t for t in tables if t is not None]


def measure(name: str, root: str, tables: list[pa.Table], *, repeat: int, compression: str) -> list[dict]:
    locs = [storage.join(root, f"date={i:04d}", "part-bench.parquet") for i in range(len(tables))]
    nbytes = sum(len(storage.parquet_bytes(t, compression=compression)) for t in tables)
    rows = sum(t.num_rows for t in tables)

    def write() -> None:
        for loc, t in zip(locs, tables, strict=True):
            storage.write_parquet(loc, t, compression=compression)

    def read() -> None:
        for loc in locs:
            storage.read_parquet(loc)

    w = timed(write, repeat=repeat, setup=lambda: storage.delete(root) if storage.exists(root) else None)
    r = timed(read, repeat=repeat)
    return [_row(name, "write", w, nbytes, rows), _row(name, "read", r, nbytes, rows)]


def measure_floor(tables: list[pa.Table], *, repeat: int, compression: str) -> list[dict]:
    blobs = [storage.parquet_bytes(t, compression=compression) for t in tables]
    nbytes, rows = sum(map(len, blobs)), sum(t.num_rows for t in tables)
    w = timed(lambda: [storage.parquet_bytes(t, compression=compression) for t in tables], repeat=repeat)
    r = timed(lambda: [pq.read_table(io.BytesIO(b)) for b in blobs], repeat=repeat)
    return [
        _row("encode/decode only", "write", w, nbytes, rows),
        _row("encode/decode only", "read", r, nbytes, rows),
    ]


def _row(target: str, op: str, t: dict, nbytes: int, rows: int) -> dict:
    return {
        "target": target,
        "op": op,
        "partitions": None,
        "MB": round(nbytes / 1e6, 2),
        "rows": rows,
        "wall_s": round(t["wall_s"], 3),
        "MB_per_s": round(nbytes / 1e6 / t["wall_s"], 1),
        "rows_per_s": int(rows / t["wall_s"]),
        "runs": t["runs"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="5 partitions x 20k rows, a smoke run")
    ap.add_argument("--partitions", type=int, default=20)
    ap.add_argument("--rows", type=int, default=50_000, help="rows per partition")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if args.quick:
        args.partitions, args.rows, args.repeat = 5, 20_000, 2
    logging.basicConfig(level=logging.WARNING)

    from s3_fixtures import FAKE_CREDENTIALS, MotoServer

    work = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    server = MotoServer(log_path=work / "moto.log").start()
    try:
        os.environ.update(FAKE_CREDENTIALS)
        os.environ["LOOPLINE_S3_ENDPOINT_URL"] = server.endpoint
        server.client().create_bucket(Bucket="bench")
        tables = lake_tables(work / "src", partitions=args.partitions, rows=args.rows)
        compression = load_params(ROOT / "params.yaml").etl.compression
        rows = measure_floor(tables, repeat=args.repeat, compression=compression)
        rows += measure("local disk", str(work / "lake"), tables, repeat=args.repeat, compression=compression)
        rows += measure(
            "S3 (moto, 127.0.0.1)", "s3://bench/lake", tables, repeat=args.repeat, compression=compression
        )
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    for r in rows:
        r["partitions"] = len(tables)
    cols = ["target", "op", "partitions", "rows", "MB", "wall_s", "MB_per_s", "rows_per_s"]
    print(table(rows, cols))
    out = write_result(
        "storage",
        {
            "partitions": len(tables),
            "rows_per_partition": args.rows,
            "compression": compression,
            "results": rows,
        },
    )
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
