"""Monitor stage: is the champion still fit for the data, and should it be retrained?

For a current window (one day, or a range of days) against a reference window (params
``monitor.reference``: the champion's data window, a trailing window, or a seasonally matched one) it
measures

- *feature drift*: one check per monitored lake column (pipelines/core/drift.py; method and threshold per column
  type, overridable per column). Id-like ``high_cardinality`` columns are excluded by default (they drift in
  almost every period), calendar columns (``monitor.drift.calendar_pattern``) are excluded unless the
  reference is seasonal and ``monitor.drift.calendar`` is ``seasonal``;
- *prediction drift*: the champion's score distribution, against its scores on data it was not trained on
  (the part of the reference window after the training window, when the reference is the training window);
- *live performance* on matured labels only (a label counts at cutoff C only if ``label_time <= C``):
  ROC-AUC, PR-AUC and ECE, against the champion's offline figures from the registry.

Above ``monitor.max_rows`` rows per side the windows are sampled (one reservoir over the stream of daily
partitions, or proportionally per day), so the cost stays flat. The figures go through :func:`decide`
(params ``monitor.policy``): performance decay first, then prediction drift, then feature drift weighted by
the champion's feature importance, with a cool-down whose state persists between runs.

In-process use (a backtest): build frames with :func:`load_window` (or your own), then call
:func:`monitor_period` per period and carry :class:`MonitorState` along; no file is written.

Outputs of :func:`run_monitor`, per run: ``<out>/runs/<window>/`` and ``<out>/latest/`` with ``report.html``
(Evidently), ``summary.html`` (self-contained, inline PNGs), ``summary.json`` and ``decision.json``; the
cool-down state in ``<out>/state.json``.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines.core import drift as D
from pipelines.core import metrics as M
from pipelines.core import storage
from pipelines.core.config import MonitorConfig, MonitorPolicyConfig, SchemaConfig
from pipelines.core.errors import InputError
from pipelines.core.samplers import stratified_indices
from pipelines.data.etl import lake_dates, read_partition, validate_date
from pipelines.data.sampling import ReservoirSampler, labels_at_cutoff
from pipelines.edge.featurespec import feature_names_of
from pipelines.registry.store import Registry

__all__ = [
    "ChampionInfo",
    "Decision",
    "MonitorResult",
    "MonitorState",
    "Window",
    "champion_info",
    "compute_figures",
    "decide",
    "feature_importance",
    "load_window",
    "monitor_period",
    "monitored_columns",
    "reference_window",
    "run_monitor",
]

log = logging.getLogger(__name__)

SCORE = "score"
STATE_FILE = "state.json"
HISTORY_KEEP = 50  # decisions kept in state.json


# --------------------------------------------------------------------------- windows


@dataclass(frozen=True)
class Window:
    """Whole UTC days ``start``..``end``, both included."""

    start: dt.date
    end: dt.date

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise InputError(f"window {self.start}..{self.end}: end before start; pass --start <= --end")

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def dates(self) -> list[str]:
        return [(self.start + dt.timedelta(days=i)).isoformat() for i in range(self.days)]

    @property
    def cutoff(self) -> dt.datetime:
        """End of the window's last day (UTC): what is known when the window is judged."""
        return dt.datetime.combine(self.end + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)

    @property
    def label(self) -> str:
        return self.start.isoformat() if self.days == 1 else f"{self.start}_{self.end}"

    def shift(self, days: int) -> Window:
        return Window(self.start - dt.timedelta(days=days), self.end - dt.timedelta(days=days))

    def as_dict(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}


def _day(value: Any) -> dt.date | None:
    if value is None:
        return None
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    return (
        pd.Timestamp(value).tz_convert("UTC").date()
        if pd.Timestamp(value).tzinfo
        else pd.Timestamp(value).date()
    )


def reference_window(current: Window, *, cfg: MonitorConfig, training: Window | None) -> tuple[Window, str]:
    """(reference window, kind actually used). ``training`` falls back to trailing when unknown."""
    ref = cfg.reference
    if ref.kind == "training" and training is not None:
        start = max(training.start, training.end - dt.timedelta(days=ref.days - 1))
        end = min(training.end, current.start - dt.timedelta(days=1))
        if end >= start:
            return Window(start, end), "training"
        log.warning(
            "the champion's data window %s..%s does not precede %s: trailing reference used",
            training.start,
            training.end,
            current.start,
        )
    if ref.kind == "seasonal":
        shift = ref.season_days * max(
            1, math.ceil(current.days / ref.season_days)
        )  # never overlap the window
        return current.shift(shift), "seasonal"
    end = current.start - dt.timedelta(days=ref.gap_days + 1)
    return Window(end - dt.timedelta(days=ref.days - 1), end), "trailing"


# --------------------------------------------------------------------------- columns


def monitored_columns(
    schema: SchemaConfig, cfg: MonitorConfig, *, reference_kind: str
) -> tuple[dict[str, D.ColumnKind], dict[str, str]]:
    """(monitored column -> kind, excluded column -> why). The entity key is never monitored."""
    dc = cfg.drift
    calendar = re.compile(dc.calendar_pattern) if dc.calendar_pattern else None
    keep: dict[str, D.ColumnKind] = {}
    excluded: dict[str, str] = {}
    for col in schema.columns:
        if col.name == schema.entity_key:
            excluded[col.name] = "entity key"
        elif col.name in dc.exclude_columns:
            excluded[col.name] = "monitor.drift.exclude_columns"
        elif col.high_cardinality and not dc.include_high_cardinality:
            excluded[col.name] = "high cardinality (monitor.drift.include_high_cardinality)"
        elif col.type in ("string", "timestamp"):
            excluded[col.name] = f"{col.type} column"
        elif (
            calendar is not None
            and calendar.search(col.name)
            and not (dc.calendar == "seasonal" and reference_kind == "seasonal")
        ):
            excluded[col.name] = "calendar column (compared only against a seasonal reference)"
        else:
            keep[col.name] = "numerical" if col.type in ("float", "int") else "categorical"
    return keep, excluded


