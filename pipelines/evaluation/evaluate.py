"""Offline evaluation: every scorer on the test split, slices, behavioural tests, calibration, plots, report.

``loopline evaluate --features data/features --model models/candidate --out reports/evaluation`` scores
every model of the candidate directory and the three baselines on the labelled test rows (natural and
hand labels; weak labels never count as ground truth), and writes:

- ``metrics.json`` (DVC metric): headline metrics per scorer, flagged-slice count, behavioural verdict;
- ``evaluation.json``: everything the promotion gate and the model card need (slices, behavioural tests,
  calibration, data window, spec digest);
- ``calibration.json``: calibration parameters per model, fitted on the valid split (JSON, no pickle);
- ``plots/roc.csv``, ``plots/pr.csv`` (curves of every scorer on a fixed grid) and
  ``plots/calibration/<scorer>.csv`` (reliability diagram): DVC plots declared in dvc.yaml;
- ``report.html``: one self-contained page (inline PNG charts).

Slices are flagged on ROC-AUC by default (``evaluate.slice_metric``): PR-AUC moves with a slice's base
rate (a slice with fewer frauds has a lower PR-AUC for the same ranking quality), ROC-AUC does not, so
"worse than the whole" then means worse ranking, not a different fraud rate.

Behavioural tests perturb the *raw* inputs and re-transform them with each model's own feature spec (the
scorers transform a frame that lacks the feature columns), so a test exercises the whole path from event
to score. With ``--champion`` the current champion is re-scored on the same rows (its own spec if it
differs) and shown beside the candidate.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pipelines.core import metrics as M
from pipelines.core import storage
from pipelines.core.config import BehaviouralConfig, EvaluateConfig, params_file
from pipelines.core.errors import InputError
from pipelines.edge.featurespec import loads_spec
from pipelines.training import models

__all__ = [
    "BASELINE_PREFIX",
    "behavioural_tests",
    "compare_champion",
    "evaluate_frames",
    "json_safe",
    "labelled_rows",
    "raw_frame",
    "report_html",
    "run_evaluate",
    "score_frame",
    "slice_metrics",
]

log = logging.getLogger(__name__)

BASELINE_PREFIX = "baseline_"
EVALUATION_FILE = "evaluation.json"
METRICS_FILE = "metrics.json"
CALIBRATION_FILE = "calibration.json"
REPORT_FILE = "report.html"


# --------------------------------------------------------------------------- frames


def labelled_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows with ground truth: a non-null label that is not a weak (labeling-function) label."""
    if "label" not in frame.columns:
        raise InputError("frame has no 'label' column; pass a features split (data/features/<split>.parquet)")
    keep = frame["label"].notna()
    if "label_source" in frame.columns:
        keep &= frame["label_source"].astype("string").fillna("natural") != "weak"
    return frame.loc[keep.to_numpy()].reset_index(drop=True)


def raw_frame(frame: pd.DataFrame, spec: Mapping[str, Any]) -> pd.DataFrame:
    """The frame without its feature-matrix columns: scorers then transform the raw inputs themselves."""
    names = set(spec["feature_names"])
    return frame[[c for c in frame.columns if c not in names]].copy()


def score_frame(scorer: Any, frame: pd.DataFrame) -> np.ndarray:
    p = np.asarray(scorer.predict(frame), dtype=np.float64).reshape(-1)
    if p.shape[0] != len(frame):
        raise InputError(f"scorer {scorer.name!r} returned {p.shape[0]} scores for {len(frame)} rows")
    return p


