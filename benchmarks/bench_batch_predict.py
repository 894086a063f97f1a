"""Batch-prediction benchmark: 1M rows end to end against the floor of ``Booster.inplace_predict``.

End to end (``pipelines.serving.predict.run_predict`` on one lake partition of N rows): read the registry's champion
(sha256-verified), read the partition and the narrow history before it, point-in-time aggregates, the spec
transform in chunks, the model (``predict.scorer: auto``: the compiled trees of pipelines/serving/treescore.py,
XGBoost's scores bit for bit), the predictions parquet (atomic write); and the same with ``scorer: xgboost``
(``inplace_predict`` inside the pipeline), side by side. The floor: the same booster's
``inplace_predict`` on the already-prepared float32 feature matrix of the same rows. Each side runs in its own
subprocess, so each peak RSS is its own. Target: end to end <= 1.5x the floor.

The model (``--model``):

- ``run`` (default): the champion that the default ``make run`` promoted (``models/registry``, tuned
  XGBoost), scoring a day appended to a copy of that run's lake (``data/lake``); the registry is only read;
- ``small``: self-contained: a synthetic history (the real generator and ETL, ``--days`` x
  ``--rows-per-day``) and XGBoost trained on it with the untuned params ``train.xgboost`` (early stopping
  leaves few trees: the hardest case for the ratio, since the floor is smallest).

Either way the scored day holds ``--rows`` events resampled from the newest three days of the lake (new
event ids and times, the same cards and merchants), so the aggregates find real history.

    make run && .venv/bin/python benchmarks/bench_batch_predict.py            # the default champion
    .venv/bin/python benchmarks/bench_batch_predict.py --model small [--rows 1000000]

Writes benchmarks/results/batch_predict[_small].json; the machine load (``uptime``) is recorded next to the
figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.core.config import load_params  # noqa: E402


def load_avg() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def prepare_small(work: Path, *, days: int, rows_per_day: int, rows: int, seed: int) -> dict[str, str]:
    import pyarrow as pa
    import xgboost as xgb

    from pipelines.core import storage
    from pipelines.data.etl import lake_dates, read_partition, run_etl
    from pipelines.data.generate import generate_landing
    from pipelines.features.build import run_features
    from pipelines.registry.store import Registry

    params = load_params(ROOT / "params.yaml")
    cfg = params.synthetic.model_copy(update={"days": days, "rows_per_day": rows_per_day})
    generate_landing(cfg, out=str(work / "landing"), seed=seed, progress=False)
    lake = work / "lake"
    run_etl(
        landing=str(work / "landing"),
        lake=str(lake),
        quarantine=str(work / "q"),
        params=params,
        progress=False,
    )
    dates = lake_dates(str(lake))
    a, b = int(len(dates) * 0.6), int(len(dates) * 0.8)
    for name, ds in (("train", dates[:a]), ("valid", dates[a:b]), ("test", dates[b:])):
        df = pd.concat([read_partition(str(lake), d).to_pandas() for d in ds], ignore_index=True)
        df = df[df["label"].notna()].reset_index(drop=True)
        df["label_source"], df["label_weight"], df["sample_weight"], df["split"] = "natural", 1.0, 1.0, name
        storage.write_parquet(
            work / "labeled" / f"{name}.parquet", pa.Table.from_pandas(df, preserve_index=False)
        )
    feats = work / "features"
    run_features(labeled=str(work / "labeled"), lake=str(lake), out=str(feats), reports=str(work / "rep"),
                 params=params)  # fmt: skip
    spec = json.loads((feats / "spec.json").read_text())
    names = spec["feature_names"]
    tr, va = pd.read_parquet(feats / "train.parquet"), pd.read_parquet(feats / "valid.parquet")
    xp = params.train.xgboost
    booster = xgb.train(
        {"objective": "binary:logistic", "tree_method": "hist", "eval_metric": xp.eval_metric, "seed": seed,
         **xp.params.model_dump()},
        xgb.DMatrix(tr[names].to_numpy(np.float32), label=tr["label"].astype(int), feature_names=names),
        num_boost_round=xp.num_boost_round,
        evals=[(xgb.DMatrix(va[names].to_numpy(np.float32), label=va["label"].astype(int), feature_names=names),
                "valid")],
        early_stopping_rounds=xp.early_stopping_rounds, verbose_eval=False,
    )  # fmt: skip
    model = work / "model"
    model.mkdir()
    (model / "xgboost.ubj").write_bytes(bytes(booster.save_raw("ubj")))
    (model / "xgboost.json").write_text(json.dumps({"best_iteration": int(booster.best_iteration),
                                                    "feature_names": names}))  # fmt: skip
    (model / "spec.json").write_text((feats / "spec.json").read_text())
    ev = work / "ev"
    ev.mkdir()
    row = {
        "column": "channel",
        "value": "pos",
        "rows": 1,
        "positives": 0,
        "metric": None,
        "delta": None,
        "eligible": False,
        "flagged": False,
    }
    evaluation = {  # the smallest complete evaluation document: this benchmark measures scoring, not the gate
        "primary": "xgboost", "spec_digest": spec["digest"], "data_window": {"train": None, "valid": None, "test": None},
        "test": {"rows": 0, "positives": 0, "positive_rate": 0.0}, "settings": {}, "metrics": {"xgboost": {}},
        "calibration": {"method": "none", "params": {}},
        "slices": {"xgboost": {"metric": "roc_auc", "whole": None, "margin": 0.05, "min_size": 1,
                               "min_positives": 1, "rows": [row], "flagged": []}},
        "behavioural": {"xgboost": {"passed": True, "rows": 0, "tests": []}}, "champion": None, "summary": {},
    }  # fmt: skip
    (ev / "evaluation.json").write_text(json.dumps(evaluation))
    (ev / "metrics.json").write_text("{}")
    (ev / "report.html").write_text("<html></html>")
    reg = Registry(str(work / "registry"))
    version = reg.register(model_dir=str(model), evaluation_dir=str(ev), created_at=dt.datetime.now(dt.UTC))
    reg.promote(version, force=True, reason="benchmark")
    day = add_scored_day(str(lake), rows=rows, seed=seed)
    return {"lake": str(lake), "registry": str(work / "registry"), "version": version, "date": day,
            "model": str(model), "best_iteration": str(int(booster.best_iteration))}  # fmt: skip


def prepare_run(work: Path, *, registry: str, lake: str, rows: int, seed: int) -> dict[str, str]:
    """The default run's champion, scoring a day appended to a copy of its lake (the run's own lake and
    registry are not written)."""
    import shutil

    from pipelines.registry.store import Registry

    reg = Registry(registry)
    version = reg.alias("champion")
    if version is None or not Path(lake).is_dir():
        sys.exit(
            f"{registry}: no champion (or no lake at {lake}); run `make run` first, or pass --model small"
        )
    shutil.copytree(lake, work / "lake")
    vdir = Path(reg.version_dir(version))
    meta = json.loads((vdir / "xgboost.json").read_text())
    day = add_scored_day(str(work / "lake"), rows=rows, seed=seed)
    return {"lake": str(work / "lake"), "registry": registry, "version": version, "date": day,
            "model": str(vdir), "best_iteration": str(int(meta["best_iteration"]))}  # fmt: skip


def add_scored_day(lake: str, *, rows: int, seed: int) -> str:
    """Append the scored day: ``rows`` events resampled from the newest three days, new ids and times."""
    import pyarrow as pa

    from pipelines.core import storage
    from pipelines.data.etl import lake_dates, lake_schema, partition_path, read_partition

    params = load_params(ROOT / "params.yaml")
    dates = lake_dates(lake)
    hist = pd.concat([read_partition(lake, d).to_pandas() for d in dates[-3:]], ignore_index=True)
    rng = np.random.default_rng(seed)
    day = (dt.date.fromisoformat(dates[-1]) + dt.timedelta(days=1)).isoformat()
    scored = hist.iloc[rng.integers(0, len(hist), rows)].reset_index(drop=True)
    scored["event_id"] = [f"bench-{day}-{i:08d}" for i in range(rows)]
    offs = np.sort(rng.integers(0, 86_400_000_000, rows))
    scored["event_time"] = pd.Timestamp(day, tz="UTC") + pd.to_timedelta(offs, unit="us")
    scored["label"] = pd.array([None] * rows, dtype="Int8")
    scored["label_time"] = pd.NaT
    schema = lake_schema(params.schema)
    table = pa.Table.from_pandas(scored[schema.names], schema=schema, preserve_index=False)
    storage.write_parquet(storage.join(partition_path(lake, day), "part-bench.parquet"), table)
    return day


END_TO_END = textwrap.dedent(
    """
    import json, sys, time
    sys.path.insert(0, {root!r})
    from benchmarks._common import peak_rss_mb
    from pipelines.core.config import load_params
    t_imp = time.perf_counter()
    from pipelines.serving.predict import run_predict
    import pipelines.data.etl, pipelines.features.build, pipelines.registry.store, pipelines.training.models, xgboost, tqdm  # one-off cost
    if pipelines.features.build.numba_available():
        import pipelines.features.kernels  # compiled code comes from the on-disk cache (compiled on first use)
    import_s = time.perf_counter() - t_imp
    p = load_params({params!r})
    walls, cpus = [], []
    for _ in range({repeat}):  # best of N, as the floor (each run rewrites the same file atomically)
        t0, c0 = time.perf_counter(), time.process_time()
        s = run_predict(lake={lake!r}, registry={registry!r}, out={out!r}, date={date!r},
                        cfg=p.predict.model_copy(update={{"scorer": {scorer!r}}}), params=p, progress=False)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    wall = min(walls)
    print(json.dumps({{"seconds": wall, "runs": walls, "cpu_seconds": min(cpus), "rows": s["rows"], "import_seconds": import_s,
                      "scorer": s["scorer"], "peak_rss_mb": peak_rss_mb()}}))
    """
)

FLOOR = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    sys.path.insert(0, {root!r})
    from benchmarks._common import peak_rss_mb
    import xgboost as xgb
    pred = __import__("pandas").read_parquet({pred!r})
    x = np.load({matrix!r})
    booster = xgb.Booster()
    booster.load_model({model!r} + "/xgboost.ubj")
    rng = (0, {best} + 1)
    booster.inplace_predict(x[:1000], iteration_range=rng)
    walls, cpus = [], []
    for _ in range({repeat}):
        t0, c0 = time.perf_counter(), time.process_time()
        booster.inplace_predict(x, iteration_range=rng)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    best_t = min(walls)
    out = booster.inplace_predict(x, iteration_range=rng)
    same = bool(np.array_equal(np.asarray(out, dtype=np.float64), pred["score"].to_numpy()))
    rss = peak_rss_mb()
    # the compiled trees alone (pipelines.serving.treescore, one thread) on the same matrix, for the record
    from pipelines.serving.treescore import compile_booster
    trees = compile_booster(booster, rng)
    trees.predict(x[:1000])
    tree_walls = []
    for _ in range({repeat}):
        t0 = time.perf_counter()
        got = trees.predict(x)
        tree_walls.append(time.perf_counter() - t0)
    booster.set_param({{"nthread": 1}})
    t0 = time.perf_counter()
    booster.inplace_predict(x, iteration_range=rng)
    one_thread = time.perf_counter() - t0
    print(json.dumps({{"seconds": best_t, "runs": walls, "cpu_seconds": min(cpus), "rows": len(x), "same_scores_as_end_to_end": same,
                      "peak_rss_mb": rss, "compiled_trees_1_thread_seconds": min(tree_walls),
                      "inplace_predict_1_thread_seconds": one_thread, "compiled_equal": bool(np.array_equal(got, out))}}))
    """
)


