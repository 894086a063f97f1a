"""Edge benchmark: every TFLite variant and the float Keras model, side by side, in one run.

Per model (the default edge MLP of params ``train.keras.hidden_units`` and a tiny one) and variant: file
size, test ROC-AUC, single-row latency p50/p99 (the edge runtime's path: quantize, invoke, dequantize,
sigmoid), batch throughput with the runtime's default XNNPACK delegate and without it (one thread each, so
the figures compare kernels, not cores). Acceptance for the default model: int8 <= 0.30x the float32 file,
ROC-AUC loss <= 0.005 against the float Keras model, batch throughput >= 2x float32 TFLite.

    .venv/bin/python benchmarks/bench_edge.py                       # builds a synthetic data set and models
    .venv/bin/python benchmarks/bench_edge.py --features data/features --model models/candidate

Writes benchmarks/results/edge.json. The machine load (``uptime``) is recorded next to the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pipelines.core import metrics as M  # noqa: E402
from pipelines.core.config import load_params  # noqa: E402


def load_avg() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def build_features(work: Path, *, days: int, rows_per_day: int, params: Any) -> Path:
    """Synthetic lake -> time split of the labelled rows (60/15/25 % of the days) -> the real feature stage."""
    import pyarrow as pa

    from pipelines.core import storage
    from pipelines.data.etl import lake_dates, read_partition, run_etl
    from pipelines.data.generate import generate_landing
    from pipelines.features.build import run_features

    cfg = params.synthetic.model_copy(update={"days": days, "rows_per_day": rows_per_day})
    generate_landing(cfg, out=str(work / "landing"), seed=params.seed, progress=False)
    run_etl(landing=str(work / "landing"), lake=str(work / "lake"), quarantine=str(work / "q"), params=params,
            progress=False)  # fmt: skip
    dates = lake_dates(str(work / "lake"))
    a, b = int(len(dates) * 0.6), int(len(dates) * 0.75)
    for name, ds in (("train", dates[:a]), ("valid", dates[a:b]), ("test", dates[b:])):
        df = pd.concat([read_partition(str(work / "lake"), d).to_pandas() for d in ds], ignore_index=True)
        df = df[df["label"].notna()].reset_index(drop=True)
        df["label_source"], df["label_weight"], df["sample_weight"], df["split"] = "natural", 1.0, 1.0, name
        storage.write_parquet(
            work / "labeled" / f"{name}.parquet", pa.Table.from_pandas(df, preserve_index=False)
        )
    run_features(labeled=str(work / "labeled"), lake=str(work / "lake"), out=str(work / "features"),
                 reports=str(work / "rep"), params=params)  # fmt: skip
    return work / "features"


def train_mlp(x: np.ndarray, y: np.ndarray, *, hidden_units: list[int], epochs: int, seed: int) -> Any:
    import keras

    from pipelines.training.train import build_mlp

    keras.utils.set_random_seed(seed)
    logit_model, prob_model = build_mlp(x.shape[1], hidden_units=hidden_units, dropout=0.1, seed=seed)
    pos = max(float(y.mean()), 1e-3)
    logit_model.compile(
        optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.BinaryCrossentropy(from_logits=True)
    )
    w = np.where(y == 1, 0.5 / pos, 0.5 / (1 - pos)).astype(np.float32)
    logit_model.fit(x, y.astype(np.float32), sample_weight=w, epochs=epochs, batch_size=512, verbose=0)
    return prob_model


def single_row_latency(fn: Any, x: np.ndarray, n: int) -> tuple[float, float]:
    times = np.empty(n)
    for i in range(n):
        row = x[i % len(x) : i % len(x) + 1]
        t0 = time.perf_counter()
        fn(row)
        times[i] = time.perf_counter() - t0
    return float(np.percentile(times, 50) * 1e6), float(np.percentile(times, 99) * 1e6)


def throughput(fn: Any, x: np.ndarray, repeats: int = 3) -> float:
    fn(x[:2048])  # warm up
    best = min(_timed(fn, x) for _ in range(repeats))
    return len(x) / best


def _timed(fn: Any, x: np.ndarray) -> float:
    t0 = time.perf_counter()
    fn(x)
    return time.perf_counter() - t0


def bench_model(name: str, keras_model: Any, *, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                y_test: np.ndarray, big: np.ndarray, rep_rows: int, latency_rows: int, seed: int,
                out_dir: Path) -> list[dict[str, Any]]:  # fmt: skip
    from pipelines.edge.runtime import EdgeModel
    from pipelines.serving.quantize import convert_variants, representative_sample

    idx = representative_sample(x_train, y_train.astype(np.float64), rows=rep_rows, seed=seed)
    blobs = convert_variants(keras_model, x_train[idx])
    rows: list[dict[str, Any]] = []
    ref = keras_model.predict(x_test, batch_size=8192, verbose=0).reshape(-1).astype(np.float64)
    keras_auc = M.roc_auc(y_test, ref)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.keras"
        keras_model.save(path)
        keras_bytes = path.stat().st_size
    p50, p99 = single_row_latency(lambda r: keras_model(r, training=False), x_test, min(latency_rows, 500))
    rows.append({"model": name, "variant": "keras (float32)", "bytes": keras_bytes, "roc_auc": keras_auc,
                 "roc_auc_loss": 0.0, "p50_us": p50, "p99_us": p99,
                 "rows_per_s_xnnpack": throughput(lambda a: keras_model.predict(a, batch_size=1024, verbose=0), big),
                 "rows_per_s_no_xnnpack": None})  # fmt: skip
    for variant, blob in blobs.items():
        (out_dir / f"{name}-{variant}.tflite").write_bytes(blob)
        scores = EdgeModel(blob).predict_matrix(x_test)
        one = EdgeModel(blob, batch_size=1, num_threads=1)
        p50, p99 = single_row_latency(one.predict_matrix, x_test, latency_rows)
        fast = EdgeModel(blob, batch_size=1024, num_threads=1)
        plain = EdgeModel(blob, batch_size=1024, num_threads=1, xnnpack=False)
        auc = M.roc_auc(y_test, scores)
        rows.append({"model": name, "variant": variant, "bytes": len(blob), "roc_auc": auc,
                     "roc_auc_loss": keras_auc - auc, "p50_us": p50, "p99_us": p99,
                     "rows_per_s_xnnpack": throughput(fast.predict_matrix, big),
                     "rows_per_s_no_xnnpack": throughput(plain.predict_matrix, big)})  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--features", default=None, help="features folder; default: build a synthetic one")
    ap.add_argument(
        "--model", default=None, help="model dir with keras.keras (default model); default: train"
    )
    ap.add_argument("--days", type=int, default=24)
    ap.add_argument("--rows-per-day", type=int, default=4000)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--throughput-rows", type=int, default=100_000)
    ap.add_argument("--latency-rows", type=int, default=2000)
    ap.add_argument("--tiny-units", default="16", help="hidden units of the tiny model, comma separated")
    ap.add_argument(
        "--default-units", default=None, help="override params train.keras.hidden_units (e.g. 512,256,128)"
    )
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "edge.json"))
    args = ap.parse_args()

    from pipelines.training.models import feature_matrix, load_scorers, quiet_tensorflow

    quiet_tensorflow()
    params = load_params(ROOT / "params.yaml")
    load_before = load_avg()
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench-edge-"))
    features = Path(args.features) if args.features else build_features(
        work, days=args.days, rows_per_day=args.rows_per_day, params=params)  # fmt: skip
    spec = json.loads((features / "spec.json").read_text())
    train = pd.read_parquet(features / "train.parquet")
    train = train[train["label"].notna()]
    test = pd.read_parquet(features / "test.parquet")
    test = test[test["label"].notna()]
    x_train, y_train = feature_matrix(train, spec), train["label"].astype(int).to_numpy()
    x_test, y_test = feature_matrix(test, spec), test["label"].astype(int).to_numpy()
    reps = -(-args.throughput_rows // len(x_test))
    big = np.ascontiguousarray(np.tile(x_test, (reps, 1))[: args.throughput_rows])
    default_units = (
        [int(u) for u in args.default_units.split(",")]
        if args.default_units
        else list(params.train.keras.hidden_units)
    )
    tiny_units = [int(u) for u in args.tiny_units.split(",")]
    if args.model:
        default_model = load_scorers(args.model)["keras"].model
    else:
        default_model = train_mlp(
            x_train, y_train, hidden_units=default_units, epochs=args.epochs, seed=params.seed
        )
    tiny_model = train_mlp(x_train, y_train, hidden_units=tiny_units, epochs=args.epochs, seed=params.seed)
    rows = []
    kw = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test, "big": big,
          "rep_rows": params.quantize.representative_rows, "latency_rows": args.latency_rows, "seed": params.seed,
          "out_dir": work}  # fmt: skip
    rows += bench_model(f"default {default_units}", default_model, **kw)
    rows += bench_model(f"tiny {tiny_units}", tiny_model, **kw)

    d = {r["variant"]: r for r in rows if r["model"].startswith("default")}
    f32, i8 = d["float32"], d["int8"]
    checks = {
        "int8_size_vs_float32": {"value": i8["bytes"] / f32["bytes"], "limit": "<= 0.30",
                                 "passed": i8["bytes"] / f32["bytes"] <= 0.30},
        "int8_roc_auc_loss_vs_keras": {"value": i8["roc_auc_loss"], "limit": "<= 0.005",
                                       "passed": i8["roc_auc_loss"] <= 0.005},
        "int8_vs_float32_throughput_xnnpack": {"value": i8["rows_per_s_xnnpack"] / f32["rows_per_s_xnnpack"],
                                               "limit": ">= 2", "passed": i8["rows_per_s_xnnpack"] >= 2 * f32["rows_per_s_xnnpack"]},
        "int8_vs_float32_throughput_no_xnnpack": {"value": i8["rows_per_s_no_xnnpack"] / f32["rows_per_s_no_xnnpack"],
                                                  "limit": ">= 2 (info)", "passed": i8["rows_per_s_no_xnnpack"] >= 2 * f32["rows_per_s_no_xnnpack"]},
    }  # fmt: skip
    hdr = (f"{'model':<20} {'variant':<16} {'bytes':>9} {'ROC-AUC':>8} {'loss':>8} {'p50 us':>8} {'p99 us':>8} "
           f"{'rows/s xnnpack':>15} {'rows/s plain':>13}")  # fmt: skip
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        plain = "-" if r["rows_per_s_no_xnnpack"] is None else f"{r['rows_per_s_no_xnnpack']:,.0f}"
        print(f"{r['model']:<20} {r['variant']:<16} {r['bytes']:>9,} {r['roc_auc']:>8.4f} {r['roc_auc_loss']:>+8.4f} "
              f"{r['p50_us']:>8.1f} {r['p99_us']:>8.1f} {r['rows_per_s_xnnpack']:>15,.0f} {plain:>13}")  # fmt: skip
    print()
    for k, c in checks.items():
        print(f"{'PASS' if c['passed'] else 'FAIL'}  {k}: {c['value']:.3f} ({c['limit']})")
    load_after = load_avg()
    print(f"\nload average before {load_before}, after {load_after} ({os.cpu_count()} cores); "
          f"{len(x_test)} test rows, {len(big)} rows for throughput, 1 interpreter thread")  # fmt: skip
    result = {
        "rows": rows,
        "checks": checks,
        "test_rows": len(x_test),
        "throughput_rows": len(big),
        "n_features": x_test.shape[1],
        "default_hidden_units": default_units,
        "tiny_hidden_units": tiny_units,
        "representative_rows": params.quantize.representative_rows,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
