"""Reservoir-sampling benchmark: stream 10M rows through Algorithm L with bounded memory.

A Parquet file of ``--rows`` event rows is written in 1M-row chunks (never held whole), then each
measurement runs in a fresh subprocess so that its peak RSS (VmHWM) is its own:

* ``read``: stream the file in record batches and count rows (the floor: the cost of reading);
* ``reservoir k=...``: the same stream through ``pipelines.data.sampling.ReservoirSampler``.

Target: peak RSS of the 10M-row reservoir run under 500 MB. Prints a table and writes
benchmarks/results/reservoir.json.

    .venv/bin/python benchmarks/bench_reservoir.py              # 10M rows
    .venv/bin/python benchmarks/bench_reservoir.py --rows 1000000   # smoke run
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import peak_rss_mb, table, write_result

TARGET_MB = 500.0
CHUNK = 1_000_000


def write_file(path: Path, rows: int, seed: int = 0) -> float:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    schema = pa.schema([("event_id", pa.string()), ("event_time", pa.timestamp("us", tz="UTC")),
                        ("card_id", pa.string()), ("amount", pa.float64()), ("label", pa.int8())])  # fmt: skip
    with pq.ParquetWriter(path, schema, compression="zstd") as w:
        for start in range(0, rows, CHUNK):
            n = min(CHUNK, rows - start)
            ids = np.char.add("evt-", np.arange(start, start + n).astype(str))
            cards = np.char.add("card-", rng.integers(0, 200_000, n).astype(str))
            t = pa.table({
                "event_id": ids, "event_time": pa.array(1_735_689_600_000_000 + np.arange(start, start + n) * 10_000,
                                                        pa.timestamp("us", tz="UTC")),
                "card_id": cards, "amount": rng.exponential(50.0, n), "label": (rng.random(n) < 0.017).astype(np.int8),
            }, schema=schema)  # fmt: skip
            w.write_table(t, row_group_size=256_000)
    return time.perf_counter() - t0


def worker(mode: str, path: str, k: int, batch: int) -> None:
    """Runs in the subprocess; prints one JSON line."""
    from pipelines.core import storage
    from pipelines.data.sampling import ReservoirSampler

    t0 = time.perf_counter()
    rows = 0
    if mode == "read":
        for b in storage.iter_parquet_batches(path, batch_size=batch):
            rows += b.num_rows
        kept = 0
    else:
        sampler = ReservoirSampler(k, seed=42)
        for b in storage.iter_parquet_batches(path, batch_size=batch):
            sampler.add(b)
        rows = sampler.seen
        kept = sampler.result().num_rows
    wall = time.perf_counter() - t0
    print(json.dumps({"rows": rows, "kept": kept, "wall_s": wall, "peak_rss_mb": peak_rss_mb()}))


def run(mode: str, path: Path, k: int, batch: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", mode, str(path), str(k), str(batch)],
                         check=True, capture_output=True, text=True)  # fmt: skip
    res = json.loads(out.stdout.strip().splitlines()[-1])
    label = "read only" if mode == "read" else f"reservoir k={k:,}"
    return {"run": label, "rows": res["rows"], "kept": res["kept"], "wall_s": round(res["wall_s"], 2),
            "rows_per_s": int(res["rows"] / res["wall_s"]), "peak_rss_mb": round(res["peak_rss_mb"], 1)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--batch", type=int, default=65_536)
    ap.add_argument("--worker", nargs=4, metavar=("MODE", "PATH", "K", "BATCH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        mode, path, k, batch = args.worker
        worker(mode, path, int(k), int(batch))
        return
    with tempfile.TemporaryDirectory(prefix="bench-reservoir-") as tmp:
        path = Path(tmp) / "events.parquet"
        write_s = write_file(path, args.rows)
        size_mb = path.stat().st_size / 2**20
        print(f"wrote {args.rows:,} rows ({size_mb:.0f} MB Parquet) in {write_s:.1f}s")
        rows = [run("read", path, 0, args.batch)]
        for k in (10_000, 100_000):
            rows.append(run("reservoir", path, k, args.batch))
    base = rows[0]["wall_s"]
    for r in rows:
        r["vs_read"] = f"{r['wall_s'] / base:.2f}x"
    print(table(rows, ["run", "rows", "kept", "wall_s", "rows_per_s", "vs_read", "peak_rss_mb"]))
    worst = max(r["peak_rss_mb"] for r in rows[1:])
    ok = worst < TARGET_MB
    print(
        f"peak RSS of the reservoir runs: {worst:.0f} MB (target < {TARGET_MB:.0f} MB): {'ok' if ok else 'OVER'}"
    )
    out = write_result("reservoir", {"rows": args.rows, "batch_size": args.batch, "file_mb": round(size_mb, 1),
                                     "target_peak_rss_mb": TARGET_MB, "passed": ok, "runs": rows})  # fmt: skip
    print(f"wrote {out}")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
