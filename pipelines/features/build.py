"""Feature stage: point-in-time aggregates, a spec fitted on the train split only, leakage checks, report.

``loopline features`` reads the labelled splits (``data/labeled/{train,valid,test}.parquet``) and the
lake, and writes the feature matrices, ``spec.json`` and the features report. The pieces:

- :func:`entity_aggregates` (pure): per event, its entity's count, sum and mean of a value over
  trailing windows and the seconds since its previous event, from *strictly earlier* events of the
  full lake history (not only the sampled rows). The window is ``[t - w, t)``: an event exactly ``w``
  earlier counts, the event itself never does, and events at the very same timestamp do not see each
  other (their order within a tick is unknown, so neither may use the other). The aggregates become
  ordinary numeric inputs of the spec; a batch or edge caller computes them upstream the same way.
- :func:`fit_spec` (pure): every statistic from the train split only; the spec records the fit window,
  the row count and the train split's digest, which the leakage check verifies.
- :func:`pipelines.edge.featurespec.transform` is the one transform (numpy only), used here, in batch scoring
  and on the edge. :func:`transform_frame` is an independent pandas implementation of the same spec,
  kept as the reference the parity test compares against.
- :mod:`pipelines.features.leakage` runs on every build and fails it, naming each problem.
"""

from __future__ import annotations

import bisect
import datetime as dt
import html
import logging
import math
import os
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipelines.core import storage
from pipelines.core.config import ColumnSpec, FeatureAggregatesConfig, FeaturesConfig, Params, SchemaConfig
from pipelines.core.drift import psi as drift_psi
from pipelines.core.errors import InputError
from pipelines.data.etl import lake_dates, read_partition
from pipelines.edge import featurespec as fs
from pipelines.features import leakage
from pipelines.features.spec_frame import epoch_us, frame_to_columns, transform_columns

__all__ = [
    "FeatureBuild",
    "aggregate_arrays",
    "aggregate_columns",
    "build_features",
    "entity_aggregates",
    "fit_spec",
    "frame_to_columns",
    "numba_available",
    "parse_window",
    "psi",
    "run_features",
    "transform_frame",
]

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
META_COLUMNS = (
    "event_id", "event_time", "label", "label_time", "label_source", "label_weight", "sample_weight", "split",
)  # fmt: skip
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


# --------------------------------------------------------------------------- point-in-time aggregates


def parse_window(window: str) -> int:
    """``"30m"``, ``"1h"``, ``"7d"`` -> seconds."""
    if (
        len(window) < 2
        or window[-1] not in _UNIT_SECONDS
        or not window[:-1].isdigit()
        or int(window[:-1]) < 1
    ):
        raise InputError(
            f"aggregate window {window!r}: expected a positive number and s, m, h or d, e.g. 24h"
        )
    return int(window[:-1]) * _UNIT_SECONDS[window[-1]]


def aggregate_columns(entity_key: str, windows: Sequence[str], value_column: str | None) -> dict[str, bool]:
    """Aggregate column names -> whether the column can be missing (no earlier event)."""
    cols: dict[str, bool] = {}
    for w in windows:
        cols[f"{entity_key}__n_{w}"] = False
        if value_column:
            cols[f"{entity_key}__sum_{value_column}_{w}"] = False
            cols[f"{entity_key}__mean_{value_column}_{w}"] = True
    cols[f"{entity_key}__secs_since_prev"] = True
    return cols


def entity_aggregates(
    events: pd.DataFrame, *, entity_key: str, windows: Sequence[str], value_column: str | None = None
) -> pd.DataFrame:
    """Per event (same row order as ``events``): ``event_id`` and the point-in-time aggregates of its entity.

    Only events strictly earlier than the event itself count (window ``[t - w, t)``; ties excluded).
    ``sum`` treats a missing value as 0, ``mean`` averages the non-missing values (NaN when there are
    none); ``secs_since_prev`` is NaN for an entity's first event. A missing entity key never pools
    rows: each such event is its own entity.
    """
    for c in ("event_id", "event_time", entity_key, *([value_column] if value_column else [])):
        if c not in events.columns:
            raise KeyError(
                f"entity_aggregates: column {c!r} is missing from the events (have {list(events.columns)})"
            )
    codes, _ = pd.factorize(events[entity_key])
    value = (
        pd.to_numeric(events[value_column], errors="coerce").to_numpy(dtype=np.float64)
        if value_column
        else None
    )
    out = aggregate_arrays(
        epoch_us(events["event_time"]), codes, value, entity_key=entity_key, windows=windows,
        value_column=value_column,
    )  # fmt: skip
    frame = pd.DataFrame(out)
    frame.insert(0, "event_id", events["event_id"].to_numpy())
    return frame


