"""The training stage: baselines, XGBoost (the teacher) and a small Keras MLP (the edge model).

Reads ``<features>/{train,valid}.parquet`` and ``spec.json`` (the feature stage), the tuned XGBoost
parameters (``best_params.json`` from the tune stage, optional: the ``train.xgboost.params`` defaults
stand in when it is absent) and writes a model directory (layout in :mod:`pipelines.training.models`).

- Rows: only labelled rows train or validate; the training weight is ``label_weight * sample_weight``.
- Imbalance (``train.imbalance``), train split only: resampling (pipelines/training/imbalance.py) before both
  models, ``scale_pos_weight`` for XGBoost, balanced class weights for Keras. Valid keeps its natural mix.
- XGBoost: ``hist``, early stopping on valid (``eval_metric``); saved as UBJ with its best iteration.
- Keras 3 MLP on the same feature matrix, early stopping on valid PR-AUC with the best weights restored.
  Knowledge distillation: the loss is ``alpha * BCE(label, p) + (1 - alpha) * T^2 * BCE(q_T, p_T)`` where
  ``q_T = sigmoid(teacher_margin / T)`` and ``p_T = sigmoid(student_logit / T)``. With
  ``distillation.compare`` the student is also trained without distillation (alpha = 1), same seed, and
  both valid PR-AUCs are reported; the saved model follows ``distillation.enabled``.
- Curves are logged with DVCLive (``<reports>/dvclive``): Keras epochs as steps, XGBoost's valid metric
  per boosting round as a custom plot.

:func:`train_models` is pure (frames in, models and metrics out); :func:`run_train` does the I/O.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipelines.core import storage
from pipelines.core.config import (
    ImbalanceTrainConfig,
    KerasTrainConfig,
    Params,
    SchemaConfig,
    TrainConfig,
    XGBoostParams,
    XGBoostTrainConfig,
)
from pipelines.core.errors import InputError
from pipelines.edge.featurespec import input_columns, loads_spec
from pipelines.training.baselines import average_precision, baselines_from_dict, fit_baselines
from pipelines.training.imbalance import class_weights, resample, scale_pos_weight
from pipelines.training.models import (
    SPEC_FILE,
    booster_params,
    feature_matrix,
    labels,
    quiet_tensorflow,
    read_split,
    train_mask,
    weights,
    write_model_dir,
)

__all__ = [
    "KerasFit",
    "TrainResult",
    "build_mlp",
    "fit_keras",
    "fit_xgboost",
    "heuristic_candidates",
    "imbalance_weights",
    "resample_train",
    "resolve_xgb_params",
    "run_train",
    "train_models",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- parameters and imbalance


def resolve_xgb_params(defaults: XGBoostParams, best: Mapping[str, Any] | None) -> tuple[dict[str, Any], str]:
    """Tuned parameters (``best_params.json``'s ``xgboost`` mapping) over the params.yaml defaults.

    Returns the merged, validated parameters and their source (``tuned`` or ``defaults``).
    """
    if not best:
        return defaults.model_dump(), "defaults"
    tuned = dict(best.get("xgboost", best))
    unknown = sorted(set(tuned) - set(XGBoostParams.model_fields))
    if unknown:
        raise InputError(
            f"best_params.json: unknown XGBoost parameters {unknown}; tunable: {sorted(XGBoostParams.model_fields)}. "
            "Rerun `loopline tune` with the current params.yaml"
        )
    merged = XGBoostParams.model_validate({**defaults.model_dump(), **tuned})
    return merged.model_dump(), "tuned"


def resample_train(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, *, cfg: ImbalanceTrainConfig, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resample the train split (never valid or test) with pipelines/training/imbalance.py; weights follow rows."""
    if cfg.resample == "none":
        return x, y, w

    res = resample(
        x, y, method=cfg.resample, ratio=cfg.resample_ratio, seed=seed, split="train", sample_weight=w
    )
    log.info("train: resample %s: %d -> %d rows", cfg.resample, len(y), len(res.y))
    return res.X, res.y, res.sample_weight


def imbalance_weights(y: np.ndarray, *, cfg: ImbalanceTrainConfig) -> tuple[dict[int, float], float]:
    """(Keras class weights, XGBoost scale_pos_weight) on the (resampled) train labels."""

    cw = class_weights(y, method="balanced") if cfg.class_weight == "balanced" else {0: 1.0, 1: 1.0}
    spw = scale_pos_weight(y) if cfg.scale_pos_weight == "auto" else float(cfg.scale_pos_weight)
    return cw, spw


def heuristic_candidates(spec: Mapping[str, Any], schema: SchemaConfig, frame: pd.DataFrame) -> list[str]:
    """Raw input columns the one-rule heuristic may use: spec inputs minus time, entity and high-cardinality."""

    skip = {"event_time", schema.entity_key}
    skip |= {c.name for c in schema.columns if c.high_cardinality}
    return [c for c in input_columns(spec) if c not in skip and c in frame.columns]


# --------------------------------------------------------------------------- XGBoost


def fit_xgboost(
    x_tr: np.ndarray,
    y_tr: np.ndarray,
    w_tr: np.ndarray,
    x_va: np.ndarray,
    y_va: np.ndarray,
    *,
    params: Mapping[str, Any],
    cfg: XGBoostTrainConfig,
    scale_pos_weight: float,
    feature_names: Sequence[str],
    seed: int,
    callbacks: Sequence[Any] = (),
) -> tuple[Any, int, list[float]]:
    """Train with early stopping on valid; returns (booster, best_iteration, valid metric per round)."""
    import xgboost as xgb

    names = list(feature_names)
    dtr = xgb.DMatrix(x_tr, label=y_tr, weight=w_tr, feature_names=names)
    dva = xgb.DMatrix(x_va, label=y_va, feature_names=names)
    full = booster_params(
        params, eval_metric=cfg.eval_metric, seed=seed, nthread=cfg.nthread, scale_pos_weight=scale_pos_weight
    )
    history: dict[str, dict[str, list[float]]] = {}
    booster = xgb.train(
        full,
        dtr,
        num_boost_round=cfg.num_boost_round,
        evals=[(dva, "valid")],
        early_stopping_rounds=cfg.early_stopping_rounds,
        evals_result=history,
        verbose_eval=False,
        callbacks=list(callbacks),
    )
    best = getattr(booster, "best_iteration", None)
    best_iteration = int(best) if best is not None else booster.num_boosted_rounds() - 1
    return booster, best_iteration, [float(v) for v in history["valid"][cfg.eval_metric]]


# --------------------------------------------------------------------------- Keras


def build_mlp(n_features: int, *, hidden_units: Sequence[int], dropout: float, seed: int) -> tuple[Any, Any]:
    """(logit model for training, probability model for saving); they share their layers."""
    quiet_tensorflow()
    import keras

    inputs = keras.Input(shape=(n_features,), name="features")
    h = inputs
    for i, units in enumerate(hidden_units):
        h = keras.layers.Dense(units, activation="relu", name=f"dense_{i}")(h)
        if dropout > 0:
            h = keras.layers.Dropout(dropout, seed=seed + i, name=f"dropout_{i}")(h)
    logit = keras.layers.Dense(1, name="logit")(h)
    prob = keras.layers.Activation("sigmoid", name="probability")(logit)
    return keras.Model(inputs, logit, name="loopline_mlp_logit"), keras.Model(
        inputs, prob, name="loopline_mlp"
    )


def _distillation_loss(alpha: float, temperature: float) -> Any:
    import keras
    from keras import ops

    t = float(temperature)

    def loss(y_true: Any, logit: Any) -> Any:
        hard = keras.losses.binary_crossentropy(y_true[:, :1], logit, from_logits=True)
        if alpha >= 1.0:
            return hard
        soft = keras.losses.binary_crossentropy(y_true[:, 1:2], ops.divide(logit, t), from_logits=True)
        return alpha * hard + (1.0 - alpha) * (t * t) * soft

    return loss


@dataclass
class KerasFit:
    model: Any  # probability model (what is saved)
    history: dict[str, list[float]]
    best_epoch: int
    valid_pr_auc: float
    seconds: float


def fit_keras(
    x_tr: np.ndarray,
    y_tr: np.ndarray,
    w_tr: np.ndarray,
    x_va: np.ndarray,
    y_va: np.ndarray,
    *,
    cfg: KerasTrainConfig,
    seed: int,
    teacher_margin: np.ndarray | None = None,
    alpha: float = 1.0,
    temperature: float = 1.0,
) -> KerasFit:
    """Train the MLP; ``teacher_margin`` (XGBoost log-odds on the train rows) turns distillation on."""
    quiet_tensorflow()
    import keras
    import tensorflow as tf

    if cfg.threads > 0:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(cfg.threads)
            tf.config.threading.set_inter_op_parallelism_threads(cfg.threads)
        except RuntimeError:  # already initialised in this process: the first setting stays
            pass
    keras.utils.set_random_seed(seed)
    started = time.perf_counter()
    logit_model, prob_model = build_mlp(
        x_tr.shape[1], hidden_units=cfg.hidden_units, dropout=cfg.dropout, seed=seed
    )
    if teacher_margin is None:
        alpha, soft = 1.0, y_tr.astype(np.float32)
    else:
        soft = (1.0 / (1.0 + np.exp(-np.asarray(teacher_margin, np.float64) / temperature))).astype(
            np.float32
        )
    targets = np.column_stack([y_tr.astype(np.float32), soft])
    logit_model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=cfg.learning_rate),
        loss=_distillation_loss(alpha, temperature),
    )
    track = _valid_pr_auc_callback(
        prob_model, x_va, y_va, patience=cfg.patience, batch_size=max(cfg.batch_size, 8192)
    )
    fit = logit_model.fit(
        x_tr.astype(np.float32),
        targets,
        sample_weight=w_tr.astype(np.float32),
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        shuffle=True,
        verbose=0,
        callbacks=[track],
    )
    track.restore()
    history = {"loss": [float(v) for v in fit.history["loss"]], "val_pr_auc": track.scores}
    return KerasFit(prob_model, history, track.best_epoch, track.best, time.perf_counter() - started)


