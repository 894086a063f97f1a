"""Drift check cost: 1M vs 1M rows x 30 columns, sampled (monitor.max_rows per side) vs unsampled.

Two scenarios: the synthetic drift (amount-like column x1.6, online share 0.35 -> 0.55, two numeric mean
shifts, the rest stable) and no drift. For each, the drift table with sampling and without, its wall and
CPU seconds, the drifted columns and the policy's decision (uniform importance). Run:

    .venv/bin/python benchmarks/bench_drift.py [--rows 1000000] [--max-rows 50000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import peak_rss_mb, table, timed, write_result
from pipelines.core import drift as D
from pipelines.core.config import MonitorConfig
from pipelines.monitoring.monitor import MonitorState, Window, compute_figures, decide

N_NUM, N_CAT = 20, 10


def make(n: int, *, drifted: bool, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cols: dict[str, np.ndarray] = {}
    cols["amount"] = np.exp(rng.normal(3.5, 1.0, n)) * (1.6 if drifted else 1.0)
    for i in range(1, N_NUM):
        shift = 0.3 if drifted and i in (1, 2) else 0.0
        cols[f"num_{i:02d}"] = rng.normal(shift, 1.0, n) if i % 2 else rng.gamma(2.0, 1.0 + shift, n)
    online = 0.55 if drifted else 0.35
    cols["channel"] = rng.choice(np.array(["pos", "online", "atm"]), n, p=[0.9 - online, online, 0.1])
    for j in range(1, N_CAT):
        k = 4 + j
        cols[f"cat_{j:02d}"] = rng.choice(np.array([f"v{x}" for x in range(k)]), n, p=np.full(k, 1 / k))
    return pd.DataFrame(cols)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--max-rows", type=int, default=50_000)
    args = ap.parse_args()
    load = os.getloadavg()
    cfg = MonitorConfig()
    window = Window(pd.Timestamp("2025-02-10").date(), pd.Timestamp("2025-02-10").date())
    rows, out = [], {}
    ref = make(args.rows, drifted=False, seed=1)
    kinds = D.columns_of(ref, list(ref.columns))
    for scenario, drifted in (("drift", True), ("no_drift", False)):
        cur = make(args.rows, drifted=drifted, seed=2)
        for label, budget in (("sampled", args.max_rows), ("unsampled", None)):
            c = cfg.model_copy(update={"max_rows": budget})
            res: dict = {}

            def run(c=c, res=res, cur=cur) -> None:
                res["figures"] = compute_figures(reference=ref, current=cur, columns=kinds, cfg=c, seed=0)

            t = timed(run)
            dec = decide(res["figures"], c.policy, MonitorState(), window=window)
            f = res["figures"]["features"]
            row = {
                "scenario": scenario,
                "check": label,
                "rows_per_side": args.rows,
                "checked_per_side": f["rows"]["current_checked"],
                "wall_s": round(t["wall_s"], 2),
                "cpu_s": round(t["cpu_s"], 2),
                "drifted": ",".join(f["drifted"]) or "-",
                "importance": f["drifted_importance"],
                "retrain": dec.retrain,
            }
            rows.append(row)
            out[f"{scenario}/{label}"] = {**row, "scores": {k: v["score"] for k, v in f["columns"].items()}}
    print(f"load average before: {load}")
    print(
        table(
            rows,
            [
                "scenario",
                "check",
                "rows_per_side",
                "checked_per_side",
                "wall_s",
                "cpu_s",
                "drifted",
                "importance",
                "retrain",
            ],
        )
    )
    same = all(
        out[f"{s}/sampled"]["retrain"] == out[f"{s}/unsampled"]["retrain"] for s in ("drift", "no_drift")
    )
    print(f"decisions match: {same}; peak RSS {peak_rss_mb():.0f} MB")
    path = write_result(
        "drift",
        {
            "rows": rows,
            "detail": out,
            "decisions_match": same,
            "loadavg_before": load,
            "loadavg_after": os.getloadavg(),
            "max_rows": args.max_rows,
            "columns": len(kinds),
            "at_unix": time.time(),
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
