"""Retrain stage: stateful by default (continue from the champion), a stateless refit on a schedule.

``loopline retrain`` runs when the monitor decides (Airflow's retrain DAG, or ``dvc repro`` in ``auto``
mode, which does nothing, cheaply, when ``decision.json`` says no retrain). Each run:

1. **Mode** (:func:`choose_mode`): *stateful* unless this is the ``retrain.refit_every``-th retrain, the
   champion has grown past ``retrain.max_trees`` trees, there is no champion, or ``--mode`` says otherwise.
   Plain stateful updates drift away from full retraining on seasonal data (issue 6: -0.06 ROC-AUC on one
   data set), while updates plus a scheduled refit held within 0.01 at 3-6x less CPU; a refit also resets
   the model's size, which is what a continuation's cost grows with.
2. **Data**: the lake, labels as known at the cutoff (``label_time <= cutoff``), split by time exactly as
   the sampling stage does (params ``sampling``: ``[train][gap][valid][gap][test][immature tail]``). A
   stateful update trains on the train-window rows *since the watermark* (the end of the data the champion
   has learned), plus a replay sample of older rows (``retrain.replay_fraction`` of the new rows, from the
   ``retrain.replay_days`` before the watermark) so that the added trees do not forget the older mix. A
   refit runs the stage functions ``dvc repro`` runs (sample, label, features: weak and hand labels
   included) as of the cutoff, so it learns from exactly what a fresh pipeline run would; their outputs
   stay under ``<features-out>/inputs/``.
3. **Stateful XGBoost** (:func:`continue_xgboost`): the champion's trees (cut at its best iteration) are
   kept and ``retrain.stateful_rounds`` trees are *added* on the new rows (``xgb.train(xgb_model=...)``),
   with the champion's own parameters. Adding trees is the default (``retrain.xgboost_method``) because it
   can learn a pattern the old trees never split on (the synthetic drift brings a new fraud pattern);
   ``refresh_leaf`` only re-estimates the leaf values of the existing trees (cheap, no new splits, the size
   stays constant) and suits a drift in base rates; ``refresh_and_add`` does both. The champion's feature
   spec is KEPT (a new spec would change the inputs under the trees); new rows are transformed with it.
   **Stateful Keras**: fine-tuned from the champion's weights for ``retrain.keras_epochs`` epochs at
   ``train.keras.learning_rate x retrain.keras_lr_factor`` (hard labels, balanced class weights).
4. The candidate takes the same path as a fresh model, through the same stage functions: evaluation
   (``run_evaluate``: baselines refitted on the new rows, calibration, slices, behavioural tests, the
   champion re-scored on the same holdout),
   the promotion gate and the registry (``run_register``; lineage records the parent version of a stateful
   update), then TFLite quantization (``run_quantize``) of a promoted candidate's Keras model.
   A stateful candidate refused by the gate is replaced by a refit (``retrain.refit_on_gate_failure``).
5. **Watermark** (``<registry>/retrain_state.json``, written atomically through pipelines.core.storage): moved
   to the candidate's train-window end ONLY when the candidate became champion. An empty window, a failed
   fit or a gate refusal leave it (and the refit counter) where they were, so the next run sees the data
   again. A champion promoted by another path (the train stage) resets the state to its own window.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipelines.core import storage
from pipelines.core.config import FeatureAggregatesConfig, Params, RetrainConfig, SamplingConfig, SchemaConfig
from pipelines.core.errors import InputError
from pipelines.data.etl import lake_dates
from pipelines.data.sampling import SplitWindows, compute_windows, labels_at_cutoff, run_sampling
from pipelines.evaluation.evaluate import run_evaluate
from pipelines.features.build import (
    _attach_aggregates,
    history_table,
    parse_window,
    run_features,
    transform_columns,
    write_feature_splits,
)
from pipelines.labeling.label import run_labeling
from pipelines.registry.store import Registry, file_sha256, load_champion, run_register
from pipelines.serving.quantize import run_quantize
from pipelines.training.baselines import fit_baselines
from pipelines.training.models import (
    KERAS_FILE,
    XGB_META,
    feature_matrix,
    labels,
    quiet_tensorflow,
    read_split,
    weights,
    write_model_dir,
)
from pipelines.training.train import (
    _valid_pr_auc_callback,
    heuristic_candidates,
    imbalance_weights,
    run_train,
)

__all__ = [
    "STATE_FILE",
    "RetrainError",
    "RetrainState",
    "choose_mode",
    "continue_xgboost",
    "finetune_keras",
    "replay_sample",
    "run_retrain",
]

log = logging.getLogger(__name__)

STATE_FILE = "retrain_state.json"
HISTORY_KEEP = 50


class RetrainError(RuntimeError):
    """The retrain cannot produce a candidate (empty window, one class, no model); the watermark stays."""


class NotEnoughNewData(RuntimeError):
    """Too few matured labels since the watermark: nothing to learn from yet (not a failure)."""


# --------------------------------------------------------------------------- state and mode (pure)


@dataclass(frozen=True)
class RetrainState:
    """What the champion has learned: the watermark (rows before it are trained on) and the refit schedule."""

    champion: str | None = None
    watermark: str | None = None  # ISO UTC datetime
    updates_since_refit: int = 0
    retrains: int = 0
    history: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["history"] = list(self.history)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> RetrainState:
        d = dict(d or {})
        return cls(
            d.get("champion"),
            d.get("watermark"),
            int(d.get("updates_since_refit", 0)),
            int(d.get("retrains", 0)),
            tuple(d.get("history", ())),
        )

    def advanced(
        self, *, champion: str, watermark: dt.datetime, mode: str, entry: Mapping[str, Any]
    ) -> RetrainState:
        """The state after a successful retrain (the candidate is the new champion)."""
        since = 0 if mode == "stateless" else self.updates_since_refit + 1
        hist = (*self.history, dict(entry))[-HISTORY_KEEP:]
        return RetrainState(champion, watermark.isoformat(), since, self.retrains + 1, hist)


def choose_mode(
    *, requested: str, cfg: RetrainConfig, state: RetrainState, n_trees: int | None, has_champion: bool
) -> tuple[str, str]:
    """(stateful | stateless, why). ``n_trees``: the champion's boosted rounds (None: no XGBoost model)."""
    if requested not in ("auto", "stateful", "stateless"):
        raise InputError(f"--mode {requested!r}: expected auto, stateful or stateless")
    if not has_champion:
        return "stateless", "no champion to continue from: a fresh fit"
    if requested == "stateless":
        return "stateless", "requested (--mode stateless)"
    if n_trees is None:
        return "stateless", "the champion has no XGBoost model to continue"
    if requested == "stateful":
        return "stateful", "requested (--mode stateful)"
    if state.updates_since_refit + 1 >= cfg.refit_every:
        return "stateless", (
            f"scheduled refit: {state.updates_since_refit} stateful update(s) since the last refit "
            f"(retrain.refit_every = {cfg.refit_every})"
        )
    if n_trees >= cfg.max_trees:
        return "stateless", f"the champion has {n_trees} trees >= retrain.max_trees = {cfg.max_trees}"
    return "stateful", (
        f"stateful update {state.updates_since_refit + 1} of {cfg.refit_every - 1} before the next refit"
    )