def _valid_pr_auc_callback(
    prob_model: Any, x: np.ndarray, y: np.ndarray, *, patience: int, batch_size: int
) -> Any:
    """Keras callback: valid PR-AUC each epoch, early stopping on it, best weights kept for ``restore()``."""
    import keras

    class ValidPRAUC(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.x = x.astype(np.float32)
            self.scores: list[float] = []
            self.best, self.best_epoch, self.best_weights = -1.0, -1, None

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            p = prob_model.predict(self.x, batch_size=batch_size, verbose=0).reshape(-1)
            score = average_precision(y, p)
            score = -1.0 if np.isnan(score) else score
            self.scores.append(float(score))
            log.debug(
                "keras epoch %d: loss %.5f valid PR-AUC %.4f", epoch, (logs or {}).get("loss", np.nan), score
            )
            if score > self.best:
                self.best, self.best_epoch, self.best_weights = score, epoch, prob_model.get_weights()
            elif epoch - self.best_epoch >= patience:
                self.model.stop_training = True

        def restore(self) -> None:
            if self.best_weights is not None:
                prob_model.set_weights(self.best_weights)

    return ValidPRAUC()


# --------------------------------------------------------------------------- the stage


@dataclass
class TrainResult:
    booster: Any
    xgb_meta: dict[str, Any]
    keras_model: Any | None
    keras_meta: dict[str, Any]
    baselines: dict[str, dict[str, Any]]
    metrics: dict[str, Any]
    xgb_curve: list[float] = field(default_factory=list)
    keras_histories: dict[str, dict[str, list[float]]] = field(default_factory=dict)


def _valid_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import log_loss, roc_auc_score

    both = len(np.unique(y)) == 2
    return {
        "pr_auc": round(average_precision(y, p), 6),
        "roc_auc": round(float(roc_auc_score(y, p)), 6) if both else float("nan"),
        "log_loss": round(float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1])), 6),
    }


