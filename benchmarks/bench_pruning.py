"""Pruning benchmark: the same study (seed, space, n_trials) with a pruner and without, for one or more seeds.

Both arms run in this process, one worker, one XGBoost thread, each on a fresh SQLite study in a temp folder;
seed i (0-based) uses ``params.seed + i`` for the sampler, the training sample and XGBoost in both arms.
The pruner and its knobs come from ``tune`` in the params file (``--pruner`` and the other flags override
them, in both arms where they touch the sampler). Reports, per seed, the CPU seconds of the whole tuning run
(data loading included, identical in both), their ratio and the best valid value of each; then the mean and
worst ratio and difference over the seeds. Targets: pruning cuts CPU time >= 2x, and its best value is within
0.005 of the unpruned study's, for every seed.

    .venv/bin/python benchmarks/bench_pruning.py --features data/features --trials 100 --seeds 3  # quoted
    .venv/bin/python benchmarks/bench_pruning.py --features data/features --trials 16
    .venv/bin/python benchmarks/bench_pruning.py --pruner median --prune-interval 1 --warmup-rounds 10
    .venv/bin/python benchmarks/bench_pruning.py --prune-clock progress --warmup-rounds 10
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import table, write_result
from pipelines.core.config import load_params

ROOT = Path(__file__).resolve().parents[1]
PRUNERS = ["median", "percentile", "hyperband"]
TARGET_RATIO, TARGET_DIFF = 2.0, 0.005
# flag -> TuneConfig field
KNOBS = {
    "warmup_rounds": "warmup_rounds",
    "startup_trials": "startup_trials",
    "prune_interval": "prune_interval",
    "percentile": "percentile",
    "reduction_factor": "reduction_factor",
    "prune_clock": "prune_clock",
    "prune_startup_trials": "prune_startup_trials",
}


def run_study(
    features: str, params, *, pruner: str, n_trials: int, work: Path, seed: int, knobs: dict | None = None
) -> dict:
    import optuna

    from pipelines.training.tune import open_study, run_workers

    url = f"sqlite:///{work / f'{pruner}-{seed}.db'}"
    tune = params.tune.model_copy(
        update={
            **(knobs or {}),
            "pruner": pruner,
            "n_trials": n_trials,
            "timeout_s": None,
            "workers": 1,
            "threads_per_worker": 1,
        }
    )
    metric = params.train.xgboost.eval_metric
    name = f"bench-pruning-{pruner}-{seed}"
    open_study(storage=url, study_name=name, tune=tune, metric=metric, seed=seed)
    c0, w0 = time.process_time(), time.perf_counter()
    run_workers(
        features=features,
        storage=url,
        study_name=name,
        shares=[n_trials],
        tune=tune,
        train=params.train,
        seed=seed,
        nthread=1,
    )
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    study = optuna.load_study(study_name=name, storage=url)
    states = [t.state for t in study.trials]
    rounds = sum(t.user_attrs.get("rounds", max(t.intermediate_values, default=-1) + 1) for t in study.trials)
    return {
        "seed": seed,
        "pruner": pruner,
        "trials": len(states),
        "pruned": states.count(optuna.trial.TrialState.PRUNED),
        "boosting_rounds": rounds,
        "cpu_s": round(cpu, 2),
        "wall_s": round(wall, 2),
        "best_value": round(study.best_value, 5),
        "best_trial": study.best_trial.number,
    }


def compare(pairs: list[tuple[dict, dict]]) -> dict[str, Any]:
    """Per-seed CPU ratio (unpruned / pruned), boosting-rounds ratio and best-value difference (pruned -
    unpruned, signed), and their mean and worst over the seeds (worst: smallest ratio, largest |difference|).
    ``pairs``: (unpruned row, pruned row) per seed, as ``run_study`` returns them."""
    per_seed = [
        {
            "seed": u["seed"],
            "cpu_ratio": round(u["cpu_s"] / p["cpu_s"], 3),
            "rounds_ratio": round(u["boosting_rounds"] / p["boosting_rounds"], 3),  # load-independent
            "best_value_diff": round(p["best_value"] - u["best_value"], 5),
        }
        for u, p in pairs
    ]
    ratios = [r["cpu_ratio"] for r in per_seed]
    diffs = [abs(r["best_value_diff"]) for r in per_seed]
    return {
        "per_seed": per_seed,
        "cpu_ratio_mean": round(statistics.fmean(ratios), 3),
        "cpu_ratio_worst": round(min(ratios), 3),
        "cpu_ratio_pooled": round(sum(u["cpu_s"] for u, _ in pairs) / sum(p["cpu_s"] for _, p in pairs), 3),
        "abs_diff_mean": round(statistics.fmean(diffs), 5),
        "abs_diff_worst": round(max(diffs), 5),
        "met_every_seed": all(r >= TARGET_RATIO for r in ratios) and all(d <= TARGET_DIFF for d in diffs),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", default=str(ROOT / "data" / "features"), help="feature stage output folder")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--seeds", type=int, default=3, help="repeat the pair for seeds params.seed + 0..N-1")
    ap.add_argument("--pruner", choices=PRUNERS, help="compared with none (default: tune.pruner)")
    ap.add_argument("--warmup-rounds", type=int)
    ap.add_argument("--startup-trials", type=int, help="TPE random start and pruner warm-up, both arms")
    ap.add_argument("--prune-interval", type=int)
    ap.add_argument("--prune-startup-trials", type=int, help="complete trials before pruning (pruned arm)")
    ap.add_argument("--percentile", type=float)
    ap.add_argument("--reduction-factor", type=int)
    ap.add_argument(
        "--prune-clock", choices=["rounds", "progress"], help="pruner step: boosting rounds or lr-weighted"
    )
    ap.add_argument(
        "--result", default="pruning", help="result file name under benchmarks/results (no .json)"
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not Path(args.features, "spec.json").exists():
        sys.exit(
            f"{args.features}: no feature stage output; run `dvc repro features` (or loopline features) first"
        )
    if args.seeds < 1 or args.trials < 1:
        sys.exit("--seeds and --trials must be >= 1")
    params = load_params(args.params)
    pruner = args.pruner or (params.tune.pruner if params.tune.pruner != "none" else "median")
    knobs = {field: getattr(args, flag) for flag, field in KNOBS.items() if getattr(args, flag) is not None}
    # validate the knobs the way params.yaml would be validated
    tune = type(params.tune).model_validate({**params.tune.model_dump(), **knobs, "pruner": pruner})
    setting = {"pruner": pruner, **{f: getattr(tune, f) for f in KNOBS.values()}}
    # import the libraries before timing: otherwise the first arm (none) pays for importing them
    import optuna  # noqa: F401
    import xgboost  # noqa: F401

    import pipelines.training.tune  # noqa: F401

    load = os.getloadavg()
    rows, pairs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.seeds):
            seed = params.seed + i
            pair = tuple(
                run_study(
                    args.features,
                    params,
                    pruner=p,
                    n_trials=args.trials,
                    work=Path(tmp),
                    seed=seed,
                    knobs=knobs,
                )
                for p in ("none", pruner)
            )
            pairs.append(pair)
            rows.extend(pair)
            print(
                table(list(pair), ["seed", "pruner", "pruned", "boosting_rounds", "cpu_s", "best_value"]),
                flush=True,
            )
    result = compare(pairs)
    print(f"\n{args.trials} trials per study; pruner setting: {setting}")
    print(
        table(
            rows,
            [
                "seed",
                "pruner",
                "trials",
                "pruned",
                "boosting_rounds",
                "cpu_s",
                "wall_s",
                "best_value",
                "best_trial",
            ],
        )
    )
    print()
    print(table(result["per_seed"], ["seed", "cpu_ratio", "rounds_ratio", "best_value_diff"]))
    print(
        f"\nCPU time cut by pruning: mean {result['cpu_ratio_mean']:.2f}x, worst {result['cpu_ratio_worst']:.2f}x "
        f"(target >= {TARGET_RATIO:g}); |best value difference| mean {result['abs_diff_mean']:.4f}, "
        f"worst {result['abs_diff_worst']:.4f} (target <= {TARGET_DIFF}); "
        f"both met for every seed: {result['met_every_seed']}"
    )
    print(f"load average at start {load[0]:.2f}, at end {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    out = write_result(
        args.result,
        {
            "features": args.features,
            "n_trials": args.trials,
            "seeds": [params.seed + i for i in range(args.seeds)],
            "setting": setting,
            "rows": rows,
            **result,
            "targets": {"cpu_ratio": TARGET_RATIO, "best_value_diff": TARGET_DIFF},
            "loadavg_start": load,
            "loadavg_end": os.getloadavg(),
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
