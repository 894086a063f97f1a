"""Trained models behind one small interface: load a model directory, score a features frame.

A *features frame* is a split written by the feature stage (``data/features/<split>.parquet``): the
feature-matrix columns (named by ``spec["feature_names"]``, float32), the meta columns (``event_id``,
``event_time``, ``label`` (nullable), ``label_source``, ``label_weight``, ``sample_weight``, ``split``),
the entity key and the raw input columns. Every scorer takes such a frame and returns the probability of
class 1 per row. A frame that lacks the feature columns but has the raw inputs is transformed with the
spec on the fly (the same numpy transform as everywhere else).

Model directory layout (``models/candidate``; a registry version holds the same files)::

    xgboost.ubj          XGBoost booster, UBJ (never pickle)
    xgboost.json         {"best_iteration", "feature_names", "params", "num_boost_round", ...}
    keras.keras          Keras 3 model (TensorFlow backend): features -> probability of class 1
    keras.json           {"history", "distillation": {"enabled", "alpha", "temperature", ...},
                          "class_weight", "architecture", ...}
    baselines.json       {"baseline_random": {...}, "baseline_zero_rule": {...},
                          "baseline_heuristic": {...}}: parameters only, no pickles
    spec.json            copy of the feature spec the models were trained on
    train_metrics.json   valid metrics of every model, distillation comparison, wall times

:func:`load_scorers` loads whatever of these a directory holds; TensorFlow and XGBoost are imported
only when their model is present.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from pipelines.core import storage
from pipelines.core.errors import InputError
from pipelines.edge.featurespec import dumps_spec, loads_spec
from pipelines.features.spec_frame import transform_columns
from pipelines.training.baselines import baselines_from_dict

__all__ = [
    "BASELINES_FILE",
    "KERAS_FILE",
    "KERAS_META",
    "SPEC_FILE",
    "TRAIN_METRICS_FILE",
    "XGB_FILE",
    "XGB_META",
    "KerasScorer",
    "Scorer",
    "XGBoostScorer",
    "booster_params",
    "feature_matrix",
    "labels",
    "load_scorers",
    "load_spec",
    "quiet_tensorflow",
    "read_split",
    "train_mask",
    "weights",
]

log = logging.getLogger(__name__)

XGB_FILE = "xgboost.ubj"
XGB_META = "xgboost.json"
KERAS_FILE = "keras.keras"
KERAS_META = "keras.json"
BASELINES_FILE = "baselines.json"
SPEC_FILE = "spec.json"
TRAIN_METRICS_FILE = "train_metrics.json"


@runtime_checkable
class Scorer(Protocol):
    """Anything that scores a features frame: probability of class 1 per row, float64, shape (n,)."""

    name: str

    def predict(self, frame: pd.DataFrame) -> np.ndarray: ...


# --------------------------------------------------------------------------- frame helpers


def feature_matrix(frame: pd.DataFrame, spec: Mapping[str, Any]) -> np.ndarray:
    """The float32 feature matrix in spec order: the frame's feature columns, or the spec applied to its raw inputs."""
    names = list(spec["feature_names"])
    missing = [n for n in names if n not in frame.columns]
    if not missing:
        return np.ascontiguousarray(frame[names].to_numpy(dtype=np.float32))
    try:
        return transform_columns(spec, frame)
    except KeyError as err:
        raise InputError(
            f"frame has neither the feature columns (missing e.g. {missing[:3]}) nor the raw input {err}; "
            "pass a features frame from data/features/<split>.parquet or the raw event columns"
        ) from None


def train_mask(frame: pd.DataFrame) -> np.ndarray:
    """Rows that can be trained or evaluated on: a known (non-null) label."""
    if "label" not in frame.columns:
        raise InputError("frame has no 'label' column; pass a features frame (data/features/<split>.parquet)")
    return frame["label"].notna().to_numpy()


def labels(frame: pd.DataFrame) -> np.ndarray:
    """The label as int64 (0/1); null labels become -1 (filter with :func:`train_mask` first)."""
    return frame["label"].astype("Int64").fillna(-1).to_numpy(dtype=np.int64)


def weights(frame: pd.DataFrame) -> np.ndarray:
    """Per-row training weight ``label_weight * sample_weight`` (a column that is absent or null counts as 1)."""
    w = np.ones(len(frame), dtype=np.float64)
    for col in ("label_weight", "sample_weight"):
        if col in frame.columns:
            w *= pd.to_numeric(frame[col], errors="coerce").fillna(1.0).to_numpy(dtype=np.float64)
    return w


def load_spec(model_dir: str) -> dict[str, Any]:

    return loads_spec(storage.read_bytes(storage.join(model_dir, SPEC_FILE)))


def quiet_tensorflow() -> None:
    """Silence TensorFlow's C++ logging and oneDNN notice; call before the first TensorFlow import."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def write_model_dir(
    out: str,
    *,
    spec: Mapping[str, Any],
    booster: Any,
    xgb_meta: Mapping[str, Any],
    keras_model: Any | None,
    keras_meta: Mapping[str, Any],
    baselines: Mapping[str, Any],
    metrics: Mapping[str, Any],
) -> None:
    """Write a model directory in this module's layout (the train stage's output, a retrain's candidate)."""
    storage.write_bytes(storage.join(out, XGB_FILE), bytes(booster.save_raw(raw_format="ubj")))
    storage.write_json(storage.join(out, XGB_META), dict(xgb_meta))
    if keras_model is not None:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, KERAS_FILE)
            keras_model.save(path)
            with open(path, "rb") as fh:
                storage.write_bytes(storage.join(out, KERAS_FILE), fh.read())
        storage.write_json(storage.join(out, KERAS_META), dict(keras_meta))
    storage.write_json(storage.join(out, BASELINES_FILE), dict(baselines))
    storage.write_bytes(storage.join(out, SPEC_FILE), dumps_spec(spec).encode("utf-8"))
    storage.write_json(storage.join(out, TRAIN_METRICS_FILE), dict(metrics))


