"""Faults: what each one loses (the target is 0 rows) and how long recovery takes.

Each fault is caused for real on the default synthetic data (12 days x 30,000 rows with bad records), with
the real ``loopline`` CLI in a subprocess, and compared with an uninterrupted reference run:

* ``bad_bytes``: one landing file with an invalid UTF-8 byte, a short line, an unterminated quote, a wrong
  type and a duplicate; the rest of the landing files beside it. Lost = landing rows - loaded - quarantined.
* ``sigkill_etl``: the ETL SIGKILLed once two partitions exist, then re-run. Lost = reference lake rows -
  lake rows; also whether the manifests add up to the lake (``loopline lake check``).
* ``s3_outage``: the S3 server (moto on 127.0.0.1) stopped mid-ETL and restarted with what it held; the
  ETL fails within its retry budget; then a re-run.
* ``sigkill_register``: ``register`` SIGKILLed mid-write; ``loopline registry gc --delete`` removes the orphan.
* ``unreachable``: seconds from start to the one-line error against a closed port.

    .venv/bin/python benchmarks/bench_faults.py

Writes benchmarks/results/faults.json and prints a Markdown table.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from benchmarks._common import write_result
from pipelines.core import storage
from pipelines.core.config import load_params
from pipelines.data.etl import run_etl
from pipelines.data.generate import generate_landing
from pipelines.data.sources import count_data_lines

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DAYS, ROWS = 12, 30_000


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "loopline"), *args], env=env, capture_output=True, text=True, timeout=900
    )


def _etl_args(landing: Path, lake: str, quarantine: str) -> list[str]:
    return ["etl", "--landing", str(landing), "--lake", lake, "--quarantine", quarantine,
            "--params", str(ROOT / "params.yaml")]  # fmt: skip


def _lake_rows(lake: str) -> int:
    return sum(storage.parquet_rows(p) for p in storage.list_files(lake, "part-*.parquet", recursive=True))


def _check(lake: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    res = _cli("lake", "check", "--lake", lake, "--json", env=env)
    return json.loads(res.stdout)


def _wait_parts(lake: str, n: int, proc: subprocess.Popen[bytes], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(storage.list_files(lake, "part-*.parquet", recursive=True)) >= n:
            return
        if proc.poll() is not None:
            raise RuntimeError("the ETL ended before the fault")
        time.sleep(0.01)
    raise TimeoutError("no partition appeared")


def bad_bytes(work: Path, landing: Path) -> dict[str, Any]:
    import csv

    own = work / "bad_landing"
    own.mkdir()
    files = sorted(landing.glob("*.csv"))
    for f in files[:3]:
        (own / f.name).write_bytes(f.read_bytes())
    target = own / files[0].name
    rows = list(csv.reader(target.read_text().splitlines()))
    lines = [",".join(r).encode() for r in rows]
    lines[5] = lines[5][:-3] + b"\xe9\xe9\xe9"
    lines[20] = b",".join(lines[20].split(b",")[:-1])
    lines[40] = lines[40].replace(b",", b',"', 1)
    lines[60] = lines[60].replace(rows[60][rows[0].index("amount")].encode(), b"abc", 1)
    lines[80] = lines[79]
    target.write_bytes(b"\n".join(lines) + b"\n")
    landing_rows = sum(count_data_lines(p.read_bytes()) for p in own.glob("*.csv"))
    t0 = time.perf_counter()
    res = _cli(*_etl_args(own, str(work / "bad_lake"), str(work / "bad_q")))
    seconds = time.perf_counter() - t0
    manifest = json.loads((sorted((work / "bad_lake" / "_etl" / "manifests").glob("*.json"))[-1]).read_text())
    t = manifest["totals"]
    return {
        "fault": "bad_bytes", "exit": res.returncode, "rows_lost": landing_rows - t["rows_loaded"] - t["rows_quarantined"],
        "files_loaded": t["files_processed"], "quarantined_by_reason": manifest["quarantined_by_reason"],
        "recovery_s": 0.0, "note": f"same run, {seconds:.1f} s for {len(files[:3])} files",
    }  # fmt: skip


def sigkill_etl(work: Path, landing: Path, reference_rows: int) -> dict[str, Any]:
    lake, q = str(work / "kill_lake"), str(work / "kill_q")
    proc = subprocess.Popen([str(BIN / "loopline"), *_etl_args(landing, lake, q)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    _wait_parts(lake, 2, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    t0 = time.perf_counter()
    res = _cli(*_etl_args(landing, lake, q))
    recovery = time.perf_counter() - t0
    check = _check(lake)
    return {
        "fault": "sigkill_etl", "exit": res.returncode, "rows_lost": reference_rows - _lake_rows(lake),
        "manifests_add_up": check["manifests_total_rows"] == check["lake_rows"] and check["ok"],
        "files_recovered": check["files_recovered"], "recovery_s": round(recovery, 1),
    }  # fmt: skip


def s3_outage(work: Path, landing: Path, reference_rows: int) -> dict[str, Any]:
    from s3_fixtures import MotoServer

    server = MotoServer(log_path=work / "moto.log").start()
    try:
        bucket = "bench-outage"
        server.client().create_bucket(Bucket=bucket)
        env = server.env()
        lake, q = f"s3://{bucket}/lake", f"s3://{bucket}/quarantine"
        client = server.client()
        proc = subprocess.Popen([str(BIN / "loopline"), *_etl_args(landing, lake, q)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="lake/date=")
            if sum(len(p.get("Contents", [])) for p in pages) >= 2:
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGSTOP)
        time.sleep(0.5)
        state = server.snapshot(bucket)
        server.stop()
        t_down = time.perf_counter()
        os.kill(proc.pid, signal.SIGCONT)
        _, err = proc.communicate(timeout=120)
        fail_s = time.perf_counter() - t_down
        last = err.decode().strip().splitlines()[-1] if err else ""
        server.start()
        server.restore(bucket, state)
        t0 = time.perf_counter()
        res = _cli(*_etl_args(landing, lake, q), env=env)
        recovery = time.perf_counter() - t0
        check = _check(lake, env)
        rows = check["lake_rows"]
        return {
            "fault": "s3_outage", "exit": res.returncode, "rows_lost": reference_rows - rows,
            "failed_after_s": round(fail_s, 1), "error_line": last[:160],
            "manifests_add_up": check["manifests_total_rows"] == check["lake_rows"] and check["ok"],
            "recovery_s": round(recovery, 1),
        }  # fmt: skip
    finally:
        server.stop()


REGISTER = r"""
import datetime as dt, sys
from pipelines.registry.store import Registry
Registry(sys.argv[1]).register(model_dir=sys.argv[2], evaluation_dir=sys.argv[3],
                               created_at=dt.datetime(2025, 3, 2, tzinfo=dt.UTC))
