"""Statistical drift checks: pure functions ``(reference, current, threshold) -> (score, drifted)``.

Each check declares its default threshold next to it (the same defaults as Evidently's stat tests). Two
kinds of check:

- *distances* (PSI, Jensen–Shannon, normalized Wasserstein): drift when ``score >= threshold``. Their size
  does not grow with the sample, so they suit large windows;
- *p-values* (two-sample Kolmogorov–Smirnov, chi-square homogeneity): drift when ``score < threshold``. With
  tens of thousands of rows they flag differences too small to matter, which is why they are not the default.

Binning: numeric PSI and Jensen–Shannon use quantile bins of the *reference* (values unseen in a reference
with at most 20 distinct values get their own bin). Evidently bins numerics with equal-width (Sturges) bins
of the combined sample instead, which a heavy-tailed column such as ``amount`` squeezes into one or two
bins; scores therefore differ from Evidently's by design, not by accident. Missing numeric values are
dropped; a missing category is the category ``__missing__``.

:func:`drift_table` runs one check per column, sampling each side down to a row budget first
(:func:`bounded_indices`), so its cost stays flat however large the windows are.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd

from pipelines.core.samplers import stratified_indices

__all__ = [
    "CHI_SQUARE_THRESHOLD",
    "DEFAULT_METHOD",
    "JENSEN_SHANNON_THRESHOLD",
    "KS_THRESHOLD",
    "METHODS",
    "PSI_THRESHOLD",
    "WASSERSTEIN_THRESHOLD",
    "ColumnKind",
    "DriftResult",
    "Method",
    "bounded_indices",
    "chi_square",
    "column_drift",
    "decision_verdict",
    "drift_table",
    "jensen_shannon",
    "ks_test",
    "psi",
    "wasserstein_norm",
]

ColumnKind = Literal["numerical", "categorical"]
MISSING_CATEGORY = "__missing__"
EPS = 1e-4  # floor of a bin's share in PSI (an empty bin would make the log infinite)


class DriftResult(NamedTuple):
    score: float
    drifted: bool


# --------------------------------------------------------------------------- preparing values


def _numeric(values: Any) -> np.ndarray:
    x = pd.to_numeric(pd.Series(np.asarray(values).ravel()), errors="coerce").to_numpy(dtype=np.float64)
    return x[np.isfinite(x)]


def _categories(values: Any) -> np.ndarray:
    s = pd.Series(np.asarray(values, dtype=object).ravel())
    return s.where(s.notna(), MISSING_CATEGORY).astype(str).to_numpy()


def _shares(
    reference: np.ndarray, current: np.ndarray, *, kind: ColumnKind, bins: int
) -> tuple[np.ndarray, np.ndarray]:
    """Bin shares of both sides on the reference's bins (quantiles, or categories/distinct values)."""
    if kind == "categorical":
        # hash-based codes (bin order is irrelevant to PSI, JS and chi-squared): O(n), not a string sort
        inv, keys = pd.factorize(np.concatenate([reference, current]))
        n_ref = len(reference)
        p = np.bincount(inv[:n_ref], minlength=len(keys)) / max(n_ref, 1)
        q = np.bincount(inv[n_ref:], minlength=len(keys)) / max(len(current), 1)
        return p, q
    uniq = np.unique(reference)
    if uniq.size <= 20:
        ci = np.searchsorted(uniq, current)
        known = (ci < uniq.size) & (uniq[np.minimum(ci, uniq.size - 1)] == current)
        ci = np.where(known, ci, uniq.size)  # a value unseen in the reference gets its own bin
        ri = np.searchsorted(uniq, reference)
        width = uniq.size + 1
    else:
        edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
        ri = np.searchsorted(edges, reference, side="right")
        ci = np.searchsorted(edges, current, side="right")
        width = edges.size + 1
    return np.bincount(ri, minlength=width) / len(reference), np.bincount(ci, minlength=width) / len(current)


def _prepare(reference: Any, current: Any, kind: ColumnKind) -> tuple[np.ndarray, np.ndarray]:
    if kind == "categorical":
        return _categories(reference), _categories(current)
    return _numeric(reference), _numeric(current)


# --------------------------------------------------------------------------- the checks

PSI_THRESHOLD = 0.1  # 0.1: moderate shift, 0.25: major (the usual credit-scoring reading)


def psi(
    reference: Any,
    current: Any,
    threshold: float = PSI_THRESHOLD,
    *,
    kind: ColumnKind = "numerical",
    bins: int = 10,
) -> DriftResult:
    """Population stability index: sum over bins of (q - p) * ln(q / p); drift when >= threshold."""
    ref, cur = _prepare(reference, current, kind)
    if ref.size == 0 or cur.size == 0:
        return DriftResult(math.nan, False)
    p, q = _shares(ref, cur, kind=kind, bins=bins)
    p, q = np.maximum(p, EPS), np.maximum(q, EPS)
    score = float(np.sum((q - p) * np.log(q / p)))
    return DriftResult(score, score >= threshold)