def json_safe(obj: Any) -> Any:
    """NaN/inf -> None and numpy scalars -> Python, recursively (strict JSON for DVC and browsers)."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# --------------------------------------------------------------------------- slices


def slice_metrics(
    frame: pd.DataFrame,
    y: np.ndarray,
    p: np.ndarray,
    *,
    columns: Sequence[str],
    metric: str = "roc_auc",
    min_size: int = 500,
    min_positives: int = 10,
    margin: float = 0.05,
) -> dict[str, Any]:
    """Metric per value of each slice column; a slice is *flagged* when it is big enough (``min_size`` rows
    and ``min_positives`` positives, else ``eligible`` is False) and its metric is below the whole's by more
    than ``margin``."""
    fn = {"roc_auc": M.roc_auc, "pr_auc": M.pr_auc}.get(metric)
    if fn is None:
        raise InputError(f"slice metric {metric!r}: expected roc_auc or pr_auc")
    whole = fn(y, p)
    rows = []
    for col in columns:
        if col not in frame.columns:
            raise InputError(
                f"slice column {col!r} is not in the test frame (columns e.g. {list(frame.columns)[:8]}); "
                f"fix evaluate.slices in {params_file()}"
            )
        values = frame[col].astype("string").fillna("<missing>").to_numpy(dtype=object)
        for value in sorted(set(values)):
            m = values == value
            n, pos = int(m.sum()), int(y[m].sum())
            eligible = n >= min_size and pos >= min_positives and pos < n
            score = fn(y[m], p[m]) if 0 < pos < n else math.nan
            delta = score - whole if math.isfinite(score) and math.isfinite(whole) else math.nan
            rows.append(
                {
                    "column": col,
                    "value": str(value),
                    "rows": n,
                    "positives": pos,
                    "metric": score,
                    "delta": delta,
                    "eligible": bool(eligible),
                    "flagged": bool(eligible and math.isfinite(delta) and delta < -margin),
                }
            )
    return {
        "metric": metric,
        "whole": whole,
        "margin": margin,
        "min_size": min_size,
        "min_positives": min_positives,
        "rows": rows,
        "flagged": [f"{r['column']}={r['value']}" for r in rows if r["flagged"]],
    }


# --------------------------------------------------------------------------- behavioural tests


def _numeric_inputs(spec: Mapping[str, Any]) -> list[str]:
    """The raw numeric inputs: the aggregates are derived from them (perturbing a count is no test)."""
    derived = set((spec.get("aggregates") or {}).get("columns") or [])
    return [c for c, kind in spec["inputs"].items() if kind == "numeric" and c not in derived]


def perturbation_bound(cfg: Any, base: np.ndarray) -> tuple[float, str]:
    """The perturbation test's bound and how it was set: fixed, or relative to the model's score spread."""
    if cfg.max_mean_abs_delta is not None:
        return float(cfg.max_mean_abs_delta), f"{cfg.max_mean_abs_delta:g}"
    spread = float(np.std(base)) if base.size else 0.0
    bound = max(cfg.relative_bound * spread, 1e-6)
    return bound, f"{bound:.5f} = {cfg.relative_bound:g} x score std {spread:.5f}"


def _continuous(values: pd.Series) -> bool:
    """A measurement that takes non-integer values. Integer-valued inputs (counts, flags, ids, a year or a
    week number) have no "5% more": noise moves them off their domain, and a tree split at ``x < 1`` flips
    on any value of 1 nudged down, a change the data can never make. They are not perturbed by default."""
    x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    x = x[np.isfinite(x)]
    return bool(x.size) and bool(np.any(x != np.round(x)))


def _noise_scale(x: np.ndarray) -> np.ndarray:
    """Per value, what 'a 5% change' is measured against: the value itself (an amount, a distance), but never
    more than the column's spread. A year (2016), a pressure (1012 hPa) or a week number varies far less
    than its magnitude: 5% of 2016 is a century, 5% of the years' spread is a few days."""
    finite = x[np.isfinite(x)]
    spread = float(np.std(finite)) if finite.size > 1 else 0.0
    return np.minimum(np.abs(x), spread)