def train_models(
    train: pd.DataFrame,
    valid: pd.DataFrame,
    *,
    spec: Mapping[str, Any],
    cfg: TrainConfig,
    schema: SchemaConfig,
    seed: int,
    best_params: Mapping[str, Any] | None = None,
    train_keras: bool = True,
) -> TrainResult:
    """Fit baselines, XGBoost and Keras on labelled train rows, early-stopped on labelled valid rows."""
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    tr, va = train[train_mask(train)], valid[train_mask(valid)]
    if len(tr) == 0 or len(va) == 0:
        raise InputError(
            f"no labelled rows to train on (train {len(tr)}, valid {len(va)}); "
            "check sampling.label_maturity_days and the labeling stage"
        )
    y_tr, w_tr, y_va = labels(tr), weights(tr), labels(va)
    if len(np.unique(y_tr)) < 2:
        raise InputError(f"train split holds only class {np.unique(y_tr).tolist()}; both classes are needed")
    names = list(spec["feature_names"])
    x_tr, x_va = feature_matrix(tr, spec), feature_matrix(va, spec)

    t0 = time.perf_counter()
    columns = cfg.baselines.heuristic_columns or heuristic_candidates(spec, schema, tr)
    base_doc = fit_baselines(tr, y_tr, w_tr, columns=columns, seed=seed, bins=cfg.baselines.bins)
    seconds["baselines"] = time.perf_counter() - t0

    x_fit, y_fit, w_fit = resample_train(x_tr, y_tr, w_tr, cfg=cfg.imbalance, seed=seed)
    cw, spw = imbalance_weights(y_fit, cfg=cfg.imbalance)
    xgb_params, source = resolve_xgb_params(cfg.xgboost.params, best_params)
    t0 = time.perf_counter()
    booster, best_iteration, curve = fit_xgboost(
        x_fit,
        y_fit,
        w_fit,
        x_va,
        y_va,
        params=xgb_params,
        cfg=cfg.xgboost,
        scale_pos_weight=float(spw),
        feature_names=names,
        seed=seed,
    )
    seconds["xgboost"] = time.perf_counter() - t0
    import xgboost as xgb

    p_xgb = booster.predict(xgb.DMatrix(x_va, feature_names=names), iteration_range=(0, best_iteration + 1))
    valid_metrics = {"xgboost": _valid_metrics(y_va, p_xgb)}
    for name, scorer in baselines_from_dict(base_doc).items():
        valid_metrics[name] = _valid_metrics(y_va, scorer.predict(va))
    xgb_meta = {
        "best_iteration": best_iteration,
        "num_boosted_rounds": booster.num_boosted_rounds(),
        "feature_names": names,
        "params": booster_params(
            xgb_params, eval_metric=cfg.xgboost.eval_metric, seed=seed, scale_pos_weight=float(spw)
        ),
        "params_source": source,
        "num_boost_round": cfg.xgboost.num_boost_round,
        "early_stopping_rounds": cfg.xgboost.early_stopping_rounds,
        "valid_curve": {cfg.xgboost.eval_metric: curve},
    }

    keras_model, keras_meta, histories = None, {}, {}
    distill: dict[str, Any] = {"enabled": cfg.keras.distillation.enabled}
    if train_keras:
        kc = cfg.keras
        dc = kc.distillation
        w_keras = w_fit * np.where(y_fit == 1, cw[1], cw[0])
        fits: dict[str, KerasFit] = {}
        if dc.enabled:
            margin = booster.predict(
                xgb.DMatrix(x_fit, feature_names=names),
                output_margin=True,
                iteration_range=(0, best_iteration + 1),
            )
            fits["distilled"] = fit_keras(
                x_fit,
                y_fit,
                w_keras,
                x_va,
                y_va,
                cfg=kc,
                seed=seed,
                teacher_margin=margin,
                alpha=dc.alpha,
                temperature=dc.temperature,
            )
        if not dc.enabled or dc.compare:
            fits["plain"] = fit_keras(x_fit, y_fit, w_keras, x_va, y_va, cfg=kc, seed=seed)
        chosen = fits["distilled" if dc.enabled else "plain"]
        keras_model = chosen.model
        seconds["keras"] = sum(f.seconds for f in fits.values())
        valid_metrics["keras"] = _valid_metrics(
            y_va, keras_model.predict(x_va, batch_size=8192, verbose=0).reshape(-1)
        )
        for kind, f in fits.items():
            distill[f"valid_pr_auc_{'with' if kind == 'distilled' else 'without'}"] = round(f.valid_pr_auc, 6)
            histories[kind] = f.history
        if "distilled" in fits and "plain" in fits:
            delta = fits["distilled"].valid_pr_auc - fits["plain"].valid_pr_auc
            distill["delta_pr_auc"] = round(delta, 6)
            distill["helps"] = bool(delta > 0)
        distill.update({"alpha": dc.alpha, "temperature": dc.temperature, "compare": dc.compare})
        keras_meta = {
            "architecture": {
                "hidden_units": list(kc.hidden_units),
                "dropout": kc.dropout,
                "n_features": len(names),
                "params": int(keras_model.count_params()),
            },
            "training": {
                "epochs": kc.epochs,
                "batch_size": kc.batch_size,
                "learning_rate": kc.learning_rate,
                "patience": kc.patience,
                "best_epoch": chosen.best_epoch,
            },
            "class_weight": {str(k): round(v, 6) for k, v in cw.items()},
            "distillation": distill,
            "history": histories,
            "feature_names": names,
        }

    seconds["total"] = time.perf_counter() - started
    metrics = {
        "valid": valid_metrics,
        "distillation": distill,
        "xgboost": {"best_iteration": best_iteration, "params_source": source},
        "rows": {
            "train_labelled": len(tr),
            "train_fit": len(y_fit),
            "valid_labelled": len(va),
            "train_positive_rate": round(float((y_tr == 1).mean()), 6),
        },
        "imbalance": {
            "resample": cfg.imbalance.resample,
            "scale_pos_weight": round(float(spw), 6),
            "class_weight": cfg.imbalance.class_weight,
        },
        "wall_seconds": {k: round(v, 3) for k, v in seconds.items()},
    }
    return TrainResult(booster, xgb_meta, keras_model, keras_meta, base_doc, metrics, curve, histories)


