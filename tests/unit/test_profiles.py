"""Shipped profiles stay valid and in sync; a profile's workspace pipeline reads the user's landing folder."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from pipelines.core.config import load_params
from pipelines.lifecycle.profile_run import (
    has_key,
    landing_for,
    load_params_text,
    pipeline_param_keys,
    workspace_dvc_yaml,
    workspace_params_text,
)

ROOT = Path(__file__).resolve().parents[2]


def shipped_profiles() -> list[Path]:
    """The profiles the project ships (tracked by git): `loopline init` writes users' own profiles into the
    same folder, and those must not change what the project's tests check."""
    listed = subprocess.run(["git", "ls-files", "profiles/*.yaml"], cwd=ROOT, capture_output=True, text=True)
    names = listed.stdout.split() if listed.returncode == 0 else []
    return [ROOT / n for n in sorted(names)] or [
        ROOT / "profiles" / "synthetic.yaml",
        ROOT / "profiles" / "hotel.yaml",
    ]


def test_synthetic_profile_equals_the_default_params() -> None:
    default = yaml.safe_load((ROOT / "params.yaml").read_text())
    profile = yaml.safe_load((ROOT / "profiles" / "synthetic.yaml").read_text())
    assert profile == default, (
        "profiles/synthetic.yaml drifted from params.yaml: cp params.yaml profiles/synthetic.yaml"
    )


@pytest.mark.parametrize("path", shipped_profiles(), ids=lambda p: p.name)
def test_every_shipped_profile_validates(path: Path) -> None:
    load_params(path)


def test_hotel_profile_runs_from_the_shared_datasets_and_sets_every_stage() -> None:
    raw = yaml.safe_load((ROOT / "profiles" / "hotel.yaml").read_text())
    assert raw["source"]["landing"] == "../shared/datasets"
    stages = {"sampling", "labeling", "features", "train", "tune", "evaluate", "gate", "validation"}
    assert stages <= set(raw), f"sections left to the card-payment defaults: {sorted(stages - set(raw))}"
    p = load_params(ROOT / "profiles" / "hotel.yaml")
    declared = {c.name for c in p.schema.columns}
    assert set(p.evaluate.slices) <= declared
    assert p.labeling.functions == ["logreg_model"]  # the other LFs need card-payment columns


def test_workspace_pipeline_replaces_generate_with_the_landing_folder() -> None:
    main = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    out, diff = workspace_dvc_yaml(main, landing="/data/my files")
    assert "generate" not in out["stages"] and "generate" in main["stages"]
    etl = out["stages"]["etl"]
    assert "/data/my files" in etl["deps"] and "data/landing" not in etl["deps"]
    assert "--landing '/data/my files'" in etl["cmd"]
    assert set(out["stages"]) == set(main["stages"]) - {"generate"}
    assert "/data/my files" in diff
    same, _ = workspace_dvc_yaml(main, landing=None)
    assert same == main


@pytest.mark.parametrize("path", shipped_profiles(), ids=lambda p: p.name)
def test_every_shipped_profile_declares_every_key_its_pipeline_reads(path: Path) -> None:
    """DVC stops a stage whose declared params are missing from params.yaml (a profile without `predict`
    once stopped `loopline run --profile hotel` at the predict stage): shipped profiles are complete,
    so their workspace copy is the profile verbatim."""
    pipeline, _ = workspace_dvc_yaml(yaml.safe_load((ROOT / "dvc.yaml").read_text()), landing="/land")
    raw = yaml.safe_load(path.read_text())
    assert [k for k in pipeline_param_keys(pipeline) if not has_key(raw, k)] == []
    text = path.read_text()
    out = workspace_params_text(text, load_params(path), pipeline, profile=str(path))
    assert out.endswith(text) and out.startswith(f"# loopline: edit {path}\n")


def test_a_profile_that_leaves_sections_to_the_defaults_gets_them_in_its_workspace(tmp_path: Path) -> None:
    pipeline, _ = workspace_dvc_yaml(yaml.safe_load((ROOT / "dvc.yaml").read_text()), landing="/land")
    full = yaml.safe_load((ROOT / "profiles" / "hotel.yaml").read_text())
    keys = pipeline_param_keys(pipeline)
    assert {"predict", "quantize", "evaluate.min_slice_positives", "schema.entity_key"} <= set(keys)

    # whole sections missing: appended after the profile's own text, which stays as written
    short = {k: v for k, v in full.items() if k not in ("predict", "quantize")}
    text = "# my comment\n" + yaml.safe_dump(short, sort_keys=False)
    (tmp_path / "p.yaml").write_text(text)
    params = load_params(tmp_path / "p.yaml")
    out = workspace_params_text(text, params, pipeline, profile="p.yaml")
    assert out.split("\n", 2)[2].startswith(text) and "leaves to the defaults" in out
    assert "(quantize, predict)" in out
    merged = yaml.safe_load(out)
    assert all(has_key(merged, k) for k in keys)
    assert merged["predict"]["scorer"] == "auto" and load_params_text(out) == params

    # a key missing inside a section the profile has: the merged parameters, loading to the same
    del short["evaluate"]["min_slice_positives"]
    text = yaml.safe_dump(short, sort_keys=False)
    (tmp_path / "q.yaml").write_text(text)
    params = load_params(tmp_path / "q.yaml")
    out = workspace_params_text(text, params, pipeline, profile="q.yaml")
    merged = yaml.safe_load(out)
    assert all(has_key(merged, k) for k in keys) and merged["evaluate"]["min_slice_size"] == 200
    assert merged["evaluate"]["min_slice_positives"] == params.evaluate.min_slice_positives
    assert load_params_text(out) == params