# --------------------------------------------------------------------------- champion


@dataclass(frozen=True)
class ChampionInfo:
    version: str | None
    offline: dict[str, float]  # the primary model's test metrics: pr_auc, roc_auc, ece
    training: Window | None  # the whole data window: train + valid + test
    fitted: Window | None  # the train split only: rows the model has seen
    holdout: Window | None  # valid + test: scores there are out of sample
    importance: dict[str, float]  # raw input column -> gain share (empty: uniform)


def feature_importance(
    booster_bytes: bytes | None, spec: Mapping[str, Any], columns: Sequence[str]
) -> dict[str, float]:
    """Total-gain importance of the XGBoost model summed per raw input column (a cross's gain is split among
    its columns), normalized over ``columns``; uniform when there is no model or no gain on them."""
    uniform = {c: 1.0 / len(columns) for c in columns} if columns else {}
    if booster_bytes is None:
        return uniform
    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(bytearray(booster_bytes))
    gain = booster.get_score(importance_type="total_gain")
    per_col = dict.fromkeys(columns, 0.0)
    for op in spec.get("transforms", []):
        inputs = [c for c in op.get("columns", [op.get("column")]) if c in per_col]
        if not inputs:
            continue
        total = 0.0
        for n in feature_names_of([op]):
            g = gain.get(n, 0.0)
            total += float(g if not isinstance(g, list) else sum(g))
        for c in inputs:
            per_col[c] += total / len(op.get("columns", [op.get("column")]))
    s = sum(per_col.values())
    return {c: v / s for c, v in per_col.items()} if s > 0 else uniform


def _window_of(d: Mapping[str, Any] | None) -> Window | None:
    if not d or not d.get("start") or not d.get("end"):
        return None
    return Window(_day(d["start"]), _day(d["end"]))  # type: ignore[arg-type]


def champion_info(registry: str, *, columns: Sequence[str], version: str | None = None) -> ChampionInfo:
    """The champion's (or ``version``'s) offline metrics, data windows and importance, from the registry."""

    reg = Registry(registry)
    version = version or (reg.alias("champion") if storage.exists(registry) else None)
    if version is None:
        log.warning("no champion in %s: no offline figures, uniform importance, trailing reference", registry)
        return ChampionInfo(None, {}, None, None, None, {c: 1.0 / len(columns) for c in columns})
    blobs = reg.verify(version)
    evaluation = (
        json.loads(blobs["evaluation.json"])
        if "evaluation.json" in blobs
        else (reg.read_json(version, "evaluation.json") or {})
    )
    primary = evaluation.get("primary", "xgboost")
    m = evaluation.get("metrics", {}).get(primary, {})
    offline = {k: float(m[k]) for k in ("pr_auc", "roc_auc", "ece") if m.get(k) is not None}
    windows = evaluation.get("data_window") or reg.lineage(version).get("data_window") or {}
    fitted = training = _window_of(windows.get("train"))
    hold = [w for w in (_window_of(windows.get("valid")), _window_of(windows.get("test"))) if w]
    holdout = Window(min(w.start for w in hold), max(w.end for w in hold)) if hold else None
    if training is not None and holdout is not None:
        training = Window(training.start, max(training.end, holdout.end))  # the whole data window
    spec = json.loads(blobs["spec.json"])
    importance = feature_importance(blobs.get("xgboost.ubj"), spec, columns)
    return ChampionInfo(version, offline, training, fitted, holdout, importance)


# --------------------------------------------------------------------------- loading windows (I/O)


def _prediction_table(predictions: str, date: str, model_version: str | None) -> pa.Table | None:
    folder = storage.join(predictions, f"date={date}")
    pattern = f"part-{model_version}.parquet" if model_version else "part-*.parquet"
    parts = storage.list_files(folder, pattern)
    if not parts:
        return None
    if len(parts) > 1:
        raise InputError(
            f"{folder}: {len(parts)} prediction parts ({[p.rsplit('/', 1)[-1] for p in parts]}) and no model "
            "version chosen; pass --model-version (or register a champion) to pick one"
        )
    return storage.read_parquet(parts[0], columns=["event_id", SCORE])


