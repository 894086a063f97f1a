"""Labeling: the label model on cases known by hand, hand-label validation and precedence, LF registry."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.labeling.label import (
    classification_metrics,
    fit_dawid_skene,
    fit_weighted_vote,
    lf_summary,
    validate_hand_labels,
)
from pipelines.labeling.labeling_functions import ABSTAIN, REGISTRY, apply_lfs, labeling_function


def _simulate(n: int, accuracies: list[float], coverages: list[float], prior: float, seed: int):
    """Binary truth and LF votes: LF j fires with prob coverage_j and is right with prob accuracy_j."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prior).astype(int)
    cols = []
    for a, c in zip(accuracies, coverages, strict=True):
        right = rng.random(n) < a
        vote = np.where(right, y, 1 - y)
        cols.append(np.where(rng.random(n) < c, vote, ABSTAIN))
    return y, np.column_stack(cols)


def test_dawid_skene_learns_that_an_adversarial_lf_is_wrong() -> None:
    # two good LFs (85%) and one that is wrong 90% of the time: the majority vote suffers, EM does not
    y, L = _simulate(6000, [0.85, 0.85, 0.10], [0.9, 0.9, 0.9], prior=0.4, seed=0)
    model = fit_dawid_skene(L, classes=[0, 1])
    votes_for_1 = (L == 1).sum(axis=1)
    votes_for_0 = (L == 0).sum(axis=1)
    majority = (votes_for_1 > votes_for_0).astype(int)
    acc_model = (model.predict(L) == y).mean()
    acc_majority = (majority == y).mean()
    assert acc_model > 0.9 > acc_majority + 0.1
    # recovered LF accuracies: P(vote = true class | fired), from the fitted confusion matrices
    conf = np.exp(model.log_weights)  # (m, K, K+1)
    for j, truth in enumerate([0.85, 0.85, 0.10]):
        p_fire = conf[j, :, 1:].sum(axis=1)
        acc = np.average([conf[j, 0, 1] / p_fire[0], conf[j, 1, 2] / p_fire[1]], weights=model.prior)
        assert acc == pytest.approx(truth, abs=0.04)
    assert model.prior[1] == pytest.approx(0.4, abs=0.03)


def test_dawid_skene_explicit_small_case() -> None:
    # three LFs that agree on most rows; LF c always abstains on class 0 and votes 1 on class 1
    L = np.array([[1, 1, 1]] * 40 + [[0, 0, -1]] * 50 + [[1, 0, -1]] * 5 + [[0, 1, -1]] * 5)
    model = fit_dawid_skene(L, classes=[0, 1])
    p = model.predict_proba(L)
    assert np.allclose(p.sum(axis=1), 1)
    assert (model.predict(L[:40]) == 1).all() and (model.predict(L[40:90]) == 0).all()
    # an ambiguous split vote without c's vote leans to 0: c's silence is evidence (abstain is modelled)
    assert p[90, 1] < 0.5 and p[95, 1] < 0.5
    # every LF silent: c's silence still speaks (it only fires on class 1), so the row leans below the prior
    none = model.predict_proba(np.array([[-1, -1, -1]]))
    assert none[0, 1] < model.prior[1] / 2


def test_dawid_skene_fixed_prior_and_bad_votes() -> None:
    _y, L = _simulate(2000, [0.9, 0.8], [0.5, 0.5], prior=0.1, seed=1)
    model = fit_dawid_skene(L, classes=[0, 1], class_prior=[0.9, 0.1])
    assert model.prior == pytest.approx([0.9, 0.1])
    with pytest.raises(ValueError, match="expected"):
        fit_dawid_skene(np.array([[0, 2]]), classes=[0, 1])
    with pytest.raises(ValueError, match="class_prior"):
        fit_dawid_skene(L, classes=[0, 1], class_prior=[1.0, 0.0])


def test_weighted_vote_turns_a_mostly_wrong_lf_against_its_votes() -> None:
    y, L = _simulate(3000, [0.9, 0.2], [1.0, 1.0], prior=0.5, seed=2)
    model = fit_weighted_vote(L, y, classes=[0, 1])
    assert model.log_weights[0, 1, 2] > 0 > model.log_weights[1, 1, 2]
    assert (model.predict(L) == y).mean() > 0.85


