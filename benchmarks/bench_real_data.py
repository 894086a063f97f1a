"""Real-data benchmark: `loopline init` + `loopline run --profile` with no edits, beside a hand-built XGBoost.

For each public real data set of ``tests/real_datasets.py`` (daily Seattle weather, hourly New York airport
weather, New York flights, hotel bookings), in a fresh copy of the project:

1. ``loopline init --from <csv> --label ... --time ... [--entity ...]`` and ``loopline run --profile NAME``,
   nothing edited: wall time, peak RSS of the largest process (and Loopline's own per-stage peaks), the
   gate's verdict with its reasons, test ROC-AUC and PR-AUC of the primary model and of the baselines;
2. the hand-built model a data scientist would write: XGBoost on the same rows of the same time windows
   (Loopline's train / valid / test split files) and the same raw input columns (the feature spec's inputs,
   without Loopline's derived aggregates; categories as XGBoost categoricals), 25 Optuna TPE trials over the
   usual hyperparameters, each with early stopping on the valid window, the best trial's model scored on test.

    .venv/bin/python benchmarks/bench_real_data.py                    # all four
    .venv/bin/python benchmarks/bench_real_data.py --only seattle_weather nyc_weather

Writes benchmarks/results/real_data.json (and prints a Markdown table for the README).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import write_result
from tests.real_datasets import DATASETS, RealDataset, copy_project

BIN = Path(sys.executable).parent
TRIALS = 25


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    env.update(DVC_NO_ANALYTICS="1", GX_ANALYTICS_ENABLED="false", TF_CPP_MIN_LOG_LEVEL="2")
    return env


def _run(cmd: list[str], cwd: Path, log: Path) -> tuple[int, float, float]:
    """(exit code, wall seconds, peak RSS GiB of the largest process it started)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    with log.open("w") as fh:
        rc = subprocess.run(cmd, cwd=cwd, env=_env(), stdout=fh, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t0
    peak = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 2**20
    return rc, wall, peak


def _frame(path: Path, inputs: dict[str, str], categories: dict[str, list[str]]) -> pd.DataFrame:
    df = pd.read_parquet(path)
    out = pd.DataFrame(index=df.index)
    for col, kind in inputs.items():
        if kind == "categorical":
            out[col] = pd.Categorical(df[col].astype("string"), categories=categories[col])
        else:
            out[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    return out


def hand_built(features: Path, seed: int = 42) -> dict[str, Any]:
    """XGBoost with Optuna on Loopline's split files and raw inputs; test ROC-AUC and PR-AUC."""
    import optuna
    import xgboost as xgb
    from sklearn.metrics import average_precision_score, roc_auc_score

    spec = json.loads((features / "spec.json").read_text())
    derived = set((spec.get("aggregates") or {}).get("columns") or [])
    inputs = {c: k for c, k in spec["inputs"].items() if c not in derived}
    train_raw = pd.read_parquet(features / "train.parquet")
    categories = {
        c: sorted(train_raw[c].dropna().astype(str).unique()) for c, k in inputs.items() if k == "categorical"
    }
    x = {s: _frame(features / f"{s}.parquet", inputs, categories) for s in ("train", "valid", "test")}
    y = {s: pd.read_parquet(features / f"{s}.parquet", columns=["label"])["label"].astype(int) for s in x}
    dtrain = xgb.DMatrix(x["train"], label=y["train"], enable_categorical=True)
    dvalid = xgb.DMatrix(x["valid"], label=y["valid"], enable_categorical=True)
    dtest = xgb.DMatrix(x["test"], enable_categorical=True)
    boosters: dict[int, Any] = {}

    def objective(trial: optuna.Trial) -> float:
        params = {
            "objective": "binary:logistic", "eval_metric": "auc", "tree_method": "hist", "seed": seed,
            "nthread": os.cpu_count() or 1,
            "eta": trial.suggest_float("eta", 0.01, 0.3, log=True),
            "max_depth": trial.suggest_int("max_depth", 2, 10),
            "min_child_weight": trial.suggest_float("min_child_weight", 1, 50, log=True),
            "subsample": trial.suggest_float("subsample", 0.5, 1.0),
            "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 1.0),
            "lambda": trial.suggest_float("lambda", 1e-3, 10, log=True),
            "max_cat_to_onehot": 4,
        }  # fmt: skip
        booster = xgb.train(params, dtrain, num_boost_round=2000, evals=[(dvalid, "valid")],
                            early_stopping_rounds=50, verbose_eval=False)  # fmt: skip
        boosters[trial.number] = booster
        return float(booster.best_score)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=TRIALS)
    best = boosters[study.best_trial.number]
    p = best.predict(dtest, iteration_range=(0, best.best_iteration + 1))
    return {
        "roc_auc": float(roc_auc_score(y["test"], p)),
        "pr_auc": float(average_precision_score(y["test"], p)),
        "valid_roc_auc": float(study.best_value),
        "inputs": sorted(inputs),
        "trials": TRIALS,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def loopline(ds: RealDataset, project: Path, landing: Path, logs: Path) -> dict[str, Any]:
    csv = ds.write_csv(landing / ds.name)
    rows = sum(1 for _ in csv.open()) - 1
    init = [str(BIN / "loopline"), "init", "--from", str(csv), "--label", ds.label, "--time", ds.time,
            "--positive", ds.positive, "--name", ds.name]  # fmt: skip
    if ds.entity:
        init += ["--entity", ds.entity]
    rc, init_s, _ = _run(init, project, logs / f"{ds.name}-init.log")
    if rc:
        return {"rows": rows, "error": f"init failed (exit {rc}); see {logs / f'{ds.name}-init.log'}"}
    rc, wall, peak = _run(
        [str(BIN / "loopline"), "run", "--profile", ds.name], project, logs / f"{ds.name}-run.log"
    )
    ws = project / "runs" / ds.name
    out: dict[str, Any] = {"rows": rows, "init_s": round(init_s, 1), "run_s": round(wall, 1),
                           "peak_rss_gib": round(peak, 2), "exit": rc}  # fmt: skip
    status = ws / "reports" / "run_status.json"
    if status.exists():
        out["run_status"] = json.loads(status.read_text())
    resources = ws / "reports" / "resources"
    if resources.exists():
        stages = {p.stem: json.loads(p.read_text()) for p in resources.glob("*.json")}
        out["stage_peaks_gib"] = {
            s: round(max(r.get("peak_rss_bytes") or 0, r.get("largest_worker_rss_bytes") or 0) / 2**30, 2)
            for s, r in stages.items()
        }
    register = ws / "reports" / "registry" / "register.json"
    if register.exists():
        reg = json.loads(register.read_text())
        out["gate"] = {"status": reg.get("status"), "reasons": reg.get("reasons", [])}
    metrics = ws / "reports" / "evaluation" / "metrics.json"
    if metrics.exists():
        m = json.loads(metrics.read_text())
        out["test"] = {
            k: {"roc_auc": v.get("roc_auc"), "pr_auc": v.get("pr_auc")} for k, v in m["test"].items()
        }
        out["roc_auc"], out["pr_auc"] = m.get("primary_roc_auc"), m.get("primary_pr_auc")
        out["test_rows"] = m.get("rows")
    warnings = project / "profiles" / f"{ds.name}.warnings.json"
    if warnings.exists():
        out["init_warnings"] = json.loads(warnings.read_text())
    if (ws / "data" / "features" / "spec.json").exists():
        out["hand_built"] = hand_built(ws / "data" / "features")
    return out


def _row(name: str, r: dict[str, Any]) -> str:
    if "error" in r or "roc_auc" not in r:
        return f"| {name} | {r.get('rows', '')} | {r.get('error') or 'run failed: ' + str(r.get('run_status'))} |||||"
    hand = r.get("hand_built", {})
    gate = r.get("gate", {})
    verdict = gate.get("status", "?")
    if gate.get("reasons"):
        verdict += " (" + "; ".join(x.split(":")[0] for x in gate["reasons"]) + ")"
    base = max(v["roc_auc"] or 0 for k, v in r["test"].items() if k.startswith("baseline_"))
    return (
        f"| {name} | {r['rows']:,} | {r['run_s'] / 60:.1f} min | {r['peak_rss_gib']:.2f} GiB | {verdict} | "
        f"{r['roc_auc']:.3f} / {r['pr_auc']:.3f} | {hand.get('roc_auc', float('nan')):.3f} / "
        f"{hand.get('pr_auc', float('nan')):.3f} | {r['roc_auc'] - hand.get('roc_auc', np.nan):+.3f} | {base:.3f} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", choices=sorted(DATASETS), help="data sets to run (default: all)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-real-data-"))
    project, landing, logs = work / "project", work / "landing", work / "logs"
    copy_project(project)
    logs.mkdir()
    print(f"work folder: {work}", flush=True)
    results: dict[str, Any] = {}
    for name in args.only or list(DATASETS):
        ds = DATASETS[name]
        why = ds.available()
        if why:
            print(f"{name}: skipped: {why}", flush=True)
            results[name] = {"skipped": why}
            continue
        print(f"{name}: {ds.description} ...", flush=True)
        results[name] = loopline(ds, project, landing, logs)
        print(_row(name, results[name]), flush=True)
    header = ("| data set | rows | `loopline run` | peak RSS | gate | Loopline test ROC / PR-AUC | hand-built "
              "ROC / PR-AUC | Δ ROC-AUC | best baseline ROC |\n|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    table = "\n".join([header, *(_row(n, r) for n, r in results.items() if "skipped" not in r)])
    print("\n" + table)
    out = write_result("real_data", {"datasets": results, "table": table, "work": str(work)})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