def load_window(
    lake: str,
    window: Window,
    *,
    columns: Sequence[str],
    cutoff: dt.datetime,
    predictions: str | None = None,
    model_version: str | None = None,
    max_rows: int | None = None,
    sampling: str = "reservoir",
    seed: int = 0,
    require_scores: bool = False,
) -> tuple[pd.DataFrame, int]:
    """Rows of the window's lake partitions (labels masked at ``cutoff``), joined with their scores when
    ``predictions`` is given, sampled to ``max_rows``; returns (frame, rows seen). Memory stays within about
    one partition plus twice the budget whatever the window's length."""

    cols = ["event_id", "event_time", *columns, "label", "label_time"]
    dates = window.dates()
    tables: list[pa.Table] = []
    counts: list[int] = []
    for date in dates:
        t = read_partition(lake, date, columns=cols)
        if t is None:
            continue
        t = labels_at_cutoff(t, cutoff)
        if predictions is not None:
            p = _prediction_table(predictions, date, model_version)
            if p is None:
                if require_scores:
                    continue
                p = pa.table({"event_id": pa.array([], pa.string()), SCORE: pa.array([], pa.float64())})
            t = t.join(p, "event_id", join_type="inner" if require_scores else "left outer")
        tables.append(t)
        counts.append(t.num_rows)
    seen = sum(counts)
    if not tables:
        return pd.DataFrame(columns=cols + ([SCORE] if predictions else [])), 0
    if max_rows is None or seen <= max_rows:
        out = pa.concat_tables(tables, promote_options="default")
    elif sampling == "stratified":  # proportional per day (largest remainder)
        rng = np.random.default_rng(seed)

        strata = np.repeat(np.arange(len(tables)), counts)
        idx = stratified_indices(strata, size=max_rows, rng=rng)[0]
        offsets = np.concatenate([[0], np.cumsum(counts)])
        out = pa.concat_tables(
            [
                t.take(pa.array(idx[(idx >= offsets[i]) & (idx < offsets[i + 1])] - offsets[i]))
                for i, t in enumerate(tables)
            ],
            promote_options="default",
        )
    else:
        sampler = ReservoirSampler(max_rows, seed=seed)
        for t in tables:
            sampler.add(t)
        out = sampler.result()
    return out.to_pandas(), seen


# --------------------------------------------------------------------------- figures (pure)


def _performance(frame: pd.DataFrame | None, *, ece_bins: int = 10) -> dict[str, Any] | None:
    """ROC-AUC, PR-AUC and ECE (quantile bins) on the rows with a matured label and a score."""
    if frame is None or frame.empty or SCORE not in frame.columns:
        return None

    has_score = frame[SCORE].notna()
    rows = int(has_score.sum())
    lab = frame[has_score & frame["label"].notna()]
    y = lab["label"].astype(np.int64).to_numpy()
    p = lab[SCORE].astype(np.float64).to_numpy()
    out: dict[str, Any] = {
        "rows": rows,
        "labelled": len(lab),
        "positives": int(y.sum()),
        "label_coverage": round(len(lab) / rows, 6) if rows else 0.0,
        "roc_auc": None,
        "pr_auc": None,
        "ece": None,
    }
    if len(np.unique(y)) == 2:
        out.update(
            roc_auc=round(M.roc_auc(y, p), 6),
            pr_auc=round(M.pr_auc(y, p), 6),
            ece=round(M.expected_calibration_error(y, p, bins=ece_bins, strategy="quantile"), 6),
        )
    return out