def numba_available() -> bool:
    """Whether the compiled kernels (pipelines.features.kernels) can run; without numba the numpy references do."""
    import importlib.util

    return importlib.util.find_spec("numba") is not None


def aggregate_arrays(
    t_us: np.ndarray,
    codes: np.ndarray,
    value: np.ndarray | None,
    *,
    entity_key: str,
    windows: Sequence[str],
    value_column: str | None = None,
    rows: np.ndarray | slice | None = None,
    engine: str = "auto",
) -> dict[str, np.ndarray]:
    """:func:`entity_aggregates` on plain arrays: event times (int64 epoch µs), entity codes (int, negative
    for a missing key) and the value (float64, NaN missing). ``rows`` picks the events whose aggregates are
    returned (all by default): a batch scorer passes its own rows and history events only count.

    Every search runs on sorted queries (cache-friendly), so the cost is one sort of the events. ``engine``
    ``numba`` sweeps the sorted events once (:func:`pipelines.features.kernels.entity_windows`, same figures bit for
    bit); ``numpy`` is the reference (a binary search per event and window); ``auto``: numba when installed.
    """
    if engine not in ("auto", "numba", "numpy"):
        raise InputError(f"aggregate_arrays: engine={engine!r}: expected auto, numba or numpy")
    if engine == "auto":
        engine = "numba" if numba_available() else "numpy"
    n = len(t_us)
    t = np.asarray(t_us, dtype=np.int64)
    codes = np.asarray(codes, dtype=np.int64).copy()
    lone = codes < 0
    if lone.any():
        codes[lone] = codes.max(initial=-1) + 1 + np.arange(int(lone.sum()))
    secs = [parse_window(w) for w in windows]
    # One sortable int64 key per event, (entity, time): entity * span + time offset when that fits in
    # int64 (then a window's start is simply key - w, in the same order), else with times rank-compressed
    # (whatever the time span and the number of entities).
    longest = max(secs, default=0) * 1_000_000
    base = (int(t.min()) if n else 0) - longest  # not min(initial=0): epoch times would make the span decades
    span = (int(t.max()) if n else 0) - base + 1
    direct = n == 0 or (int(codes.max()) + 1) * span < 2**62
    if direct:
        key = codes * np.int64(span) + (t - base)
    else:
        by_time = np.argsort(t, kind="stable")
        tt = t[by_time]
        new_t = np.empty(n, dtype=bool)
        new_t[:1] = True
        np.not_equal(tt[1:], tt[:-1], out=new_t[1:])
        grid = tt[new_t]  # distinct times, ascending
        width = np.int64(len(grid) + 1)
        rank = np.empty(n, dtype=np.int64)
        rank[by_time] = np.cumsum(new_t) - 1
        key = codes * width + rank
    if direct and engine == "numba":
        from pipelines.features.kernels import (
            entity_time_order,  # optional: numba; the numpy path runs without it
        )

        order = entity_time_order(codes, t)  # the same permutation, without a general sort
    else:
        order = np.argsort(key, kind="stable")
    ks = key[order]

    def window_lo(s: int) -> np.ndarray:
        """Per event in (entity, time) order: the first position of its entity at or after t - s."""
        if direct:
            query = ks - np.int64(s * 1_000_000)  # ascending: searched in one cache-friendly sweep
        else:
            start_rank = np.empty(n, dtype=np.int64)
            start_rank[by_time] = np.searchsorted(grid, tt - s * 1_000_000, side="left")
            query = (codes * width + start_rank)[order]  # ascending in (entity, time) order
        return np.searchsorted(ks, query, side="left")

    # (a value without its column's name, or the reverse, keeps the reference's naming: numpy path)
    if (
        direct
        and engine == "numba"
        and (rows is None or isinstance(rows, slice))
        and (value is None) == (not value_column)
    ):
        from pipelines.features.kernels import (
            entity_windows,  # optional: numba; the numpy path runs without it
        )

        if rows is None:
            row_of, n_out = np.arange(n), n
        else:
            picked = np.arange(n)[rows]
            row_of, n_out = np.full(n, -1, dtype=np.int64), len(picked)
            row_of[picked] = np.arange(n_out)
        spans = [s * 1_000_000 for s in secs]
        table = entity_windows(ks, order, codes, t, value, spans, row_of, n_out)
        names = list(aggregate_columns(entity_key, windows, value_column))
        return {name: table[:, c] for c, name in enumerate(names)}
    g, ts = codes[order], t[order]
    new_k = np.empty(n, dtype=bool)
    new_k[:1] = True
    np.not_equal(ks[1:], ks[:-1], out=new_k[1:])
    # first event of the group at the same time: ties excluded
    hi = np.maximum.accumulate(np.where(new_k, np.arange(n), 0)) if n else np.zeros(0, dtype=np.int64)
    pick = np.empty(n, dtype=np.int64)
    pick[order] = np.arange(n)  # event -> its position in (entity, time) order
    pick = pick if rows is None else pick[rows]
    hi_p = hi[pick]
    out: dict[str, np.ndarray] = {}
    if value is not None:
        v = np.asarray(value, dtype=np.float64)[order]
        present = ~np.isnan(v)
        csum = np.concatenate([[0.0], np.cumsum(np.where(present, v, 0.0))])
        cnum = np.concatenate([[0], np.cumsum(present)])
    for w, s in zip(windows, secs, strict=True):
        lo = window_lo(s)[pick]
        out[f"{entity_key}__n_{w}"] = (hi_p - lo).astype(np.float64)
        if value is not None:
            total = csum[hi_p] - csum[lo]
            k = cnum[hi_p] - cnum[lo]
            out[f"{entity_key}__sum_{value_column}_{w}"] = total
            with np.errstate(invalid="ignore", divide="ignore"):
                out[f"{entity_key}__mean_{value_column}_{w}"] = np.where(
                    k > 0, total / np.maximum(k, 1), np.nan
                )
    prev = hi_p - 1
    safe = np.maximum(prev, 0)
    has_prev = (prev >= 0) & (g[safe] == g[pick])
    out[f"{entity_key}__secs_since_prev"] = np.where(has_prev, (ts[pick] - ts[safe]) / 1e6, np.nan)
    return out


