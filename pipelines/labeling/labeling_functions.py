"""Labeling functions (weak supervision), registered by name and enabled in ``labeling.functions``.

A labeling function (LF) takes the frame of rows to label and a shared :class:`LFContext` and returns
one vote per row: a class from ``schema.label_values`` or ``ABSTAIN`` (-1). LFs are heuristics, so they
may look at the whole window in hindsight (a card's later events, its typical amount): labeling is not
prediction, and none of them reads a label except the model LF, which is cross-fitted on the gold set
so that no gold row is scored by a model that saw its label.

Add one with the decorator::

    @labeling_function(requires=("amount",), description="very large payments")
    def huge_amount(df, ctx):
        return np.where(df["amount"].to_numpy() > 5000, 1, ABSTAIN)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipelines.core.config import LabelingFunctionOptions, SchemaConfig, params_file
from pipelines.core.errors import InputError

__all__ = [
    "ABSTAIN",
    "REGISTRY",
    "LFContext",
    "LabelingFunction",
    "apply_lfs",
    "build_context",
    "capped_rows",
    "design_matrix",
    "labeling_function",
]

ABSTAIN = -1
LFFn = Callable[[pd.DataFrame, "LFContext"], np.ndarray]


@dataclass(frozen=True)
class LabelingFunction:
    name: str
    fn: LFFn
    requires: tuple[str, ...]
    description: str


REGISTRY: dict[str, LabelingFunction] = {}


def labeling_function(
    name: str | None = None, *, requires: tuple[str, ...] = (), description: str = ""
) -> Callable[[LFFn], LFFn]:
    """Register an LF under ``name`` (default: the function's name)."""

    def wrap(fn: LFFn) -> LFFn:
        key = name or fn.__name__
        if key in REGISTRY:
            raise InputError(f"labeling function {key!r} is registered twice")
        REGISTRY[key] = LabelingFunction(key, fn, tuple(requires), description or (fn.__doc__ or "").strip())
        return fn

    return wrap


@dataclass
class LFContext:
    """What the LFs share, computed once per frame (no labels, except the gold set for the model LF)."""

    options: LabelingFunctionOptions
    schema: SchemaConfig
    seed: int
    gold_pos: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64))  # row positions
    gold_y: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64))
    card_home: np.ndarray | None = None  # per row: the entity's most frequent country
    card_median: np.ndarray | None = None  # per row: the entity's median amount
    card_events: np.ndarray | None = None  # per row: the entity's number of events in the frame
    velocity: np.ndarray | None = None  # per row: the entity's events within +- the velocity window
    velocity_expected: np.ndarray | None = None  # per row: that count at the entity's average rate
    cache: dict[str, Any] = field(default_factory=dict)


