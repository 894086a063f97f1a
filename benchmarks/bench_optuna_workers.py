"""Optuna workers benchmark: 1 and then 2 worker processes on one PostgreSQL study, one thread each.

Each configuration gets a fresh throwaway database on postgresql://postgres@127.0.0.1:5432 (trust auth),
the same objective (the tune stage's XGBoost objective, nthread=1, OMP_NUM_THREADS=1) and the same wall
budget per worker. Throughput = finished (COMPLETE + PRUNED) trials per minute between the first trial's
start and the last trial's end (process start-up and data loading excluded, identical in both); also
boosting rounds per minute, which does not depend on how many trials happened to be cheap. Pruning is
off by default (``--pruner``): concurrent trials see fewer finished neighbours, so the pruned share, and
with it the mean trial cost, would differ between the two configurations for reasons unrelated to
parallelism.
Integrity: the finished trial numbers are unique and contiguous (0..n-1), and no trial is left RUNNING or
FAIL. Target: 2 workers >= 1.6x the trials per minute of 1 (on a machine with >= 2 idle cores).

    .venv/bin/python benchmarks/bench_optuna_workers.py --features data/features            # 60 s each
    .venv/bin/python benchmarks/bench_optuna_workers.py --features data/features --budget 20
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"  # before numpy/xgboost load; spawned workers inherit it

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import table, write_result
from pipelines.core.config import load_params

ROOT = Path(__file__).resolve().parents[1]
PG = "postgresql://postgres@127.0.0.1:5432"


def _admin(sql: str) -> None:
    import psycopg2

    conn = psycopg2.connect(f"{PG}/postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def run_config(features: str, params, *, workers: int, budget: float, db: str, pruner: str) -> dict:
    import optuna

    from pipelines.training.tune import engine_url, open_study, run_workers

    _admin(f'DROP DATABASE IF EXISTS "{db}"')
    _admin(f'CREATE DATABASE "{db}"')
    url = engine_url(f"{PG}/{db}")
    try:
        tune = params.tune.model_copy(
            update={"workers": workers, "timeout_s": budget, "threads_per_worker": 1, "pruner": pruner}
        )
        name = f"bench-workers-{workers}"
        metric = params.train.xgboost.eval_metric
        open_study(storage=url, study_name=name, tune=tune, metric=metric, seed=params.seed)
        wall0 = time.perf_counter()
        run_workers(
            features=features,
            storage=url,
            study_name=name,
            shares=[10_000] * workers,
            tune=tune,
            train=params.train,
            seed=params.seed,
            nthread=1,
        )
        wall = time.perf_counter() - wall0
        study = optuna.load_study(study_name=name, storage=url)
        trials = study.get_trials(deepcopy=False)
        done_states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        done = [t for t in trials if t.state in done_states]
        numbers = sorted(t.number for t in done)
        span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
        rounds = sum(t.user_attrs.get("rounds", len(t.intermediate_values)) for t in done)
        return {
            "workers": workers,
            "finished": len(done),
            "complete": sum(t.state == optuna.trial.TrialState.COMPLETE for t in done),
            "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in done),
            "other_states": sorted({t.state.name for t in trials} - {s.name for s in done_states}),
            "unique_contiguous": numbers == list(range(len(numbers))) and len(set(numbers)) == len(numbers),
            "trial_span_s": round(span, 2),
            "wall_s": round(wall, 2),
            "trials_per_min": round(60 * len(done) / span, 2) if span > 0 else 0.0,
            "rounds_per_min": round(60 * rounds / span, 1) if span > 0 else 0.0,
            "best_value": round(study.best_value, 5),
        }
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", default=str(ROOT / "data" / "features"), help="feature stage output folder")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--budget", type=float, default=60.0, help="wall seconds per worker and configuration")
    ap.add_argument("--pruner", default="none", choices=["none", "median", "percentile", "hyperband"])
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not Path(args.features, "spec.json").exists():
        sys.exit(
            f"{args.features}: no feature stage output; run `dvc repro features` (or loopline features) first"
        )
    params = load_params(args.params)
    load = os.getloadavg()
    rows = [
        run_config(
            args.features,
            params,
            workers=w,
            budget=args.budget,
            db=f"loopline_bench_{os.getpid()}_{w}",
            pruner=args.pruner,
        )
        for w in (1, 2)
    ]
    speedup = rows[1]["trials_per_min"] / rows[0]["trials_per_min"] if rows[0]["trials_per_min"] else 0.0
    rounds_speedup = (
        rows[1]["rounds_per_min"] / rows[0]["rounds_per_min"] if rows[0]["rounds_per_min"] else 0.0
    )
    ok = all(r["unique_contiguous"] and not r["other_states"] for r in rows)
    print(
        table(
            rows,
            [
                "workers",
                "finished",
                "complete",
                "pruned",
                "trial_span_s",
                "trials_per_min",
                "rounds_per_min",
                "unique_contiguous",
                "other_states",
                "best_value",
            ],
        )
    )
    print(
        f"\nspeed-up 2 vs 1 workers: {speedup:.2f}x trials/min (target >= 1.6), {rounds_speedup:.2f}x rounds/min; "
        f"no trial lost or duplicated: {ok}"
    )
    print(f"load average at start {load[0]:.2f}, at end {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    out = write_result(
        "optuna_workers" if args.pruner == "none" else f"optuna_workers_{args.pruner}",
        {
            "budget_s": args.budget,
            "features": args.features,
            "rows": rows,
            "pruner": args.pruner,
            "speedup": round(speedup, 3),
            "rounds_speedup": round(rounds_speedup, 3),
            "target_speedup": 1.6,
            "integrity_ok": ok,
            "loadavg_start": load,
            "loadavg_end": os.getloadavg(),
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
