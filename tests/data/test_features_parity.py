"""The feature stage on synthetic data: numpy/edge vs training-path parity, the CLI stage, leakage by name."""

from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml
from typer.testing import CliRunner

from pipelines.edge import featurespec as fs
from pipelines.core import storage
from pipelines.cli import app
from pipelines.data.etl import lake_dates, read_partition
from pipelines.features.build import build_features, load_history, transform_columns, transform_frame

PARITY_ROWS = 10_000
TOLERANCE = 1e-6


def write_time_split(
    lake: str, out: str, fractions: tuple[float, float] = (0.7, 0.15)
) -> dict[str, pd.DataFrame]:
    """The labelling stage's output contract, made directly from a lake: a time split plus the extra columns."""
    df = pa.concat_tables([read_partition(lake, d) for d in lake_dates(lake)]).to_pandas()
    df = df.sort_values(["event_time", "event_id"], kind="stable").reset_index(drop=True)
    a, b = int(len(df) * fractions[0]), int(len(df) * sum(fractions))
    splits = {"train": df.iloc[:a].copy(), "valid": df.iloc[a:b].copy(), "test": df.iloc[b:].copy()}
    for name, part in splits.items():
        part["split"] = name
        part["sample_weight"] = 1.0
        part["label_source"] = "natural"
        part["label_weight"] = 1.0
        storage.write_parquet(f"{out}/{name}.parquet", pa.Table.from_pandas(part, preserve_index=False))
    return splits


@pytest.fixture(scope="module")
def labeled(synthetic_lake, tmp_path_factory):
    out = tmp_path_factory.mktemp("labeled")
    splits = write_time_split(str(synthetic_lake / "lake"), str(out))
    return out, splits


@pytest.fixture(scope="module")
def build(labeled, synthetic_lake, params):
    _, splits = labeled
    cfg = params.features
    history = load_history(
        str(synthetic_lake / "lake"),
        start=pd.Timestamp("2024-12-01", tz="UTC").to_pydatetime(),
        end=pd.Timestamp("2026-01-01", tz="UTC").to_pydatetime(),
        columns=["event_id", "event_time", "card_id", "amount"],
    )
    return build_features(splits, history=history, cfg=cfg, schema=params.schema, seed=params.seed)


def _edge_columns(frame: pd.DataFrame, names: list[str], path) -> dict[str, np.ndarray]:
    """What the edge runtime does: a CSV file parsed with the csv module into numpy string arrays."""
    out = frame[names].copy()
    out["event_time"] = pd.to_datetime(out["event_time"], utc=True).map(lambda t: t.isoformat())
    out.to_csv(path, index=False)
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    return {h: np.array([r[i] for r in body], dtype=str) for i, h in enumerate(header)}


@pytest.mark.slow
def test_numpy_edge_and_training_paths_agree_on_10k_rows(build, tmp_path):
    spec = fs.loads_spec(fs.dumps_spec(build.spec))  # exactly what the edge device would load
    frame = pd.concat(build.frames.values(), ignore_index=True)
    rows = frame.sample(n=PARITY_ROWS, random_state=0).reset_index(drop=True)
    reference = transform_frame(spec, rows).to_numpy()  # pandas reference implementation
    production = transform_columns(spec, rows)  # DataFrame -> arrays -> numpy transform
    edge = fs.transform(spec, _edge_columns(rows, fs.input_columns(spec), tmp_path / "rows.csv"))
    assert reference.shape == production.shape == edge.shape == (PARITY_ROWS, len(spec["feature_names"]))
    assert np.isfinite(edge).all()
    for name, got in (("production", production), ("edge", edge)):
        diff = np.abs(got.astype(np.float64) - reference.astype(np.float64))
        worst = int(diff.max(axis=0).argmax())
        assert diff.max() <= TOLERANCE, f"{name}: {spec['feature_names'][worst]} differs by {diff.max()}"
    # the rows really exercise the spec: missing values, every one-hot slot family, several hash buckets
    names = spec["feature_names"]
    assert edge[:, names.index("distance_km__missing")].sum() > 0
    assert (
        edge[:, [i for i, n in enumerate(names) if n.startswith("merchant_id__h")]].sum(axis=0) > 0
    ).sum() > 20


@pytest.mark.slow
def test_features_cli_writes_matrices_spec_and_report(labeled, synthetic_lake, tmp_path, root):
    labeled_dir, splits = labeled
    out, reports = tmp_path / "features", tmp_path / "reports"
    importance = tmp_path / "importance.json"
    importance.write_text(json.dumps({"amount__log": 0.4}))
    result = CliRunner().invoke(
        app,
        ["features", "--labeled", str(labeled_dir), "--lake", str(synthetic_lake / "lake"), "--out", str(out),
         "--reports", str(reports), "--importance", str(importance), "--params", str(root / "params.yaml")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    spec = fs.loads_spec((out / "spec.json").read_text())
    report = json.loads((reports / "report.json").read_text())
    assert report["spec_digest"] == spec["digest"] and report["n_features"] == len(spec["feature_names"])
    assert report["leakage"]["passed"] and report["features"]["amount__log"]["importance"] == 0.4
    assert 0.9 < report["inputs"]["distance_km"]["coverage"]["train"] < 1.0  # MCAR missing values
    assert "psi_train_test" in report["features"]["channel==online"]
    assert "Features report" in (reports / "report.html").read_text()
    test = pd.read_parquet(out / "test.parquet")
    assert len(test) == len(splits["test"])
    for col in (
        "event_id",
        "event_time",
        "label",
        "label_source",
        "sample_weight",
        "card_id",
        "country",
        "channel",
    ):
        assert col in test.columns
    # the written matrix is the spec applied to the written raw inputs
    np.testing.assert_array_equal(test[spec["feature_names"]].to_numpy(), transform_columns(spec, test))


@pytest.mark.slow
def test_features_cli_fails_naming_an_injected_label_copy(labeled, synthetic_lake, tmp_path, root):
    _, splits = labeled
    leaky = tmp_path / "labeled"
    for name, part in splits.items():
        part = part.assign(chargeback_flag=part["label"].astype("float64"))
        storage.write_parquet(
            str(leaky / f"{name}.parquet"), pa.Table.from_pandas(part, preserve_index=False)
        )
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["schema"]["columns"].append({"name": "chargeback_flag", "type": "float", "nullable": True})
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(
        app,
        ["features", "--labeled", str(leaky), "--lake", str(synthetic_lake / "lake"), "--out", str(tmp_path / "f"),
         "--reports", str(tmp_path / "r"), "--params", str(params_file)],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "single_feature_auc: chargeback_flag" in result.output
    assert not (tmp_path / "f" / "spec.json").exists()  # a failed build writes no artifacts
