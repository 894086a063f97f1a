"""The edge runtime: numpy + TFLite only, CLI scores equal to the pipeline's scores of the same file."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import edge_support

from pipelines.edge import featurespec as fs

ROOT = Path(__file__).resolve().parents[2]
ALLOWED_TOP_LEVEL = {"numpy", "pipelines", "ai_edge_litert", "tflite_runtime"}


def test_edge_folder_imports_only_numpy_the_stdlib_itself_and_a_tflite_runtime():
    """A device copies pipelines/edge/ alone: every module there imports nothing else from Loopline."""
    found: set[str] = set()
    files = sorted((ROOT / "pipelines" / "edge").glob("*.py"))
    assert {f.name for f in files} >= {"__init__.py", "runtime.py", "featurespec.py"}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                found |= {
                    f"{node.module}.{a.name}" if node.module.startswith("pipelines") else node.module
                    for a in node.names
                }
            elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
                found.add("<dynamic>")
    third_party = {m for m in found if m.split(".")[0] not in sys.stdlib_module_names and m != "__future__"}
    assert {m for m in third_party if m.startswith("pipelines")} == {"pipelines.edge.featurespec"}
    assert {m.split(".")[0] for m in third_party} <= ALLOWED_TOP_LEVEL | {"<dynamic>"}, third_party


def test_int8_input_rounding_is_half_away_from_zero(tmp_path):
    """TFLite's reference quantizer rounds half away from zero; numpy's rint would round half to even."""
    from pipelines.edge.runtime import EdgeModel

    m = EdgeModel.__new__(EdgeModel)  # only the quantizer is exercised: no interpreter needed
    m.input_dtype = np.dtype(np.int8)
    m._in = {"quantization": (0.5, 3)}
    q = m._quantize(np.array([[0.25, -0.25, 0.75, 100.0, -100.0]], dtype=np.float32))
    # 0.25/0.5 = 0.5 -> 1 (+3 = 4); -0.5 -> -1 (+3 = 2); 1.5 -> 2 (+3 = 5); clamped to int8
    assert q.tolist() == [[4, 2, 5, 127, -128]]


@pytest.fixture(scope="module")
def case(tmp_path_factory, synthetic_lake, params):
    return edge_support.edge_case(tmp_path_factory, synthetic_lake, params)


@pytest.fixture(scope="module")
def rows(case, tmp_path_factory):
    """1,000 labelled test rows: the features frame and the same rows as raw CSV text."""
    spec = json.loads((case["model"] / "spec.json").read_text())
    test = pd.read_parquet(case["features"] / "test.parquet")
    test = test[test["label"].notna()].iloc[:1000].reset_index(drop=True)
    assert len(test) == 1000
    path = tmp_path_factory.mktemp("edge_rows") / "rows.csv"
    edge_support.write_rows_csv(test, ["event_id", *fs.input_columns(spec)], path)
    return test, spec, path


def _run_edge(*args: str, env: dict[str, str] | None = None, python: str = sys.executable, cwd: Path = ROOT):
    return subprocess.run(
        [python, "-m", "pipelines.edge.runtime", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


@pytest.mark.slow
def test_edge_cli_never_imports_pandas_or_tensorflow(case, rows, tmp_path):
    _, _, csv_path = rows
    env = {**os.environ, "LOOPLINE_EDGE_REPORT_MODULES": "1"}
    r = _run_edge("--model", str(case["tflite"] / "int8.tflite"), "--spec", str(case["model"] / "spec.json"),
                  "--input", str(csv_path), "--output", str(tmp_path / "s.csv"), env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    modules = set(json.loads(r.stderr.split("loaded-modules: ", 1)[1]))
    assert "numpy" in modules and "pipelines.edge.featurespec" in modules  # the report is real
    banned = {
        "pandas",
        "tensorflow",
        "keras",
        "pyarrow",
        "xgboost",
        "sklearn",
        "typer",
        "pipelines.features.build",
    }
    assert not {m for m in modules if m.split(".")[0] in banned or m in banned}


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["float32", "int8"])
def test_edge_cli_scores_equal_server_side_scores_exactly(case, rows, variant, tmp_path):
    """CSV text -> numpy transform -> TFLite on the device path; the features parquet -> the quantize
    stage's scoring path on the server: the same 1,000 scores, bit for bit."""
    from pipelines.serving.quantize import edge_scores
    from pipelines.training.models import feature_matrix

    frame, spec, csv_path = rows
    model = case["tflite"] / f"{variant}.tflite"
    server = edge_scores(model.read_bytes(), feature_matrix(frame, spec), batch_size=1024)
    out = tmp_path / "scores.csv"
    r = _run_edge("--model", str(model), "--spec", str(case["model"] / "spec.json"), "--input", str(csv_path),
                  "--output", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    got = pd.read_csv(out, float_precision="round_trip")
    assert got["event_id"].tolist() == frame["event_id"].tolist()
    assert np.array_equal(got["score"].to_numpy(), server)
    assert server.min() > 0 and server.max() < 1 and np.unique(server).size > 100


@pytest.mark.slow
def test_scores_do_not_depend_on_batching(case, rows):
    from pipelines.edge.runtime import EdgeModel
    from pipelines.training.models import feature_matrix

    frame, spec, _ = rows
    x = feature_matrix(frame, spec)
    path = str(case["tflite"] / "int8.tflite")
    base = EdgeModel(path, batch_size=1024).predict_matrix(x)
    assert np.array_equal(EdgeModel(path, batch_size=1).predict_matrix(x[:200]), base[:200])
    assert np.array_equal(EdgeModel(path, batch_size=37).predict_matrix(x[5:]), base[5:])


@pytest.mark.slow
def test_edge_cli_errors_name_the_problem(case, rows, tmp_path):
    frame, spec, _ = rows
    bad = tmp_path / "bad.csv"
    cols = [c for c in ["event_id", *fs.input_columns(spec)] if c != "amount"]
    edge_support.write_rows_csv(frame.iloc[:5], cols, bad)
    model, spec_path = str(case["tflite"] / "float32.tflite"), str(case["model"] / "spec.json")
    r = _run_edge("--model", model, "--spec", spec_path, "--input", str(bad))
    assert r.returncode == 2 and "lacks columns ['amount']" in r.stderr
    r = _run_edge("--model", str(tmp_path / "nope.tflite"), "--spec", spec_path, "--input", str(bad))
    assert r.returncode == 2 and "nope.tflite" in r.stderr
    edited = json.loads(Path(spec_path).read_text())
    edited["transforms"][0]["impute"] = 123.0
    (tmp_path / "edited.json").write_text(json.dumps(edited))
    r = _run_edge("--model", model, "--spec", str(tmp_path / "edited.json"), "--input", str(bad))
    assert r.returncode == 2 and "digest" in r.stderr


@pytest.mark.slow
def test_a_value_that_is_not_a_number_is_counted_and_reported_never_scored_silently(case, rows, tmp_path):
    """`amount=abc` was scored as missing with exit 0 and no word. Now it is still scored as missing (as in
    training), and the run says how many values, in which columns, with examples; --strict stops instead."""
    frame, _, csv_path = rows
    lines = csv_path.read_text().splitlines()
    header = lines[0].split(",")
    at = header.index("amount")
    for i, bad in ((1, "abc"), (2, "abc"), (3, "12,5")):
        cells = lines[i].split(",")
        cells[at] = f'"{bad}"'
        lines[i] = ",".join(cells)
    edited = tmp_path / "rows.csv"
    edited.write_text("\n".join(lines) + "\n")
    model, spec_path = str(case["tflite"] / "float32.tflite"), str(case["model"] / "spec.json")
    r = _run_edge(
        "--model", model, "--spec", spec_path, "--input", str(edited), "--output", str(tmp_path / "s.csv")
    )
    assert r.returncode == 0, r.stderr
    assert (
        "WARNING 3 value(s) were not numbers and were scored as missing: amount: 3 (e.g. 'abc', '12,5')"
        in r.stderr
    )
    assert len(pd.read_csv(tmp_path / "s.csv")) == len(frame)
    r = _run_edge("--model", model, "--spec", spec_path, "--input", str(edited), "--strict")
    assert r.returncode == 2 and "e.g. amount='abc'" in r.stderr
    clean = _run_edge(
        "--model", model, "--spec", spec_path, "--input", str(csv_path), "--output", str(tmp_path / "c.csv")
    )
    assert clean.returncode == 0 and "WARNING" not in clean.stderr


def test_the_edge_and_the_etl_mean_the_same_by_a_missing_cell():
    from pipelines.core.config import MISSING_MARKERS

    assert set(MISSING_MARKERS) <= fs._MISSING_TEXT


@pytest.mark.slow
def test_loopline_edge_predict_delegates_to_the_edge_cli(case, rows, tmp_path):
    frame, _, csv_path = rows
    out = tmp_path / "s.csv"
    r = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "loopline"), "edge-predict", "--model", str(case["tflite"] / "float32.tflite"),
         "--spec", str(case["model"] / "spec.json"), "--input", str(csv_path), "--output", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert len(pd.read_csv(out)) == len(frame)