def replay_sample(old: pd.DataFrame, n_new: int, *, fraction: float, seed: int) -> pd.DataFrame:
    """A uniform sample (seeded) of ``fraction * n_new`` older labelled rows, in time order."""
    k = min(len(old), round(fraction * n_new))
    if k <= 0:
        return old.iloc[:0]
    idx = np.sort(np.random.default_rng(seed).choice(len(old), size=k, replace=False))
    return old.iloc[idx]


# --------------------------------------------------------------------------- continuation (pure)


def continue_xgboost(
    booster: Any,
    x: np.ndarray,
    y: np.ndarray,
    w: np.ndarray | None,
    *,
    params: Mapping[str, Any],
    rounds: int,
    method: str,
    feature_names: Sequence[str],
    best_iteration: int | None = None,
) -> Any:
    """A new booster: the champion's trees (up to ``best_iteration``) continued on (x, y).

    ``add_trees``: ``rounds`` trees added; ``refresh_leaf``: the same trees, leaf values re-estimated on the
    new rows; ``refresh_and_add``: both. The champion's booster is not modified."""
    import xgboost as xgb

    if method not in ("add_trees", "refresh_leaf", "refresh_and_add"):
        raise InputError(
            f"retrain.xgboost_method {method!r}: expected add_trees, refresh_leaf or refresh_and_add"
        )
    if len(y) == 0:
        raise RetrainError("no labelled rows to continue training on")
    n = booster.num_boosted_rounds()
    base = (
        booster[: best_iteration + 1]
        if best_iteration is not None and best_iteration + 1 < n
        else booster.copy()
    )
    dtrain = xgb.DMatrix(x, label=y, weight=w, feature_names=list(feature_names))
    p = {k: v for k, v in params.items() if k not in ("process_type", "updater", "refresh_leaf")}
    if method in ("refresh_leaf", "refresh_and_add"):
        refresh = {**p, "process_type": "update", "updater": "refresh", "refresh_leaf": True}
        base = xgb.train(refresh, dtrain, num_boost_round=base.num_boosted_rounds(), xgb_model=base)
    if method in ("add_trees", "refresh_and_add"):
        base = xgb.train({**p, "process_type": "default"}, dtrain, num_boost_round=rounds, xgb_model=base)
    return base


