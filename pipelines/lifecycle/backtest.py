"""Backtest: replay a timeline period by period and compare retraining strategies on the same data.

``loopline backtest`` reads an already-loaded lake (the ETL stage's output: the synthetic timeline or any
configured data set, e.g. ``profiles/hotel.yaml`` with monthly periods) and, per period, for every strategy:

    score the period's rows with the strategy's current model -> (policy: monitor -> decide)
    -> retrain at the period's end when the strategy says so -> promote if the gate passes

Strategies (params ``retrain.backtest.strategies``), XGBoost only (the Keras edge model follows the XGBoost
teacher in the real stage; it is left out here to keep the replay fast):

- ``never``: the initial model forever;
- ``stateless``: a full refit every period on the trailing ``train_days`` window (spec refitted);
- ``stateful``: every period, ``retrain.stateful_rounds`` trees added on the rows since the watermark;
- ``stateful_refit``: the same, with a stateless refit every ``retrain.refit_every``-th retrain, past
  ``retrain.max_trees`` or when the gate refuses the update (the retrain stage's schedule);
- ``policy``: the monitor decides (pipelines/monitoring/monitor.py :func:`monitor_period` and :func:`decide`, params
  ``monitor``); a decided retrain is the retrain stage's (stateful, refit on schedule / gate failure).
  Its cost is training plus every period's check.

Honesty rules. A period's rows are scored BEFORE any retrain that could use them; they are judged with
their labels as finally known (the lake's label, whenever it matured). A retrain at cutoff C trains only on
labels known at C (``label_time <= C``) of rows older than ``C - label_maturity_days`` (the immature tail
is in no split, as in the sampling stage); the newest ``holdout_days`` of those are the holdout (early
stopping of a refit, and the gate: the candidate must match the current model's ``gate.metric`` on it,
``gate.champion_margin``). With ``retrain.backtest.split_on: label_time`` the same windows run on the
label's clock instead: the holdout is the labels that arrived in the newest ``holdout_days`` (rows of any
age), a refit trains on the labels that arrived before, and a stateful update on those that arrived since
the watermark; on data whose label delay varies by row (hotel bookings mature at arrival, 0-700 days after
booking), an event-time holdout holds only the short-delay rows and early-stops refits on a biased sample.
CPU is process CPU time (all threads) of training (spec fit, transforms, boosting, gate scoring) and of checks
(the monitor's figures and decision, and scoring its matured window); the shared work (reading the lake, the
point-in-time aggregates computed once for the whole timeline, and scoring each period) is the same for every
strategy and not counted. The leakage checks and the baselines/behavioural parts of the gate are left out
(they cost every strategy the same per retrain).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from pipelines.core import metrics as M
from pipelines.core import storage
from pipelines.core.config import Params
from pipelines.core.errors import InputError
from pipelines.data.etl import lake_dates, read_partition
from pipelines.edge import featurespec as fs
from pipelines.edge.featurespec import Coded
from pipelines.evaluation.evaluate import json_safe
from pipelines.features.build import (
    aggregate_columns,
    entity_aggregates,
    epoch_us,
    fit_spec,
    frame_to_columns,
)
from pipelines.lifecycle.retrain import RetrainError, RetrainState, choose_mode, continue_xgboost
from pipelines.monitoring.monitor import (
    MonitorState,
    Window,
    feature_importance,
    monitor_period,
    monitored_columns,
    reference_window,
)
from pipelines.training.imbalance import scale_pos_weight
from pipelines.training.models import booster_params
from pipelines.training.train import fit_xgboost, resolve_xgb_params

__all__ = [
    "STRATEGIES",
    "Timeline",
    "load_timeline",
    "periods_of",
    "run_backtest",
    "summarize",
    "write_outputs",
]

log = logging.getLogger(__name__)

STRATEGIES = ("never", "stateless", "stateful", "stateful_refit", "policy")
DAY = dt.timedelta(days=1)


# --------------------------------------------------------------------------- periods (pure)


def periods_of(start: dt.date, end: dt.date, kind: str) -> list[tuple[dt.date, dt.date]]:
    """Whole periods from ``start`` to ``end`` (both included): daily, weekly (7 days from ``start``) or
    calendar months (the first may be partial when ``start`` is not the 1st). The last partial week or
    month is dropped."""
    if kind not in ("daily", "weekly", "monthly"):
        raise InputError(f"--periods {kind!r}: expected daily, weekly or monthly")
    out: list[tuple[dt.date, dt.date]] = []
    s = start
    while s <= end:
        if kind == "daily":
            e = s
        elif kind == "weekly":
            e = s + dt.timedelta(days=6)
        else:
            nxt = dt.date(s.year + (s.month == 12), s.month % 12 + 1, 1)
            e = nxt - DAY
        if e > end:
            break
        out.append((s, e))
        s = e + DAY
    return out


# --------------------------------------------------------------------------- the timeline (I/O once)


@dataclass
class Timeline:
    frame: pd.DataFrame  # every lake row, time-ordered, with the point-in-time aggregates attached
    t_us: np.ndarray  # event_time, int64 epoch microseconds
    label_time_us: np.ndarray  # int64, max int where unknown
    label: np.ndarray  # float64, the label as finally known (NaN: never)
    agg_columns: dict[str, bool]
    first: dt.date
    last: dt.date


def _us(t: dt.datetime | dt.date) -> int:
    if not isinstance(t, dt.datetime):
        t = dt.datetime.combine(t, dt.time(), dt.UTC)
    return int((t - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) / dt.timedelta(microseconds=1))


def load_timeline(lake: str, params: Params) -> Timeline:
    """Every lake partition in one frame, with the entity aggregates of params ``features.aggregates``."""
    import pyarrow as pa

    dates = lake_dates(lake)
    if not dates:
        raise FileNotFoundError(f"{lake}: no partitions; load the timeline first (`loopline etl`)")
    schema = params.schema
    cols = ["event_id", "event_time", *[c.name for c in schema.columns], "label", "label_time"]
    tables = [t for d in dates if (t := read_partition(lake, d, columns=cols)) is not None]
    frame = pa.concat_tables(tables, promote_options="default").to_pandas()
    frame = frame.sort_values("event_time", kind="stable").reset_index(drop=True)
    agg = params.features.aggregates
    agg_cols: dict[str, bool] = {}
    if agg.enabled:
        a = entity_aggregates(
            frame, entity_key=schema.entity_key, windows=agg.windows, value_column=agg.value_column
        )
        for c in a.columns[1:]:
            frame[c] = a[c].to_numpy()
        agg_cols = aggregate_columns(schema.entity_key, agg.windows, agg.value_column)
    lt = pd.to_datetime(frame["label_time"], utc=True)
    lt_us = np.where(
        lt.notna(), epoch_us(lt.fillna(pd.Timestamp("2262-01-01", tz="UTC"))), np.iinfo(np.int64).max
    )
    return Timeline(
        frame=frame,
        t_us=epoch_us(frame["event_time"]),
        label_time_us=lt_us.astype(np.int64),
        label=pd.to_numeric(frame["label"], errors="coerce").to_numpy(dtype=np.float64),
        agg_columns=agg_cols,
        first=dt.date.fromisoformat(dates[0]),
        last=dt.date.fromisoformat(dates[-1]),
    )


def _timeline_column(s: pd.Series) -> Any:
    """One frame column as :func:`pipelines.features.build.frame_to_columns` gives it, except that a text column
    is dictionary-coded (codes into its distinct values; missing -> -1)."""

    col = frame_to_columns(s.to_frame(), [s.name])[s.name]
    if col.dtype != object:
        return col
    codes, uniques = pd.factorize(col, use_na_sentinel=True)
    return Coded(codes, np.asarray(uniques, dtype=object))


# --------------------------------------------------------------------------- models


@dataclass
class Model:
    booster: Any
    spec: dict[str, Any]
    fit_start: dt.datetime
    watermark: dt.datetime  # rows before it have been trained on (the train window's end)
    holdout: tuple[dt.datetime, dt.datetime]
    holdout_scores: pd.DataFrame  # holdout rows (lake columns) with the model's score: the score reference
    offline: dict[str, float]
    importance: dict[str, float]
    trees: int
    xgb_params: dict[str, Any]  # the booster's training params, which a stateful update continues with
    updates_since_refit: int = 0
    version: int = 0


@dataclass
class Run:
    name: str
    model: Model
    rows: list[dict[str, Any]] = field(default_factory=list)
    monitor_state: Any = None
    retrains: int = 0


class _Ctx:
    """Everything a strategy needs: the timeline, params, and the fitting helpers."""

    def __init__(self, tl: Timeline, params: Params, *, maturity_days: int, holdout_days: int, train_days: int,
                 monitored: Mapping[str, Any], split_on: str = "event_time") -> None:  # fmt: skip
        self.tl, self.params = tl, params
        self.maturity, self.holdout_days, self.train_days = maturity_days, holdout_days, train_days
        self.monitored: dict[str, Any] = dict(monitored)
        self.split_on = split_on
        # (spec identity, rows) -> matrix: a retrain transforms the same holdout for the fit's early stopping,
        # its offline figures, the score reference and the gate (candidate and current model); small LRU
        # (holding the spec keeps its id from being reused while its entry lives)
        self._matrices: dict[tuple[int, bytes], tuple[Mapping[str, Any], np.ndarray]] = {}
        self._columns: dict[str, Any] = {}
        if split_on == "label_time":  # rows ordered by label arrival, for window lookups on that clock
            self._by_label = np.argsort(tl.label_time_us, kind="stable")
            self._label_sorted = tl.label_time_us[self._by_label]

    # rows ---------------------------------------------------------------
    def idx(self, start: dt.datetime | dt.date, end: dt.datetime | dt.date) -> np.ndarray:
        lo, hi = np.searchsorted(self.tl.t_us, [_us(start), _us(end)])
        return np.arange(lo, hi)

    def known(self, idx: np.ndarray, cutoff: dt.datetime) -> np.ndarray:
        """Rows of ``idx`` whose label was known at ``cutoff``."""
        ok = (self.tl.label_time_us[idx] <= _us(cutoff)) & ~np.isnan(self.tl.label[idx])
        return idx[ok]

    def rows(self, start: dt.datetime, end: dt.datetime, cutoff: dt.datetime) -> np.ndarray:
        """Labelled rows known at ``cutoff`` in [start, end) on the split clock (params
        ``retrain.backtest.split_on``): event time, or the time their label arrived."""
        if self.split_on == "event_time":
            return self.known(self.idx(start, end), cutoff)
        hi = min(_us(end), _us(cutoff) + 1)
        lo, hi = np.searchsorted(self._label_sorted, [_us(start), hi])
        picked = np.sort(self._by_label[lo:hi])
        return picked[~np.isnan(self.tl.label[picked])]

    def windows(self, cutoff: dt.datetime) -> tuple[dt.datetime, tuple[dt.datetime, dt.datetime]]:
        usable_end = cutoff - self.maturity * DAY
        train_end = usable_end - self.holdout_days * DAY
        return train_end, (train_end, usable_end)

    def columns(self, names: Sequence[str], idx: np.ndarray) -> dict[str, Any]:
        """Rows ``idx`` of the timeline's columns in the spec transform's input form. Each column is
        converted once for the whole timeline; a text column becomes dictionary-coded (featurespec.Coded),
        so every transform runs on its distinct values, not on every row (same matrix, tested)."""

        out: dict[str, Any] = {}
        for name in names:
            col = self._columns.get(name)
            if col is None:
                col = self._columns[name] = _timeline_column(self.tl.frame[name])
            out[name] = Coded(col.codes[idx], col.vocab) if isinstance(col, Coded) else col[idx]
        return out

    def matrix(self, spec: Mapping[str, Any], idx: np.ndarray) -> np.ndarray:
        """The spec's matrix of rows ``idx``; the last few are kept (callers never write to them)."""
        import hashlib

        key = (id(spec), hashlib.blake2b(np.ascontiguousarray(idx).tobytes(), digest_size=16).digest())
        hit = self._matrices.pop(key, None)
        if hit is None or hit[0] is not spec:
            x = fs.transform(spec, self.columns(fs.input_columns(spec), idx))
            x.setflags(write=False)
            hit = (spec, x)
        self._matrices[key] = hit
        while len(self._matrices) > 6:
            self._matrices.pop(next(iter(self._matrices)))
        return hit[1]

    def score(self, model: Model, idx: np.ndarray) -> np.ndarray:
        if len(idx) == 0:
            return np.zeros(0)
        return np.asarray(model.booster.inplace_predict(self.matrix(model.spec, idx)), dtype=np.float64)

    # fitting ------------------------------------------------------------
    def _finish(self, booster: Any, spec: dict[str, Any], *, fit_start: dt.datetime, train_end: dt.datetime,
                holdout: tuple[dt.datetime, dt.datetime], cutoff: dt.datetime, base: Model | None,
                xgb_params: dict[str, Any], stateless: bool) -> Model:  # fmt: skip

        h = self.rows(*holdout, cutoff)
        p = (
            np.asarray(booster.inplace_predict(self.matrix(spec, h)), dtype=np.float64)
            if len(h)
            else np.zeros(0)
        )
        y = self.tl.label[h]
        offline = {}
        if len(np.unique(y)) == 2:
            offline = {"roc_auc": M.roc_auc(y, p), "pr_auc": M.pr_auc(y, p)}
        ref = self.idx(*holdout) if self.split_on == "event_time" else h
        hs = self.tl.frame.iloc[ref][list(self.monitored)].copy()
        hs["score"] = p if ref is h else self.score_raw(booster, spec, ref)
        imp = feature_importance(bytes(booster.save_raw(raw_format="ubj")), spec, list(self.monitored))
        return Model(
            booster=booster, spec=spec, fit_start=fit_start, watermark=train_end, holdout=holdout,
            holdout_scores=hs, offline=offline, importance=imp, trees=booster.num_boosted_rounds(),
            xgb_params=xgb_params,
            updates_since_refit=0 if stateless else (base.updates_since_refit + 1 if base else 0),
            version=(base.version + 1) if base else 0,
        )  # fmt: skip

    def score_raw(self, booster: Any, spec: Mapping[str, Any], idx: np.ndarray) -> np.ndarray:
        if len(idx) == 0:
            return np.zeros(0)
        return np.asarray(booster.inplace_predict(self.matrix(spec, idx)), dtype=np.float64)

    def fit_stateless(self, cutoff: dt.datetime, *, base: Model | None, seed: int) -> Model:
        """A refit from scratch: spec fitted on the trailing window, early stopping on the holdout."""

        p = self.params
        train_end, holdout = self.windows(cutoff)
        start = max(train_end - self.train_days * DAY, dt.datetime.combine(self.tl.first, dt.time(), dt.UTC))
        tr = self.rows(start, train_end, cutoff)
        mx = p.retrain.backtest.max_train_rows
        if mx is not None and len(tr) > mx:
            tr = np.sort(np.random.default_rng(seed).choice(tr, size=mx, replace=False))
        va = self.rows(*holdout, cutoff)
        if len(tr) == 0 or len(np.unique(self.tl.label[tr])) < 2 or len(np.unique(self.tl.label[va])) < 2:
            raise InputError(f"no labelled rows of both classes to fit at cutoff {cutoff.date()}")
        frame = self.tl.frame.iloc[tr]
        spec = fit_spec(frame, cfg=p.features, schema=p.schema, aggregates=self.tl.agg_columns or None,
                        aggregate_windows=p.features.aggregates.windows if self.tl.agg_columns else (),
                        aggregate_value=p.features.aggregates.value_column if self.tl.agg_columns else None)  # fmt: skip
        x, y = self.matrix(spec, tr), self.tl.label[tr].astype(np.int64)
        xv, yv = self.matrix(spec, va), self.tl.label[va].astype(np.int64)
        params, _ = resolve_xgb_params(p.train.xgboost.params, None)
        imb = p.train.imbalance.scale_pos_weight
        spw = scale_pos_weight(y) if imb == "auto" else float(imb)
        booster, best, _ = fit_xgboost(x, y, np.ones(len(y)), xv, yv, params=params, cfg=p.train.xgboost,
                                       scale_pos_weight=spw, feature_names=spec["feature_names"], seed=seed)  # fmt: skip
        booster = booster[: best + 1]

        xgb_params = booster_params(params, eval_metric=p.train.xgboost.eval_metric, seed=seed,
                                    nthread=p.train.xgboost.nthread, scale_pos_weight=spw)  # fmt: skip
        return self._finish(booster, spec, fit_start=start, train_end=train_end, holdout=holdout,
                            cutoff=cutoff, base=base, xgb_params=xgb_params, stateless=True)  # fmt: skip

    def fit_stateful(self, cutoff: dt.datetime, *, base: Model, seed: int) -> Model:
        """The retrain stage's stateful update: trees added on the rows since the watermark (+ replay)."""

        rc = self.params.retrain
        train_end, holdout = self.windows(cutoff)
        if base.watermark >= train_end:
            raise RetrainError(f"no new rows since the watermark {base.watermark.date()}")
        new = self.rows(base.watermark, train_end, cutoff)
        if len(new) < rc.min_new_rows or len(np.unique(self.tl.label[new])) < 2:
            raise RetrainError(f"{len(new)} labelled new rows at cutoff {cutoff.date()}")
        rows = new
        if rc.replay_fraction > 0:
            old = self.rows(base.watermark - rc.replay_days * DAY, base.watermark, cutoff)
            k = min(len(old), round(rc.replay_fraction * len(new)))
            if k > 0:
                rows = np.concatenate(
                    [np.sort(np.random.default_rng(seed).choice(old, size=k, replace=False)), new]
                )
        x, y = self.matrix(base.spec, rows), self.tl.label[rows].astype(np.int64)
        booster = continue_xgboost(base.booster, x, y, None, params=base.xgb_params, rounds=rc.stateful_rounds,
                                   method=rc.xgboost_method, feature_names=base.spec["feature_names"])  # fmt: skip
        return self._finish(booster, base.spec, fit_start=base.fit_start, train_end=train_end, holdout=holdout,
                            cutoff=cutoff, base=base, xgb_params=base.xgb_params, stateless=False)  # fmt: skip

    def gate(self, candidate: Model, current: Model, cutoff: dt.datetime) -> tuple[bool, float, float]:
        """The candidate's gate.metric on the holdout vs the current model's on the same rows."""

        if not self.params.retrain.backtest.gate:
            return True, float("nan"), float("nan")
        h = self.rows(*candidate.holdout, cutoff)
        y = self.tl.label[h]
        if len(np.unique(y)) < 2:
            return True, float("nan"), float("nan")
        f = M.pr_auc if self.params.gate.metric == "pr_auc" else M.roc_auc
        cand = f(y, self.score(candidate, h))
        cur = f(y, self.score(current, h))
        return bool(cand - cur >= self.params.gate.champion_margin), float(cand), float(cur)