@pytest.mark.slow
def test_edge_input_builds_the_aggregates_of_new_raw_rows_as_training_did(
    tmp_path_factory, synthetic_lake, params, tmp_path
):
    """Nothing produced the edge input for new raw rows (a user had to rebuild it from the feature files).
    `loopline edge-input` on a raw landing file gives the aggregates the feature stage computed for the same
    events, and `loopline edge-predict` scores its output."""
    import eval_support

    case = edge_support.edge_case(tmp_path_factory, synthetic_lake, params)
    test = pd.read_parquet(case["features"] / "test.parquet")
    spec = json.loads((case["features"] / "spec.json").read_text())
    day = str(pd.to_datetime(test["event_time"], utc=True).dt.date.iloc[0])
    from pipelines.data.etl import read_partition

    # the day's landing rows that the ETL accepted (its rejects never became events of the lake)
    loaded = set(read_partition(str(synthetic_lake / "lake"), day).column("event_id").to_pylist())
    landing = pd.read_csv(synthetic_lake / "landing" / f"{day}.csv", dtype=str, keep_default_na=False)
    raw = tmp_path / f"{day}.csv"
    landing[landing["event_id"].isin(loaded)].drop(columns=["label", "label_time"]).to_csv(raw, index=False)
    loopline = str(Path(sys.executable).parent / "loopline")
    out = tmp_path / "edge_input.csv"
    r = subprocess.run([loopline, "edge-input", "--rows", str(raw), "--out", str(out), "--lake",
                        str(synthetic_lake / "lake"), "--spec", str(case["features"] / "spec.json")],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    built = pd.read_csv(out).set_index("event_id")
    agg = spec["aggregates"]["columns"]
    both = test.set_index("event_id").index.intersection(built.index)
    assert len(both) > 100, (day, len(both), eval_support.TEST_DAYS)
    np.testing.assert_allclose(built.loc[both, agg].to_numpy(float), test.set_index("event_id").loc[both, agg].to_numpy(float),
                               rtol=1e-9, atol=1e-9, equal_nan=True)  # fmt: skip
    scores = tmp_path / "scores.csv"
    r = subprocess.run([loopline, "edge-predict", "--model", str(case["tflite"] / "float32.tflite"), "--spec",
                        str(case["features"] / "spec.json"), "--input", str(out), "--output", str(scores)],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert len(pd.read_csv(scores)) == len(built)