def build_context(
    df: pd.DataFrame,
    *,
    options: LabelingFunctionOptions,
    schema: SchemaConfig,
    seed: int,
    gold_pos: np.ndarray | None = None,
    gold_y: np.ndarray | None = None,
) -> LFContext:
    """Entity look-ups over the frame (home country, typical amount, velocity); pure."""
    ctx = LFContext(options=options, schema=schema, seed=seed)
    if gold_pos is not None and gold_y is not None:
        ctx.gold_pos, ctx.gold_y = np.asarray(gold_pos, np.int64), np.asarray(gold_y, np.int64)
    key = schema.entity_key
    if key not in df.columns or len(df) == 0:
        return ctx
    ent = df[key].astype(str)
    if "country" in df.columns:
        mode = df.groupby([ent, df["country"]], observed=True).size().rename("n").reset_index()
        mode = mode.sort_values([key, "n", "country"], ascending=[True, False, True]).drop_duplicates(key)
        ctx.card_home = ent.map(dict(zip(mode[key], mode["country"], strict=True))).to_numpy(dtype=object)
    if "amount" in df.columns:
        grp = df["amount"].groupby(ent)
        ctx.card_median = grp.transform("median").to_numpy(dtype=float)
        ctx.card_events = grp.transform("size").to_numpy(dtype=np.int64)
    if "event_time" in df.columns:
        codes = pd.factorize(ent)[0].astype(np.int64)
        secs = ((df["event_time"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy(np.int64)
        secs = secs - secs.min() if len(secs) else secs
        w = int(options.velocity_window_hours * 3600)
        span = int(secs.max()) + 2 * w + 1 if len(secs) else 1
        keys = codes * span + secs
        order = np.argsort(keys, kind="stable")
        sk = keys[order]
        count = np.searchsorted(sk, keys + w, side="right") - np.searchsorted(sk, keys - w, side="left")
        ctx.velocity = count.astype(np.int64)
        frame_span = max(float(secs.max()), 2.0 * w)  # the frame's time span, seconds
        per_entity = np.bincount(codes)[codes]
        # the entity's usual count in such a window, at its average rate over the frame
        ctx.velocity_expected = per_entity * (2.0 * w / frame_span)
    return ctx


def _need(df: pd.DataFrame, name: str, cols: tuple[str, ...]) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise InputError(
            f"labeling function {name!r} needs column(s) {missing} that the event table lacks; "
            f"remove it from labeling.functions in {params_file()} for this source"
        )


def apply_lfs(df: pd.DataFrame, names: list[str], ctx: LFContext) -> np.ndarray:
    """The vote matrix (rows x LFs, int8; ABSTAIN = -1) of the named LFs, in order."""
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise InputError(f"labeling.functions: unknown {unknown}; registered: {sorted(REGISTRY)}")
    allowed = set(ctx.schema.label_values) | {ABSTAIN}
    cols = []
    for n in names:
        lf = REGISTRY[n]
        _need(df, n, lf.requires)
        votes = np.asarray(lf.fn(df, ctx)).astype(np.int64)
        if votes.shape != (len(df),):
            raise InputError(f"labeling function {n!r} returned shape {votes.shape}, expected ({len(df)},)")
        bad = set(np.unique(votes).tolist()) - allowed
        if bad:
            raise InputError(f"labeling function {n!r} voted {sorted(bad)}; allowed: {sorted(allowed)}")
        cols.append(votes.astype(np.int8))
    return np.column_stack(cols) if cols else np.empty((len(df), 0), dtype=np.int8)


# --------------------------------------------------------------------------- the registered LFs


def _home_mismatch(df: pd.DataFrame, ctx: LFContext) -> np.ndarray:
    if ctx.card_home is None:
        return np.zeros(len(df), dtype=bool)
    return df["country"].to_numpy(dtype=object) != ctx.card_home


@labeling_function(
    requires=("country", "channel"), description="online payment outside the card's home country"
)
def foreign_online(df: pd.DataFrame, ctx: LFContext) -> np.ndarray:
    hit = _home_mismatch(df, ctx) & (df["channel"].to_numpy(dtype=object) == "online")
    return np.where(hit, 1, ABSTAIN)


@labeling_function(requires=("amount",), description="amount far above the card's median (threshold)")
def amount_spike(df: pd.DataFrame, ctx: LFContext) -> np.ndarray:
    if ctx.card_median is None or ctx.card_events is None:
        return np.full(len(df), ABSTAIN)
    amount = df["amount"].to_numpy(dtype=float)
    enough = ctx.card_events >= ctx.options.min_card_events
    hit = enough & (amount > ctx.options.amount_ratio * ctx.card_median)
    return np.where(hit, 1, ABSTAIN)


@labeling_function(requires=("device_age_days",), description="new device, or its age hidden (MNAR hint)")
def new_device(df: pd.DataFrame, ctx: LFContext) -> np.ndarray:
    age = df["device_age_days"].to_numpy(dtype=float)
    hit = np.isnan(age) | (age < ctx.options.new_device_days)
    return np.where(hit, 1, ABSTAIN)


@labeling_function(
    requires=("merchant_category", "channel"), description="risky merchant category (regex), online"
)
def risky_category(df: pd.DataFrame, ctx: LFContext) -> np.ndarray:
    pattern = re.compile(ctx.options.risky_category_regex)
    cats = df["merchant_category"].astype(str)
    risky = cats.map(lambda c: bool(pattern.search(c))).to_numpy(dtype=bool)
    hit = risky & (df["channel"].to_numpy(dtype=object) == "online")
    return np.where(hit, 1, ABSTAIN)


def _burst(ctx: LFContext, n: int) -> np.ndarray:
    if ctx.velocity is None or ctx.velocity_expected is None:
        return np.zeros(n, dtype=bool)
    o = ctx.options
    return (ctx.velocity >= o.velocity_min_events) & (
        ctx.velocity >= o.velocity_ratio * ctx.velocity_expected
    )


@labeling_function(
    requires=("event_time",), description="burst: a card far above its usual rate within hours"
)
def velocity_burst(df: pd.DataFrame, ctx: LFContext) -> np.ndarray:
    return np.where(_burst(ctx, len(df)), 1, ABSTAIN)


@labeling_function(requires=("event_time",), description="payment in the night hours (UTC)")
def night_time(df: pd.DataFrame, ctx: LFContext) -> np.ndarray:
    hit = df["event_time"].dt.hour.isin(ctx.options.night_hours).to_numpy(dtype=bool)
    return np.where(hit, 1, ABSTAIN)


@labeling_function(
    requires=("country", "channel", "device_age_days"),
    description="in-person payment at home on a device known for a month: legitimate",
)
def domestic_pos_known_device(df: pd.DataFrame, ctx: LFContext) -> np.ndarray:
    age = df["device_age_days"].to_numpy(dtype=float)
    hit = ~_home_mismatch(df, ctx) & (df["channel"].to_numpy(dtype=object) == "pos") & (age >= 30)
    hit &= ~_burst(ctx, len(df))
    return np.where(hit, 0, ABSTAIN)


def design_matrix(df: pd.DataFrame, ctx: LFContext, *, max_levels: int = 30) -> np.ndarray:
    """A small numeric matrix for the helper models (model LF, active learning); not the feature stage.

    Numeric schema columns (log1p, median-imputed, with a missing flag), one-hot low-cardinality
    categories, hour of day, and the context's entity look-ups when present.
    """
    cols: list[np.ndarray] = []
    for spec in ctx.schema.columns:
        if spec.name not in df.columns or spec.name == ctx.schema.entity_key:
            continue
        if spec.type in ("float", "int"):
            v = df[spec.name].to_numpy(dtype=float)
            miss = np.isnan(v)
            med = float(np.nanmedian(v)) if (~miss).any() else 0.0
            v = np.where(miss, med, v)
            cols.append(np.sign(v) * np.log1p(np.abs(v)))
            if miss.any():
                cols.append(miss.astype(float))
        elif spec.type in ("category", "string", "bool") and not spec.high_cardinality:
            s = df[spec.name].astype(str)
            levels = s.value_counts().index[:max_levels]
            cols.extend((s == lv).to_numpy(dtype=float) for lv in levels)
    if "event_time" in df.columns:
        hour = (
            df["event_time"].dt.hour.to_numpy(dtype=float)
            + df["event_time"].dt.minute.to_numpy(dtype=float) / 60
        )
        cols += [np.sin(2 * np.pi * hour / 24), np.cos(2 * np.pi * hour / 24)]
    if ctx.card_home is not None:
        cols.append(_home_mismatch(df, ctx).astype(float))
    if ctx.card_median is not None:
        cols.append(np.log1p(df["amount"].to_numpy(dtype=float)) - np.log1p(ctx.card_median))
    if ctx.velocity is not None and ctx.velocity_expected is not None:
        cols.append(np.log1p(ctx.velocity.astype(float)))
        cols.append(np.log1p(ctx.velocity / np.maximum(ctx.velocity_expected, 1e-3)))
    x = np.column_stack(cols) if cols else np.zeros((len(df), 1))
    sd = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def capped_rows(y: np.ndarray, *, max_rows: int, rng: np.random.Generator) -> np.ndarray:
    """Positions to fit a helper model on: every minority row, majority rows subsampled to ``max_rows``
    in all. The models use balanced class weights, so this costs little accuracy and bounds the time."""
    n = len(y)
    if n <= max_rows:
        return np.arange(n)
    classes, counts = np.unique(y, return_counts=True)
    major = classes[np.argmax(counts)]
    minority = np.flatnonzero(y != major)
    budget = max(max_rows - len(minority), 1)
    majority = rng.choice(np.flatnonzero(y == major), size=min(budget, int(counts.max())), replace=False)
    return np.sort(np.concatenate([minority, majority]))


MODEL_MAX_ROWS = 30_000


def _logreg_scores(x: np.ndarray, ctx: LFContext) -> np.ndarray:
    """P(positive) per row: out-of-fold on gold rows, a fit on all gold rows elsewhere."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    pos_label = max(ctx.schema.label_values)
    y = (ctx.gold_y == pos_label).astype(int)
    scores = np.full(len(x), np.nan)
    if len(ctx.gold_pos) == 0 or y.min() == y.max():
        return scores

    rng = np.random.default_rng([ctx.seed, 0x10F])

    def fit(rows: np.ndarray, target: np.ndarray) -> Any:
        keep = capped_rows(target, max_rows=MODEL_MAX_ROWS, rng=rng)
        return LogisticRegression(C=1.0, class_weight="balanced", solver="liblinear", max_iter=1000).fit(
            x[rows[keep]], target[keep]
        )

    folds = min(ctx.options.model_folds, int(y.sum()), int((1 - y).sum()))
    if folds >= 2:
        skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=ctx.seed)
        for tr, te in skf.split(np.zeros(len(y)), y):
            scores[ctx.gold_pos[te]] = fit(ctx.gold_pos[tr], y[tr]).predict_proba(x[ctx.gold_pos[te]])[:, 1]
    rest = np.ones(len(x), dtype=bool)
    rest[ctx.gold_pos] = folds < 2
    if rest.any():
        scores[rest] = fit(ctx.gold_pos, y).predict_proba(x[rest])[:, 1]
    return scores


@labeling_function(description="another model's output: logistic regression on the gold set (cross-fitted)")
def logreg_model(df: pd.DataFrame, ctx: LFContext) -> np.ndarray:
    if "logreg_scores" not in ctx.cache:
        ctx.cache["logreg_scores"] = _logreg_scores(design_matrix(df, ctx), ctx)
    p = ctx.cache["logreg_scores"]
    pos, neg = max(ctx.schema.label_values), min(ctx.schema.label_values)
    with np.errstate(invalid="ignore"):
        return np.where(
            p >= ctx.options.model_positive, pos, np.where(p <= ctx.options.model_negative, neg, ABSTAIN)
        )