# --------------------------------------------------------------------------- one retrain, as the stage does


def _retrain(ctx: _Ctx, run: Run, cutoff: dt.datetime, *, kind: str, seed: int) -> dict[str, Any]:
    """Retrain ``run.model`` at ``cutoff``; kind: stateless | stateful | schedule (the stage's auto mode).
    Returns the record fields (mode, promoted, gate, cpu)."""

    rc = ctx.params.retrain
    c0 = time.process_time()
    if kind == "schedule":
        st = RetrainState(updates_since_refit=run.model.updates_since_refit)
        mode, why = choose_mode(
            requested="auto", cfg=rc, state=st, n_trees=run.model.trees, has_champion=True
        )
    else:
        mode, why = kind, kind
    rec: dict[str, Any] = {"mode": mode, "why": why, "promoted": False, "gate": None, "error": None}
    attempts = [mode] + (
        ["stateless"] if kind == "schedule" and mode == "stateful" and rc.refit_on_gate_failure else []
    )
    for m in attempts:
        try:
            cand = (ctx.fit_stateless(cutoff, base=run.model, seed=seed) if m == "stateless"
                    else ctx.fit_stateful(cutoff, base=run.model, seed=seed))  # fmt: skip
        except (RetrainError, ValueError) as err:
            rec["error"] = str(err)
            break
        ok, cm, cur = ctx.gate(cand, run.model, cutoff)
        rec["mode"], rec["gate"] = m, {"passed": ok, "candidate": cm, "current": cur}
        if ok:
            run.model = cand
            run.retrains += 1
            rec["promoted"] = True
            break
        rec["why"] = f"{why}; the {m} candidate failed the gate ({cm:.4f} < {cur:.4f})"
    rec["train_cpu"] = time.process_time() - c0
    return rec


