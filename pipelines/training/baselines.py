"""Baselines, always evaluated beside the models: random, zero-rule and a one-column heuristic.

Each baseline is fitted on the labelled train rows and stored as plain parameters (``baselines.json``,
no pickles); :func:`baselines_from_dict` rebuilds the scorers. Pure: frames and arrays in, dicts out.

- ``baseline_random``: knows only the label distribution. It scores ``rate * (0.5 + u)`` with ``u`` a
  uniform number derived from the row's ``event_id`` and the seed (crc32, so stable across runs and row
  order): its mean is the train label rate and it is independent of the inputs, so ROC-AUC ~ 0.5 and
  PR-AUC ~ the positive rate.
- ``baseline_zero_rule``: predicts the majority class for every row. As a probability of class 1 that is
  the constant train label rate (the best constant for log loss and Brier score); it ranks nothing.
- ``baseline_heuristic``: the one-rule (OneR, Holte 1993) on a single raw column: numeric columns cut
  into train quantile bins plus a missing bin, categorical columns by category plus an other/missing slot;
  each bin scores its smoothed train label rate. The column is the one whose rule has the best weighted
  average precision on train. The labeling functions are not used here because several of them look at
  a card's whole window in hindsight (later events), which a scorer at prediction time cannot see.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pipelines.core.errors import InputError

__all__ = [
    "HeuristicBaseline",
    "RandomBaseline",
    "ZeroRuleBaseline",
    "average_precision",
    "baselines_from_dict",
    "fit_baselines",
    "fit_heuristic",
]

_MISSING = "__missing__"
_OTHER = "__other__"


def average_precision(y: np.ndarray, score: np.ndarray, w: np.ndarray | None = None) -> float:
    """Weighted average precision (PR-AUC, step interpolation); NaN when a class is absent."""
    from sklearn.metrics import average_precision_score

    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(average_precision_score(y, score, sample_weight=w))


def _rate(y: np.ndarray, w: np.ndarray) -> float:
    total = float(w.sum())
    if total <= 0:
        raise InputError(
            "baselines: the labelled train rows carry no weight; check label_weight/sample_weight"
        )
    return float((w * (y == 1)).sum() / total)


# --------------------------------------------------------------------------- scorers


class RandomBaseline:
    name = "baseline_random"

    def __init__(self, *, rate: float, seed: int) -> None:
        self.rate, self.seed = float(rate), int(seed)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        if "event_id" in frame.columns:
            salt = zlib.crc32(str(self.seed).encode())
            h = np.fromiter(
                (zlib.crc32(str(e).encode(), salt) for e in frame["event_id"].to_numpy(dtype=object)),
                dtype=np.float64,
                count=len(frame),
            )
            u = h / 2.0**32
        else:
            u = np.random.default_rng(self.seed).random(len(frame))
        return self.rate * (0.5 + u)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "random", "rate": self.rate, "seed": self.seed}


class ZeroRuleBaseline:
    name = "baseline_zero_rule"

    def __init__(self, *, rate: float) -> None:
        self.rate = float(rate)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return np.full(len(frame), self.rate, dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "zero_rule", "rate": self.rate, "majority_class": int(self.rate >= 0.5)}


class HeuristicBaseline:
    """One-rule on one raw column: bin -> smoothed train label rate."""

    name = "baseline_heuristic"

    def __init__(
        self,
        *,
        column: str,
        column_kind: str,
        rates: Mapping[str, float],
        default_rate: float,
        edges: Sequence[float] = (),
        train_average_precision: float | None = None,
    ) -> None:
        if column_kind not in ("numeric", "categorical"):
            raise InputError(
                f"baseline_heuristic: column_kind {column_kind!r}; expected numeric or categorical"
            )
        self.column, self.column_kind = column, column_kind
        self.rates = {str(k): float(v) for k, v in rates.items()}
        self.default_rate = float(default_rate)
        self.edges = [float(e) for e in edges]
        self.train_average_precision = train_average_precision

    def keys(self, values: pd.Series) -> np.ndarray:
        return _bin_keys(values, self.column_kind, self.edges)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        if self.column not in frame.columns:
            raise InputError(
                f"baseline_heuristic needs raw column {self.column!r}, absent from the frame; "
                "score a features frame (it keeps the raw inputs)"
            )
        keys = self.keys(frame[self.column])
        return np.fromiter(
            (self.rates.get(k, self.default_rate) for k in keys), dtype=np.float64, count=len(keys)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "heuristic",
            "rule": "one_rule",
            "column": self.column,
            "column_kind": self.column_kind,
            "edges": self.edges,
            "rates": self.rates,
            "default_rate": self.default_rate,
            "train_average_precision": self.train_average_precision,
        }


def _bin_keys(values: pd.Series, kind: str, edges: Sequence[float]) -> np.ndarray:
    if kind == "numeric":
        x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        idx = np.searchsorted(np.asarray(edges, dtype=np.float64), x, side="right")
        keys = np.array([f"b{i:03d}" for i in range(len(edges) + 1)], dtype=object)[idx]
        keys[~np.isfinite(x)] = _MISSING
        return keys
    s = values.astype(object)
    return np.where(s.isna().to_numpy(), _MISSING, s.astype(str).to_numpy(dtype=object)).astype(object)


# --------------------------------------------------------------------------- fitting


def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype)


def _one_rule(
    values: pd.Series,
    y: np.ndarray,
    w: np.ndarray,
    *,
    prior: float,
    bins: int,
    max_categories: int,
    smoothing: float,
) -> HeuristicBaseline | None:
    kind = "numeric" if _is_numeric(values) else "categorical"
    edges: list[float] = []
    if kind == "numeric":
        x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        finite = x[np.isfinite(x)]
        if len(finite) == 0:
            return None
        edges = sorted(set(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1]).tolist()))
    elif values.nunique(dropna=True) > max_categories:
        return None  # high-cardinality: a rate per value would memorise the train rows
    keys = _bin_keys(values, kind, edges)
    frame = pd.DataFrame({"k": keys, "w": w, "p": w * (y == 1)})
    agg = frame.groupby("k", sort=True)[["w", "p"]].sum()
    rates = ((agg["p"] + prior * smoothing) / (agg["w"] + smoothing)).to_dict()
    rule = HeuristicBaseline(
        column=str(values.name), column_kind=kind, rates=rates, default_rate=prior, edges=edges
    )
    rule.train_average_precision = average_precision(y, rule.predict(values.to_frame()), w)
    return rule


def fit_heuristic(
    frame: pd.DataFrame,
    y: np.ndarray,
    w: np.ndarray,
    *,
    columns: Sequence[str],
    bins: int = 20,
    max_categories: int = 50,
    smoothing: float = 10.0,
) -> HeuristicBaseline:
    """The best one-column rule among ``columns`` by weighted train average precision."""
    if not columns:
        raise InputError("baseline_heuristic: no candidate columns; give at least one raw input column")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(f"baseline_heuristic: candidate columns {missing} are not in the train frame")
    prior = _rate(y, w)
    best: HeuristicBaseline | None = None
    for col in columns:
        rule = _one_rule(
            frame[col], y, w, prior=prior, bins=bins, max_categories=max_categories, smoothing=smoothing
        )
        if rule is None or rule.train_average_precision is None or math.isnan(rule.train_average_precision):
            continue
        if best is None or rule.train_average_precision > (best.train_average_precision or -1.0):
            best = rule
    if best is None:
        raise InputError(
            f"baseline_heuristic: none of {list(columns)} gives a usable rule (all empty or constant)"
        )
    return best


def fit_baselines(
    frame: pd.DataFrame,
    y: np.ndarray,
    w: np.ndarray,
    *,
    columns: Sequence[str],
    seed: int,
    bins: int = 20,
    max_categories: int = 50,
) -> dict[str, dict[str, Any]]:
    """Fit the three baselines on labelled train rows; returns the ``baselines.json`` document."""
    y = np.asarray(y, dtype=np.int64)
    w = np.asarray(w, dtype=np.float64)
    if len(y) != len(frame) or len(w) != len(frame):
        raise InputError(f"baselines: {len(frame)} rows but {len(y)} labels and {len(w)} weights")
    rate = _rate(y, w)
    heuristic = fit_heuristic(frame, y, w, columns=columns, bins=bins, max_categories=max_categories)
    return {
        RandomBaseline.name: RandomBaseline(rate=rate, seed=seed).to_dict(),
        ZeroRuleBaseline.name: ZeroRuleBaseline(rate=rate).to_dict(),
        HeuristicBaseline.name: heuristic.to_dict(),
    }


def baselines_from_dict(doc: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Scorers from a ``baselines.json`` document (see :func:`fit_baselines`)."""
    out: dict[str, Any] = {}
    for name, p in doc.items():
        kind = p.get("kind")
        if kind == "random":
            out[name] = RandomBaseline(rate=p["rate"], seed=p["seed"])
        elif kind == "zero_rule":
            out[name] = ZeroRuleBaseline(rate=p["rate"])
        elif kind == "heuristic":
            out[name] = HeuristicBaseline(
                column=p["column"],
                column_kind=p["column_kind"],
                rates=p["rates"],
                default_rate=p["default_rate"],
                edges=p.get("edges", ()),
                train_average_precision=p.get("train_average_precision"),
            )
        else:
            raise InputError(
                f"baselines.json: {name!r} has unknown kind {kind!r}; expected random, zero_rule, heuristic"
            )
        out[name].name = name
    return out