def compute_figures(
    *,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: Mapping[str, D.ColumnKind],
    cfg: MonitorConfig,
    score_reference: pd.DataFrame | None = None,
    matured: pd.DataFrame | None = None,
    importance: Mapping[str, float] | None = None,
    offline: Mapping[str, float] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Every figure the decision needs, JSON-ready. Frames: lake columns (+ ``score``); ``matured``: rows
    whose labels are judged (already masked at the cutoff). ``score_reference``: defaults to ``reference``."""
    dc = cfg.drift
    table = D.drift_table(
        reference, current, columns=columns,
        methods={"numerical": dc.numerical_method, "categorical": dc.categorical_method},
        thresholds={"numerical": dc.numerical_threshold, "categorical": dc.categorical_threshold},
        per_column_method=dc.per_column_method, per_column_threshold=dc.per_column_threshold,
        bins=dc.bins, max_rows=cfg.max_rows, seed=seed,
    )  # fmt: skip
    enough = min(len(reference), len(current)) >= dc.min_rows
    imp = dict(importance) if importance else {c: 1.0 / len(columns) for c in columns}
    for name, c in table["columns"].items():
        c["importance"] = round(float(imp.get(name, 0.0)), 6)
    drifted = D.drifted_columns(table) if enough else []
    features = {
        "columns": table["columns"],
        "rows": table["rows"],
        "sampled": table["sampled"],
        "judged": enough,
        "drifted": drifted,
        "drifted_share": round(len(drifted) / len(columns), 6) if columns else 0.0,
        "drifted_importance": round(sum(imp.get(c, 0.0) for c in drifted), 6),
    }
    sref = reference if score_reference is None else score_reference
    prediction: dict[str, Any] | None = None
    if SCORE in sref.columns and SCORE in current.columns:
        rs, cs = sref[SCORE].dropna(), current[SCORE].dropna()
        if min(len(rs), len(cs)) >= dc.min_rows:
            rng = np.random.default_rng(seed + 1)
            ri, ci = (D.bounded_indices(len(s), cfg.max_rows, rng=rng) for s in (rs, cs))
            rs = rs if ri is None else rs.iloc[ri]
            cs = cs if ci is None else cs.iloc[ci]
            prediction = D.column_drift(
                rs.to_numpy(),
                cs.to_numpy(),
                kind="numerical",
                method=dc.score_method,
                threshold=dc.score_threshold,
                bins=dc.bins,
            )
            prediction["reference_mean"] = round(float(rs.mean()), 6)
            prediction["current_mean"] = round(float(cs.mean()), 6)
    performance = _performance(matured)
    if performance is not None and offline:
        performance["offline"] = {k: round(float(v), 6) for k, v in offline.items()}
    missing = why_missing(prediction=prediction, performance=performance, score_reference=sref,
                          current=current, matured=matured, min_rows=dc.min_rows)  # fmt: skip
    return {"features": features, "prediction": prediction, "performance": performance, "missing": missing}


def why_missing(
    *,
    prediction: Mapping[str, Any] | None,
    performance: Mapping[str, Any] | None,
    score_reference: pd.DataFrame,
    current: pd.DataFrame,
    matured: pd.DataFrame | None,
    min_rows: int,
) -> dict[str, str]:
    """Why a figure the pages show is absent (or partial), in words a person can act on; {} when all are there."""
    out: dict[str, str] = {}
    if prediction is None:
        if SCORE not in current.columns or not current[SCORE].notna().any():
            out["prediction"] = "no scores for the current window: run `loopline predict` on it first"
        elif SCORE not in score_reference.columns or not score_reference[SCORE].notna().any():
            out["prediction"] = ("no scores for the reference window: the champion has not scored it "
                                 "(`loopline predict` over the reference dates)")  # fmt: skip
        else:
            n_ref, n_cur = int(score_reference[SCORE].notna().sum()), int(current[SCORE].notna().sum())
            out["prediction"] = (f"{n_ref:,} reference and {n_cur:,} current scores: fewer than "
                                 f"monitor.drift.min_rows = {min_rows:,}")  # fmt: skip
    if performance is None:
        if matured is None or matured.empty:
            out["performance"] = "no rows in the performance window (its labels have not matured yet)"
        else:
            out["performance"] = f"no scores for the {len(matured):,} rows of the performance window"
    elif performance.get("roc_auc") is None:
        out["performance"] = (f"no matured labels of both classes yet: {performance.get('labelled', 0):,} "
                              f"labelled ({performance.get('positives', 0):,} positive) of "
                              f"{performance.get('rows', 0):,} scored rows")  # fmt: skip
    return out


# --------------------------------------------------------------------------- the decision (pure)


@dataclass(frozen=True)
class MonitorState:
    """Cool-down memory: the end of the last window that decided a retrain, recent decisions, and the start
    of the window where a shift that decided a drift-only retrain was first flagged (cleared once the
    champion's data reaches it)."""

    last_retrain_end: str | None = None
    history: tuple[dict[str, Any], ...] = ()
    shift_start: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"last_retrain_end": self.last_retrain_end, "history": list(self.history),
                "shift_start": self.shift_start}  # fmt: skip

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> MonitorState:
        d = d or {}
        return cls(d.get("last_retrain_end"), tuple(d.get("history", [])), d.get("shift_start"))


@dataclass(frozen=True)
class Decision:
    drift: bool
    retrain: bool
    reasons: list[str]
    triggers: list[str]  # performance | prediction_drift | feature_drift
    severe: bool
    cooldown: dict[str, Any]
    state: MonitorState  # the state to persist after this decision

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["state"] = self.state.to_dict()
        return d


def decide(
    figures: Mapping[str, Any],
    policy: MonitorPolicyConfig,
    state: MonitorState,
    *,
    window: Window,
    champion_data_end: dt.date | None = None,
    label_maturity_days: int = 0,
) -> Decision:
    """Retrain or not, and why. Order: performance decay on matured labels, prediction drift, feature drift
    weighted by importance; then the cool-down (skipped when the decay is severe); then the shift memory
    (``policy.shift_wait_periods``).

    A drift-only decision (no performance trigger) remembers the window's start as the shift's. While the
    champion's data (``champion_data_end``: the end of its train + holdout window) ends before that start,
    a retrain cannot learn the shift until its labels mature: further drift-only triggers wait until
    ``shift_wait_periods`` periods of them have (``window.end - label_maturity_days`` that far past the
    shift's start), then decide the retrain that learns it. The retrain at first detection still fires (an
    early warning, cheap when stateful); one per cool-down on the same pre-shift data would not.
    """
    reasons: list[str] = []
    triggers: list[str] = []
    severe = False
    perf = figures.get("performance")
    metric = policy.metric
    if perf and perf.get(metric) is not None and perf.get("offline", {}).get(metric) is not None:
        live, off = float(perf[metric]), float(perf["offline"][metric])
        drop = off - live
        if perf["positives"] < policy.min_positives:
            reasons.append(
                f"performance not judged: {perf['positives']} matured positives < "
                f"{policy.min_positives} (monitor.policy.min_positives)"
            )
        elif perf["label_coverage"] < policy.min_label_coverage:
            reasons.append(
                f"performance not judged: {perf['label_coverage']:.0%} of labels matured < "
                f"{policy.min_label_coverage:.0%}"
            )
        elif drop > policy.performance_margin:
            triggers.append("performance")
            severe = drop > policy.severe_margin
            reasons.append(
                f"{metric} {live:.3f} on {perf['labelled']} matured labels is {drop:.3f} below the "
                f"champion's offline {off:.3f} (margin {policy.performance_margin})"
                + (f"; severe (> {policy.severe_margin})" if severe else "")
            )
        else:
            reasons.append(f"{metric} {live:.3f} within {policy.performance_margin} of offline {off:.3f}")
    elif perf is None or perf.get(metric) is None:
        reasons.append("performance not judged: no matured labels of both classes with scores")
    pred = figures.get("prediction")
    if pred is not None and pred["drifted"]:
        msg = (
            f"prediction drift: score {pred['method']} {pred['score']:.3f} vs threshold {pred['threshold']} "
            f"(mean {pred['reference_mean']:.4f} -> {pred['current_mean']:.4f})"
        )
        if policy.prediction_drift:
            triggers.append("prediction_drift")
        reasons.append(
            msg + ("" if policy.prediction_drift else " (not a trigger: monitor.policy.prediction_drift)")
        )
    feats = figures["features"]
    if feats["drifted"]:
        names = ", ".join(
            f"{c} ({feats['columns'][c]['method']} {feats['columns'][c]['score']:.3f})"
            for c in feats["drifted"]
        )
        share = feats["drifted_importance"]
        if share > policy.importance_threshold:
            triggers.append("feature_drift")
            reasons.append(
                f"feature drift: {names}; importance share {share:.2f} > {policy.importance_threshold}"
            )
        else:
            reasons.append(
                f"feature drift below the importance threshold: {names}; share {share:.2f} <= "
                f"{policy.importance_threshold}"
            )
    drift = bool(feats["drifted"]) or bool(pred and pred["drifted"])
    want = bool(triggers)
    cooldown: dict[str, Any] = {
        "periods": policy.cooldown_periods,
        "last_retrain_end": state.last_retrain_end,
        "active": False,
    }
    if state.last_retrain_end is not None:
        since = (window.end - dt.date.fromisoformat(state.last_retrain_end)).days
        cooldown["days_since"] = since
        # whole periods since, rounded: calendar months (28-31 days) count as one period each
        cooldown["active"] = since > 0 and round(since / window.days) < policy.cooldown_periods
    retrain = want
    if want and cooldown["active"]:
        if severe:
            reasons.append("cool-down overridden: the performance decay is severe")
        else:
            retrain = False
            reasons.append(
                f"retrain suppressed by the cool-down: last decision for the window ending "
                f"{state.last_retrain_end}, {cooldown['days_since']} day(s) ago (< "
                f"{policy.cooldown_periods} periods of {window.days} day(s))"
            )
    shift = state.shift_start
    if (
        shift is not None
        and champion_data_end is not None
        and champion_data_end >= dt.date.fromisoformat(shift)
    ):
        shift = None  # the champion has trained on the shift: a drift from here on is a new one
    drift_only = want and "performance" not in triggers
    waits = policy.shift_wait_periods
    if retrain and drift_only and shift is not None and waits > 0 and shift < window.start.isoformat():
        matured = window.end - dt.timedelta(days=label_maturity_days)  # labels known up to here
        ready = dt.date.fromisoformat(shift) + dt.timedelta(days=waits * window.days - 1)
        if matured < ready:
            retrain = False
            reasons.append(
                f"retrain waits for the shift's labels: the drift was first flagged in the window from {shift}"
                + (
                    f" and the champion's data ends {champion_data_end}, before it"
                    if champion_data_end
                    else ""
                )
                + f"; with labels maturing "
                f"{label_maturity_days} day(s) after the event, {waits} period(s) of the shift's labels are in "
                f"once a window ends on {ready + dt.timedelta(days=label_maturity_days)} "
                f"(monitor.policy.shift_wait_periods; a performance decay still triggers)"
            )
        else:
            reasons.append(
                f"{waits} period(s) of labels of the shift flagged from {shift} have matured: retrain"
            )
    if not want:
        reasons.append("no trigger: keep the champion")
    end = window.end.isoformat()
    last = state.last_retrain_end
    if retrain and (last is None or end > last):
        last = end
    if retrain and drift_only and shift is None:
        shift = window.start.isoformat()
    entry = {"window": window.as_dict(), "retrain": retrain, "triggers": triggers}
    history = tuple([h for h in state.history if h.get("window") != entry["window"]] + [entry])[
        -HISTORY_KEEP:
    ]
    return Decision(drift, retrain, reasons, triggers, severe, cooldown, MonitorState(last, history, shift))


# --------------------------------------------------------------------------- one period, in process


@dataclass
class MonitorResult:
    figures: dict[str, Any]
    decision: Decision
    cpu_seconds: float
    wall_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def monitor_period(
    *,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    window: Window,
    columns: Mapping[str, D.ColumnKind],
    cfg: MonitorConfig,
    state: MonitorState,
    score_reference: pd.DataFrame | None = None,
    matured: pd.DataFrame | None = None,
    importance: Mapping[str, float] | None = None,
    offline: Mapping[str, float] | None = None,
    champion_data_end: dt.date | None = None,
    seed: int = 0,
) -> MonitorResult:
    """Figures + decision for one period, no I/O; CPU seconds of this process spent on it.
    ``champion_data_end``: the end of the champion's data window (for the shift memory of :func:`decide`)."""
    c0, w0 = time.process_time(), time.perf_counter()
    figures = compute_figures(
        reference=reference,
        current=current,
        columns=columns,
        cfg=cfg,
        score_reference=score_reference,
        matured=matured,
        importance=importance,
        offline=offline,
        seed=seed,
    )
    decision = decide(figures, cfg.policy, state, window=window, champion_data_end=champion_data_end,
                      label_maturity_days=cfg.label_maturity_days)  # fmt: skip
    return MonitorResult(figures, decision, time.process_time() - c0, time.perf_counter() - w0)


# --------------------------------------------------------------------------- reports


def evidently_html(
    reference: pd.DataFrame, current: pd.DataFrame, *, columns: Mapping[str, D.ColumnKind], cfg: MonitorConfig
) -> tuple[str, dict[str, Any]]:
    """Evidently's drift report (current API) on the sampled frames; returns (html, a small digest)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    dc = cfg.drift
    num = [c for c, k in columns.items() if k == "numerical"]
    cat = [c for c, k in columns.items() if k == "categorical"]
    per_m = {
        c: dc.per_column_method.get(c, dc.numerical_method if k == "numerical" else dc.categorical_method)
        for c, k in columns.items()
    }
    per_t = {}
    for c, k in columns.items():
        t = dc.per_column_threshold.get(
            c, dc.numerical_threshold if k == "numerical" else dc.categorical_threshold
        )
        per_t[c] = float(t if t is not None else D.METHODS[per_m[c]].default_threshold)
    has_score = SCORE in reference.columns and SCORE in current.columns and reference[SCORE].notna().any()
    keep = list(columns) + ([SCORE] if has_score else [])
    definition = DataDefinition(
        numerical_columns=num + ([SCORE] if has_score else []), categorical_columns=cat
    )
    metrics: list[Any] = [
        DataDriftPreset(
            columns=list(columns),
            per_column_method=per_m,
            per_column_threshold=per_t,
            drift_share=EVIDENTLY_DRIFT_SHARE,
        )
    ]
    if has_score:
        st = float(dc.score_threshold or D.METHODS[dc.score_method].default_threshold)
        metrics.append(ValueDrift(column=SCORE, method=dc.score_method, threshold=st))

    def ds(frame: pd.DataFrame) -> Any:
        f = frame[keep].copy()
        for c in cat:
            f[c] = f[c].astype("object").where(f[c].notna(), D.MISSING_CATEGORY)
        return Dataset.from_pandas(f, data_definition=definition)

    snapshot = Report(metrics).run(ds(current), ds(reference))
    digest: dict[str, Any] = {}
    try:
        for m in snapshot.dict().get("metrics", []):
            name = str(m.get("metric_name", m.get("metric_id", "")))
            if name.startswith("DriftedColumnsCount"):
                digest["drifted_columns"] = m.get("value")
            elif name.startswith("ValueDrift"):
                digest.setdefault("value_drift", {})[name] = m.get("value")
    except Exception as err:  # the digest is informative only; the report itself is what matters
        log.warning("could not summarize the Evidently snapshot: %s", err)
    return snapshot.get_html_str(as_iframe=False), digest


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


EVIDENTLY_DRIFT_SHARE = 0.5  # DataDriftPreset's default: "dataset drift" when half the columns drift


def with_decision_banner(page: str, decision: Mapping[str, Any]) -> str:
    """Evidently's report with Loopline's decision on top, and why Evidently's own headline may differ.

    Evidently calls the *dataset* drifted when at least half of the columns drift; Loopline's decision weighs
    each drifted column by its importance to the model and also reads prediction drift and matured-label
    performance. Without the banner the page said "Dataset Drift is NOT detected" beside a retrain.
    """
    retrain, drift = bool(decision.get("retrain")), bool(decision.get("drift"))
    verdict = D.decision_verdict(decision)
    reasons = "".join(f"<li>{html.escape(str(r))}</li>" for r in decision.get("reasons") or [])
    color = "#c0392b" if retrain else ("#e0a100" if drift else "#2e9e5b")
    banner = (
        f'<div id="loopline-decision" style="font:15px sans-serif;margin:12px;padding:10px 16px;'
        f'border-left:6px solid {color};background:#f6f7f9"><b>Loopline decision: {verdict}</b>'
        f"<ul>{reasons}</ul><small>This decision is the one that acts (reports/monitor/latest/decision.json). "
        f"Evidently's headline below calls the dataset drifted only when at least "
        f"{EVIDENTLY_DRIFT_SHARE:.0%} of the columns drift; Loopline weighs each drifted column by its importance "
        f"to the model and also reads prediction drift and performance on matured labels "
        f"(params: monitor.policy).</small></div>"
    )
    at = page.find("<body")
    if at < 0:
        return banner + page
    end = page.index(">", at) + 1
    return page[:end] + banner + page[end:]


def _figure_or_why(figure: Mapping[str, Any] | None, why: str | None) -> str:
    """A figure as JSON, or the reason it is absent (never a bare ``null``)."""
    note = f"<p><b>Not computed:</b> {html.escape(why)}.</p>" if why else ""
    if figure is None:
        return note or "<p><b>Not computed.</b></p>"
    return f"{note}<pre>{html.escape(json.dumps(figure, indent=1))}</pre>"


def summary_html(summary: Mapping[str, Any], reference: pd.DataFrame, current: pd.DataFrame) -> str:
    """A self-contained page (inline PNGs, no script): the decision, drift scores and score histograms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dec, fig_ = summary["decision"], summary["figures"]
    cols = fig_["features"]["columns"]
    names = list(cols)
    ratio = [
        ((c["score"] or 0) / c["threshold"])
        if c["score_type"] == "distance"
        else (c["threshold"] / max(c["score"] or 1e-12, 1e-12))
        for c in cols.values()
    ]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1))
    ax.barh(names, ratio, color=["#c0392b" if cols[n]["drifted"] else "#7f8c8d" for n in names])
    ax.axvline(1.0, color="k", lw=1, ls="--")
    ax.set_xlabel("score / threshold (>= 1: drift)")
    ax.set_title("feature drift")
    imgs = [_png(fig)]
    if SCORE in reference.columns and SCORE in current.columns and reference[SCORE].notna().any():
        fig, ax = plt.subplots(figsize=(7, 3))
        bins = [i / 40 for i in range(41)]
        for frame, lab in ((reference, "reference"), (current, "current")):
            s = frame[SCORE].dropna()
            ax.hist(s, bins=bins, density=True, histtype="step", lw=1.5, label=f"{lab} (n={len(s)})")
        ax.set_yscale("log")
        ax.set_xlabel("score")
        ax.legend()
        ax.set_title("prediction distribution")
        imgs.append(_png(fig))
    rows = "".join(
        f"<tr class={'d' if c['drifted'] else ''}><td>{html.escape(n)}</td><td>{c['kind']}</td><td>{c['method']}</td>"
        f"<td>{c['score']}</td><td>{c['threshold']}</td><td>{c['importance']}</td><td>{c['drifted']}</td></tr>"
        for n, c in cols.items()
    )
    perf = fig_.get("performance")
    pred = fig_.get("prediction")
    missing = fig_.get("missing") or {}
    verdict = D.decision_verdict(dec)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Loopline monitor {summary["window"]["label"]}</title>