# --------------------------------------------------------------------------- fitting


def _column_kind(col: ColumnSpec) -> str | None:
    if col.type in ("string", "category"):
        return "categorical"
    if col.type in ("float", "int", "bool"):
        return "numeric"
    return None  # timestamps: not a feature by themselves


def input_kinds(
    schema: SchemaConfig, cfg: FeaturesConfig, aggregates: Mapping[str, bool] | None = None
) -> dict[str, str]:
    """Input columns of the spec -> ``numeric`` or ``categorical`` (entity key and dropped columns out)."""
    known = {c.name for c in schema.columns}
    for where, names in (("features.drop", cfg.drop), ("features.discretize", list(cfg.discretize)),
                         ("features.scale_overrides", list(cfg.scale_overrides)),
                         ("features.encoding_overrides", list(cfg.encoding_overrides)),
                         ("features.crosses", [c for cross in cfg.crosses for c in cross])):  # fmt: skip
        unknown = sorted(set(names) - known - set(aggregates or {}))
        if unknown:
            raise InputError(f"params: {where} names {unknown}, which schema.columns does not declare")
    kinds: dict[str, str] = {}
    for col in schema.columns:
        if col.name == schema.entity_key or col.name in cfg.drop:
            continue
        kind = _column_kind(col)
        if kind is not None:
            kinds[col.name] = kind
    for name in aggregates or {}:
        kinds[name] = "numeric"
    return kinds


def _skew(x: np.ndarray) -> float:
    if x.size < 3:
        return 0.0
    sd = x.std()
    return float(((x - x.mean()) ** 3).mean() / sd**3) if sd > 0 else 0.0


def _fit_numeric(
    x: np.ndarray, *, name: str, cfg: FeaturesConfig, nullable: bool, is_bool: bool
) -> dict[str, Any]:
    finite = x[~np.isnan(x)]
    if cfg.impute == "zero" or finite.size == 0:
        impute = 0.0
    else:
        impute = float(np.median(finite) if cfg.impute == "median" else finite.mean())
    scale = cfg.scale_overrides.get(name, "none" if is_bool else cfg.scaling)
    if scale == "auto":
        scale = "log" if finite.size and finite.min() >= 0 and _skew(finite) > 1.0 else "standard"
    xi = np.where(np.isnan(x), impute, x)
    g = np.log1p(np.maximum(xi, 0.0)) if scale == "log" else xi
    if scale in ("standard", "log") and g.size:
        shift, divisor = float(g.mean()), float(g.std())
    elif scale == "minmax" and g.size:
        shift, divisor = float(g.min()), float(g.max() - g.min())
    else:
        shift, divisor = 0.0, 1.0
    if not math.isfinite(divisor) or divisor <= 0:
        divisor = 1.0
    indicator = cfg.missing_indicators == "always" or (cfg.missing_indicators == "nullable" and nullable)
    bins = None
    if name in cfg.discretize and xi.size:
        qs = np.quantile(xi, np.linspace(0, 1, cfg.discretize[name] + 1)[1:-1])
        bins = [float(b) for b in np.unique(qs)]
    return {"op": "numeric", "column": name, "impute": impute, "indicator": indicator, "scale": scale,
            "shift": shift, "divisor": divisor, "bins": bins}  # fmt: skip


