"""Sampling + labeling on the synthetic lake: the acceptance check, lineage and hand-label precedence."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from pipelines.labeling.label import run_labeling
from pipelines.data.sampling import run_sampling

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def labelled(synthetic_lake, params, tmp_path_factory):
    """The 20-day lake sampled as of 2025-02-10 (so train, valid and test have matured), then labelled
    with three hand-label rows: an override of a natural train label, a label for an unlabelled valid
    row, and one for an event that does not exist."""
    base = tmp_path_factory.mktemp("labeling")
    cfg = params.sampling.model_copy(update={"as_of": dt.date(2025, 2, 10), "test_days": 2, "valid_days": 2})
    sampling = run_sampling(lake=str(synthetic_lake / "lake"), out=str(base / "training"), cfg=cfg,
                            schema=params.schema, seed=params.seed, progress=False)  # fmt: skip
    train = pd.read_parquet(base / "training" / "train.parquet")
    valid = pd.read_parquet(base / "training" / "valid.parquet")
    flip = train[train["label"] == 0].iloc[0]
    unl_valid = valid[valid["label"].isna()].iloc[0]
    hand = base / "hand"
    hand.mkdir()
    (hand / "README.md").write_text("not a CSV: ignored\n")
    (hand / "batch1.csv").write_text(
        "event_id,label,labeler,labeled_at,note\n"
        f"{flip.event_id},1,ana,2025-02-11T09:00:00Z,chargeback came by phone\n"
        f"{unl_valid.event_id},0,bob,2025-02-11T09:05:00Z,\n"
        "evt-19990101-0000000,1,ana,2025-02-11T09:06:00Z,\n"
    )
    report = run_labeling(training=str(base / "training"), hand_labels=str(hand), out=str(base / "labeled"),
                          reports=str(base / "reports"), cfg=params.labeling, schema=params.schema,
                          seed=params.seed)  # fmt: skip
    return {"base": base, "report": report, "sampling": sampling, "flip": flip.event_id,
            "unl_valid": unl_valid.event_id}  # fmt: skip


def test_label_model_is_at_least_as_accurate_as_the_best_lf(labelled) -> None:
    r = labelled["report"]
    lm, best = r["label_model"]["gold"]["balanced_accuracy"], r["best_lf"]["balanced_accuracy"]
    assert r["acceptance"] == {"passed": True, "rule": "label model balanced accuracy >= best single LF's",
                               "label_model": lm, "best_lf": best}  # fmt: skip
    assert lm >= best
    assert r["gold"]["rows"] > 10_000 and "balanced accuracy" in r["metric"]
    by_name = {f["name"]: f for f in r["labeling_functions"]}
    assert set(by_name) == set(r["functions"])
    for f in by_name.values():  # every LF reports coverage, overlap, conflicts and accuracy on gold
        assert 0 < f["coverage"] <= 1 and 0 <= f["conflict"] <= f["overlap"] <= f["coverage"]
        assert f["accuracy_on_coverage"] is not None
    # where the strongest negative LF fires, the label model is as accurate as that LF
    neg = by_name["domestic_pos_known_device"]
    assert neg["label_model_accuracy_on_coverage"] >= neg["accuracy_on_coverage"] - 0.005


def test_lineage_weights_and_honest_evaluation(labelled) -> None:
    base, params_weak = labelled["base"], 0.3
    splits = {s: pd.read_parquet(base / "labeled" / f"{s}.parquet") for s in ("train", "valid", "test")}
    for name, df in splits.items():
        assert df["label"].notna().all() and set(df["label_source"]) <= {"natural", "weak", "hand"}
        assert (df["split"] == name).all()
        assert {"sample_weight", "label_weight", "label_time"} <= set(df.columns)
    train = splits["train"]
    assert (train["label_source"] == "weak").sum() > 0
    assert (train.loc[train["label_source"] == "weak", "label_weight"] == params_weak).all()
    assert (train.loc[train["label_source"] == "natural", "label_weight"] == 1.0).all()
    assert (splits["valid"]["label_source"] != "weak").all() and (
        splits["test"]["label_source"] != "weak"
    ).all()
    # the lake's column types survive
    assert str(train["label"].dtype) in ("int8", "Int8")


def test_hand_labels_take_precedence_and_rejects_are_kept(labelled) -> None:
    base, r = labelled["base"], labelled["report"]
    train = pd.read_parquet(base / "labeled" / "train.parquet").set_index("event_id")
    valid = pd.read_parquet(base / "labeled" / "valid.parquet").set_index("event_id")
    assert train.loc[labelled["flip"], "label"] == 1 and train.loc[labelled["flip"], "label_source"] == "hand"
    assert (
        valid.loc[labelled["unl_valid"], "label"] == 0
        and valid.loc[labelled["unl_valid"], "label_source"] == "hand"
    )
    assert r["label_sources"]["train"]["hand_overrides_other_label"] == 1
    assert r["hand_labels"] == {"files": 1, "rows_read": 3, "accepted": 2, "rejected": 1,
                                "rejected_by_reason": {"unknown_event_id": 1}}  # fmt: skip
    rejects = pd.read_csv(base / "reports" / "hand_label_rejects.csv")
    assert rejects[["source_file", "source_row", "reason"]].values.tolist() == [
        ["batch1.csv", 3, "unknown_event_id"]
    ]
    ingested = pd.read_csv(base / "labeled" / "hand_labels_ingested.csv")
    assert set(ingested["labeler"]) == {"ana", "bob"}


def test_active_learning_queue(labelled, params) -> None:
    base, r = labelled["base"], labelled["report"]
    q = pd.read_csv(base / "labeled" / "al_queue.csv")
    assert len(q) == params.labeling.al_queue_size == r["active_learning"]["queued"]
    assert list(q.columns[:4]) == ["event_id", "label", "labeler", "labeled_at"]
    assert r["active_learning"]["strategy"] == "query_by_committee"  # two committee models by default
    assert q["score"].is_monotonic_decreasing and q["event_id"].is_unique
    unl = pd.read_parquet(base / "training" / "unlabelled.parquet")
    assert set(q["event_id"]) <= set(unl["event_id"])  # only rows nobody has labelled
    assert labelled["unl_valid"] not in set(q["event_id"])  # a hand-labelled row leaves the pool
    assert (base / "reports" / "report.html").read_text().count("<tr>") >= len(r["functions"]) + 1