def feature_matrix_for(lake: str, date: str, spec_path: str) -> np.ndarray:
    """The already-prepared float32 matrix of the scored rows, in the predictions' row order (not timed)."""
    from pipelines.serving.predict import LoadedModel, score_partition

    params = load_params(ROOT / "params.yaml")
    spec = json.loads(Path(spec_path).read_text())
    captured: list[np.ndarray] = []

    def grab(x: np.ndarray) -> np.ndarray:
        captured.append(x.copy())
        return np.zeros(len(x))

    score_partition(lake, date, model=LoadedModel("capture", "-", spec, grab), params=params, cfg=params.predict,
                    progress=False)  # fmt: skip
    return np.ascontiguousarray(np.concatenate(captured))


def _run(code: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"benchmark subprocess failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=16)
    ap.add_argument("--rows-per-day", type=int, default=5000)
    ap.add_argument(
        "--model",
        choices=["run", "small"],
        default="run",
        help="run: the champion of `make run`; small: train a small model here (see the docstring)",
    )
    ap.add_argument("--registry", default=str(ROOT / "models" / "registry"), help="--model run: its registry")
    ap.add_argument("--lake", default=str(ROOT / "data" / "lake"), help="--model run: its lake (copied)")
    ap.add_argument("--repeat", type=int, default=2, help="runs per side and round (the first warms caches)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of end to end, then floor, alternating")
    ap.add_argument(
        "--out", default=None, help="JSON path (default benchmarks/results/batch_predict[_small].json)"
    )
    args = ap.parse_args()
    args.out = args.out or str(ROOT / "benchmarks" / "results" /
                               f"batch_predict{'' if args.model == 'run' else '_small'}.json")  # fmt: skip
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    load_before = load_avg()
    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    t0 = time.perf_counter()
    if args.model == "run":
        ctx = prepare_run(work, registry=args.registry, lake=args.lake, rows=args.rows, seed=42)
    else:
        ctx = prepare_small(work, days=args.days, rows_per_day=args.rows_per_day, rows=args.rows, seed=42)
    prep_s = time.perf_counter() - t0
    out = str(work / "predictions")
    pred_file = str(Path(out) / f"date={ctx['date']}" / f"part-{ctx['version']}.parquet")
    e2e_code, xgb_code = (
        END_TO_END.format(root=str(ROOT), params=str(ROOT / "params.yaml"), lake=ctx["lake"], scorer=scorer,
                          registry=ctx["registry"], out=out, date=ctx["date"], repeat=args.repeat)
        for scorer in ("auto", "xgboost")
    )  # fmt: skip
    floor_code = None
    e2e_runs: list[dict] = []
    xgb_runs: list[dict] = []
    floor_runs: list[dict] = []
    # Side by side: the paths alternate, round after round, so all see the same machine (this one is
    # shared and its speed drifts by tens of percent within minutes); the best of each is compared.
    for r in range(args.rounds):
        e2e_runs.append(_run(e2e_code))
        xgb_runs.append(_run(xgb_code))
        if floor_code is None:
            x = feature_matrix_for(ctx["lake"], ctx["date"], str(Path(ctx["model"]) / "spec.json"))
            np.save(work / "x.npy", x)
            floor_code = FLOOR.format(root=str(ROOT), pred=pred_file, matrix=str(work / "x.npy"),
                                      model=ctx["model"], best=ctx["best_iteration"], repeat=args.repeat)  # fmt: skip
        floor_runs.append(_run(floor_code))
        print(f"round {r + 1}/{args.rounds}: end to end {e2e_runs[-1]['seconds']:.2f} s "
              f"({e2e_runs[-1]['scorer']}), with the xgboost scorer {xgb_runs[-1]['seconds']:.2f} s, "
              f"floor {floor_runs[-1]['seconds']:.2f} s", flush=True)  # fmt: skip
    e2e, e2e_xgb, floor = (min(runs, key=lambda d: d["seconds"]) for runs in (e2e_runs, xgb_runs, floor_runs))
    for best, runs in ((e2e, e2e_runs), (e2e_xgb, xgb_runs), (floor, floor_runs)):
        best["runs"] = [w for d in runs for w in d["runs"]]
    floor["same_scores_as_end_to_end"] = all(d["same_scores_as_end_to_end"] for d in floor_runs)
    floor["compiled_trees_1_thread_seconds"] = min(d["compiled_trees_1_thread_seconds"] for d in floor_runs)
    floor["inplace_predict_1_thread_seconds"] = min(d["inplace_predict_1_thread_seconds"] for d in floor_runs)
    ratio = e2e["seconds"] / floor["seconds"]
    ratio_xgb = e2e_xgb["seconds"] / floor["seconds"]
    load_after = load_avg()
    print(f"{'path':<44} {'rows':>9} {'seconds':>8} {'rows/s':>11} {'peak RSS MB':>12}")
    for name, r in (
        (f"end to end (lake -> predictions), {e2e['scorer']}", e2e),
        ("end to end, scorer xgboost", e2e_xgb),
        ("floor: Booster.inplace_predict", floor),
    ):
        print(f"{name:<44} {r['rows']:>9,} {r['seconds']:>8.2f} {r['rows'] / r['seconds']:>11,.0f} "
              f"{r['peak_rss_mb']:>12.0f}")  # fmt: skip
    print(f"\n{'PASS' if ratio <= 1.5 else 'FAIL'}  end to end / floor = {ratio:.2f} (target <= 1.5); "
          f"floor scores == end-to-end scores: {floor['same_scores_as_end_to_end']}")  # fmt: skip
    print(f"      with scorer xgboost (Booster.inplace_predict in the pipeline): {ratio_xgb:.2f}; "
          f"one thread on the prepared matrix: compiled trees {floor['compiled_trees_1_thread_seconds']:.2f} s, "
          f"inplace_predict {floor['inplace_predict_1_thread_seconds']:.2f} s")  # fmt: skip
    print(f"load average before {load_before}, after {load_after} ({os.cpu_count()} cores); "
          f"trees: best_iteration {ctx['best_iteration']}; setup {prep_s:.0f} s")  # fmt: skip
    result = {"model": args.model, "model_version": ctx["version"], "end_to_end": e2e, "end_to_end_xgboost_scorer": e2e_xgb,
              "floor": floor, "ratio": ratio, "ratio_xgboost_scorer": ratio_xgb, "target_ratio": 1.5, "passed": ratio <= 1.5,
              "rounds": args.rounds, "repeat": args.repeat, "rows": args.rows, "best_iteration": int(ctx["best_iteration"]), "n_features": int(x.shape[1]),
              "chunk_rows": load_params(ROOT / "params.yaml").predict.chunk_rows,
              "load_average_before": load_before, "load_average_after": load_after, "cpus": os.cpu_count()}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
