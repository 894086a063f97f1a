"""Test support for the quantize, edge and batch-prediction tests: a small real Keras model trained on the
features of the session's synthetic lake (built by the real feature stage, see eval_support), written in the
model-directory layout of pipelines.training.models (keras.keras + spec.json, plus XGBoost when asked).

Not a conftest: the tests import it, so the fixtures stay next to the tests that use them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd


def train_small_keras(
    features: Path,
    out: Path,
    *,
    hidden_units: Sequence[int] = (64, 32),
    epochs: int = 4,
    seed: int = 0,
) -> Path:
    """A real MLP (pipelines.training.train.build_mlp: logit layer + sigmoid) fitted for a few epochs; keras.keras +
    spec.json in ``out``."""
    from pipelines.training.models import quiet_tensorflow

    quiet_tensorflow()
    import keras

    from pipelines.training.train import build_mlp

    spec = json.loads((features / "spec.json").read_text())
    names = list(spec["feature_names"])
    train = pd.read_parquet(features / "train.parquet")
    train = train[train["label"].notna()]
    x = train[names].to_numpy(np.float32)
    y = train["label"].astype(np.float32).to_numpy()
    keras.utils.set_random_seed(seed)
    logit_model, prob_model = build_mlp(x.shape[1], hidden_units=hidden_units, dropout=0.0, seed=seed)
    pos = max(float(y.mean()), 1e-3)
    logit_model.compile(
        optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.BinaryCrossentropy(from_logits=True)
    )
    w = np.where(y == 1, 0.5 / pos, 0.5 / (1 - pos)).astype(np.float32)
    logit_model.fit(x, y, sample_weight=w, epochs=epochs, batch_size=256, verbose=0, shuffle=True)
    out.mkdir(parents=True, exist_ok=True)
    prob_model.save(out / "keras.keras")
    shutil.copy(features / "spec.json", out / "spec.json")
    return out


def write_rows_csv(frame: pd.DataFrame, columns: Sequence[str], path: Path) -> Path:
    """Raw input rows as CSV text, the way a device would receive them: ISO-8601 times, repr floats (exact),
    empty cells for missing values. Written with the csv module, independently of the edge runtime."""
    import csv

    def cell(v: object) -> str:
        if v is None or v is pd.NaT or (isinstance(v, float) and np.isnan(v)):
            return ""
        if isinstance(v, pd.Timestamp):
            return v.isoformat()
        if isinstance(v, float | np.floating):
            return repr(float(v))
        return str(v)

    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(columns)
        for row in frame[list(columns)].astype(object).itertuples(index=False):
            w.writerow([cell(v) for v in row])
    return path


_CASES: dict[str, dict[str, Path]] = {}


def edge_case(tmp_path_factory, synthetic_lake: Path, params) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    """Built once per test session (memoized here): the session lake's features, a small Keras + XGBoost model
    directory and its quantized variants (all four written, gate thresholds relaxed to publish all)."""
    key = str(synthetic_lake)
    if key in _CASES:
        return _CASES[key]
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    import eval_support

    from pipelines.serving.quantize import run_quantize

    base = tmp_path_factory.mktemp("edge_case")
    features = eval_support.build_features(synthetic_lake / "lake", base / "build", params)
    model = train_small_keras(features, base / "model", hidden_units=(32, 16), epochs=3)
    eval_support.make_candidate(features, model)
    open_gate = params.quantize.gate.model_copy(
        update={k: 1.0 for k in params.quantize.gate.model_fields if k.startswith("max") or "max_" in k}
        | {k: 0.0 for k in params.quantize.gate.model_fields if "min_" in k}
    )
    # the subject here is conversion and the runtime: the small model's behavioural verdict is not tested
    cfg = params.quantize.model_copy(
        update={"gate": open_gate, "representative_rows": 500, "require_behavioural": False}
    )
    run_quantize(features=str(features), model=str(model), out=str(base / "tflite"), reports=str(base / "rq"),
                 cfg=cfg, evaluate_cfg=params.evaluate, seed=0)  # fmt: skip
    _CASES[key] = {"base": base, "features": features, "model": model, "tflite": base / "tflite"}
    return _CASES[key]