def _vocabulary(text: np.ndarray, missing: np.ndarray, min_count: int) -> list[str]:
    cats, counts = np.unique(text[~missing], return_counts=True)
    keep = [(int(-c), str(v)) for v, c in zip(cats, counts, strict=True) if c >= min_count]
    return [v for _, v in sorted(keep)]  # most frequent first, ties by name: deterministic


def fit_spec(
    train: pd.DataFrame,
    *,
    cfg: FeaturesConfig,
    schema: SchemaConfig,
    aggregates: Mapping[str, bool] | None = None,
    aggregate_windows: Sequence[str] = (),
    aggregate_value: str | None = None,
) -> dict[str, Any]:
    """Fit the feature spec on the train split only (pure). ``aggregates``: aggregate column -> nullable."""
    if len(train) == 0:
        raise InputError("fit_spec: the train split is empty; nothing to fit the feature spec on")
    kinds = input_kinds(schema, cfg, aggregates)
    declared = {c.name: c for c in schema.columns}
    missing_cols = [c for c in kinds if c not in train.columns]
    if missing_cols:
        raise KeyError(f"fit_spec: the train split lacks input columns {missing_cols}")
    transforms: list[dict[str, Any]] = []
    for name, kind in kinds.items():
        col = declared.get(name)
        if kind == "numeric":
            nullable = col.nullable if col is not None else bool((aggregates or {}).get(name, True))
            transforms.append(
                _fit_numeric(
                    fs.as_float(train[name].to_numpy()),
                    name=name,
                    cfg=cfg,
                    nullable=nullable,
                    is_bool=col is not None and col.type == "bool",
                )
            )
            continue
        enc = cfg.encoding_overrides.get(name)
        if enc is None and col is not None and col.high_cardinality:
            enc = "hash"
        if enc == "hash":
            transforms.append({"op": "hash", "columns": [name], "buckets": cfg.hash_buckets})
            continue
        text, missing = fs.as_text(frame_to_columns(train, [name])[name])
        vocab = _vocabulary(text, missing, cfg.min_category_count)
        if enc is None:
            enc = "onehot" if len(vocab) <= cfg.onehot_max_categories else "ordinal"
        transforms.append({"op": enc, "column": name, "categories": vocab})
    for cross in cfg.crosses:
        transforms.append({"op": "hash", "columns": list(cross), "buckets": cfg.cross_buckets})
    if cfg.cyclical:
        transforms.append({"op": "cyclical", "column": "event_time", "parts": ["hour", "dow"]})
    t = pd.to_datetime(train["event_time"], utc=True)
    spec: dict[str, Any] = {
        "entity_key": schema.entity_key,
        "inputs": {**kinds, **({"event_time": "time"} if cfg.cyclical else {})},
        "transforms": transforms,
        "aggregates": {
            "columns": list(aggregates or {}),
            "windows": list(aggregate_windows),
            "value_column": aggregate_value,
            "semantics": "per entity, strictly earlier events only: window [t - w, t), same-timestamp "
            "events excluded; computed upstream, inputs of this spec",
        },
        "fit": {
            "split": "train",
            "rows": len(train),
            "window": {"start": t.min().isoformat(), "end": t.max().isoformat()},
            "train_digest": leakage.split_digest(train["event_id"]),
        },
    }
    return fs.finalize_spec(spec)


# --------------------------------------------------------------------------- training-path transforms