def _perturbation(
    scorer: Any,
    raw: pd.DataFrame,
    base: np.ndarray,
    *,
    columns: Sequence[str],
    scale: float,
    bound: float,
    seed: int,
    bound_text: str | None = None,
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    changed = raw.copy()
    for col in columns:
        x = pd.to_numeric(changed[col], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        noisy = x + scale * _noise_scale(x) * rng.standard_normal(x.size)
        if np.nanmin(x, initial=0.0) >= 0:  # a non-negative input (amount, distance) stays non-negative
            noisy = np.maximum(noisy, 0.0)
        changed[col] = noisy
    delta = np.abs(score_frame(scorer, changed) - base)
    stat = float(delta.mean()) if delta.size else 0.0
    return {
        "kind": "perturbation",
        "name": "gaussian_noise",
        "columns": list(columns),
        "rows": int(delta.size),
        "statistic": stat,
        "statistic_name": "mean |delta score|",
        "p99_abs_delta": float(np.quantile(delta, 0.99)) if delta.size else 0.0,
        "threshold": bound,
        "passed": bool(stat < bound),
        "detail": f"x + {scale}*min(|x|, std x)*N(0,1) on {', '.join(columns)}: mean |delta score| {stat:.5f} "
        f"(bound {bound_text or bound})",
    }


def _invariance(scorer: Any, raw: pd.DataFrame, base: np.ndarray, test: Any, *, seed: int) -> dict[str, Any]:
    changed = raw.copy()
    if test.value is None:
        changed[test.column] = np.random.default_rng(seed).permutation(changed[test.column].to_numpy())
        how = "shuffled across rows"
    else:
        changed[test.column] = test.value
        how = f"set to {test.value!r}"
    delta = np.abs(score_frame(scorer, changed) - base)
    share = float((delta < test.epsilon).mean()) if delta.size else 1.0
    return {
        "kind": "invariance",
        "name": test.name,
        "columns": [test.column],
        "rows": int(delta.size),
        "statistic": share,
        "statistic_name": f"share with |delta score| < {test.epsilon}",
        "max_abs_delta": float(delta.max()) if delta.size else 0.0,
        "threshold": test.min_share,
        "passed": bool(share >= test.min_share),
        "detail": f"{test.column} {how}: {share:.1%} of rows moved < {test.epsilon} (need {test.min_share:.0%})",
    }


def _directional(scorer: Any, raw: pd.DataFrame, base: np.ndarray, test: Any) -> dict[str, Any]:
    x = pd.to_numeric(raw[test.column], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    rows = ~np.isnan(x) if test.only_present else np.ones(x.size, dtype=bool)
    if test.multiply is not None:
        new, how = x * test.multiply, f"x{test.multiply:g}"
    else:
        new, how = np.full(x.size, float(test.set)), f"set to {test.set:g}"
    changed = raw.loc[rows].copy()
    changed[test.column] = new[rows]
    after = score_frame(scorer, changed)
    before = base[rows]
    ok = after >= before - test.tolerance if test.expect == "not_lower" else after <= before + test.tolerance
    share = float(ok.mean()) if ok.size else 1.0
    verb = "did not lower" if test.expect == "not_lower" else "did not raise"
    return {
        "kind": "directional",
        "name": test.name,
        "columns": [test.column],
        "rows": int(ok.size),
        "statistic": share,
        "statistic_name": f"share where the change {verb} the score",
        "mean_delta": float((after - before).mean()) if ok.size else 0.0,
        "threshold": test.min_share,
        "passed": bool(share >= test.min_share),
        "detail": f"{test.column} {how}: {verb} the score for {share:.1%} of {ok.size} rows "
        f"(need {test.min_share:.0%})",
    }


def behavioural_tests(
    scorers: Mapping[str, Any],
    frame: pd.DataFrame,
    *,
    spec: Mapping[str, Any],
    cfg: BehaviouralConfig,
    seed: int,
) -> dict[str, Any]:
    """Run the declared tests for each model of ``cfg.models`` present in ``scorers`` on up to
    ``cfg.max_rows`` rows of ``frame`` (raw inputs, each model re-transforms them)."""
    raw = raw_frame(frame, spec)
    if len(raw) > cfg.max_rows:
        raw = raw.sample(n=cfg.max_rows, random_state=seed).reset_index(drop=True)
    declared = set(spec["inputs"])
    pert_cols = list(cfg.perturbation.columns) or [
        c for c in _numeric_inputs(spec) if c in raw.columns and _continuous(raw[c])
    ]
    wanted = [*pert_cols, *(t.column for t in cfg.invariance), *(t.column for t in cfg.directional)]
    unknown = sorted({c for c in wanted if c not in raw.columns or c not in declared})
    if unknown:
        raise InputError(
            f"behavioural tests name {unknown}, which are not raw inputs of the feature spec "
            f"({sorted(declared)}); fix evaluate.behavioural in {params_file()}"
        )
    out: dict[str, Any] = {}
    for name in cfg.models:
        if name not in scorers:
            continue
        scorer = scorers[name]
        base = score_frame(scorer, raw)
        tests = []
        bound, bound_text = perturbation_bound(cfg.perturbation, base)
        if cfg.perturbation.enabled and pert_cols:
            tests.append(
                _perturbation(
                    scorer,
                    raw,
                    base,
                    columns=pert_cols,
                    scale=cfg.perturbation.scale,
                    bound=bound,
                    bound_text=bound_text,
                    seed=seed,
                )
            )
        tests.extend(_invariance(scorer, raw, base, t, seed=seed) for t in cfg.invariance)
        tests.extend(_directional(scorer, raw, base, t) for t in cfg.directional)
        out[name] = {"passed": all(t["passed"] for t in tests), "rows": len(raw), "tests": tests}
        log.info("behavioural %s: %d/%d passed", name, sum(t["passed"] for t in tests), len(tests))
    return out


# --------------------------------------------------------------------------- beyond chance

BOOTSTRAP_RESAMPLES = 200


def beyond_chance(
    y: np.ndarray,
    scores: Mapping[str, np.ndarray],
    table: Mapping[str, Mapping[str, float]],
    *,
    primary: str,
    seed: int,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> dict[str, Any]:
    """The primary model minus its best baseline (per metric) on the test rows, with the one-sided 95% lower
    bound of a stratified paired bootstrap: a margin on a few hundred rows can be luck (a candidate trained on
    shuffled labels beat the zero rule's PR-AUC by 0.0205 on 700 hourly rows), a lower bound above 0 is not."""
    baselines = [n for n in table if n.startswith(BASELINE_PREFIX)]
    out: dict[str, Any] = {"resamples": resamples, "level": 0.95, "rows": int(y.size), "vs_best_baseline": {}}
    for metric in ("pr_auc", "roc_auc"):
        finite = [b for b in baselines if math.isfinite(table[b][metric])]
        if primary not in scores or not finite:
            continue
        best = max(finite, key=lambda b: table[b][metric])
        d = M.bootstrap_delta(y, scores[primary], scores[best], resamples=resamples, seed=seed)[metric]
        out["vs_best_baseline"][metric] = {"baseline": best, **d}
    return out


# --------------------------------------------------------------------------- the evaluation


def _window(frame: pd.DataFrame) -> dict[str, str | None]:
    if "event_time" not in frame.columns or frame.empty:
        return {"start": None, "end": None}
    t = pd.to_datetime(frame["event_time"], utc=True)
    return {"start": t.min().isoformat(), "end": t.max().isoformat()}


def _is_model(name: str) -> bool:
    return not name.startswith(BASELINE_PREFIX)


def score_with_own_spec(
    scorers: Mapping[str, Any],
    frame: pd.DataFrame,
    *,
    frame_spec: Mapping[str, Any],
    model_spec: Mapping[str, Any],
) -> dict[str, np.ndarray]:
    """Score a frame with another model's scorers: the frame's feature columns are used only when they were
    made by the same spec; otherwise the scorers re-transform the raw inputs with their own spec."""
    same = frame_spec.get("digest") == model_spec.get("digest")
    data = frame if same else raw_frame(frame, frame_spec)
    return {name: score_frame(s, data) for name, s in scorers.items()}


def _compare_champion(
    rows: pd.DataFrame, *, spec: Mapping[str, Any], champion: Mapping[str, Any], cfg: EvaluateConfig
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    y = rows["label"].astype(np.int64).to_numpy()
    models_only = {n: s for n, s in champion["scorers"].items() if _is_model(n)}
    if cfg.primary not in models_only:
        raise InputError(f"the champion {champion.get('version')} has no {cfg.primary!r} model to compare")
    cscores = score_with_own_spec(models_only, rows, frame_spec=spec, model_spec=champion["spec"])
    kw: dict[str, Any] = {
        "precision_target": cfg.precision_target,
        "ece_bins": cfg.ece_bins,
        "ece_strategy": cfg.ece_strategy,
    }
    out = {
        "version": champion.get("version"),
        "spec_digest": champion["spec"].get("digest"),
        "rescored_with_own_spec": champion["spec"].get("digest") != spec.get("digest"),
        "rows": len(rows),
        "metrics": {n: M.binary_metrics(y, p, **kw) for n, p in cscores.items()},
        "slices": slice_metrics(
            rows,
            y,
            cscores[cfg.primary],
            columns=cfg.slices,
            metric=cfg.slice_metric,
            min_size=cfg.min_slice_size,
            min_positives=cfg.min_slice_positives,
            margin=cfg.slice_margin,
        ),
    }
    return out, cscores


def compare_champion(
    rows: pd.DataFrame, *, spec: Mapping[str, Any], champion: Mapping[str, Any], cfg: EvaluateConfig
) -> dict[str, Any]:
    """The champion's metrics and slices on the same labelled rows as the candidate (JSON-ready).

    ``champion``: ``{"version", "scorers", "spec"}``; its models re-transform the raw inputs with their own
    spec when it differs from the rows' spec."""
    return json_safe(_compare_champion(labelled_rows(rows), spec=spec, champion=champion, cfg=cfg)[0])


def evaluate_frames(
    *,
    test: pd.DataFrame,
    valid: pd.DataFrame | None,
    scorers: Mapping[str, Any],
    spec: Mapping[str, Any],
    cfg: EvaluateConfig,
    seed: int,
    champion: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole evaluation, pure: frames and scorers in, one JSON-ready dict out.

    ``champion``: optional ``{"version": str | None, "scorers": {...}, "spec": {...}}`` re-scored on the
    same labelled test rows.
    """
    if cfg.primary not in scorers:
        raise InputError(
            f"evaluate.primary = {cfg.primary!r} is not among the candidate's scorers {sorted(scorers)}; "
            f"train it or change evaluate.primary in {params_file()}"
        )
    rows = labelled_rows(test)
    if rows.empty or rows["label"].nunique() < 2:
        raise InputError(
            f"the test split has {len(rows)} labelled row(s) with {rows['label'].nunique() if len(rows) else 0} "
            "class(es); evaluation needs both classes (check sampling.test_days / label maturity)"
        )
    y = rows["label"].astype(np.int64).to_numpy()
    scores = {name: score_frame(s, rows) for name, s in scorers.items()}
    kw: dict[str, Any] = {
        "precision_target": cfg.precision_target,
        "ece_bins": cfg.ece_bins,
        "ece_strategy": cfg.ece_strategy,
    }
    table = {name: M.binary_metrics(y, p, **kw) for name, p in scores.items()}

    calibration: dict[str, Any] = {}
    if cfg.calibration != "none" and valid is not None:
        vrows = labelled_rows(valid)
        if vrows["label"].nunique() == 2:
            vy = vrows["label"].astype(np.int64).to_numpy()
            for name, s in scorers.items():
                if not _is_model(name):
                    continue
                params = M.fit_calibration(score_frame(s, vrows), vy, method=cfg.calibration)
                calibration[name] = params
                cal = f"{name}+{cfg.calibration}"
                scores[cal] = M.apply_calibration(params, scores[name])
                table[cal] = M.binary_metrics(y, scores[cal], **kw)
        else:
            log.warning("valid split has no labelled rows of both classes: calibration skipped")

    slice_kw: dict[str, Any] = {
        "columns": cfg.slices,
        "metric": cfg.slice_metric,
        "min_size": cfg.min_slice_size,
        "min_positives": cfg.min_slice_positives,
        "margin": cfg.slice_margin,
    }
    slices = {name: slice_metrics(rows, y, scores[name], **slice_kw) for name in scorers if _is_model(name)}
    significance = beyond_chance(y, scores, table, primary=cfg.primary, seed=seed)
    behavioural = behavioural_tests(scorers, rows, spec=spec, cfg=cfg.behavioural, seed=seed)

    champ_out = None
    if champion is not None:
        champ_out, cscores = _compare_champion(rows, spec=spec, champion=champion, cfg=cfg)
        scores[f"champion:{cfg.primary}"] = cscores[cfg.primary]
        table[f"champion:{cfg.primary}"] = champ_out["metrics"][cfg.primary]

    curves = {
        "roc": {n: M.roc_curve(y, p, grid=cfg.curve_points) for n, p in scores.items()},
        "pr": {n: M.pr_curve(y, p, grid=cfg.curve_points) for n, p in scores.items()},
        "calibration": {
            n: M.calibration_curve(y, p, bins=cfg.ece_bins, strategy=cfg.ece_strategy)
            for n, p in scores.items()
        },
    }
    n_flagged = len(slices[cfg.primary]["flagged"])
    return json_safe(
        {
            "primary": cfg.primary,
            "spec_digest": spec.get("digest"),
            "data_window": {
                "train": spec.get("fit", {}).get("window"),
                "valid": _window(valid) if valid is not None else None,
                "test": _window(rows),
            },
            "test": {"rows": len(rows), "positives": int(y.sum()), "positive_rate": float(y.mean())},
            "settings": cfg.model_dump(mode="json"),
            "metrics": table,
            "calibration": {"method": cfg.calibration, "fitted_on": "valid", "params": calibration},
            "slices": slices,
            "behavioural": behavioural,
            "significance": significance,
            "champion": champ_out,
            "curves": curves,
            "summary": {
                "primary_pr_auc": table[cfg.primary]["pr_auc"],
                "primary_roc_auc": table[cfg.primary]["roc_auc"],
                "slices_flagged": n_flagged,
                "behavioural_passed": bool(behavioural.get(cfg.primary, {}).get("passed", False)),
                # every tested model that failed (the Keras edge model too: quantize then publishes nothing)
                "behavioural_failed": sorted(m for m, r in behavioural.items() if not r["passed"]),
            },
        }
    )


def headline_metrics(evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """The small DVC metrics file: metrics per scorer plus the summary."""
    keep = ("roc_auc", "pr_auc", "recall_at_precision", "log_loss", "brier", "ece")
    return {
        "test": {n: {k: m[k] for k in keep} for n, m in evaluation["metrics"].items()},
        "rows": evaluation["test"]["rows"],
        "positives": evaluation["test"]["positives"],
        **evaluation["summary"],
    }


def plot_tables(evaluation: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    """DVC plot data: ``roc`` and ``pr`` wide on a shared grid, ``calibration/<scorer>`` per scorer."""
    curves = evaluation["curves"]
    out: dict[str, pd.DataFrame] = {}
    names = list(curves["roc"])
    first = curves["roc"][names[0]]
    out["roc"] = pd.DataFrame({"fpr": first["fpr"], **{n: curves["roc"][n]["tpr"] for n in names}})
    first = curves["pr"][names[0]]
    out["pr"] = pd.DataFrame({"recall": first["recall"], **{n: curves["pr"][n]["precision"] for n in names}})
    for n, pts in curves["calibration"].items():
        out[f"calibration/{n.replace(':', '_')}"] = pd.DataFrame(
            pts or [], columns=["bin", "mean_predicted", "fraction_positive", "count"]
        )
    return out


# --------------------------------------------------------------------------- report


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _charts(evaluation: Mapping[str, Any]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = evaluation["curves"]
    names = list(curves["roc"])
    styles = {
        n: ("--" if n.startswith(BASELINE_PREFIX) else ":" if n.startswith("champion") else "-")
        for n in names
    }
    charts = {}
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    for n in names:
        c = curves["roc"][n]
        ax.plot(c["fpr"], [math.nan if v is None else v for v in c["tpr"]], styles[n], label=n, lw=1.4)
    ax.plot([0, 1], [0, 1], color="#bbb", lw=0.8)
    ax.set(
        xlabel="false positive rate",
        ylabel="true positive rate",
        title="ROC (test)",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax.legend(fontsize=7, loc="lower right")
    charts["roc"] = _png(fig)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    for n in names:
        c = curves["pr"][n]
        ax.plot(
            c["recall"], [math.nan if v is None else v for v in c["precision"]], styles[n], label=n, lw=1.4
        )
    ax.axhline(evaluation["test"]["positive_rate"], color="#bbb", lw=0.8)
    ax.set(
        xlabel="recall",
        ylabel="precision (interpolated)",
        title="Precision-recall (test)",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax.legend(fontsize=7, loc="upper right")
    charts["pr"] = _png(fig)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    top = 0.0
    for n in names:
        if n.startswith(BASELINE_PREFIX):
            continue
        pts = curves["calibration"][n]
        xs, ys = [p["mean_predicted"] for p in pts], [p["fraction_positive"] for p in pts]
        top = max(top, *xs, *ys) if xs else top
        ax.plot(xs, ys, "o" + styles[n], label=n, ms=3, lw=1.2)
    top = min(1.0, max(top * 1.1, 0.05))
    ax.plot([0, top], [0, top], color="#bbb", lw=0.8)
    ax.set(
        xlabel="mean predicted probability",
        ylabel="observed positive rate",
        xlim=(0, top),
        ylim=(0, top),
        title=f"Calibration ({evaluation['settings']['ece_strategy']} bins)",
    )
    ax.legend(fontsize=7, loc="upper left")
    charts["calibration"] = _png(fig)
    plt.close(fig)
    return charts


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return html.escape(str(v))


def report_html(evaluation: Mapping[str, Any]) -> str:
    """One self-contained HTML page: headline table, curves, slices with flags, behavioural tests."""
    esc = html.escape
    primary = evaluation["primary"]
    st = evaluation["settings"]
    keys = ["roc_auc", "pr_auc", "recall_at_precision", "log_loss", "brier", "ece"]
    heads = [
        "ROC-AUC",
        "PR-AUC (AP)",
        f"recall @ precision {st['precision_target']}",
        "log loss",
        "Brier",
        f"ECE ({st['ece_bins']} {st['ece_strategy']} bins)",
    ]
    best = {
        k: max((m[k] for n, m in evaluation["metrics"].items() if m[k] is not None), default=None)
        for k in ("roc_auc", "pr_auc", "recall_at_precision")
    }
    body = []
    for n, m in evaluation["metrics"].items():
        kind = (
            "baseline"
            if n.startswith(BASELINE_PREFIX)
            else "champion"
            if n.startswith("champion")
            else "model"
        )
        cells = "".join(
            f"<td class='num{' best' if k in best and m[k] is not None and m[k] == best[k] else ''}'>{_fmt(m[k])}</td>"
            for k in keys
        )
        body.append(f"<tr class='{kind}{' primary' if n == primary else ''}'><td>{esc(n)}</td>{cells}</tr>")
    metrics_table = (
        "<table><tr><th>scorer</th>"
        + "".join(f"<th>{esc(h)}</th>" for h in heads)
        + "</tr>"
        + "".join(body)
        + "</table>"
    )
    charts = _charts(evaluation)

    sl = evaluation["slices"][primary]
    slice_rows = []
    for r in sl["rows"]:
        cls = "flag" if r["flagged"] else ("small" if not r["eligible"] else "")
        status = "FLAGGED" if r["flagged"] else ("ok" if r["eligible"] else "too small")
        slice_rows.append(
            f"<tr class='{cls}'><td>{esc(r['column'])}</td><td>{esc(r['value'])}</td><td class='num'>{r['rows']}</td>"
            f"<td class='num'>{r['positives']}</td><td class='num'>{_fmt(r['metric'])}</td>"
            f"<td class='num'>{_fmt(r['delta'])}</td><td>{status}</td></tr>"
        )
    champ = evaluation.get("champion")
    champ_html = ""
    if champ:
        cm = champ["metrics"].get(primary, {})
        champ_html = (
            f"<h2>Champion on the same holdout</h2><p>Champion {esc(str(champ['version']))}: PR-AUC "
            f"{_fmt(cm.get('pr_auc'))}, ROC-AUC {_fmt(cm.get('roc_auc'))}"
            f"{' (re-scored with its own feature spec)' if champ['rescored_with_own_spec'] else ''}.</p>"
        )

    beh = []
    for model, res in evaluation["behavioural"].items():
        for t in res["tests"]:
            beh.append(
                f"<tr class='{'' if t['passed'] else 'flag'}'><td>{esc(model)}</td><td>{esc(t['kind'])}</td>"
                f"<td>{esc(t['name'])}</td><td>{esc(t['detail'])}</td>"
                f"<td>{'pass' if t['passed'] else 'FAIL'}</td></tr>"
            )
    cal = evaluation["calibration"]
    cal_txt = (
        f"{esc(cal['method'])} fitted on the valid split for {', '.join(map(esc, cal['params'])) or 'no model'}; "
        "calibrated rows are marked <code>+" + esc(cal["method"]) + "</code>."
        if cal["params"]
        else "none"
    )
    s, w, t = evaluation["summary"], evaluation["data_window"], evaluation["test"]
    failed_models = s.get("behavioural_failed") or ([] if s["behavioural_passed"] else [primary])
    verdict = "all passed" if not failed_models else "FAILED: " + ", ".join(map(esc, failed_models))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Loopline evaluation report</title>
<style>
body{{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1150px}}
h1{{font-size:22px}} h2{{font-size:17px;margin-top:26px;border-bottom:1px solid #ddd}}
table{{border-collapse:collapse;font-size:13px}} td,th{{border:1px solid #d5d5d5;padding:3px 8px;text-align:left}}
th{{background:#f3f3f3}} td.num{{text-align:right;font-variant-numeric:tabular-nums}}
tr.baseline td{{color:#666}} tr.primary td{{font-weight:600}} td.best{{background:#e3f4e1}}
tr.flag td{{background:#fde2e1}} tr.small td{{color:#999}}
.charts{{display:flex;gap:8px;flex-wrap:wrap}} .charts img{{width:370px;border:1px solid #eee}}
.kpi{{display:inline-block;margin-right:22px}} .kpi b{{font-size:20px;display:block}}
</style></head><body>
<h1>Evaluation report: {esc(primary)} vs baselines</h1>
<p>Test split {esc(str(w["test"]["start"]))} to {esc(str(w["test"]["end"]))}: {t["rows"]} labelled rows
(natural and hand labels), {t["positives"]} positives ({t["positive_rate"]:.2%}). Trained on
{esc(str((w.get("train") or {}).get("start")))} to {esc(str((w.get("train") or {}).get("end")))};
feature spec {esc(str(evaluation["spec_digest"])[:12])}.</p>
<p><span class="kpi">PR-AUC<b>{_fmt(s["primary_pr_auc"])}</b></span>
<span class="kpi">ROC-AUC<b>{_fmt(s["primary_roc_auc"])}</b></span>
<span class="kpi">flagged slices<b>{s["slices_flagged"]}</b></span>
<span class="kpi">behavioural tests<b>{verdict}</b></span></p>
<h2>Headline metrics (test)</h2>{metrics_table}
<p style="font-size:12px;color:#555">PR-AUC is average precision. Best value per ranking column shaded.
Calibration: {cal_txt}</p>
{champ_html}
<h2>Curves</h2><div class="charts"><img alt="ROC" src="{charts["roc"]}"><img alt="PR" src="{charts["pr"]}">
<img alt="calibration" src="{charts["calibration"]}"></div>
<h2>Slices ({esc(primary)}, {esc(sl["metric"])})</h2>
<p>Whole test split: {_fmt(sl["whole"])}. A slice is flagged when it has at least {sl["min_size"]} rows and
{sl["min_positives"]} positives and its {esc(sl["metric"])} is more than {sl["margin"]} below the whole.
Flagged: {esc(", ".join(sl["flagged"]) or "none")}.</p>
<table><tr><th>column</th><th>value</th><th>rows</th><th>positives</th><th>{esc(sl["metric"])}</th>
<th>delta vs whole</th><th>status</th></tr>{"".join(slice_rows)}</table>
<h2>Behavioural tests</h2>
<table><tr><th>model</th><th>kind</th><th>test</th><th>result</th><th>verdict</th></tr>{"".join(beh)}</table>
</body></html>
"""


# --------------------------------------------------------------------------- I/O edge


def write_outputs(out: str, evaluation: Mapping[str, Any]) -> None:

    storage.write_json(storage.join(out, EVALUATION_FILE), evaluation)
    storage.write_json(storage.join(out, METRICS_FILE), headline_metrics(evaluation))
    storage.write_json(storage.join(out, CALIBRATION_FILE), evaluation["calibration"])
    for name, table in plot_tables(evaluation).items():
        storage.write_bytes(storage.join(out, "plots", f"{name}.csv"), table.to_csv(index=False).encode())
    storage.write_bytes(storage.join(out, REPORT_FILE), report_html(evaluation).encode("utf-8"))


def run_evaluate(
    *,
    features: str,
    model: str,
    out: str,
    cfg: EvaluateConfig,
    seed: int,
    champion: Mapping[str, Any] | None = None,
    annotate: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Read the splits and the model directory, evaluate, write every output under ``out``. ``champion``:
    a loaded champion (``registry.load_champion``) to re-score on the same test rows. ``annotate``: records
    written with the figures (a mapping updates the evaluation's own section: the retrain stage's data window
    and lineage)."""

    spec = loads_spec(storage.read_bytes(storage.join(features, "spec.json")))
    mspec = models.load_spec(model)
    if mspec.get("digest") != spec.get("digest"):
        raise InputError(
            f"{model}/spec.json (digest {str(mspec.get('digest'))[:12]}) differs from {features}/spec.json "
            f"({str(spec.get('digest'))[:12]}): the candidate was trained on other features; retrain it"
        )
    test = storage.read_parquet(storage.join(features, "test.parquet")).to_pandas()
    vloc = storage.join(features, "valid.parquet")
    valid = storage.read_parquet(vloc).to_pandas() if storage.exists(vloc) else None
    scorers = models.load_scorers(model)
    evaluation = evaluate_frames(
        test=test, valid=valid, scorers=scorers, spec=spec, cfg=cfg, seed=seed, champion=champion
    )
    for key, value in (annotate or {}).items():
        current = evaluation.get(key)
        evaluation[key] = (
            {**current, **value} if isinstance(current, dict) and isinstance(value, Mapping) else value
        )
    write_outputs(out, evaluation)
    log.info("evaluation written to %s: %s", out, evaluation["summary"])
    return evaluation
