"""Leakage checks: a label copy fails the build by name; duplicates across splits; time-split order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.core.config import FeaturesConfig, SchemaConfig
from pipelines.features.build import build_features, fit_spec
from pipelines.features.leakage import (
    LeakageError,
    auc_score,
    duplicate_ids,
    fit_digest_problem,
    rows_before_cutoff,
    single_feature_auc,
)

SCHEMA = {
    "entity_key": "card_id",
    "columns": [
        {"name": "card_id", "type": "string"},
        {"name": "channel", "type": "category"},
        {"name": "amount", "type": "float"},
    ],
}
CFG = FeaturesConfig(aggregates={"windows": ["1h"], "value_column": "amount"})


def _events(n: int, start: str, prefix: str, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    label = (rng.random(n) < 0.2).astype("int8")
    return pd.DataFrame(
        {
            "event_id": [f"{prefix}{i}" for i in range(n)],
            "event_time": pd.Timestamp(start, tz="UTC")
            + pd.to_timedelta(np.sort(rng.integers(0, 86400, n)), "s"),
            "card_id": rng.choice([f"c{i}" for i in range(50)], n),
            "channel": np.where(rng.random(n) < 0.3 + 0.3 * label, "online", "pos"),  # weakly predictive
            "amount": rng.gamma(2.0, 20.0, n) * (1 + label),
            "label": pd.array(label, dtype="Int8"),
        }
    )


def _splits() -> dict[str, pd.DataFrame]:
    return {
        "train": _events(2000, "2025-01-01", "tr", 1),
        "valid": _events(500, "2025-01-02", "va", 2),
        "test": _events(500, "2025-01-03", "te", 3),
    }


def test_clean_build_passes_and_reports_single_auc():
    build = build_features(
        _splits(), history=None, cfg=CFG, schema=SchemaConfig.model_validate(SCHEMA), seed=0
    )
    assert build.leakage.passed
    assert 0.5 < build.leakage.single_auc["amount"] < 0.9
    assert set(build.matrices) == {"train", "valid", "test"}


@pytest.mark.parametrize("kind", ["float", "category"])
def test_injected_label_copy_fails_the_build_and_is_named(kind):
    splits = _splits()
    for df in splits.values():
        copy = df["label"].astype(float)
        df["label_copy"] = copy if kind == "float" else copy.map({0.0: "no", 1.0: "yes"})
    schema = SchemaConfig.model_validate(
        {**SCHEMA, "columns": [*SCHEMA["columns"], {"name": "label_copy", "type": kind}]}
    )
    with pytest.raises(LeakageError) as err:
        build_features(splits, history=None, cfg=CFG, schema=schema, seed=0)
    assert err.value.subjects == ["label_copy"]
    assert "label_copy" in str(err.value) and "AUC 1.0000" in str(err.value)
    # dropping it makes the same build pass
    dropped = CFG.model_copy(update={"drop": ["label_copy"]})
    assert build_features(splits, history=None, cfg=dropped, schema=schema, seed=0).leakage.passed


def test_duplicates_across_splits_and_rows_before_cutoff_are_all_listed():
    splits = _splits()
    splits["test"] = pd.concat([splits["test"], splits["train"].iloc[:3]], ignore_index=True)  # 3 leaked rows
    with pytest.raises(LeakageError) as err:
        build_features(splits, history=None, cfg=CFG, schema=SchemaConfig.model_validate(SCHEMA), seed=0)
    kinds = {(p.kind, p.subject) for p in err.value.problems}
    assert kinds == {("duplicate_across_splits", "train/test"), ("before_train_cutoff", "test")}
    assert "3 event_id(s)" in str(err.value) and "3 of 503 row(s)" in str(err.value)
    # a random split may opt out of the time-order check, never out of the duplicate check
    random_split = CFG.model_copy(update={"leakage": CFG.leakage.model_copy(update={"time_split": False})})
    with pytest.raises(LeakageError) as err2:
        build_features(
            splits, history=None, cfg=random_split, schema=SchemaConfig.model_validate(SCHEMA), seed=0
        )
    assert [p.kind for p in err2.value.problems] == ["duplicate_across_splits"]


def test_spec_fitted_on_anything_but_train_is_flagged():
    splits = _splits()
    schema = SchemaConfig.model_validate(SCHEMA)
    cfg = CFG.model_copy(update={"aggregates": CFG.aggregates.model_copy(update={"enabled": False})})
    spec_on_test = fit_spec(splits["test"], cfg=cfg, schema=schema)
    problems = fit_digest_problem(spec_on_test, splits["train"]["event_id"])
    assert [p.kind for p in problems] == ["fit_not_on_train"]
    assert (
        fit_digest_problem(fit_spec(splits["train"], cfg=cfg, schema=schema), splits["train"]["event_id"])
        == []
    )


def test_auc_score_against_hand_values():
    y = np.array([0, 0, 1, 1])
    assert auc_score(y, np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
    assert auc_score(y, np.array([1, 1, 1, 1])) == 0.5  # ties count half
    assert np.isnan(auc_score(np.array([0, 0]), np.array([1.0, 2.0])))


def test_single_feature_auc_both_directions_and_categorical_halves():
    rng = np.random.default_rng(0)
    y = rng.random(4000) < 0.3
    assert single_feature_auc(-y.astype(float), y, kind="numeric") == 1.0  # reversed direction still leaks
    # a missing-value pattern that equals the label is caught (missing ranks below every value)
    assert single_feature_auc(np.where(y, np.nan, 5.0), y, kind="numeric") == 1.0
    # a unique ID per row cannot look predictive: the held-out half only sees unknown IDs
    ids = np.array([f"id{i}" for i in range(4000)], dtype=object)
    assert single_feature_auc(ids, y, kind="categorical", seed=1) == pytest.approx(0.5)


def test_pure_checks():
    assert duplicate_ids({"train": ["a", "b"], "test": ["c"]}) == []
    assert (
        rows_before_cutoff(np.array([1.0, 5.0]), {"test": np.array([5.0, 6.0])}) == []
    )  # equal to cutoff is fine
    assert len(rows_before_cutoff(np.array([1.0, 5.0]), {"valid": np.array([4.0, 6.0])})) == 1