def finetune_keras(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    x_va: np.ndarray,
    y_va: np.ndarray,
    *,
    learning_rate: float,
    epochs: int,
    batch_size: int,
    patience: int,
    seed: int,
) -> tuple[Any, dict[str, Any]]:
    """Fine-tune the champion's probability model from its weights; best valid PR-AUC epoch kept."""

    quiet_tensorflow()
    import keras

    keras.utils.set_random_seed(seed)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate), loss="binary_crossentropy")
    track = _valid_pr_auc_callback(model, x_va, y_va, patience=patience, batch_size=max(batch_size, 8192))
    fit = model.fit(
        x.astype(np.float32), y.astype(np.float32), sample_weight=w.astype(np.float32), epochs=epochs,
        batch_size=batch_size, shuffle=True, verbose=0, callbacks=[track],
    )  # fmt: skip
    track.restore()
    return model, {
        "epochs": epochs,
        "learning_rate": learning_rate,
        "best_epoch": track.best_epoch,
        "history": {"loss": [float(v) for v in fit.history["loss"]], "val_pr_auc": track.scores},
    }


# --------------------------------------------------------------------------- frames


def _lake_columns(schema: SchemaConfig) -> list[str]:
    return ["event_id", "event_time", *[c.name for c in schema.columns], "label", "label_time"]


def _between(frame: pd.DataFrame, start: dt.datetime, end: dt.datetime) -> pd.DataFrame:
    t = pd.to_datetime(frame["event_time"], utc=True)
    return frame[(t >= pd.Timestamp(start)) & (t < pd.Timestamp(end))].reset_index(drop=True)


def _labelled(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["label"].notna()].reset_index(drop=True)


def _with_meta(frame: pd.DataFrame, split: str) -> pd.DataFrame:
    out = frame.copy()
    out["label_source"] = pd.Series("natural", index=out.index, dtype=object).where(
        out["label"].notna(), None
    )
    out["label_weight"] = 1.0
    out["sample_weight"] = 1.0
    out["split"] = split
    return out


def _agg_cfg(params: Params, spec: Mapping[str, Any] | None) -> Any:
    """The features config whose aggregates match ``spec`` (stateful: the kept spec's), else params."""

    if spec is None:
        return params.features
    a = spec.get("aggregates") or {}
    if not a.get("columns"):
        return params.features.model_copy(update={"aggregates": FeatureAggregatesConfig(enabled=False)})
    agg = FeatureAggregatesConfig(
        enabled=True, windows=list(a["windows"]), value_column=a.get("value_column")
    )
    return params.features.model_copy(update={"aggregates": agg})