def _log_dvclive(result: TrainResult, *, live_dir: str, params: Mapping[str, Any], eval_metric: str) -> None:
    from dvclive import Live

    with Live(dir=live_dir, save_dvc_exp=False, dvcyaml=None) as live:
        live.log_params(dict(params))
        curve = [{"round": i, "valid": v} for i, v in enumerate(result.xgb_curve)]
        if curve:
            live.log_plot(
                "xgboost_valid",
                curve,
                x="round",
                y="valid",
                title=f"XGBoost valid {eval_metric} per boosting round",
            )
        n_epochs = max((len(h["loss"]) for h in result.keras_histories.values()), default=0)
        for epoch in range(n_epochs):
            for kind, h in result.keras_histories.items():
                if epoch < len(h["loss"]):
                    live.log_metric(f"keras_{kind}/loss", h["loss"][epoch])
                    live.log_metric(f"keras_{kind}/valid_pr_auc", h["val_pr_auc"][epoch])
            live.next_step()


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{key}."))
        else:
            out[key] = v if isinstance(v, int | float | str | bool) or v is None else str(v)
    return out


def run_train(
    *,
    features: str,
    best_params: str | None,
    out: str,
    reports: str,
    params: Params,
    train_keras: bool = True,
    dvclive: bool = True,
) -> dict[str, Any]:
    """Read the feature stage's splits, train every model, write the model directory and reports.

    ``train_keras`` False skips the Keras model (a retrain with ``retrain.keras: false``); ``dvclive`` False
    skips the DVCLive curves (a retrain's candidate is no DVC experiment)."""

    started = time.perf_counter()
    spec = loads_spec(storage.read_bytes(storage.join(features, SPEC_FILE)))
    train, valid = read_split(features, "train"), read_split(features, "valid")
    assert train is not None and valid is not None
    best = None
    if best_params and storage.exists(best_params):
        best = storage.read_json(best_params)
        log.info("train: tuned XGBoost parameters from %s", best_params)
    else:
        log.info("train: no tuned parameters at %s; using train.xgboost.params", best_params)
    result = train_models(train, valid, spec=spec, cfg=params.train, schema=params.schema, seed=params.seed,
                          best_params=best, train_keras=train_keras)  # fmt: skip
    result.metrics["wall_seconds"]["stage"] = round(time.perf_counter() - started, 3)
    write_model_dir(out, spec=spec, booster=result.booster, xgb_meta=result.xgb_meta,
                    keras_model=result.keras_model, keras_meta=result.keras_meta, baselines=result.baselines,
                    metrics=result.metrics)  # fmt: skip
    storage.write_json(storage.join(reports, "metrics.json"), result.metrics)
    live_dir = storage.local_path(storage.join(reports, "dvclive")) if dvclive else None
    if live_dir is not None:
        _log_dvclive(
            result,
            live_dir=str(live_dir),
            params=_flat(params.train.model_dump()),
            eval_metric=params.train.xgboost.eval_metric,
        )
    v = result.metrics["valid"]
    log.info(
        "train: valid PR-AUC xgboost %.4f keras %s heuristic %.4f zero-rule %.4f (%.1f s)",
        v["xgboost"]["pr_auc"],
        v.get("keras", {}).get("pr_auc"),
        v["baseline_heuristic"]["pr_auc"],
        v["baseline_zero_rule"]["pr_auc"],
        result.metrics["wall_seconds"]["stage"],
    )
    return result.metrics