def transform_frame(spec: Mapping[str, Any], df: pd.DataFrame) -> pd.DataFrame:
    """An independent pandas implementation of the spec (the reference for the parity test)."""
    out: dict[str, pd.Series] = {}
    idx = df.index

    def text(name: str) -> pd.Series:
        s = df[name].astype("string").str.strip()
        return s.mask(s.isin(list(fs._MISSING_TEXT)))

    for op in spec["transforms"]:
        kind = op["op"]
        if kind == "numeric":
            c = op["column"]
            x = pd.to_numeric(df[c], errors="coerce").astype("float64").replace([np.inf, -np.inf], np.nan)
            missing = x.isna()
            xi = x.fillna(op["impute"])
            g = np.log1p(xi.clip(lower=0.0)) if op["scale"] == "log" else xi
            out[f"{c}__{op['scale']}"] = (g - op["shift"]) / op["divisor"]
            if op["indicator"]:
                out[f"{c}__missing"] = missing.astype("float64")
            if op["bins"] is not None:
                out[f"{c}__bin"] = xi.map(lambda v, e=op["bins"]: float(bisect.bisect_right(e, v)))
        elif kind in ("onehot", "ordinal"):
            c = op["column"]
            s = text(c)
            if kind == "ordinal":
                codes = {cat: float(i + 1) for i, cat in enumerate(op["categories"])}
                out[f"{c}__ord"] = s.map(codes).astype("float64").fillna(0.0)
            else:
                hits = pd.Series(False, index=idx)
                for cat in op["categories"]:
                    eq = (s == cat).fillna(False).astype(bool)
                    out[f"{c}=={cat}"] = eq.astype("float64")
                    hits |= eq
                out[f"{c}=={fs.UNKNOWN}"] = (~hits).astype("float64")
        elif kind == "hash":
            name = "_x_".join(op["columns"])
            key = text(op["columns"][0]).fillna(fs.MISSING_TOKEN)
            for c in op["columns"][1:]:
                key = key + fs.CROSS_SEP + text(c).fillna(fs.MISSING_TOKEN)
            salt = zlib.crc32(name.encode("utf-8"))
            bucket = key.map(lambda v, s=salt, b=op["buckets"]: zlib.crc32(v.encode("utf-8"), s) % b)
            width = len(str(op["buckets"] - 1))
            for i in range(op["buckets"]):
                out[f"{name}__h{i:0{width}d}"] = (bucket == i).astype("float64")
        elif kind == "cyclical":
            c = op["column"]
            ts = pd.to_datetime(df[c], utc=True)
            missing = ts.isna()
            for part in op["parts"]:
                if part == "hour":
                    sod = ts.dt.hour * 3600 + ts.dt.minute * 60 + ts.dt.second + ts.dt.microsecond / 1e6
                    frac = sod / 86400.0
                else:
                    frac = ts.dt.dayofweek / 7.0
                angle = 2 * math.pi * frac.astype("float64")
                out[f"{c}__{part}_sin"] = np.sin(angle).where(~missing, 0.0)
                out[f"{c}__{part}_cos"] = np.cos(angle).where(~missing, 0.0)
        else:
            raise fs.SpecError(f"transform_frame: unknown op {kind!r}")
    frame = pd.DataFrame(out, index=idx)
    return frame[list(spec["feature_names"])].astype("float32")


# --------------------------------------------------------------------------- report statistics


def psi(reference: np.ndarray, current: np.ndarray, *, bins: int = 10) -> float:
    """Population stability index of ``current`` against ``reference`` (the monitor's own check)."""

    return drift_psi(reference, current, kind="numerical", bins=bins).score


# --------------------------------------------------------------------------- the build


@dataclass
class FeatureBuild:
    spec: dict[str, Any]
    matrices: dict[str, np.ndarray]  # split -> float32 feature matrix
    frames: dict[str, pd.DataFrame]  # split -> input rows with aggregates joined (row order = matrix)
    leakage: leakage.LeakageReport
    report: dict[str, Any] = field(default_factory=dict)


def _attach_aggregates(
    splits: Mapping[str, pd.DataFrame],
    history: pd.DataFrame | None,
    *,
    entity_key: str,
    agg: FeatureAggregatesConfig,
) -> tuple[dict[str, pd.DataFrame], dict[str, bool]]:
    """Each frame with its rows' per-entity aggregates over ``history`` plus the frames' own events."""
    if not agg.enabled:
        return dict(splits), {}
    value = agg.value_column
    cols = ["event_id", "event_time", entity_key, *([value] if value else [])]
    parts = [df[cols] for df in splits.values()]
    if history is not None and len(history):
        parts.insert(0, history[cols])
    events = pd.concat(parts, ignore_index=True).drop_duplicates("event_id", keep="first")
    table = entity_aggregates(
        events, entity_key=entity_key, windows=agg.windows, value_column=value
    ).set_index("event_id")
    out = {}
    for name, df in splits.items():
        joined = table.reindex(df["event_id"].to_numpy())
        out[name] = pd.concat([df.reset_index(drop=True), joined.reset_index(drop=True)], axis=1)
    return out, aggregate_columns(entity_key, agg.windows, value)