def _history_start(params: Params, spec: Mapping[str, Any] | None, start: dt.datetime) -> dt.datetime:

    cfg = _agg_cfg(params, spec).aggregates
    if not cfg.enabled:
        return start
    return start - dt.timedelta(seconds=max(parse_window(w) for w in cfg.windows))


# --------------------------------------------------------------------------- the stage (I/O edge)


def _read_state(registry: str) -> RetrainState:
    loc = storage.join(registry, STATE_FILE)
    return RetrainState.from_dict(storage.read_json(loc)) if storage.exists(loc) else RetrainState()


def _champion_window_end(reg: Any, version: str) -> dt.datetime | None:
    ev = reg.read_json(version, "evaluation.json") or {}
    win = (ev.get("data_window") or reg.lineage(version).get("data_window") or {}).get("train") or {}
    end = win.get("end")
    if not end:
        return None
    t = pd.Timestamp(end)
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return (t + pd.Timedelta(microseconds=1)).to_pydatetime()


def _skip_report(reason: str, decision: Mapping[str, Any] | None) -> dict[str, Any]:
    return {"ran": False, "status": "skipped", "reason": reason,
            "decision_window": (decision or {}).get("window")}  # fmt: skip


def _clear(folder: str) -> None:
    for f in storage.list_files(folder, recursive=True):
        storage.delete(f)