def read_split(features: str, split: str, *, required: bool = True) -> pd.DataFrame | None:
    """``<features>/<split>.parquet`` as a DataFrame (None when absent and not required)."""

    loc = storage.join(features, f"{split}.parquet")
    if not storage.exists(loc):
        if required:
            raise FileNotFoundError(
                f"{loc}: the {split} split is missing; run the feature stage (loopline features)"
            )
        return None
    return storage.read_parquet(loc).to_pandas()


def booster_params(
    params: Mapping[str, Any],
    *,
    eval_metric: str,
    seed: int,
    nthread: int = 0,
    scale_pos_weight: float = 1.0,
) -> dict[str, Any]:
    """The full XGBoost parameter dict used by training and tuning alike (binary:logistic, hist)."""
    out: dict[str, Any] = {
        "objective": "binary:logistic",
        "tree_method": "hist",
        "eval_metric": eval_metric,
        "seed": int(seed),
        "scale_pos_weight": float(scale_pos_weight),
        "verbosity": 0,
        **dict(params),
    }
    if nthread > 0:
        out["nthread"] = int(nthread)
    return out


# --------------------------------------------------------------------------- scorers


class XGBoostScorer:
    """An XGBoost booster predicting with the trees up to its best iteration (early stopping)."""

    name = "xgboost"

    def __init__(self, booster: Any, *, spec: Mapping[str, Any], best_iteration: int) -> None:
        self.booster = booster
        self.spec = spec
        self.best_iteration = int(best_iteration)

    @classmethod
    def from_bytes(cls, raw: bytes, *, spec: Mapping[str, Any], best_iteration: int) -> XGBoostScorer:
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(bytearray(raw))
        return cls(booster, spec=spec, best_iteration=best_iteration)

    def predict_matrix(self, x: np.ndarray) -> np.ndarray:
        import xgboost as xgb

        dm = xgb.DMatrix(x, feature_names=list(self.spec["feature_names"]))
        out = self.booster.predict(dm, iteration_range=(0, self.best_iteration + 1))
        return np.asarray(out, dtype=np.float64)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return self.predict_matrix(feature_matrix(frame, self.spec))


class KerasScorer:
    """A Keras 3 model (TensorFlow backend) on the feature matrix; TensorFlow is imported on first use."""

    name = "keras"

    def __init__(self, model: Any, *, spec: Mapping[str, Any]) -> None:
        self.model = model
        self.spec = spec

    @classmethod
    def from_file(cls, path: str, *, spec: Mapping[str, Any]) -> KerasScorer:
        quiet_tensorflow()
        import keras

        return cls(keras.saving.load_model(path, compile=False), spec=spec)

    def predict_matrix(self, x: np.ndarray, *, batch_size: int = 8192) -> np.ndarray:
        if len(x) == 0:
            return np.zeros(0, dtype=np.float64)
        out = self.model.predict(x, batch_size=batch_size, verbose=0)
        return np.asarray(out, dtype=np.float64).reshape(-1)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return self.predict_matrix(feature_matrix(frame, self.spec))


def load_scorers(model_dir: str) -> dict[str, Scorer]:
    """Every model a directory holds, by name: ``xgboost``, ``keras``, ``baseline_random``,
    ``baseline_zero_rule``, ``baseline_heuristic`` (those whose files exist)."""

    if not storage.exists(storage.join(model_dir, SPEC_FILE)):
        raise FileNotFoundError(
            f"{storage.join(model_dir, SPEC_FILE)}: not a model directory (no feature spec); "
            "run `loopline train` or pass the directory it wrote"
        )
    spec = load_spec(model_dir)
    scorers: dict[str, Scorer] = {}
    xgb_path = storage.join(model_dir, XGB_FILE)
    if storage.exists(xgb_path):
        meta = storage.read_json(storage.join(model_dir, XGB_META))
        if list(meta.get("feature_names", spec["feature_names"])) != list(spec["feature_names"]):
            raise InputError(
                f"{model_dir}: {XGB_META} feature_names differ from {SPEC_FILE}; retrain the model"
            )
        scorers["xgboost"] = XGBoostScorer.from_bytes(
            storage.read_bytes(xgb_path), spec=spec, best_iteration=int(meta["best_iteration"])
        )
    keras_path = storage.join(model_dir, KERAS_FILE)
    if storage.exists(keras_path):
        local = storage.local_path(keras_path)
        if local is None:  # keras loads from a path: stage a remote object in a temp file
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                tmp_path = os.path.join(tmp, KERAS_FILE)
                with open(tmp_path, "wb") as fh:
                    fh.write(storage.read_bytes(keras_path))
                scorers["keras"] = KerasScorer.from_file(tmp_path, spec=spec)
        else:
            scorers["keras"] = KerasScorer.from_file(str(local), spec=spec)
    base_path = storage.join(model_dir, BASELINES_FILE)
    if storage.exists(base_path):
        scorers.update(baselines_from_dict(json.loads(storage.read_bytes(base_path))))
    log.debug("loaded scorers %s from %s", sorted(scorers), model_dir)
    return scorers