# --------------------------------------------------------------------------- the monitor, in process


def _check(
    ctx: _Ctx, run: Run, window: tuple[dt.date, dt.date], scores: np.ndarray, *, seed: int
) -> dict[str, Any]:
    """The policy's check of one period: figures + decision (pipelines/monitoring/monitor.py), and its CPU."""

    c0 = time.process_time()
    p, m = ctx.params, run.model
    w = Window(*window)
    cfg = p.monitor
    training = Window(m.fit_start.date(), (m.holdout[1] - DAY).date())
    ref_w, _ = reference_window(w, cfg=cfg, training=training)
    cols = list(ctx.monitored)
    cur_idx = ctx.idx(w.start, w.end + DAY)
    current = ctx.tl.frame.iloc[cur_idx][cols].copy()
    current["score"] = scores
    reference = ctx.tl.frame.iloc[ctx.idx(ref_w.start, ref_w.end + DAY)][cols]
    perf_end = w.end - dt.timedelta(
        days=cfg.label_maturity_days if cfg.performance_window == "matured" else 0
    )
    perf_start = max(perf_end - dt.timedelta(days=cfg.performance_days - 1), m.watermark.date())
    matured = None
    if perf_start <= perf_end:
        pi = ctx.idx(perf_start, perf_end + DAY)
        matured = ctx.tl.frame.iloc[pi][cols].copy()
        lab = ctx.tl.label[pi].copy()
        lab[ctx.tl.label_time_us[pi] > _us(w.cutoff)] = np.nan  # labels as known at the window's end
        matured["label"] = lab
        matured["score"] = ctx.score(m, pi)
    res = monitor_period(
        reference=reference, current=current, window=w, columns=ctx.monitored, cfg=cfg,
        state=run.monitor_state or MonitorState(), score_reference=m.holdout_scores, matured=matured,
        importance=m.importance, offline=m.offline, champion_data_end=training.end, seed=seed,
    )  # fmt: skip
    run.monitor_state = res.decision.state
    return {
        "retrain": res.decision.retrain,
        "drift": res.decision.drift,
        "triggers": list(res.decision.triggers),
        "reasons": list(res.decision.reasons),
        "check_cpu": time.process_time() - c0,
    }