def run_retrain(
    *,
    lake: str,
    registry: str,
    features_out: str,
    out: str,
    reports: str,
    params: Params,
    mode: str | None = None,
    decision: str | None = None,
    as_of: dt.date | None = None,
    created_at: dt.datetime | None = None,
    git: Mapping[str, Any] | None = None,
    best_params: str | None = None,
    hand_labels: str | None = None,
) -> dict[str, Any]:
    """One retrain: stateful update or stateless refit, evaluate, gate, register, quantize, watermark.

    Writes ``<reports>/retrain.json`` (and ``<out>/retrain.json``) in every case, also when skipped."""
    cfg = params.retrain
    requested = mode or cfg.mode
    started, cpu0 = time.perf_counter(), time.process_time()
    report_loc = storage.join(reports, "retrain.json")
    for folder in (out, features_out):  # the stage's declared outputs exist whatever the outcome
        storage.ensure_dir(folder)
    if requested == "auto" and decision is not None:
        doc = storage.read_json(decision) if storage.exists(decision) else None
        if doc is None or not doc.get("retrain"):
            why = f"{decision}: " + ("absent (no monitor run yet)" if doc is None else "retrain = false")
            skipped = _skip_report(why + "; nothing to do (--mode stateful|stateless forces a run)", doc)
            storage.write_json(report_loc, skipped)
            for folder in (out, features_out):  # the stage's declared outputs exist in every case
                storage.write_json(storage.join(folder, "retrain.json"), skipped)
            log.info("retrain skipped: %s", skipped["reason"])
            return skipped

    reg = Registry(registry)
    created_at = created_at or dt.datetime.now(dt.UTC)
    champion = reg.alias("champion") if storage.exists(registry) else None
    state = _read_state(registry)
    if champion is not None and state.champion != champion:
        wm = _champion_window_end(reg, champion)
        log.info("retrain: champion %s is new to the retrain state; watermark from its train window: %s",
                 champion, wm)  # fmt: skip
        state = RetrainState(champion, wm.isoformat() if wm else None, 0, state.retrains, state.history)
    n_trees = None
    if champion is not None:
        meta = reg.read_json(champion, "xgboost.json")
        if meta is not None:
            n_trees = int(meta.get("best_iteration", meta.get("num_boosted_rounds", 0))) + 1
    chosen, why = choose_mode(requested=requested, cfg=cfg, state=state, n_trees=n_trees,
                              has_champion=champion is not None)  # fmt: skip
    attempts: list[dict[str, Any]] = []
    result: dict[str, Any] | None = None
    for attempt_mode, attempt_why in ((chosen, why), ("stateless", "the stateful candidate failed the gate")):
        if attempts and not (
            attempts[-1]["mode"] == "stateful"
            and attempts[-1].get("status") in ("rejected", "challenger")
            and cfg.refit_on_gate_failure
        ):
            break
        try:
            result = _attempt(lake=lake, registry=registry, reg=reg, features_out=features_out, out=out,
                              reports=reports, params=params, mode=attempt_mode, why=attempt_why,
                              champion=champion, state=state, as_of=as_of, created_at=created_at, git=git,
                              best_params=best_params, hand_labels=hand_labels)  # fmt: skip
        except NotEnoughNewData as err:
            result = {"mode": attempt_mode, "why": attempt_why, "status": "waiting", "detail": str(err)}
            log.warning(
                "retrain (%s) is waiting for data: %s; the watermark stays at %s",
                attempt_mode,
                err,
                state.watermark,
            )
        except RetrainError as err:
            result = {"mode": attempt_mode, "why": attempt_why, "status": "failed", "detail": str(err)}
            log.error(
                "retrain (%s) failed: %s; the watermark stays at %s", attempt_mode, err, state.watermark
            )
        attempts.append(result)
        if result.get("status") in ("failed", "waiting"):
            break
    assert result is not None
    final = dict(result)
    final["ran"] = True
    final["attempts"] = [
        {k: a.get(k) for k in ("mode", "why", "status", "version", "detail")} for a in attempts
    ]
    final["watermark_before"] = state.watermark
    if result.get("status") == "champion":
        wm = dt.datetime.fromisoformat(result["train_window"]["end"])
        entry = {"at": created_at.isoformat(), "version": result["version"], "mode": result["mode"],
                 "parent": result.get("parent_version"), "watermark": wm.isoformat()}  # fmt: skip
        new_state = state.advanced(champion=result["version"], watermark=wm, mode=result["mode"], entry=entry)
        storage.write_json(storage.join(registry, STATE_FILE), new_state.to_dict())  # atomic
        final["watermark_after"] = new_state.watermark
        final["quantize"] = _quantize(params=params, features_out=features_out, out=out, reports=reports,
                                      registry=registry, version=result["version"])  # fmt: skip
    else:
        final["watermark_after"] = state.watermark
    final["cpu_seconds"] = round(time.process_time() - cpu0, 3)
    final["wall_seconds"] = round(time.perf_counter() - started, 3)
    storage.write_json(report_loc, final)
    storage.write_json(storage.join(out, "retrain.json"), final)
    log.info("retrain: %s (%s) -> %s; watermark %s -> %s", final.get("mode"), final.get("why"),
             final.get("status"), final["watermark_before"], final["watermark_after"])  # fmt: skip
    return final


def _quantize(
    *, params: Params, features_out: str, out: str, reports: str, registry: str, version: str
) -> Any:
    """TFLite variants of the promoted candidate's Keras model, attached to its registry version."""

    if not params.retrain.quantize:
        return {"skipped": "retrain.quantize is false"}
    if not storage.exists(storage.join(out, KERAS_FILE)):
        return {"skipped": "no Keras model in the candidate (retrain.keras false)"}
    try:
        r = run_quantize(features=features_out, model=out, out=storage.join(reports, "tflite"),
                         reports=storage.join(reports, "quantize"), cfg=params.quantize,
                         evaluate_cfg=params.evaluate, seed=params.seed, registry=registry, version=version)  # fmt: skip
        return {"published": r.get("published"), "unpublished": r.get("unpublished")}
    except Exception as err:  # the candidate is champion already; the edge variants can be redone alone
        log.error("retrain: quantization of %s failed (%s); run `loopline quantize --registry %s --version %s`",
                  version, err, registry, version)  # fmt: skip
        return {"error": str(err)}