JENSEN_SHANNON_THRESHOLD = 0.1  # distance (natural log, as scipy and Evidently): 0 same, sqrt(ln 2) disjoint


def jensen_shannon(
    reference: Any,
    current: Any,
    threshold: float = JENSEN_SHANNON_THRESHOLD,
    *,
    kind: ColumnKind = "categorical",
    bins: int = 10,
) -> DriftResult:
    """Jensen–Shannon distance (square root of the divergence, natural log) of the bin shares."""
    ref, cur = _prepare(reference, current, kind)
    if ref.size == 0 or cur.size == 0:
        return DriftResult(math.nan, False)
    p, q = _shares(ref, cur, kind=kind, bins=bins)
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log(a[nz] / m[nz])))

    score = math.sqrt(max((kl(p) + kl(q)) / 2, 0.0))
    return DriftResult(score, score >= threshold)


WASSERSTEIN_THRESHOLD = 0.1  # earth mover's distance in reference standard deviations


def wasserstein_norm(
    reference: Any,
    current: Any,
    threshold: float = WASSERSTEIN_THRESHOLD,
    *,
    kind: ColumnKind = "numerical",
    bins: int = 10,
) -> DriftResult:
    """Wasserstein-1 distance divided by the reference's standard deviation (floored at 0.001, as Evidently)."""
    if kind != "numerical":
        raise ValueError(
            "wasserstein: applies to numerical columns; use jensenshannon or chisquare for categories"
        )
    from scipy.stats import wasserstein_distance

    ref, cur = _numeric(reference), _numeric(current)
    if ref.size == 0 or cur.size == 0:
        return DriftResult(math.nan, False)
    score = float(wasserstein_distance(ref, cur) / max(float(np.std(ref)), 0.001))
    return DriftResult(score, score >= threshold)


KS_THRESHOLD = 0.05  # p-value


def ks_test(
    reference: Any,
    current: Any,
    threshold: float = KS_THRESHOLD,
    *,
    kind: ColumnKind = "numerical",
    bins: int = 10,
) -> DriftResult:
    """Two-sample Kolmogorov–Smirnov p-value; drift when p < threshold."""
    if kind != "numerical":
        raise ValueError("ks: applies to numerical columns; use chisquare for categories")
    from scipy.stats import ks_2samp

    ref, cur = _numeric(reference), _numeric(current)
    if ref.size == 0 or cur.size == 0:
        return DriftResult(math.nan, False)
    p = float(ks_2samp(ref, cur).pvalue)
    return DriftResult(p, p < threshold)


CHI_SQUARE_THRESHOLD = 0.05  # p-value


def chi_square(
    reference: Any,
    current: Any,
    threshold: float = CHI_SQUARE_THRESHOLD,
    *,
    kind: ColumnKind = "categorical",
    bins: int = 10,
) -> DriftResult:
    """Chi-square test of homogeneity of the two samples' counts (2 x k table); drift when p < threshold.

    A category present on one side only is a column of the table like any other (no infinite term)."""
    from scipy.stats import chi2_contingency

    ref, cur = _prepare(reference, current, kind)
    if ref.size == 0 or cur.size == 0:
        return DriftResult(math.nan, False)
    p, q = _shares(ref, cur, kind=kind, bins=bins)
    table = np.vstack([np.rint(p * ref.size), np.rint(q * cur.size)])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return DriftResult(1.0, False)  # one category on both sides: identical
    pvalue = float(chi2_contingency(table, correction=False).pvalue)
    return DriftResult(pvalue, pvalue < threshold)


Method = Literal["psi", "jensenshannon", "wasserstein", "ks", "chisquare"]


@dataclass(frozen=True)
class MethodInfo:
    fn: Callable[..., DriftResult]
    default_threshold: float
    kinds: tuple[str, ...]
    score: str  # "distance" (drift when >= threshold) or "p_value" (drift when < threshold)


METHODS: dict[str, MethodInfo] = {
    "psi": MethodInfo(psi, PSI_THRESHOLD, ("numerical", "categorical"), "distance"),
    "jensenshannon": MethodInfo(
        jensen_shannon, JENSEN_SHANNON_THRESHOLD, ("numerical", "categorical"), "distance"
    ),
    "wasserstein": MethodInfo(wasserstein_norm, WASSERSTEIN_THRESHOLD, ("numerical",), "distance"),
    "ks": MethodInfo(ks_test, KS_THRESHOLD, ("numerical",), "p_value"),
    "chisquare": MethodInfo(chi_square, CHI_SQUARE_THRESHOLD, ("numerical", "categorical"), "p_value"),
}
DEFAULT_METHOD: dict[str, str] = {"numerical": "psi", "categorical": "jensenshannon"}


