"""The retrain stage on a real lake and a real registry: stateful continuation keeps the champion's spec and
records its parent, the watermark moves only when a candidate becomes champion, the refit schedule runs a
stateless refit, and auto mode does nothing when the monitor's decision says so."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest

D = dt.date


def _params(params, **retrain):
    """Small, fast settings: labels mature in 2 days, 3-day splits, XGBoost only, a permissive gate."""
    from pipelines.core.config import BehaviouralConfig

    return params.model_copy(
        update={
            "sampling": params.sampling.model_copy(
                update={
                    "label_maturity_days": 2,
                    "test_days": 3,
                    "valid_days": 3,
                    "gap_days": 0,
                    "train_days": None,
                }
            ),
            "train": params.train.model_copy(
                update={
                    "xgboost": params.train.xgboost.model_copy(update={"num_boost_round": 40, "nthread": 2})
                }
            ),
            "evaluate": params.evaluate.model_copy(
                update={"behavioural": BehaviouralConfig(models=["xgboost"], max_rows=500)}
            ),
            "gate": params.gate.model_copy(
                update={
                    "champion_margin": -1.0,
                    "baseline_margin": -1.0,
                    "slice_margin": 1.0,
                    "require_behavioural": False,
                }
            ),
            "retrain": params.retrain.model_copy(
                update={"keras": False, "quantize": False, "stateful_rounds": 5, **retrain}
            ),
        }
    )


@pytest.fixture(scope="module")
def lake(tmp_path_factory, params) -> str:
    from pipelines.data.etl import run_etl
    from pipelines.data.generate import generate_landing

    base = tmp_path_factory.mktemp("retrain_lake")
    syn = params.synthetic.model_copy(
        update={"days": 30, "rows_per_day": 1500, "clean_label_days": 2, "chargeback_delay_days": 1.0,
                "drift": params.synthetic.drift.model_copy(update={"enabled": False})}
    )  # fmt: skip
    generate_landing(syn, out=str(base / "landing"), seed=params.seed, progress=False)
    run_etl(landing=str(base / "landing"), lake=str(base / "lake"), quarantine=str(base / "q"),
            params=params.model_copy(update={"synthetic": syn}), progress=False)  # fmt: skip
    return str(base / "lake")


def _run(lake, reg, tmp, p, *, as_of, mode=None, decision=None):
    from pipelines.lifecycle.retrain import run_retrain

    return run_retrain(lake=lake, registry=str(reg), features_out=str(tmp / "features"), out=str(tmp / "cand"),
                       reports=str(tmp / "reports"), params=p, mode=mode, decision=decision, as_of=as_of,
                       created_at=dt.datetime.combine(as_of, dt.time(12), dt.UTC))  # fmt: skip


@pytest.fixture(scope="module")
def bootstrapped(lake, tmp_path_factory, params):
    """A registry whose champion came from the retrain stage itself (no champion: a stateless fit)."""
    tmp = tmp_path_factory.mktemp("retrain_boot")
    r = _run(lake, tmp / "registry", tmp, _params(params), as_of=D(2025, 1, 16))
    assert r["mode"] == "stateless" and r["status"] == "champion" and r["parent_version"] is None
    return tmp / "registry", r


def _copy(reg: Path, tmp: Path) -> Path:
    shutil.copytree(reg, tmp / "registry")
    return tmp / "registry"


def _state(reg: Path) -> dict:
    return json.loads((reg / "retrain_state.json").read_text())


def test_choose_mode_follows_the_schedule(params) -> None:
    from pipelines.lifecycle.retrain import RetrainState, choose_mode

    cfg = params.retrain.model_copy(update={"refit_every": 3, "max_trees": 100})
    kw = {"requested": "auto", "cfg": cfg, "has_champion": True}
    assert choose_mode(state=RetrainState(updates_since_refit=0), n_trees=50, **kw)[0] == "stateful"
    assert choose_mode(state=RetrainState(updates_since_refit=1), n_trees=50, **kw)[0] == "stateful"
    mode, why = choose_mode(state=RetrainState(updates_since_refit=2), n_trees=50, **kw)
    assert mode == "stateless" and "refit_every" in why
    mode, why = choose_mode(state=RetrainState(updates_since_refit=0), n_trees=100, **kw)
    assert mode == "stateless" and "max_trees" in why
    assert choose_mode(state=RetrainState(), n_trees=None, **kw)[0] == "stateless"
    assert (
        choose_mode(state=RetrainState(), n_trees=5, requested="auto", cfg=cfg, has_champion=False)[0]
        == "stateless"
    )
    with pytest.raises(ValueError, match="--mode"):
        choose_mode(state=RetrainState(), n_trees=5, requested="warm", cfg=cfg, has_champion=True)


@pytest.mark.slow
def test_stateful_update_keeps_the_spec_and_records_its_parent(lake, bootstrapped, tmp_path, params) -> None:
    from pipelines.registry.store import Registry

    reg_dir, boot = bootstrapped
    reg_dir = _copy(reg_dir, tmp_path)
    before = _state(reg_dir)
    r = _run(lake, reg_dir, tmp_path, _params(params), as_of=D(2025, 1, 23))
    assert r["mode"] == "stateful" and r["status"] == "champion", r
    reg = Registry(str(reg_dir))
    parent, child = boot["version"], r["version"]
    assert reg.alias("champion") == child
    assert reg.lineage(child)["parent_version"] == parent
    assert reg.lineage(child)["feature_spec_digest"] == reg.lineage(parent)["feature_spec_digest"]
    trees_parent = reg.read_json(parent, "xgboost.json")["best_iteration"] + 1
    meta = reg.read_json(child, "xgboost.json")
    assert (
        meta["num_boosted_rounds"] == trees_parent + 5
        and meta["continuation"]["trees_before"] == trees_parent
    )
    # trained on the rows since the watermark: the new window starts where the parent's train window ended
    assert r["rows"]["new"] > 0 and r["rows"]["replayed"] > 0
    after = _state(reg_dir)
    assert after["watermark"] > before["watermark"] and after["champion"] == child
    assert after["updates_since_refit"] == 1
    ev = reg.read_json(child, "evaluation.json")
    assert ev["retrain"]["new_rows_window"]["start"] == before["watermark"]
    # the stateful window is the parent's extended to the new end; valid and test keep the evaluation's own
    parent_ev = reg.read_json(parent, "evaluation.json")
    assert ev["data_window"]["train"]["start"][:10] == parent_ev["data_window"]["train"]["start"][:10]
    assert ev["data_window"]["train"]["end"] > parent_ev["data_window"]["train"]["end"]
    assert ev["data_window"]["test"] is not None and ev["data_window"]["valid"] is not None


@pytest.mark.slow
def test_watermark_stays_on_an_empty_window_and_on_a_gate_refusal(
    lake, bootstrapped, tmp_path, params
) -> None:
    from pipelines.registry.store import Registry

    reg_dir = _copy(bootstrapped[0], tmp_path)
    state = (reg_dir / "retrain_state.json").read_bytes()
    champion = Registry(str(reg_dir)).alias("champion")
    # the same cutoff as the champion's: nothing new since the watermark -> waiting, not a candidate
    r = _run(lake, reg_dir, tmp_path, _params(params), as_of=D(2025, 1, 16), mode="stateful")
    assert r["status"] == "waiting" and "no new data" in r["detail"]
    assert (reg_dir / "retrain_state.json").read_bytes() == state
    # a gate no candidate can pass (and no refit fallback): rejected, the watermark and the champion stay
    strict = _params(params, refit_on_gate_failure=False)
    strict = strict.model_copy(update={"gate": strict.gate.model_copy(update={"baseline_margin": 1.0})})
    r = _run(lake, reg_dir, tmp_path, strict, as_of=D(2025, 1, 23))
    assert r["mode"] == "stateful" and r["status"] == "rejected" and r["reasons"]
    assert (reg_dir / "retrain_state.json").read_bytes() == state
    assert Registry(str(reg_dir)).alias("champion") == champion
    assert r["watermark_after"] == r["watermark_before"] == json.loads(state)["watermark"]


@pytest.mark.slow
def test_the_refit_schedule_runs_a_stateless_refit(lake, bootstrapped, tmp_path, params) -> None:
    from pipelines.registry.store import Registry

    reg_dir = _copy(bootstrapped[0], tmp_path)
    p = _params(params, refit_every=2)
    first = _run(lake, reg_dir, tmp_path, p, as_of=D(2025, 1, 20))
    assert first["mode"] == "stateful" and first["status"] == "champion"
    second = _run(lake, reg_dir, tmp_path, p, as_of=D(2025, 1, 24))
    assert second["mode"] == "stateless" and "scheduled refit" in second["why"], second
    assert second["status"] == "champion" and second["parent_version"] is None
    reg = Registry(str(reg_dir))
    # a refit fits a new spec on its own (longer) train window
    assert (
        reg.lineage(second["version"])["feature_spec_digest"]
        != reg.lineage(first["version"])["feature_spec_digest"]
    )
    assert _state(reg_dir)["updates_since_refit"] == 0


def test_auto_mode_does_nothing_when_the_decision_says_no(lake, tmp_path, params) -> None:
    decision = tmp_path / "decision.json"
    decision.write_text(json.dumps({"retrain": False, "window": {"label": "2025-01-20"}}))
    r = _run(lake, tmp_path / "registry", tmp_path, _params(params), as_of=D(2025, 1, 20), mode="auto",
             decision=str(decision))  # fmt: skip
    assert r["ran"] is False and "retrain = false" in r["reason"]
    assert json.loads((tmp_path / "reports" / "retrain.json").read_text())["status"] == "skipped"
    assert not (tmp_path / "registry").exists()


def test_a_refit_learns_from_what_the_sample_label_and_features_stages_write(lake, tmp_path, params) -> None:
    """One lifecycle wiring: a stateless refit's features are the ones `dvc repro` builds on the same lake
    and cut-off (sample -> label -> features), weak labels included, not a second recipe of its own."""
    import pandas as pd

    from pipelines.data.sampling import run_sampling
    from pipelines.features.build import run_features
    from pipelines.labeling.label import run_labeling

    p = _params(params)
    r = _run(lake, tmp_path / "registry", tmp_path, p, as_of=D(2025, 1, 16), mode="stateless")
    assert r["mode"] == "stateless" and r["status"] == "champion", r

    p16 = p.model_copy(update={"sampling": p.sampling.model_copy(update={"as_of": D(2025, 1, 16)})})
    dvc = tmp_path / "dvc"
    run_sampling(lake=lake, out=str(dvc / "training"), cfg=p16.sampling, schema=p.schema, seed=p.seed,
                 progress=False)  # fmt: skip
    run_labeling(training=str(dvc / "training"), hand_labels=str(dvc / "none"), out=str(dvc / "labeled"),
                 reports=str(dvc / "lr"), cfg=p.labeling, schema=p.schema, seed=p.seed)  # fmt: skip
    run_features(labeled=str(dvc / "labeled"), lake=lake, out=str(dvc / "features"), reports=str(dvc / "fr"),
                 params=p16)  # fmt: skip
    assert (tmp_path / "features" / "spec.json").read_text() == (dvc / "features" / "spec.json").read_text()
    for split in ("train", "valid", "test"):
        ours = pd.read_parquet(tmp_path / "features" / f"{split}.parquet")
        theirs = pd.read_parquet(dvc / "features" / f"{split}.parquet")
        pd.testing.assert_frame_equal(ours, theirs)
    train = pd.read_parquet(tmp_path / "features" / "train.parquet")
    assert (train["label_source"] == "weak").any(), "the refit skipped the label stage's weak labels"
    assert r["rows"]["new"] == int((train["label_source"] == "natural").sum())