def _attempt(
    *,
    lake: str,
    registry: str,
    reg: Any,
    features_out: str,
    out: str,
    reports: str,
    params: Params,
    mode: str,
    why: str,
    champion: str | None,
    state: RetrainState,
    as_of: dt.date | None,
    created_at: dt.datetime,
    git: Mapping[str, Any] | None,
    best_params: str | None,
    hand_labels: str | None,
) -> dict[str, Any]:

    schema, cfg = params.schema, params.retrain
    dates = lake_dates(lake)
    if not dates:
        raise RetrainError(f"{lake}: no partitions; run `loopline etl` first")
    scfg = params.sampling.model_copy(update={"as_of": as_of or params.sampling.as_of})
    try:
        windows = compute_windows(
            scfg, oldest=dt.date.fromisoformat(dates[0]), newest=dt.date.fromisoformat(dates[-1])
        )
    except ValueError as err:
        raise RetrainError(str(err)) from None
    cutoff = windows.cutoff
    train_start, train_end = windows.train
    c0 = time.process_time()
    kept_spec = champ_scorers = None
    if mode == "stateful":
        assert champion is not None
        champ_scorers, kept_spec = reg.load_version(champion)  # verified bytes only
        if state.watermark is None:
            raise RetrainError(f"champion {champion} records no train window; run a refit (--mode stateless)")
        new_start = max(dt.datetime.fromisoformat(state.watermark), train_start)
        if new_start >= train_end:
            raise NotEnoughNewData(
                f"no new data: the watermark {state.watermark} is at or after the train window's end "
                f"{train_end.isoformat()} (cutoff {cutoff.isoformat()}); wait for more matured labels"
            )
        read_from = min(new_start - dt.timedelta(days=cfg.replay_days), train_start)
    else:
        new_start = read_from = train_start
    _clear(features_out)
    if mode == "stateless":  # the sample, label and features stages, as dvc.yaml runs them
        replayed = 0
        n_new = _refit_features(lake=lake, features_out=features_out, reports=reports, params=params,
                                sampling=scfg, hand_labels=hand_labels)  # fmt: skip
    else:
        assert kept_spec is not None
        spec, n_new, replayed = _stateful_features(lake=lake, features_out=features_out, params=params,
                                                   windows=windows, new_start=new_start, read_from=read_from,
                                                   kept_spec=kept_spec)  # fmt: skip
    # read back what training, evaluation and quantization read: one frame format everywhere
    train_f, valid_f, test_f = (read_split(features_out, s) for s in ("train", "valid", "test"))
    assert train_f is not None and valid_f is not None and test_f is not None
    _clear(out)
    info: dict[str, Any] = {"mode": mode, "why": why, "rows": {"new": n_new, "replayed": replayed,
                            "valid": len(valid_f), "test": len(test_f)}}  # fmt: skip
    if mode == "stateless":
        # a refit is the train stage on the retrain's features
        run_train(features=features_out, best_params=best_params, out=out, reports=storage.join(reports, "train"),
                  params=params, train_keras=cfg.keras, dvclive=False)  # fmt: skip
        parent = None
    else:
        assert champ_scorers is not None and champion is not None

        tr = train_f[train_f["label"].notna()]
        va = valid_f[valid_f["label"].notna()]
        x, y, w = feature_matrix(tr, spec), labels(tr), weights(tr)
        xs = champ_scorers["xgboost"]
        meta = reg.read_json(champion, "xgboost.json") or {}
        xgb_params = dict(meta.get("params") or {})
        if not xgb_params:
            raise RetrainError(
                f"champion {champion}: xgboost.json records no params; refit (--mode stateless)"
            )
        booster = continue_xgboost(xs.booster, x, y, w, params=xgb_params, rounds=cfg.stateful_rounds,
                                   method=cfg.xgboost_method, feature_names=spec["feature_names"],
                                   best_iteration=xs.best_iteration)  # fmt: skip
        n = booster.num_boosted_rounds()
        xgb_meta = {**meta, "best_iteration": n - 1, "num_boosted_rounds": n, "parent_version": champion,
                    "continuation": {"method": cfg.xgboost_method, "rounds": cfg.stateful_rounds,
                                     "trees_before": xs.best_iteration + 1, "rows": len(y)}}  # fmt: skip
        columns_h = params.train.baselines.heuristic_columns or heuristic_candidates(spec, schema, tr)
        base_doc = fit_baselines(
            tr, y, w, columns=columns_h, seed=params.seed, bins=params.train.baselines.bins
        )
        keras_model, keras_meta = None, {}
        if cfg.keras and "keras" in champ_scorers:
            cw, _ = imbalance_weights(y, cfg=params.train.imbalance)
            kc = params.train.keras
            keras_model, ft = finetune_keras(
                champ_scorers["keras"].model, x, y, w * np.where(y == 1, cw[1], cw[0]),
                feature_matrix(va, spec), labels(va), learning_rate=kc.learning_rate * cfg.keras_lr_factor,
                epochs=cfg.keras_epochs, batch_size=kc.batch_size, patience=kc.patience, seed=params.seed,
            )  # fmt: skip
            keras_meta = {
                **(reg.read_json(champion, "keras.json") or {}),
                "finetune": ft,
                "parent_version": champion,
            }
        metrics = {"retrain": info, "cpu_seconds_fit": round(time.process_time() - c0, 3)}
        write_model_dir(out, spec=spec, booster=booster, xgb_meta=xgb_meta, keras_model=keras_model,
                        keras_meta=keras_meta, baselines=base_doc, metrics=metrics)  # fmt: skip
        parent = champion
    info["cpu_seconds_train"] = round(time.process_time() - c0, 3)
    # evaluation, gate, registry: the stage functions dvc.yaml's evaluate and register stages run, on the
    # candidate's features and model directories; the champion is re-scored on the same holdout
    champ = load_champion(storage.join(registry, "champion")) if champion is not None else None
    fit_start = train_start if mode == "stateless" else _spec_fit_start(spec, fallback=new_start)
    train_window = {"start": fit_start.isoformat(), "end": train_end.isoformat()}
    eval_dir = storage.join(reports, "evaluation")
    evaluation = run_evaluate(
        features=features_out, model=out, out=eval_dir, cfg=params.evaluate, seed=params.seed, champion=champ,
        annotate={
            # the rows the model has seen: for a stateful update the champion's window extended to the new end
            "data_window": {"train": {"start": fit_start.isoformat(),
                                      "end": (train_end - dt.timedelta(microseconds=1)).isoformat()}},
            "retrain": {**info, "parent_version": parent, "cutoff": cutoff.isoformat(),
                        "new_rows_window": {"start": new_start.isoformat(), "end": train_end.isoformat()}},
        },
    )  # fmt: skip
    reg_result = run_register(model=out, evaluation=eval_dir, registry=registry, features=features_out,
                              gate_cfg=params.gate, evaluate_cfg=params.evaluate, seed=params.seed,
                              created_at=created_at, git=git, dvc_lock_sha256=file_sha256("dvc.lock"),
                              parent_version=parent)  # fmt: skip
    return {
        **info,
        "status": reg_result["status"],
        "passed": reg_result["passed"],
        "version": reg_result["version"],
        "reasons": reg_result["reasons"],
        "parent_version": parent,
        "champion_before": reg_result["champion_before"],
        "champion_after": reg_result["champion_after"],
        "train_window": train_window,
        "cutoff": cutoff.isoformat(),
        "metrics": evaluation["summary"],
        "trees": int(_n_trees(out)),
    }


