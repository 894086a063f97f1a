from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipelines.core.config import ConfigError, load_params, parse_params

ROOT = Path(__file__).resolve().parents[2]


def _raw() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_default_params_load() -> None:
    p = load_params(ROOT / "params.yaml")
    assert p.source.kind == "synthetic"
    assert p.schema.entity_key == "card_id"
    assert "amount" in p.schema.feature_columns and "card_id" not in p.schema.feature_columns


def test_unknown_key_names_the_path() -> None:
    raw = _raw()
    raw["synthetic"]["rows_per_dya"] = 10
    with pytest.raises(ConfigError) as exc:
        parse_params(raw, source=Path("params.yaml"))
    msg = str(exc.value)
    assert msg.count("\n") == 0, "one problem, one line"
    assert "synthetic.rows_per_dya" in msg and "unknown key; did you mean 'rows_per_day'?" in msg
    assert "`loopline params show synthetic`" in msg
    raw = _raw()
    raw["evaluate"]["behavioural"]["invariance"][0]["epsilom"] = 0.1  # inside a list of models
    with pytest.raises(
        ConfigError, match=r"invariance\.0\.epsilom = 0\.1: unknown key; did you mean 'epsilon'\?"
    ):
        parse_params(raw)


def test_wrong_type_and_range_name_value_and_expectation() -> None:
    raw = _raw()
    raw["synthetic"]["rows_per_day"] = -5
    raw["etl"]["dedup_lookback_days"] = "seven"
    with pytest.raises(ConfigError) as exc:
        parse_params(raw)
    lines = str(exc.value).splitlines()
    assert len(lines) == 2
    assert any("synthetic.rows_per_day = -5" in ln and "greater than 0" in ln for ln in lines)
    assert any("etl.dedup_lookback_days = 'seven'" in ln and "integer" in ln for ln in lines)


def test_schema_rules() -> None:
    raw = _raw()
    raw["schema"]["columns"].append({"name": "amount", "type": "float"})
    with pytest.raises(ConfigError, match="duplicate column names"):
        parse_params(raw)
    raw = _raw()
    raw["schema"]["columns"].append({"name": "label", "type": "int"})
    with pytest.raises(ConfigError, match="core columns"):
        parse_params(raw)
    raw = _raw()
    raw["schema"]["columns"][5]["min"] = 10
    raw["schema"]["columns"][5]["max"] = 1
    with pytest.raises(ConfigError, match="must not exceed"):
        parse_params(raw)


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_params_origins_tell_file_from_default_and_a_default_written_twice() -> None:
    from pipelines.core.config import params_origins

    raw = _raw()
    raw["train"] = {"keras": {"epochs": 3, "dropout": 0.2}}  # 0.2 is the code's default
    raw.pop("tune", None)
    origins = {k: (v, o) for k, v, o in params_origins(raw, parse_params(raw))}
    assert origins["train.keras.epochs"] == (3, "file")
    assert origins["train.keras.dropout"] == (0.2, "file (= default)")
    assert origins["train.keras.patience"][1] == "default"
    assert origins["tune.n_trials"][1] == "default"
    # a list set in the file is one value: its items are not separate parameters
    assert origins["schema.columns"][1] == "file"


def test_params_show_prints_every_key_with_its_origin(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pipelines.cli import app

    raw = _raw()
    raw["train"] = {"keras": {"epochs": 3}}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(raw))
    res = CliRunner().invoke(app, ["params", "show", "train.keras", "-p", str(path)])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert any(line.split()[:3] == ["train.keras.epochs", "3", "(file)"] for line in lines)
    assert any(line.split()[:3] == ["train.keras.patience", "3", "(default)"] for line in lines)
    hidden = next(line for line in lines if line.startswith("train.keras.hidden_units"))
    assert hidden.endswith(
        "# dense layers; the weights dominate the TFLite file"
    )  # documentation from the code
    changed = CliRunner().invoke(app, ["params", "show", "--changed", "--json", "-p", str(path)])
    keys = [r["key"] for r in json.loads(changed.output)]
    assert "train.keras.epochs" in keys and "train.keras.patience" not in keys


def test_the_card_payment_heuristics_vote_only_where_a_profile_lists_them() -> None:
    """A weather profile carried card-payment labeling functions and their options by default."""
    bare = parse_params({"schema": {"columns": [{"name": "temp", "type": "float"}]}})
    assert bare.labeling.functions == ["logreg_model"]
    assert "risky_category" in load_params(ROOT / "params.yaml").labeling.functions  # the fraud example


def test_sections_that_name_columns_are_cross_checked_at_load() -> None:
    """check-params passed a profile whose slices or behavioural tests named columns the model never sees;
    the run failed later, in the stage that needed them. Now loading names the key and the fix."""
    raw = _raw()
    raw["evaluate"]["slices"] = ["country", "continent"]
    with pytest.raises(ConfigError, match=r"evaluate\.slices names \['continent'\], which schema\.columns"):
        parse_params(raw, source=Path("profiles/x.yaml"))
    raw = _raw()
    raw["features"]["drop"] = ["merchant_id"]  # the invariance test swaps merchant_id
    with pytest.raises(
        ConfigError, match=r"evaluate\.behavioural tests \['merchant_id'\], which the model never"
    ):
        parse_params(raw)
    raw = _raw()
    raw["features"]["drop"] = ["country"]
    assert "country" in parse_params(raw).evaluate.slices  # a slice need not be a feature
    raw["predict"]["extra_columns"] = ["nope"]
    with pytest.raises(ConfigError, match=r"predict\.extra_columns names \['nope'\]"):
        parse_params(raw)
