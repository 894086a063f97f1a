"""Pruning benchmark: the same study (seed, space, n_trials) with a pruner (median by default, or hyperband) and without.

Both run in this process, one worker, one XGBoost thread, each on a fresh SQLite study in a temp folder.
Reports the CPU seconds of the whole tuning run (data loading included, identical in both), their ratio
and the best valid value of each. Targets: pruning cuts CPU time >= 2x, and its best value is within
0.005 of the unpruned study's.

    .venv/bin/python benchmarks/bench_pruning.py --features data/features              # 30 trials each
    .venv/bin/python benchmarks/bench_pruning.py --features data/features --trials 16
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import table, write_result
from pipelines.config import load_params

ROOT = Path(__file__).resolve().parents[1]


def run_study(features: str, params, *, pruner: str, n_trials: int, work: Path) -> dict:
    import optuna

    from pipelines.tune import open_study, run_workers

    url = f"sqlite:///{work / f'{pruner}.db'}"
    tune = params.tune.model_copy(
        update={
            "pruner": pruner,
            "n_trials": n_trials,
            "timeout_s": None,
            "workers": 1,
            "threads_per_worker": 1,
        }
    )
    metric = params.train.xgboost.eval_metric
    name = f"bench-pruning-{pruner}"
    open_study(storage=url, study_name=name, tune=tune, metric=metric, seed=params.seed)
    c0, w0 = time.process_time(), time.perf_counter()
    run_workers(
        features=features,
        storage=url,
        study_name=name,
        shares=[n_trials],
        tune=tune,
        train=params.train,
        seed=params.seed,
        nthread=1,
    )
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    study = optuna.load_study(study_name=name, storage=url)
    states = [t.state for t in study.trials]
    rounds = sum(t.user_attrs.get("rounds", len(t.intermediate_values)) for t in study.trials)
    return {
        "pruner": pruner,
        "trials": len(states),
        "pruned": states.count(optuna.trial.TrialState.PRUNED),
        "boosting_rounds": rounds,
        "cpu_s": round(cpu, 2),
        "wall_s": round(wall, 2),
        "best_value": round(study.best_value, 5),
        "best_trial": study.best_trial.number,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", default=str(ROOT / "data" / "features"), help="feature stage output folder")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--pruner", default="median", choices=["median", "hyperband"], help="compared with none")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not Path(args.features, "spec.json").exists():
        sys.exit(
            f"{args.features}: no feature stage output; run `dvc repro features` (or loopline features) first"
        )
    params = load_params(args.params)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            run_study(args.features, params, pruner=p, n_trials=args.trials, work=Path(tmp))
            for p in ("none", args.pruner)
        ]
    unpruned, pruned = rows
    ratio = unpruned["cpu_s"] / pruned["cpu_s"]
    diff = abs(unpruned["best_value"] - pruned["best_value"])
    print(
        table(
            rows,
            ["pruner", "trials", "pruned", "boosting_rounds", "cpu_s", "wall_s", "best_value", "best_trial"],
        )
    )
    print(
        f"\nCPU time cut by pruning: {ratio:.2f}x (target >= 2); best value difference {diff:.4f} (target <= 0.005)"
    )
    print(f"load average at start {load[0]:.2f}, at end {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    out = write_result(
        "pruning",
        {
            "features": args.features,
            "n_trials": args.trials,
            "rows": rows,
            "cpu_ratio": round(ratio, 3),
            "best_value_diff": round(diff, 5),
            "targets": {"cpu_ratio": 2.0, "best_value_diff": 0.005},
            "loadavg_start": load,
            "loadavg_end": os.getloadavg(),
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