def _require_new_rows(n: int, positives: int, *, window: str, cfg: RetrainConfig) -> None:
    if n < cfg.min_new_rows or positives in (0, n):
        raise NotEnoughNewData(
            f"{n} labelled row(s) in {window}, {positives} positive: need >= retrain.min_new_rows = "
            f"{cfg.min_new_rows} of both classes; load more days or wait for labels to mature"
        )


def _refit_features(
    *, lake: str, features_out: str, reports: str, params: Params, sampling: SamplingConfig,
    hand_labels: str | None,
) -> int:  # fmt: skip
    """A refit's features: the sample, label and features stages that dvc.yaml runs, on the lake as of the
    cutoff. Their intermediate outputs stay under ``<features_out>/inputs/`` (what the refit learned from).
    Returns the train split's labelled row count."""
    inputs = storage.join(features_out, "inputs")
    training, labeled = storage.join(inputs, "training"), storage.join(inputs, "labeled")
    try:
        sampled = run_sampling(lake=lake, out=training, cfg=sampling, schema=params.schema, seed=params.seed,
                               progress=False)  # fmt: skip
        train = sampled["counts"]["train"]
        w = sampled["windows"]["train"]
        _require_new_rows(train["labelled"], train["positives"], window=f"{w['start']}..{w['end']}",
                          cfg=params.retrain)  # fmt: skip
        run_labeling(training=training, out=labeled, reports=storage.join(reports, "labeling"),
                     hand_labels=hand_labels or storage.join(inputs, "no_hand_labels"),  # none given: empty
                     cfg=params.labeling, schema=params.schema, seed=params.seed)  # fmt: skip
    except ValueError as err:
        raise RetrainError(str(err)) from None
    run_features(labeled=labeled, lake=lake, out=features_out, reports=storage.join(reports, "features"),
                 params=params)  # fmt: skip
    return int(train["labelled"])