<style>body{{font:14px sans-serif;margin:2em;max-width:60em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px}}tr.d td{{background:#fadbd8}}.v{{font-size:1.4em;font-weight:bold}}</style>
</head><body><h1>Monitor: {html.escape(summary["window"]["label"])}</h1>
<p>Current {summary["window"]["start"]}..{summary["window"]["end"]} vs reference ({summary["reference"]["kind"]})
{summary["reference"]["start"]}..{summary["reference"]["end"]}; champion {html.escape(str(summary["champion"]))}.</p>
<p class="v">{verdict}</p><ul>{"".join(f"<li>{html.escape(r)}</li>" for r in dec["reasons"])}</ul>
<h2>Feature drift</h2><table><tr><th>column</th><th>kind</th><th>method</th><th>score</th><th>threshold</th>
<th>importance</th><th>drifted</th></tr>{rows}</table>
<p>Excluded: {html.escape(", ".join(f"{k} ({v})" for k, v in summary["excluded"].items()) or "none")}</p>
<h2>Prediction drift</h2>{_figure_or_why(pred, missing.get("prediction"))}
<h2>Performance on matured labels</h2>{_figure_or_why(perf, missing.get("performance"))}
{"".join(f'<p><img src="data:image/png;base64,{i}"></p>' for i in imgs)}
<p>Monitor CPU: {summary["cpu_seconds"]} s</p></body></html>"""


# --------------------------------------------------------------------------- the stage (I/O edge)


def run_monitor(
    *,
    lake: str,
    predictions: str,
    registry: str,
    out: str,
    schema: SchemaConfig,
    cfg: MonitorConfig,
    seed: int,
    date: str | None = None,
    start: str | None = None,
    end: str | None = None,
    model_version: str | None = None,
) -> dict[str, Any]:
    """Monitor one window; write the reports, summary.json, decision.json and the cool-down state."""

    c0, w0 = time.process_time(), time.perf_counter()
    if date is not None and (start or end):
        raise InputError("pass either --date or --start/--end, not both")
    if date is not None:
        d = dt.date.fromisoformat(validate_date(date, name="--date"))
        window = Window(d, d)
    elif start or end:
        if not (start and end):
            raise InputError("--start and --end go together; pass both (or --date D)")
        window = Window(
            dt.date.fromisoformat(validate_date(start, name="--start")),
            dt.date.fromisoformat(validate_date(end, name="--end")),
        )
    else:
        dates = lake_dates(lake)
        if not dates:
            raise FileNotFoundError(f"{lake}: no partitions; run `loopline etl` first or pass --date")
        newest = dt.date.fromisoformat(dates[-1])
        window = Window(newest - dt.timedelta(days=cfg.period_days - 1), newest)
    all_cols = [c.name for c in schema.columns if c.name != schema.entity_key]
    prelim, _ = monitored_columns(schema, cfg, reference_kind=cfg.reference.kind)
    champ = champion_info(registry, columns=list(prelim), version=model_version)
    version = model_version or champ.version
    ref_window, ref_kind = reference_window(window, cfg=cfg, training=champ.training)
    columns, excluded = monitored_columns(schema, cfg, reference_kind=ref_kind)
    importance = {c: champ.importance.get(c, 0.0) for c in columns}
    if not any(importance.values()):
        importance = {c: 1.0 / len(columns) for c in columns}
    else:
        s = sum(importance.values())
        importance = {c: v / s for c, v in importance.items()}
    read_cols = [c for c in all_cols if c in columns]
    kw: dict[str, Any] = {
        "columns": read_cols,
        "max_rows": cfg.max_rows,
        "sampling": cfg.sampling,
        "model_version": version,
    }
    current, cur_seen = load_window(
        lake, window, cutoff=window.cutoff, predictions=predictions, seed=seed, **kw
    )
    if cur_seen == 0:
        raise FileNotFoundError(f"{lake}: no partitions in the current window {window.start}..{window.end}")
    reference, ref_seen = load_window(
        lake, ref_window, cutoff=window.cutoff, predictions=None, seed=seed + 1, **kw
    )
    # scores of the reference: out-of-sample only (the holdout part of the training window)
    score_window = ref_window
    if ref_kind == "training" and champ.holdout is not None:
        score_window = (
            Window(max(champ.holdout.start, ref_window.start), ref_window.end)
            if champ.holdout.start <= ref_window.end
            else ref_window
        )
    score_ref, score_seen = load_window(
        lake,
        score_window,
        cutoff=window.cutoff,
        predictions=predictions,
        seed=seed + 2,
        require_scores=True,
        **kw,
    )
    # performance: the newest window whose labels have matured, never rows the champion was fitted on
    perf_end = window.end - dt.timedelta(
        days=cfg.label_maturity_days if cfg.performance_window == "matured" else 0
    )
    perf_start = perf_end - dt.timedelta(days=cfg.performance_days - 1)
    if champ.fitted is not None:
        perf_start = max(perf_start, champ.fitted.end + dt.timedelta(days=1))
    perf_window: Window | None = Window(perf_start, perf_end) if perf_start <= perf_end else None
    matured = None
    if perf_window is not None:
        matured, _ = load_window(
            lake,
            perf_window,
            cutoff=window.cutoff,
            predictions=predictions,
            seed=seed + 3,
            require_scores=True,
            **kw,
        )
    result = monitor_period(
        reference=reference,
        current=current,
        window=window,
        columns=columns,
        cfg=cfg,
        state=_read_state(out),
        score_reference=score_ref if score_seen else None,
        matured=matured,
        importance=importance,
        offline=champ.offline,
        champion_data_end=champ.training.end if champ.training is not None else None,
        seed=seed,
    )
    files: dict[str, str] = {}
    run_dir = storage.join(out, "runs", window.label)
    evidently_digest: dict[str, Any] | None = None
    report_html = None
    report_reference = _with_scores(reference, score_ref) if score_seen else reference
    if cfg.evidently_report:
        try:
            report_html, evidently_digest = evidently_html(
                report_reference, current, columns=columns, cfg=cfg
            )
        except Exception as err:  # the decision stands without the Evidently page; say so loudly
            log.error("Evidently report failed (%s); summary.html is still written", err)
            evidently_digest = {"error": str(err)}
    cpu = time.process_time() - c0
    summary = {
        "window": {**window.as_dict(), "label": window.label, "days": window.days},
        "reference": {**ref_window.as_dict(), "kind": ref_kind, "requested": cfg.reference.kind},
        "score_reference": score_window.as_dict() if score_seen else None,
        "performance_window": perf_window.as_dict() if perf_window else None,
        "champion": version,
        "rows_seen": {"current": cur_seen, "reference": ref_seen, "score_reference": score_seen},
        "monitored": dict(columns),
        "excluded": excluded,
        "figures": result.figures,
        "decision": result.decision.to_dict() | {"state": None},
        "evidently": evidently_digest,
        "cpu_seconds": round(cpu, 3),
        "decision_cpu_seconds": round(result.cpu_seconds, 3),
        "wall_seconds": round(time.perf_counter() - w0, 3),
    }
    decision = {
        "window": summary["window"],
        "champion": version,
        "drift": result.decision.drift,
        "retrain": result.decision.retrain,
        "reasons": result.decision.reasons,
        "triggers": result.decision.triggers,
        "severe": result.decision.severe,
        "figures": {
            "drifted_features": result.figures["features"]["drifted"],
            "drifted_importance": result.figures["features"]["drifted_importance"],
            "prediction_drift": result.figures["prediction"],
            "performance": result.figures["performance"],
        },
        "policy": cfg.policy.model_dump(mode="json"),
        "cooldown": result.decision.cooldown,
        "cpu_seconds": summary["cpu_seconds"],
    }
    page = summary_html(summary, report_reference, current)
    if report_html is not None:  # Evidently's own headline judges differently: the page leads with ours
        report_html = with_decision_banner(report_html, decision)
    for folder in (run_dir, storage.join(out, "latest")):
        storage.write_json(storage.join(folder, "summary.json"), summary)
        storage.write_json(storage.join(folder, "decision.json"), decision)
        storage.write_bytes(storage.join(folder, "summary.html"), page.encode())
        if (
            report_html is None
        ):  # the stage always has its declared output; the stub says why and where to look
            why = "disabled (monitor.evidently_report: false)" if not cfg.evidently_report else "failed"
            report_html = (
                f"<!doctype html><html><body><p>Evidently report {why}: "
                f"{html.escape(str(evidently_digest or ''))}. See summary.html.</p></body></html>"
            )
        storage.write_bytes(storage.join(folder, "report.html"), report_html.encode())
    files["run_dir"] = run_dir
    storage.write_json(storage.join(out, STATE_FILE), result.decision.state.to_dict())
    log.info(
        "monitor %s: drift=%s retrain=%s (%s)",
        window.label,
        result.decision.drift,
        result.decision.retrain,
        "; ".join(result.decision.reasons),
    )
    return {"summary": summary, "decision": decision, "files": files}


def _with_scores(reference: pd.DataFrame, score_ref: pd.DataFrame) -> pd.DataFrame:
    """The reference frame for reports: its feature columns, with the out-of-sample scores as ``score``
    (rows beyond the scored ones get no score)."""
    ref = reference.drop(columns=[SCORE], errors="ignore").reset_index(drop=True)
    s = score_ref[SCORE].dropna().reset_index(drop=True)
    col = pd.Series(np.nan, index=ref.index)
    n = min(len(s), len(ref))
    col.iloc[:n] = s.iloc[:n].to_numpy()
    return ref.assign(**{SCORE: col})


def _read_state(out: str) -> MonitorState:
    loc = storage.join(out, STATE_FILE)
    return MonitorState.from_dict(storage.read_json(loc)) if storage.exists(loc) else MonitorState()