def test_landing_resolution(tmp_path: Path) -> None:
    (tmp_path / "shared" / "datasets").mkdir(parents=True)
    root = tmp_path / "project"
    root.mkdir()
    hotel = load_params(ROOT / "profiles" / "hotel.yaml")
    assert landing_for(hotel, root=root) == str((tmp_path / "shared" / "datasets").resolve())
    assert landing_for(load_params(ROOT / "params.yaml"), root=root) is None  # synthetic: generate fills it
    generic = hotel.model_copy(update={"source": hotel.source.model_copy(update={"landing": None})})
    with pytest.raises(ValueError, match=r"set source\.landing in the profile"):
        landing_for(generic, root=root)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        landing_for(hotel, root=root, override="nowhere")


def test_hotel_profile_retrains_every_other_month_and_refits_every_third_time() -> None:
    """Hotel drifts in every month (season, trend): the cool-down sets the cadence (every other month), the
    stage follows the monitor's decision (auto mode) with two stateful updates between refits, and the
    backtest's windows run on the label's clock (outcomes mature at arrival, 0-700 days after booking)."""
    import datetime as dt

    from pipelines.lifecycle.backtest import periods_of
    from pipelines.lifecycle.retrain import RetrainState, choose_mode
    from pipelines.monitoring.monitor import MonitorState, Window, decide

    p = load_params(ROOT / "profiles" / "hotel.yaml")
    drifted = {
        "features": {"columns": {"lead_time": {"method": "wasserstein", "score": 0.5, "drifted": True}},
                     "drifted": ["lead_time"], "drifted_importance": 0.8},
        "prediction": None,
        "performance": None,
    }  # fmt: skip
    state, fired = MonitorState(), []
    for k, (s, e) in enumerate(periods_of(dt.date(2016, 7, 1), dt.date(2017, 8, 31), "monthly")):
        d = decide(drifted, p.monitor.policy, state, window=Window(s, e))
        state = d.state
        if d.retrain:
            fired.append(k)
    assert fired == [0, 2, 4, 6, 8, 10, 12]  # a cool-down of 2 periods; calendar months count as one each
    assert p.retrain.mode == "auto"  # a forced mode would retrain without a decision
    modes = [
        choose_mode(requested=p.retrain.mode, cfg=p.retrain, state=RetrainState(updates_since_refit=since),
                    n_trees=50, has_champion=True)[0]
        for since in (0, 1, 2)
    ]  # fmt: skip
    assert modes == ["stateful", "stateful", "stateless"]
    assert p.retrain.refit_on_gate_failure
    assert p.retrain.backtest.split_on == "label_time" and p.retrain.backtest.label_maturity_days == 0


def test_messages_about_parameters_name_the_profile_not_the_workspace_copy(tmp_path: Path) -> None:
    """`fix evaluate.slices in params.yaml` named the copy `loopline run` rewrites; the user edits the
    profile. The copy's first line names it, and a bad key in the copy is reported against the profile."""
    from typer.testing import CliRunner

    from pipelines.cli import app
    from pipelines.core.config import params_file

    pipeline, _ = workspace_dvc_yaml(yaml.safe_load((ROOT / "dvc.yaml").read_text()), landing="/land")
    text = (ROOT / "profiles" / "hotel.yaml").read_text()
    copy = tmp_path / "params.yaml"
    copy.write_text(workspace_params_text(text, load_params(ROOT / "profiles" / "hotel.yaml"), pipeline,
                                          profile="profiles/hotel.yaml"))  # fmt: skip
    res = CliRunner().invoke(app, ["check-params", "-p", str(copy)])
    assert res.exit_code == 0 and params_file() == "profiles/hotel.yaml"
    copy.write_text(copy.read_text().replace("seed:", "sed:", 1))
    res = CliRunner().invoke(app, ["check-params", "-p", str(copy)])
    assert res.exit_code == 2 and "profiles/hotel.yaml: sed = " in res.output, res.output