def _stateful_features(
    *, lake: str, features_out: str, params: Params, windows: SplitWindows, new_start: dt.datetime,
    read_from: dt.datetime, kept_spec: dict[str, Any],
) -> tuple[dict[str, Any], int, int]:  # fmt: skip
    """A stateful update's features: the train-window rows since the watermark plus a replay sample of older
    ones, transformed with the champion's kept spec. Returns (spec, new rows, replayed rows)."""
    schema, cfg = params.schema, params.retrain
    cutoff, (_, train_end) = windows.cutoff, windows.train
    columns = _lake_columns(schema)
    table = history_table(lake, start=_history_start(params, kept_spec, read_from),
                          end=cutoff - dt.timedelta(microseconds=1), columns=columns, progress=False)  # fmt: skip
    events = (
        labels_at_cutoff(table, cutoff).to_pandas() if table is not None else pd.DataFrame(columns=columns)
    )
    splits = {
        "train": _with_meta(_labelled(_between(events, new_start, train_end)), "train"),
        "valid": _with_meta(_between(events, *windows.valid), "valid"),
        "test": _with_meta(_between(events, *windows.test), "test"),
    }
    n_new = len(splits["train"])
    _require_new_rows(n_new, int((splits["train"]["label"] == 1).sum()),
                      window=f"{new_start.isoformat()}..{train_end.isoformat()}", cfg=cfg)  # fmt: skip
    replayed = 0
    if cfg.replay_fraction > 0:
        old = _labelled(_between(events, new_start - dt.timedelta(days=cfg.replay_days), new_start))
        rep = _with_meta(replay_sample(old, n_new, fraction=cfg.replay_fraction, seed=params.seed), "train")
        replayed = len(rep)
        splits["train"] = pd.concat([rep, splits["train"]], ignore_index=True)
    frames, _ = _attach_aggregates(
        splits, events, entity_key=schema.entity_key, agg=_agg_cfg(params, kept_spec).aggregates
    )
    matrices = {k: transform_columns(kept_spec, f) for k, f in frames.items()}
    write_feature_splits(features_out, frames, matrices, spec=kept_spec, schema=schema)
    return kept_spec, n_new, replayed


def _spec_fit_start(spec: Mapping[str, Any], *, fallback: dt.datetime) -> dt.datetime:
    start = (spec.get("fit") or {}).get("window", {}).get("start")
    if not start:
        return fallback
    t = pd.Timestamp(start)
    return (t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")).to_pydatetime()


def _n_trees(model_dir: str) -> int:

    return int(storage.read_json(storage.join(model_dir, XGB_META)).get("num_boosted_rounds", 0))