def column_drift(
    reference: Any,
    current: Any,
    *,
    kind: ColumnKind,
    method: str | None = None,
    threshold: float | None = None,
    bins: int = 10,
) -> dict[str, Any]:
    """One column's check as a JSON-ready dict: method, threshold, score, drifted, rows per side."""
    name = method or DEFAULT_METHOD[kind]
    info = METHODS.get(name)
    if info is None:
        raise ValueError(f"drift method {name!r}: expected one of {sorted(METHODS)}")
    if kind not in info.kinds:
        raise ValueError(
            f"drift method {name!r} does not apply to {kind} columns; use one of "
            f"{sorted(m for m, i in METHODS.items() if kind in i.kinds)}"
        )
    thr = info.default_threshold if threshold is None else float(threshold)
    score, drifted = info.fn(reference, current, thr, kind=kind, bins=bins)
    return {
        "kind": kind,
        "method": name,
        "threshold": thr,
        "score": None if math.isnan(score) else round(score, 6),
        "score_type": info.score,
        "drifted": bool(drifted),
        "reference_rows": len(reference),
        "current_rows": len(current),
    }


# --------------------------------------------------------------------------- sampling


def bounded_indices(
    n_rows: int,
    max_rows: int | None,
    *,
    rng: np.random.Generator,
    strata: np.ndarray | None = None,
) -> np.ndarray | None:
    """Row indices of a sample of at most ``max_rows`` (uniform, or proportional per stratum); None when
    ``n_rows`` is within the budget (use every row)."""
    if max_rows is None or n_rows <= max_rows:
        return None
    if strata is None:
        return np.sort(rng.choice(n_rows, size=max_rows, replace=False))
    return stratified_indices(np.asarray(strata), size=max_rows, rng=rng)[0]


def drift_table(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    columns: Mapping[str, ColumnKind],
    methods: Mapping[str, str] | None = None,
    thresholds: Mapping[str, float | None] | None = None,
    per_column_method: Mapping[str, str] | None = None,
    per_column_threshold: Mapping[str, float] | None = None,
    bins: int = 10,
    max_rows: int | None = 50_000,
    seed: int = 0,
    strata_column: str | None = None,
) -> dict[str, Any]:
    """Drift of every column in ``columns`` (name -> kind), each side sampled to ``max_rows`` first.

    ``methods``/``thresholds``: per kind (``numerical``/``categorical``); the per-column maps override them.
    Returns ``{"columns": {name: column_drift(...)}, "rows": {...}, "sampled": bool}``.
    """
    rng = np.random.default_rng(seed)
    missing = [c for c in columns if c not in reference.columns or c not in current.columns]
    if missing:
        raise KeyError(f"drift_table: columns {missing} are missing from the reference or current frame")
    sides = []
    for frame in (reference, current):
        strata = frame[strata_column].to_numpy() if strata_column and strata_column in frame.columns else None
        idx = bounded_indices(len(frame), max_rows, rng=rng, strata=strata)
        sides.append(frame if idx is None else frame.iloc[idx])
    ref, cur = sides
    methods, thresholds = dict(methods or {}), dict(thresholds or {})
    per_m, per_t = dict(per_column_method or {}), dict(per_column_threshold or {})
    out = {}
    for name, kind in columns.items():
        out[name] = column_drift(
            ref[name].to_numpy(),
            cur[name].to_numpy(),
            kind=kind,
            method=per_m.get(name, methods.get(kind)),
            threshold=per_t.get(name, thresholds.get(kind)),
            bins=bins,
        )
    return {
        "columns": out,
        "rows": {
            "reference": len(reference),
            "current": len(current),
            "reference_checked": len(ref),
            "current_checked": len(cur),
        },
        "sampled": len(ref) < len(reference) or len(cur) < len(current),
    }


def drifted_columns(table: Mapping[str, Any]) -> list[str]:
    return sorted(n for n, c in table["columns"].items() if c["drifted"])


def columns_of(frame: pd.DataFrame, names: Sequence[str]) -> dict[str, ColumnKind]:
    """Kind of each named column from its dtype: numbers are numerical, anything else categorical."""
    return {
        n: (
            "numerical"
            if pd.api.types.is_numeric_dtype(frame[n]) and not pd.api.types.is_bool_dtype(frame[n])
            else "categorical"
        )
        for n in names
    }


def decision_verdict(decision: Mapping[str, Any]) -> str:
    """The one wording of a monitor decision (decision.json), used by every page that shows it."""
    if decision.get("retrain"):
        return "retrain"
    return "drift, keep the champion" if decision.get("drift") else "no drift, keep the champion"
