"""Acceptance: evaluation -> registry -> promotion gate -> rollback, with tiny real XGBoost models.

"A deliberately bad candidate (trained on shuffled labels) is rejected with its reasons and the champion
is unchanged; rollback restores the previous champion." Plus: a tampered artifact is refused, and a
champion with another feature spec is re-scored with its own spec on the same holdout.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from eval_support import build_features, make_candidate, test_evaluate_config
from typer.testing import CliRunner

from pipelines.core.config import GateConfig
from pipelines.evaluation.evaluate import compare_champion, run_evaluate
from pipelines.registry.store import GateRefusedError, Registry, TamperedArtifactError, run_register

pytestmark = pytest.mark.slow
T0 = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def world(tmp_path_factory, synthetic_lake, params):  # type: ignore[no-untyped-def]
    """Features from the session lake and three candidates: weak, strong, and one trained on shuffled labels."""
    base = tmp_path_factory.mktemp("gate")
    features = build_features(synthetic_lake / "lake", base, params)
    cands = {
        "weak": make_candidate(features, base / "weak", rounds=8, max_depth=2, train_fraction=0.5, seed=1),
        "strong": make_candidate(features, base / "strong", rounds=120, max_depth=4, seed=2),
        "bad": make_candidate(features, base / "bad", shuffle_labels=True, seed=3),
    }
    cfg = test_evaluate_config()
    evals = {}
    for name, model in cands.items():
        run_evaluate(
            features=str(features), model=str(model), out=str(base / f"eval-{name}"), cfg=cfg, seed=0
        )
        evals[name] = base / f"eval-{name}"
    return {"base": base, "features": features, "cands": cands, "evals": evals, "cfg": cfg}


def _register(world, name: str, registry: Path, *, minutes: int, gate: GateConfig | None = None) -> dict:  # type: ignore[no-untyped-def]
    return run_register(
        model=str(world["cands"][name]), evaluation=str(world["evals"][name]), registry=str(registry),
        features=str(world["features"]), gate_cfg=gate or GateConfig(), evaluate_cfg=world["cfg"], seed=0,
        created_at=T0 + dt.timedelta(minutes=minutes), git={"commit": "test", "dirty": False},
    )  # fmt: skip


def test_evaluation_outputs(world) -> None:  # type: ignore[no-untyped-def]
    ev = json.loads((world["evals"]["strong"] / "evaluation.json").read_text())
    m = ev["metrics"]
    assert m["xgboost"]["pr_auc"] > m["baseline_heuristic"]["pr_auc"] > m["baseline_zero_rule"]["pr_auc"]
    assert set(m) >= {
        "xgboost",
        "baseline_random",
        "baseline_zero_rule",
        "baseline_heuristic",
        "xgboost+isotonic",
    }
    cal = json.loads((world["evals"]["strong"] / "calibration.json").read_text())
    assert cal["params"]["xgboost"]["method"] == "isotonic" and len(cal["params"]["xgboost"]["x"]) > 1
    roc = pd.read_csv(world["evals"]["strong"] / "plots" / "roc.csv")
    assert list(roc.columns[:2]) == ["fpr", "xgboost"] and len(roc) == world["cfg"].curve_points
    assert (world["evals"]["strong"] / "plots" / "calibration" / "xgboost.csv").exists()
    html = (world["evals"]["strong"] / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "Behavioural tests" in html
    metrics = json.loads((world["evals"]["strong"] / "metrics.json").read_text())
    assert metrics["test"]["xgboost"]["pr_auc"] == m["xgboost"]["pr_auc"]


def test_bad_candidate_rejected_champion_unchanged_rollback_restores(world, tmp_path) -> None:  # type: ignore[no-untyped-def]
    reg_dir = tmp_path / "registry"
    # the strong candidate must beat the weak one by a wide margin for the scenario to be meaningful
    first = _register(world, "weak", reg_dir, minutes=0)
    assert first["status"] == "champion", first["reasons"]
    second = _register(world, "strong", reg_dir, minutes=1)
    assert second["status"] == "champion", second["reasons"]
    assert second["champion_before"] == first["version"] and second["champion_after"] == second["version"]

    bad = _register(world, "bad", reg_dir, minutes=2)
    assert bad["status"] == "rejected" and not bad["passed"]
    assert any(r.startswith("beats_baseline_heuristic") for r in bad["reasons"]), bad["reasons"]
    assert any(r.startswith("beats_champion") for r in bad["reasons"]), bad["reasons"]
    reg = Registry(str(reg_dir))
    assert reg.alias("champion") == second["version"]  # unchanged
    gate = reg.read_json(bad["version"], "gate.json")
    assert gate["status"] == "rejected" and gate["reasons"] == bad["reasons"]
    card = (reg_dir / "versions" / bad["version"] / "model_card.md").read_text()
    assert "**rejected**" in card and "**FAIL** beats_baseline_heuristic" in card
    with pytest.raises(GateRefusedError, match="did not pass the promotion gate"):
        reg.promote(bad["version"])

    runner = CliRunner()
    from pipelines.cli import app

    out = runner.invoke(app, ["registry", "rollback", "--registry", str(reg_dir), "--reason", "test"])
    assert out.exit_code == 0, out.output
    assert reg.alias("champion") == first["version"]
    listing = runner.invoke(app, ["registry", "list", "--registry", str(reg_dir)])
    assert listing.exit_code == 0 and "rejected" in listing.output and first["version"] in listing.output
    # nothing older to roll back to now
    again = runner.invoke(app, ["registry", "rollback", "--registry", str(reg_dir)])
    assert again.exit_code == 2 and "no previous version" in again.output
    history = reg.history()
    assert [e["action"] for e in history] == ["promote", "promote", "rollback"]
    # the rolled-back version was gated against the weak champion, which is champion again: it may return
    assert reg.promote(second["version"]).aliases["champion"] == second["version"]


def test_tampered_artifact_is_refused(world, tmp_path) -> None:  # type: ignore[no-untyped-def]
    reg_dir = tmp_path / "registry"
    v = _register(world, "strong", reg_dir, minutes=0)["version"]
    reg = Registry(str(reg_dir))
    scorers, spec = reg.load_version(v)
    assert "xgboost" in scorers and spec["digest"]
    model = reg_dir / "versions" / v / "xgboost.ubj"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(TamperedArtifactError, match=r"xgboost\.ubj: sha256 .* does not match"):
        reg.load_version(v)
    with pytest.raises(TamperedArtifactError):
        reg.promote(v, alias="challenger")


def test_champion_with_another_spec_is_rescored_with_its_own(world, tmp_path, synthetic_lake, params) -> None:  # type: ignore[no-untyped-def]
    other = build_features(
        synthetic_lake / "lake", tmp_path / "other", params, features_update={"hash_buckets": 8}
    )
    other_spec = json.loads((other / "spec.json").read_text())
    spec = json.loads((world["features"] / "spec.json").read_text())
    assert other_spec["digest"] != spec["digest"]
    model = make_candidate(other, tmp_path / "champ", rounds=40, seed=5)
    from pipelines.training.models import load_scorers

    champ = {"version": "other", "scorers": load_scorers(str(model)), "spec": other_spec}
    rows = pd.read_parquet(world["features"] / "test.parquet")
    cmp = compare_champion(rows, spec=spec, champion=champ, cfg=world["cfg"])
    assert cmp["rescored_with_own_spec"]
    # the same model on its own feature matrix of the same events gives the same metrics
    own = pd.read_parquet(other / "test.parquet")
    own = own.set_index("event_id").loc[rows.loc[rows["label"].notna(), "event_id"]].reset_index()
    p = champ["scorers"]["xgboost"].predict(own)
    from pipelines.core.metrics import pr_auc

    assert cmp["metrics"]["xgboost"]["pr_auc"] == pytest.approx(
        pr_auc(own["label"].astype(int).to_numpy(), p), abs=1e-9
    )
    assert np.isfinite(cmp["slices"]["whole"])


def test_a_slice_on_a_column_that_is_not_a_feature(tmp_path, synthetic_lake, params) -> None:
    """Slicing on a column the model does not use (features.drop) is a normal wish: the split files carry
    every declared column, and the evaluation slices on it."""
    from pipelines.evaluation.evaluate import slice_metrics

    features = build_features(
        synthetic_lake / "lake", tmp_path, params, features_update={"drop": ["country"]}
    )
    test = pd.read_parquet(features / "test.parquet")
    spec = json.loads((features / "spec.json").read_text())
    assert "country" in test.columns and "country" not in spec["inputs"]
    y = test["label"].to_numpy()
    rows = slice_metrics(test, y, y * 0.9 + 0.05, columns=["country"], metric="roc_auc", min_size=1,
                       min_positives=1, margin=0.05)  # fmt: skip
    assert {r["column"] for r in rows["rows"]} == {"country"}