"""


def sigkill_register(work: Path) -> dict[str, Any]:
    model, ev, registry = work / "model", work / "evaluation", work / "registry"
    storage.write_json(str(model / "spec.json"), {"digest": "bench", "feature_names": []})
    for k in range(6):
        storage.write_bytes(str(model / f"blob{k}.bin"), os.urandom(40 << 20))
    storage.write_json(str(ev / "evaluation.json"), {"test": {}})
    storage.write_json(str(ev / "metrics.json"), {})
    storage.write_bytes(str(ev / "report.html"), b"<html></html>")
    proc = subprocess.Popen([sys.executable, "-c", REGISTER, str(registry), str(model), str(ev)])
    while not (registry / "versions").exists() or not any(p for p in (registry / "versions").glob("*/*")):
        if proc.poll() is not None:
            raise RuntimeError("register ended before the kill")
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    orphan_files = sum(1 for p in (registry / "versions").rglob("*") if p.is_file())
    t0 = time.perf_counter()
    res = _cli("registry", "gc", "-r", str(registry), "--min-age-minutes", "0", "--delete")
    recovery = time.perf_counter() - t0
    left = sum(1 for p in (registry / "versions").rglob("*") if p.is_file())
    return {"fault": "sigkill_register", "exit": res.returncode, "orphan_files": orphan_files,
            "files_left_after_gc": left, "rows_lost": 0, "recovery_s": round(recovery, 1)}  # fmt: skip


def unreachable(work: Path) -> dict[str, Any]:
    from s3_fixtures import FAKE_CREDENTIALS, free_port

    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, **FAKE_CREDENTIALS,
           "LOOPLINE_S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}  # fmt: skip
    t0 = time.perf_counter()
    res = _cli("lake", "check", "--lake", "s3://nobody/lake", env=env)
    seconds = time.perf_counter() - t0
    lines = res.stderr.strip().splitlines()
    return {"fault": "unreachable", "exit": res.returncode, "error_after_s": round(seconds, 1),
            "stderr_lines": len(lines), "error_line": lines[-1][:160] if lines else "", "rows_lost": 0,
            "recovery_s": None}  # fmt: skip


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    params = load_params(ROOT / "params.yaml")
    cfg = params.synthetic.model_copy(update={"days": DAYS, "rows_per_day": ROWS})
    cfg = cfg.model_copy(update={"bad_records": cfg.bad_records.model_copy(update={"enabled": True})})
    landing = work / "landing"
    generate_landing(cfg, out=str(landing), seed=11, progress=False)
    ref = run_etl(landing=str(landing), lake=str(work / "ref_lake"), quarantine=str(work / "ref_q"),
                  params=params, progress=False)  # fmt: skip
    reference_rows = ref["totals"]["rows_loaded"]
    results = [
        bad_bytes(work, landing),
        sigkill_etl(work, landing, reference_rows),
        s3_outage(work, landing, reference_rows),
        sigkill_register(work),
        unreachable(work),
    ]
    print("| fault | rows lost | recovery | detail |\n|---|---|---|---|")
    for r in results:
        detail = {k: v for k, v in r.items() if k not in ("fault", "rows_lost", "recovery_s")}
        rec = "—" if r["recovery_s"] is None else f"{r['recovery_s']} s"
        print(f"| {r['fault']} | {r['rows_lost']} | {rec} | {json.dumps(detail)[:200]} |")
    out = write_result("faults", {"days": DAYS, "rows_per_day": ROWS, "reference_rows": reference_rows,
                                  "results": results})  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