def build_features(
    splits: Mapping[str, pd.DataFrame],
    *,
    history: pd.DataFrame | None,
    cfg: FeaturesConfig,
    schema: SchemaConfig,
    seed: int,
    importance: Mapping[str, float] | None = None,
) -> FeatureBuild:
    """Aggregates, fit on train, leakage checks (raise LeakageError listing every problem), transform."""
    if "train" not in splits or len(splits["train"]) == 0:
        raise InputError(f"build_features: a non-empty 'train' split is required (got {sorted(splits)})")
    frames, agg_cols = _attach_aggregates(splits, history, entity_key=schema.entity_key, agg=cfg.aggregates)
    train = frames["train"]
    spec = fit_spec(train, cfg=cfg, schema=schema, aggregates=agg_cols,
                    aggregate_windows=cfg.aggregates.windows if agg_cols else (),
                    aggregate_value=cfg.aggregates.value_column if agg_cols else None)  # fmt: skip
    kinds = {k: v for k, v in spec["inputs"].items() if v != "time"}
    label = pd.to_numeric(train["label"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    report = leakage.check_leakage(
        train_columns=frame_to_columns(train, list(kinds)),
        train_label=label,
        kinds=kinds,
        split_ids={k: df["event_id"].to_numpy() for k, df in frames.items()},
        split_times={k: epoch_us(df["event_time"]).astype(np.float64) for k, df in frames.items()},
        spec=spec,
        max_single_auc=cfg.leakage.max_single_auc,
        time_split=cfg.leakage.time_split,
        max_rows=cfg.leakage.max_rows,
        seed=seed,
    )
    if not report.passed:
        raise leakage.LeakageError(report.problems)
    matrices = {k: transform_columns(spec, df) for k, df in frames.items()}
    build = FeatureBuild(spec=spec, matrices=matrices, frames=frames, leakage=report)
    build.report = features_report(build, importance=importance)
    build.report["leakage"]["max_single_auc_allowed"] = cfg.leakage.max_single_auc
    return build


def features_report(build: FeatureBuild, *, importance: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Per input: coverage per split and single-feature AUC; per feature: non-zero share, train-vs-test
    PSI (valid when there is no test split) and importance when a model has given one."""
    spec, frames, mats = build.spec, build.frames, build.matrices
    other = "test" if "test" in mats else ("valid" if "valid" in mats else None)
    inputs = {}
    for name, kind in spec["inputs"].items():
        cov = {}
        for split, df in frames.items():
            col = df[name]
            present = col.notna()
            if kind == "categorical":
                present &= ~col.astype("string").str.strip().isin(list(fs._MISSING_TEXT)).fillna(False)
            cov[split] = round(float(present.mean()), 6) if len(df) else None
        auc = build.leakage.single_auc.get(name)
        inputs[name] = {"kind": kind, "coverage": cov,
                        "single_auc": None if auc is None or np.isnan(auc) else round(auc, 6)}  # fmt: skip
    feats = {}
    for j, name in enumerate(spec["feature_names"]):
        tr = mats["train"][:, j]
        entry: dict[str, Any] = {"nonzero_train": round(float((tr != 0).mean()), 6)}
        if other is not None:
            entry[f"psi_train_{other}"] = round(psi(tr, mats[other][:, j]), 6)
        if importance is not None:
            entry["importance"] = importance.get(name)
        feats[name] = entry
    psis: dict[str, float] = {k: v[f"psi_train_{other}"] for k, v in feats.items()} if other else {}
    aucs: dict[str, float] = {k: v["single_auc"] for k, v in inputs.items() if v["single_auc"] is not None}
    return {
        "spec_digest": spec["digest"],
        "n_features": len(spec["feature_names"]),
        "n_inputs": len(spec["inputs"]),
        "rows": {k: len(df) for k, df in frames.items()},
        "labelled_rows": {k: int(df["label"].notna().sum()) for k, df in frames.items()},
        "fit": spec["fit"],
        "leakage": {"max_single_auc_allowed": None, **build.leakage.to_dict()},
        "summary": {
            "max_psi": max(psis.values()) if psis else None,
            "max_psi_feature": max(psis, key=lambda k: psis[k]) if psis else None,
            "max_single_auc": max(aucs.values()) if aucs else None,
            "max_single_auc_input": max(aucs, key=lambda k: aucs[k]) if aucs else None,
            "distance_compared": f"train vs {other}" if other else None,
        },
        "inputs": inputs,
        "features": feats,
    }


def report_html(report: Mapping[str, Any]) -> str:
    """A plain, self-contained HTML page of the features report."""
    esc = html.escape

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4f}"
        if isinstance(v, dict):
            return ", ".join(f"{esc(str(k))}: {cell(x)}" for k, x in v.items())
        return esc("" if v is None else str(v))

    s = report["summary"]
    rows_in = "".join(
        f"<tr><td>{esc(n)}</td><td>{cell(v['kind'])}</td><td>{cell(v['coverage'])}</td>"
        f"<td>{cell(v['single_auc'])}</td></tr>"
        for n, v in report["inputs"].items()
    )
    keys = sorted({k for v in report["features"].values() for k in v})
    rows_f = "".join(
        "<tr><td>" + esc(n) + "</td>" + "".join(f"<td>{cell(v.get(k))}</td>" for k in keys) + "</tr>"
        for n, v in report["features"].items()
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Loopline features report</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}</style></head><body>"
        f"<h1>Features report</h1><p>spec {esc(report['spec_digest'][:12])}: {report['n_features']} features "
        f"from {report['n_inputs']} inputs; rows {cell(report['rows'])}; fitted on train "
        f"{cell(report['fit']['window'])}.</p>"
        f"<p>Leakage checks: {'passed' if report['leakage']['passed'] else 'FAILED'}; highest single-input AUC "
        f"{cell(s['max_single_auc'])} ({esc(str(s['max_single_auc_input']))}); largest PSI "
        f"({esc(str(s['distance_compared']))}) {cell(s['max_psi'])} ({esc(str(s['max_psi_feature']))}).</p>"
        "<h2>Inputs</h2><table><tr><th>input</th><th>kind</th><th>coverage (non-missing share)</th>"
        f"<th>single-input AUC</th></tr>{rows_in}</table>"
        "<h2>Features</h2><table><tr><th>feature</th>"
        + "".join(f"<th>{esc(k)}</th>" for k in keys)
        + f"</tr>{rows_f}</table></body></html>\n"
    )


# --------------------------------------------------------------------------- I/O edge


def load_history(lake: str, *, start: dt.datetime, end: dt.datetime, columns: list[str]) -> pd.DataFrame:
    """Lake events with ``start <= event_time <= end`` (the partitions overlapping it), given columns."""
    table = history_table(lake, start=start, end=end, columns=columns)
    return table.to_pandas() if table is not None else pd.DataFrame(columns=columns)


def history_table(
    lake: str, *, start: dt.datetime, end: dt.datetime, columns: list[str], progress: bool = True
) -> Any:
    """:func:`load_history` as an Arrow table (None when no partition overlaps): no pandas conversion."""
    import pyarrow as pa
    import pyarrow.compute as pc

    dates = [d for d in lake_dates(lake) if start.date().isoformat() <= d <= end.date().isoformat()]
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    # partitions read on a few threads (Parquet decoding releases the GIL), kept in date order
    workers = min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="loopline-read") as pool:
        read = pool.map(lambda d: read_partition(lake, d, columns=columns), dates)
        bar = tqdm(read, total=len(dates), desc="features: lake history", unit="partition",
                   disable=not progress or len(dates) < 30)  # fmt: skip
        tables = [t for t in bar if t is not None]
    if not tables:
        return None
    table = pa.concat_tables(tables, promote_options="default")
    t = table.column("event_time")
    if pa.types.is_timestamp(t.type) and t.type.tz is not None:
        lo, hi = (pa.scalar(x, type=t.type) for x in (start, end))
        return table.filter(pc.and_(pc.greater_equal(t, lo), pc.less_equal(t, hi)))
    frame_t = pd.to_datetime(t.to_pandas(), utc=True)  # naive or text times: pandas parses them
    return table.filter(pa.array(((frame_t >= start) & (frame_t <= end)).to_numpy()))


def edge_input(
    rows: pd.DataFrame,
    *,
    lake: str,
    spec: Mapping[str, Any],
    source: str = "rows",
    history_days: int | None = None,
) -> pd.DataFrame:
    """New raw rows -> what the edge model reads: their columns plus the spec's per-entity aggregates.

    The aggregates are computed as in training (strictly earlier events of the same entity, from the lake's
    history and the rows themselves), so ``loopline edge-predict`` can score rows that are not in the lake yet.
    ``source`` names the input in errors. ``history_days``: how far back the lake is read (None: all of it, so
    that ``secs_since_prev`` finds an entity's previous event however old, as the feature stage did)."""
    a = spec.get("aggregates") or {}
    out = rows.copy()
    if "event_id" not in out.columns:
        out.insert(0, "event_id", [f"{source}:{i + 1}" for i in range(len(out))])
    if not a.get("columns"):
        return out
    entity, value = spec["entity_key"], a.get("value_column")
    need = ["event_time", entity, *([value] if value else [])]
    missing = [c for c in need if c not in out.columns]
    if missing:
        raise InputError(f"{source}: missing column(s) {missing}; the aggregates need {need}")
    times = pd.to_datetime(out["event_time"], utc=True, errors="coerce")
    if times.isna().any():
        row = int(np.flatnonzero(times.isna().to_numpy())[0]) + 2  # 1-based, after the header
        raise InputError(f"{source}: row {row}: event_time {out['event_time'].iloc[row - 2]!r} is not a time")
    events = out[["event_id", entity, *([value] if value else [])]].assign(event_time=times)
    if value:
        events[value] = pd.to_numeric(events[value], errors="coerce")
    window = pd.Timedelta(seconds=max(parse_window(w) for w in a["windows"]))
    dates = lake_dates(lake)
    if history_days is None and dates:
        first = pd.Timestamp(dates[0], tz="UTC")
    else:
        first = times.min() - pd.Timedelta(days=history_days or 0)
    start = min(first, times.min() - window).to_pydatetime()
    history = load_history(lake, start=start, end=times.max().to_pydatetime(), columns=list(events.columns))
    agg = FeatureAggregatesConfig(enabled=True, windows=list(a["windows"]), value_column=value)
    frames, _ = _attach_aggregates({"rows": events}, history, entity_key=entity, agg=agg)
    joined = frames["rows"][list(a["columns"])]
    return pd.concat([out.reset_index(drop=True), joined.reset_index(drop=True)], axis=1)


def write_feature_splits(
    out: str,
    frames: Mapping[str, pd.DataFrame],
    matrices: Mapping[str, np.ndarray],
    *,
    spec: Mapping[str, Any],
    schema: SchemaConfig,
) -> None:
    """``out/<split>.parquet`` (the meta, entity and raw input columns beside the feature matrix) and
    ``out/spec.json``: what the feature stage writes and the train, evaluate and retrain stages read."""
    import pyarrow as pa  # pandas -> Arrow conversion only here; the rest of the module is pandas/numpy

    inputs = [c for c in fs.input_columns(spec) if c != "event_time"]
    # every declared column rides along, feature or not (features.drop): evaluation slices on any of them
    declared = [c.name for c in schema.columns]
    for name, frame in frames.items():
        keep = [
            c
            for c in dict.fromkeys((*META_COLUMNS, schema.entity_key, *inputs, *declared))
            if c in frame.columns
        ]
        clash = set(keep) & set(spec["feature_names"])
        if clash:
            raise InputError(f"feature names {sorted(clash)} collide with raw columns; rename the columns")
        table = pd.concat(
            [
                frame[keep].reset_index(drop=True),
                pd.DataFrame(matrices[name], columns=list(spec["feature_names"])),
            ],
            axis=1,
        )
        storage.write_parquet(
            storage.join(out, f"{name}.parquet"), pa.Table.from_pandas(table, preserve_index=False)
        )
    storage.write_bytes(storage.join(out, "spec.json"), fs.dumps_spec(spec).encode("utf-8"))


def run_features(
    *,
    labeled: str,
    lake: str,
    out: str,
    reports: str,
    params: Params,
    importance: str | None = None,
) -> dict[str, Any]:
    """Read the labelled splits and the lake history, build, write matrices, spec and report."""
    started = time.perf_counter()
    schema, cfg = params.schema, params.features
    splits: dict[str, pd.DataFrame] = {}
    for name in SPLITS:
        loc = storage.join(labeled, f"{name}.parquet")
        if storage.exists(loc):
            splits[name] = storage.read_parquet(loc).to_pandas()
        elif name == "train":
            raise FileNotFoundError(
                f"{loc}: the train split is missing; run the labeling stage first (loopline label)"
            )
    history = None
    if cfg.aggregates.enabled:
        times = pd.concat([pd.to_datetime(df["event_time"], utc=True) for df in splits.values()])
        max_window = max(parse_window(w) for w in cfg.aggregates.windows)
        train_start = pd.to_datetime(splits["train"]["event_time"], utc=True).min()
        start = (train_start - pd.Timedelta(seconds=max_window)).to_pydatetime()
        cols = ["event_id", "event_time", schema.entity_key]
        if cfg.aggregates.value_column:
            cols.append(cfg.aggregates.value_column)
        history = load_history(lake, start=start, end=times.max().to_pydatetime(), columns=cols)
        log.info("aggregates: %d history events from %s", len(history), start.isoformat())
    imp = None
    if importance is not None and storage.exists(importance):
        imp = {str(k): float(v) for k, v in storage.read_json(importance).items()}
    build = build_features(splits, history=history, cfg=cfg, schema=schema, seed=params.seed, importance=imp)
    write_feature_splits(out, build.frames, build.matrices, spec=build.spec, schema=schema)
    build.report["wall_seconds"] = round(time.perf_counter() - started, 3)
    storage.write_json(storage.join(reports, "report.json"), build.report)
    storage.write_bytes(storage.join(reports, "report.html"), report_html(build.report).encode("utf-8"))
    log.info(
        "features: %d features, rows %s, %.1f s", build.report["n_features"], build.report["rows"],
        build.report["wall_seconds"],
    )  # fmt: skip
    return build.report