def test_metrics_and_lf_summary_by_hand() -> None:
    m = classification_metrics(np.array([0, 0, 0, 1]), np.array([0, 0, 1, 1]))
    assert m["accuracy"] == 0.75 and m["balanced_accuracy"] == pytest.approx((2 / 3 + 1) / 2, abs=1e-6)
    assert m["precision"] == 0.5 and m["recall"] == 1.0
    L = np.array([[1, -1], [1, 0], [-1, 0], [-1, -1]])
    rows = lf_summary(L, ["a", "b"], gold_rows=np.arange(4), gold_y=np.array([1, 1, 0, 0]), fallback=0)
    a, b = rows
    assert a["coverage"] == 0.5 and a["overlap"] == 0.25 and a["conflict"] == 0.25
    assert a["accuracy_on_coverage"] == 1.0 and b["accuracy_on_coverage"] == 0.5
    assert a["gold"]["balanced_accuracy"] == 1.0  # abstains fall back to 0, which is right here


def _hand(rows: list[list[str]], file: str = "a.csv") -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["event_id", "label", "labeler", "labeled_at"])
    return df.assign(source_file=file, source_row=np.arange(1, len(df) + 1))


def test_hand_labels_are_validated_with_reasons_and_latest_wins() -> None:
    raw = _hand([
        ["e1", "1", "ana", "2025-03-01T10:00:00Z"],
        ["e2", "0", "bob", "2025-03-01"],
        ["zz", "1", "ana", "2025-03-01T10:00:00Z"],
        ["e3", "2", "ana", "2025-03-01T10:00:00Z"],
        ["e3", "", "ana", "2025-03-01T10:00:00Z"],
        ["e4", "1", "", "2025-03-01T10:00:00Z"],
        ["e4", "1", "cy", "yesterday"],
        ["e1", "0", "cy", "2025-03-02T09:00:00Z"],
        ["", "1", "cy", "2025-03-02T09:00:00Z"],
    ])  # fmt: skip
    accepted, rejects = validate_hand_labels(raw, known_ids={"e1", "e2", "e3", "e4"}, label_values=[0, 1])
    assert len(accepted) + len(rejects) == len(raw)  # nothing silently dropped
    assert accepted.set_index("event_id")["label"].to_dict() == {"e1": 0, "e2": 0}  # e1: the later label wins
    assert accepted.set_index("event_id").loc["e1", "labeler"] == "cy"
    assert sorted(rejects["reason"]) == sorted([
        "unknown_event_id", "bad_label", "missing_label", "missing_labeler", "bad_labeled_at", "superseded",
        "missing_event_id",
    ])  # fmt: skip
    assert rejects.loc[rejects["reason"] == "superseded", "source_row"].tolist() == ["1"]


def test_hand_label_file_missing_a_column_rejects_its_rows() -> None:
    raw = pd.DataFrame({"event_id": ["e1"], "label": ["1"], "source_file": ["b.csv"], "source_row": [1]})
    accepted, rejects = validate_hand_labels(raw, known_ids={"e1"}, label_values=[0, 1])
    assert accepted.empty and rejects["reason"].tolist() == ["missing_column:labeler"]


def test_lf_registry_validates_votes() -> None:
    name = "_test_bad_lf"

    @labeling_function(name=name)
    def bad(df, ctx):
        return np.full(len(df), 7)

    try:
        from pipelines.core.config import LabelingFunctionOptions, SchemaConfig
        from pipelines.labeling.labeling_functions import LFContext

        schema = SchemaConfig(entity_key="card_id", columns=[{"name": "card_id", "type": "string"}])
        ctx = LFContext(options=LabelingFunctionOptions(), schema=schema, seed=0)
        with pytest.raises(ValueError, match="voted \\[7\\]"):
            apply_lfs(pd.DataFrame({"card_id": ["a"]}), [name], ctx)
        with pytest.raises(ValueError, match="unknown \\['nope'\\]"):
            apply_lfs(pd.DataFrame({"card_id": ["a"]}), ["nope"], ctx)
        with pytest.raises(ValueError, match="registered twice"):
            labeling_function(name=name)(bad)
    finally:
        REGISTRY.pop(name, None)