# --------------------------------------------------------------------------- the replay


def run_backtest(
    tl: Timeline,
    params: Params,
    *,
    periods: str | None = None,
    start: dt.date | None = None,
    strategies: Sequence[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Replay the timeline; returns {"periods", "rows" (per period per strategy), "summary", "settings"}."""

    bt = params.retrain.backtest
    kind = periods or bt.periods
    strategies = list(strategies or bt.strategies)
    unknown = sorted(set(strategies) - set(STRATEGIES))
    if unknown:
        raise InputError(f"unknown strategies {unknown}; choose from {list(STRATEGIES)}")
    first = start or bt.start or (tl.first + dt.timedelta(days=bt.warmup_days))
    plist = periods_of(first, tl.last, kind)
    if not plist:
        raise InputError(
            f"no whole {kind} period between {first} and {tl.last}; move retrain.backtest.start earlier"
        )
    maturity = (
        bt.label_maturity_days if bt.label_maturity_days is not None else params.sampling.label_maturity_days
    )
    train_days = bt.train_days or params.sampling.train_days or 3650
    monitored, _ = monitored_columns(
        params.schema, params.monitor, reference_kind=params.monitor.reference.kind
    )
    ctx = _Ctx(tl, params, maturity_days=maturity, holdout_days=bt.holdout_days, train_days=train_days,
               monitored=monitored, split_on=bt.split_on)  # fmt: skip
    cutoff0 = dt.datetime.combine(first, dt.time(), dt.UTC)
    c0 = time.process_time()
    initial = ctx.fit_stateless(cutoff0, base=None, seed=params.seed)
    initial_cpu = time.process_time() - c0
    runs = {name: Run(name, replace(initial)) for name in strategies}
    from tqdm import tqdm

    rows: list[dict[str, Any]] = []
    for k, (s, e) in enumerate(tqdm(plist, desc="backtest", unit="period", disable=not progress)):
        idx = ctx.idx(s, e + DAY)
        y = tl.label[idx]
        has = ~np.isnan(y)
        cutoff = dt.datetime.combine(e + DAY, dt.time(), dt.UTC)
        for name, run in runs.items():
            scores = ctx.score(run.model, idx)
            yy, pp = y[has].astype(np.int64), scores[has]
            both = len(np.unique(yy)) == 2
            rec: dict[str, Any] = {
                "period": k, "start": s.isoformat(), "end": e.isoformat(), "strategy": name,
                "rows": len(idx), "labelled": int(has.sum()), "positives": int(yy.sum()),
                "roc_auc": M.roc_auc(yy, pp) if both else None, "pr_auc": M.pr_auc(yy, pp) if both else None,
                "model_version": run.model.version, "trees": run.model.trees,
                "train_cpu": 0.0, "check_cpu": 0.0, "retrained": False, "promoted": False, "mode": None,
                "decision": None,
            }  # fmt: skip
            do: str | None = None
            if name == "stateless":
                do = "stateless"
            elif name == "stateful":
                do = "stateful"
            elif name == "stateful_refit":
                do = "schedule"
            elif name == "policy":
                chk = _check(ctx, run, (s, e), scores, seed=params.seed + k)
                rec["check_cpu"] = chk["check_cpu"]
                rec["decision"] = {k2: chk[k2] for k2 in ("retrain", "drift", "triggers", "reasons")}
                do = "schedule" if chk["retrain"] else None
            if do is not None:
                r = _retrain(ctx, run, cutoff, kind=do, seed=params.seed + k)
                rec.update(train_cpu=r["train_cpu"], retrained=r["error"] is None, promoted=r["promoted"],
                           mode=r["mode"], why=r["why"], gate=r["gate"], error=r["error"])  # fmt: skip
            rec["trees_after"] = run.model.trees
            rows.append(rec)
    onset = None
    if params.source.kind == "synthetic" and params.synthetic.drift.enabled:
        onset = params.synthetic.drift.date
    summary = summarize(rows, strategies=strategies, plist=plist, onset=onset)
    return {
        "settings": {
            "periods": kind,
            "first_period": plist[0][0].isoformat(),
            "last_period": plist[-1][1].isoformat(),
            "n_periods": len(plist),
            "label_maturity_days": maturity,
            "holdout_days": bt.holdout_days,
            "split_on": bt.split_on,
            "train_days": train_days,
            "gate": bt.gate,
            "gate_metric": params.gate.metric,
            "strategies": strategies,
            "retrain": params.retrain.model_dump(mode="json", exclude={"backtest"}),
            "policy": params.monitor.policy.model_dump(mode="json"),
            "monitor_reference": params.monitor.reference.model_dump(mode="json"),
            "rows": len(tl.frame),
            "lake": {"first": tl.first.isoformat(), "last": tl.last.isoformat()},
            "initial_model": {
                "trees": initial.trees,
                "cpu_seconds": round(initial_cpu, 3),
                "train_window_end": initial.watermark.isoformat(),
            },
            "drift_onset": onset.isoformat() if onset else None,
            "xgboost_only": True,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        },
        "rows": rows,
        "summary": summary,
    }


def summarize(
    rows: Sequence[Mapping[str, Any]],
    *,
    strategies: Sequence[str],
    plist: Sequence[tuple[dt.date, dt.date]],
    onset: dt.date | None = None,
) -> dict[str, Any]:
    """Per strategy: mean ROC-AUC/PR-AUC over periods, CPU (training, checks), retrain counts; the
    acceptance comparison of ``policy`` vs ``stateless``; when the drift onset is known, the policy's
    first decision relative to it."""
    df = pd.DataFrame(rows)
    out: dict[str, Any] = {"strategies": {}}
    for name in strategies:
        d = df[df["strategy"] == name]
        modes = d.loc[d["promoted"], "mode"].value_counts().to_dict()
        out["strategies"][name] = {
            "periods": len(d),
            "mean_roc_auc": float(pd.to_numeric(d["roc_auc"]).mean()),
            "mean_pr_auc": float(pd.to_numeric(d["pr_auc"]).mean()),
            "train_cpu": float(d["train_cpu"].sum()),
            "check_cpu": float(d["check_cpu"].sum()),
            "cpu": float(d["train_cpu"].sum() + d["check_cpu"].sum()),
            "retrains": int(d["retrained"].sum()),
            "promotions": int(d["promoted"].sum()),
            "stateful_promotions": int(modes.get("stateful", 0)),
            "stateless_promotions": int(modes.get("stateless", 0)),
            "final_trees": int(d["trees_after"].iloc[-1]) if len(d) else 0,
        }
    s = out["strategies"]
    if "policy" in s and "stateless" in s:
        p, b = s["policy"], s["stateless"]
        out["policy_vs_stateless"] = {
            "roc_auc_delta": p["mean_roc_auc"] - b["mean_roc_auc"],
            "pr_auc_delta": p["mean_pr_auc"] - b["mean_pr_auc"],
            "cpu_ratio": p["cpu"] / b["cpu"] if b["cpu"] > 0 else None,
            "within_0_01": bool(p["mean_roc_auc"] >= b["mean_roc_auc"] - 0.01 and p["mean_pr_auc"] >= b["mean_pr_auc"] - 0.01),
            "cpu_at_most_one_fifth": bool(b["cpu"] > 0 and p["cpu"] <= b["cpu"] / 5),
        }  # fmt: skip
    if "policy" in s:
        d = df[df["strategy"] == "policy"]
        fired = [int(r["period"]) for _, r in d.iterrows() if r["decision"] and r["decision"]["retrain"]]
        det: dict[str, Any] = {"fired_periods": fired}
        if onset is not None:
            onset_k = next((k for k, (a, b) in enumerate(plist) if a <= onset <= b), None)
            det["onset"] = onset.isoformat()
            det["onset_period"] = onset_k
            if onset_k is not None:
                det["fired_before_onset"] = [k for k in fired if k < onset_k]
                after = [k for k in fired if k >= onset_k]
                det["first_fired_at_or_after_onset"] = after[0] if after else None
                det["within_one_period"] = bool(after and after[0] <= onset_k + 1)
        out["detection"] = det
    return out


# --------------------------------------------------------------------------- outputs


def markdown_table(result: Mapping[str, Any]) -> str:
    s = result["summary"]["strategies"]
    st = result["settings"]
    lines = [
        f"{st['n_periods']} {st['periods']} periods {st['first_period']}..{st['last_period']} "
        f"({st['rows']} lake rows); label maturity {st['label_maturity_days']} d, holdout {st['holdout_days']} d "
        f"(windows on {st.get('split_on', 'event_time').replace('_', ' ')}), "
        f"stateless window {st['train_days']} d; XGBoost only.",
        "",
        "| strategy | mean ROC-AUC | mean PR-AUC | training CPU-s | checking CPU-s | total CPU-s | retrains "
        "(stateful/refit) | final trees |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, v in s.items():
        lines.append(
            f"| {name} | {v['mean_roc_auc']:.4f} | {v['mean_pr_auc']:.4f} | {v['train_cpu']:.1f} | "
            f"{v['check_cpu']:.1f} | {v['cpu']:.1f} | {v['promotions']} ({v['stateful_promotions']}/"
            f"{v['stateless_promotions']}) | {v['final_trees']} |"
        )
    c = result["summary"].get("policy_vs_stateless")
    if c:
        lines += ["", f"policy vs stateless: ROC-AUC {c['roc_auc_delta']:+.4f}, PR-AUC {c['pr_auc_delta']:+.4f}, "
                  f"CPU ratio {c['cpu_ratio']:.3f} (within 0.01: {c['within_0_01']}; <= 1/5 CPU: "
                  f"{c['cpu_at_most_one_fifth']})"]  # fmt: skip
    d = result["summary"].get("detection")
    if d:
        lines += ["", f"policy decisions fired in periods {d['fired_periods']}"
                  + (f"; drift onset {d['onset']} in period {d['onset_period']}; fired before it: "
                     f"{d.get('fired_before_onset')}; first at/after: {d.get('first_fired_at_or_after_onset')}"
                     if d.get("onset") else "")]  # fmt: skip
    return "\n".join(lines) + "\n"


def plot_png(result: Mapping[str, Any]) -> bytes:
    """ROC-AUC and PR-AUC per period per strategy, and cumulative CPU (training + checks)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = pd.DataFrame(result["rows"])
    fig, axes = plt.subplots(3, 1, figsize=(8, 8.5), sharex=True)
    onset = result["settings"].get("drift_onset")
    for name, d in df.groupby("strategy", sort=False):
        x = pd.to_datetime(d["start"])
        axes[0].plot(x, pd.to_numeric(d["roc_auc"]), marker=".", label=name)
        axes[1].plot(x, pd.to_numeric(d["pr_auc"]), marker=".", label=name)
        axes[2].plot(x, (d["train_cpu"] + d["check_cpu"]).cumsum(), marker=".", label=name)
    for ax, title in zip(axes, ("ROC-AUC per period (scored before retraining)", "PR-AUC per period",
                                "cumulative CPU-s (training + checks)"), strict=True):  # fmt: skip
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        if onset:
            ax.axvline(pd.Timestamp(onset), color="k", ls="--", lw=0.8)
    pol = df[(df["strategy"] == "policy") & df["decision"].map(lambda v: bool(v and v["retrain"]))]
    for t in pd.to_datetime(pol["start"]):
        axes[0].axvspan(t, t + pd.Timedelta(days=1), color="red", alpha=0.15)
    axes[2].set_yscale("log")
    axes[0].legend(fontsize=8, ncol=3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def write_outputs(out: str, result: Mapping[str, Any]) -> dict[str, str]:
    """backtest.json, backtest.csv (per period per strategy), backtest.md (the table), backtest.png."""

    df = pd.DataFrame(result["rows"])
    flat = df.drop(columns=[c for c in ("decision", "gate") if c in df.columns]).copy()
    if "decision" in df.columns:
        flat["decision_retrain"] = df["decision"].map(lambda v: None if v is None else v["retrain"])
        flat["triggers"] = df["decision"].map(lambda v: None if v is None else "+".join(v["triggers"]))
    files = {k: storage.join(out, f"backtest.{k}") for k in ("json", "csv", "md", "png")}
    storage.write_json(files["json"], json_safe(dict(result)))
    storage.write_bytes(files["csv"], flat.to_csv(index=False).encode())
    storage.write_bytes(files["md"], markdown_table(result).encode())
    storage.write_bytes(files["png"], plot_png(result))
    return files
