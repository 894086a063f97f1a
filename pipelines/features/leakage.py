"""Leakage checks run on every feature build: pure functions, arrays in, problems out.

- ``single_feature_auc``: an input that alone predicts the label too well (ROC-AUC, either direction,
  above ``features.leakage.max_single_auc``) is almost always a label in disguise (a status written
  after the outcome, a copy of the label). Numeric inputs are ranked as they are (missing below every
  value, so a leaking missingness pattern is caught too); categorical inputs are target-rate encoded on
  one random half of the rows and scored on the other half, so a high-cardinality ID cannot look
  predictive by memorizing its rows.
- ``duplicate_ids``: the same event in two splits.
- ``rows_before_cutoff``: in a time split, valid/test rows earlier than the train split's last event.
- ``fit_digest_problem``: the spec's statistics were fitted on something other than this train split.

``check_leakage`` runs them all and returns every problem; ``LeakageError`` lists them in one message.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines.core.errors import EXIT_CHECK_FAILED
from pipelines.edge.featurespec import as_float, as_text

__all__ = [
    "DEFAULT_MAX_SINGLE_AUC",
    "LeakageError",
    "LeakageProblem",
    "LeakageReport",
    "auc_score",
    "check_leakage",
    "duplicate_ids",
    "fit_digest_problem",
    "rows_before_cutoff",
    "single_feature_auc",
    "split_digest",
]

DEFAULT_MAX_SINGLE_AUC = 0.97


@dataclass(frozen=True)
class LeakageProblem:
    kind: str  # single_feature_auc | duplicate_across_splits | before_train_cutoff | fit_not_on_train
    subject: str  # the feature or split it is about
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.subject}: {self.detail}"


@dataclass
class LeakageReport:
    single_auc: dict[str, float] = field(default_factory=dict)
    problems: list[LeakageProblem] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "single_auc": {k: round(v, 6) for k, v in sorted(self.single_auc.items())},
            "problems": [{"kind": p.kind, "subject": p.subject, "detail": p.detail} for p in self.problems],
        }


class LeakageError(RuntimeError):
    """The feature build found leakage; the message lists every problem, one per line."""

    exit_code = EXIT_CHECK_FAILED  # a check that ran and refused, not a usage error

    def __init__(self, problems: list[LeakageProblem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"feature build failed: {len(problems)} leakage problem(s):\n{lines}")

    @property
    def subjects(self) -> list[str]:
        return [p.subject for p in self.problems]


def split_digest(event_ids: Iterable[Any]) -> str:
    """sha256 of a split's sorted event ids, one per line: identifies exactly which rows a fit saw."""
    h = hashlib.sha256()
    for eid in sorted(str(e) for e in event_ids):
        h.update(eid.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def auc_score(y: np.ndarray, score: np.ndarray) -> float:
    """ROC-AUC by the rank-sum (Mann-Whitney) formula, ties counted half. NaN if one class is absent."""
    y = np.asarray(y).astype(bool)
    score = np.asarray(score, dtype=np.float64)
    n1 = int(y.sum())
    n0 = y.shape[0] - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    avg_rank = ends - (counts - 1) / 2.0  # 1-based average rank of each tied group
    ranks = avg_rank[inverse]
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def single_feature_auc(values: Any, y: np.ndarray, *, kind: str, seed: int = 0) -> float:
    """How well one input alone separates the classes: max(AUC, 1 - AUC), in [0.5, 1]."""
    y = np.asarray(y).astype(bool)
    if kind == "numeric":
        x = as_float(values)
        finite = x[~np.isnan(x)]
        floor = (finite.min() - 1.0) if finite.size else 0.0
        auc = auc_score(y, np.where(np.isnan(x), floor, x))
    elif kind == "categorical":
        text, _ = as_text(values)
        rng = np.random.default_rng(seed)
        fit_half = np.asarray(rng.random(text.shape[0]) < 0.5, dtype=bool)
        if fit_half.all() or not fit_half.any():
            return float("nan")
        cats, inverse = np.unique(text, return_inverse=True)
        pos = np.bincount(inverse[fit_half], weights=y[fit_half], minlength=len(cats))
        cnt = np.bincount(inverse[fit_half], minlength=len(cats))
        prior = float(y[fit_half].mean())
        rate = (pos + prior) / (cnt + 1.0)  # one pseudo-row at the prior: unseen categories get the prior
        auc = auc_score(y[~fit_half], rate[inverse[~fit_half]])
    else:
        raise ValueError(f"single_feature_auc: kind = {kind!r}: expected numeric or categorical")
    return float("nan") if np.isnan(auc) else max(auc, 1.0 - auc)


def duplicate_ids(splits: Mapping[str, Iterable[Any]]) -> list[LeakageProblem]:
    """Event ids that appear in more than one split."""
    seen: dict[str, set[str]] = {name: {str(e) for e in ids} for name, ids in splits.items()}
    names = list(seen)
    problems = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            both = seen[a] & seen[b]
            if both:
                shown = ", ".join(sorted(both)[:5])
                problems.append(
                    LeakageProblem(
                        "duplicate_across_splits",
                        f"{a}/{b}",
                        f"{len(both)} event_id(s) in both splits (e.g. {shown}); each event belongs to one split",
                    )
                )
    return problems


def rows_before_cutoff(train_times: np.ndarray, others: Mapping[str, np.ndarray]) -> list[LeakageProblem]:
    """In a time split, rows of later splits earlier than the train cutoff (its last event time).

    Times are epoch microseconds (or any comparable numbers)."""
    train_times = np.asarray(train_times, dtype=np.float64)
    if train_times.size == 0:
        return []
    cutoff = float(np.nanmax(train_times))
    problems = []
    for name, times in others.items():
        t = np.asarray(times, dtype=np.float64)
        early = int((t < cutoff).sum())
        if early:
            problems.append(
                LeakageProblem(
                    "before_train_cutoff",
                    name,
                    f"{early} of {t.size} row(s) are earlier than the train cutoff (epoch us {cutoff:.0f}); "
                    "a time split must put every later split after training, or set "
                    "features.leakage.time_split: false for a random split",
                )
            )
    return problems


def fit_digest_problem(spec: Mapping[str, Any], train_ids: Iterable[Any]) -> list[LeakageProblem]:
    """The spec must have been fitted on exactly this train split (statistics from train only)."""
    fit = spec.get("fit", {})
    expected = split_digest(train_ids)
    if fit.get("split") != "train" or fit.get("train_digest") != expected:
        return [
            LeakageProblem(
                "fit_not_on_train",
                "spec",
                f"the spec was fitted on split {fit.get('split')!r} with digest "
                f"{str(fit.get('train_digest'))[:12]}, but the train split hashes to {expected[:12]}: "
                "refit the spec on the training split only",
            )
        ]
    return []


def check_leakage(
    *,
    train_columns: Mapping[str, Any],
    train_label: np.ndarray,
    kinds: Mapping[str, str],
    split_ids: Mapping[str, Iterable[Any]],
    split_times: Mapping[str, np.ndarray],
    spec: Mapping[str, Any] | None,
    max_single_auc: float = DEFAULT_MAX_SINGLE_AUC,
    time_split: bool = True,
    max_rows: int = 200_000,
    seed: int = 0,
) -> LeakageReport:
    """Run every check; returns the AUC of each input and every problem found (none: build may pass).

    ``train_label`` may hold NaN for unlabelled rows: they are left out of the AUC check."""
    report = LeakageReport()
    y = np.asarray(train_label, dtype=np.float64)
    labelled = np.flatnonzero(~np.isnan(y))
    if labelled.size > max_rows:
        labelled = np.sort(np.random.default_rng(seed).choice(labelled, size=max_rows, replace=False))
    for name, kind in kinds.items():
        values = np.asarray(train_columns[name])[labelled]
        auc = single_feature_auc(values, y[labelled] > 0, kind=kind, seed=seed)
        report.single_auc[name] = auc
        if not np.isnan(auc) and auc > max_single_auc:
            report.problems.append(
                LeakageProblem(
                    "single_feature_auc",
                    name,
                    f"predicts the label alone with AUC {auc:.4f} > features.leakage.max_single_auc "
                    f"{max_single_auc}: it is probably known only after the outcome; drop it "
                    "(features.drop, or the source adapter's drop list)",
                )
            )
    report.problems += duplicate_ids(split_ids)
    if time_split and "train" in split_times:
        report.problems += rows_before_cutoff(
            split_times["train"], {k: v for k, v in split_times.items() if k != "train"}
        )
    if spec is not None and "train" in split_ids:
        report.problems += fit_digest_problem(spec, split_ids["train"])
    return report
