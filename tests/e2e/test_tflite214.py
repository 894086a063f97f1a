"""Compatibility with tflite-runtime 2.14 (2023, the runtime many deployed devices still run; numpy<2).

The test builds its own small environment once per machine (``~/.cache/loopline/tflite214-venv``, with
uv: tflite-runtime==2.14.0 and numpy<2), copies only what a device needs (pipelines/__init__.py and the
pipelines/edge/ folder) into a temporary folder and runs ``python -m pipelines.edge.runtime`` there.

What it shows (docs/edge.md):
- float32 (and float16) load and give the ai-edge-litert scores within 1e-6 (measured: 1e-16, from numpy's
  exp in float64);
- int8 loads, but its scores are NOT bit-identical: 2.14's integer kernels requantize differently from
  LiteRT's, so the int8 output differs by up to 3 output quantization steps (about 60% of rows exactly
  equal, most others one step); the test bounds it at 3 steps and the ROC-AUC change at 0.005;
- TF 2.21's dynamic-range model does not load (FULLY_CONNECTED version 12).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "model"))
import edge_support

from pipelines.edge import featurespec as fs

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("LOOPLINE_TFLITE214_VENV", Path.home() / ".cache" / "loopline" / "tflite214-venv"))
UV = ROOT / ".venv" / "bin" / "uv"

# one worker builds and uses the environment: two xdist workers building it at once removed each other's
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("tflite214")]


def _tflite214_python() -> Path:
    """The 2.14 environment's python, built once per machine (under a lock: test runs may overlap)."""
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(VENV.parent / "tflite214-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build_tflite214()


def _build_tflite214() -> Path:
    python = VENV / "bin" / "python"
    probe = [
        str(python),
        "-c",
        "import tflite_runtime, numpy; print(tflite_runtime.__version__, numpy.__version__)",
    ]
    if python.exists() and subprocess.run(probe, capture_output=True, timeout=60).returncode == 0:
        return python
    if not UV.exists():
        pytest.skip(f"{UV} not found: cannot build the tflite-runtime 2.14 environment")
    VENV.parent.mkdir(parents=True, exist_ok=True)
    made = subprocess.run([str(UV), "venv", "--python", sys.executable, str(VENV)], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    inst = subprocess.run(
        [str(UV), "pip", "install", "--python", str(python), "tflite-runtime==2.14.0", "numpy<2"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if made.returncode or inst.returncode:
        shutil.rmtree(VENV, ignore_errors=True)
        pytest.skip(
            f"uv could not build the tflite-runtime 2.14 environment: {(made.stderr + inst.stderr)[-300:]}"
        )
    return python


@pytest.fixture(scope="module")
def device(tmp_path_factory):
    """(python of the 2.14 env, PYTHONPATH folder holding only pipelines/__init__.py and pipelines/edge/)."""
    python = _tflite214_python()
    code = tmp_path_factory.mktemp("device")
    (code / "pipelines").mkdir()
    shutil.copy(ROOT / "pipelines" / "__init__.py", code / "pipelines" / "__init__.py")
    shutil.copytree(
        ROOT / "pipelines" / "edge", code / "pipelines" / "edge", ignore=shutil.ignore_patterns("__pycache__")
    )
    return python, code


@pytest.fixture(scope="module")
def case(tmp_path_factory, synthetic_lake, params):
    c = edge_support.edge_case(tmp_path_factory, synthetic_lake, params)
    spec = json.loads((c["model"] / "spec.json").read_text())
    test = pd.read_parquet(c["features"] / "test.parquet")
    test = test[test["label"].notna()].iloc[:2000].reset_index(drop=True)
    csv_path = tmp_path_factory.mktemp("rows214") / "rows.csv"
    edge_support.write_rows_csv(test, ["event_id", *fs.input_columns(spec)], csv_path)
    return {**c, "frame": test, "spec": spec, "csv": csv_path}


def _device_scores(device, case, variant: str, out: Path) -> subprocess.CompletedProcess:
    python, code = device
    env = {"PYTHONPATH": str(code), "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "LOOPLINE_EDGE_REPORT_MODULES": "1"}  # fmt: skip
    return subprocess.run(
        [str(python), "-m", "pipelines.edge.runtime", "--model", str(case["tflite"] / f"{variant}.tflite"),
         "--spec", str(case["model"] / "spec.json"), "--input", str(case["csv"]), "--output", str(out)],
        capture_output=True, text=True, cwd=str(code), env=env, timeout=300,
    )  # fmt: skip


def _litert_scores(case, variant: str) -> np.ndarray:
    from pipelines.serving.quantize import edge_scores
    from pipelines.training.models import feature_matrix

    return edge_scores(
        (case["tflite"] / f"{variant}.tflite").read_bytes(),
        feature_matrix(case["frame"], case["spec"]),
        batch_size=1024,
    )


def test_float32_scores_match_ai_edge_litert_within_1e6(device, case, tmp_path):
    r = _device_scores(device, case, "float32", tmp_path / "s.csv")
    assert r.returncode == 0, r.stderr
    assert "tflite_runtime" in r.stderr  # the old runtime really ran (no ai_edge_litert in that env)
    modules = json.loads(r.stderr.split("loaded-modules: ", 1)[1])
    assert "ai_edge_litert" not in modules and "pandas" not in modules
    got = pd.read_csv(tmp_path / "s.csv", float_precision="round_trip")["score"].to_numpy()
    assert np.abs(got - _litert_scores(case, "float32")).max() <= 1e-6


def test_int8_scores_within_three_output_steps_of_ai_edge_litert(device, case, tmp_path):
    from pipelines.core import metrics as M
    from pipelines.edge.runtime import EdgeModel

    r = _device_scores(device, case, "int8", tmp_path / "s.csv")
    assert r.returncode == 0, r.stderr
    got = pd.read_csv(tmp_path / "s.csv", float_precision="round_trip")["score"].to_numpy()
    ref = _litert_scores(case, "int8")
    scale, _ = EdgeModel(str(case["tflite"] / "int8.tflite")).output_quantization

    def logit(p: np.ndarray) -> np.ndarray:
        return np.log(p / (1 - p))

    steps = np.rint((logit(got) - logit(ref)) / scale)
    assert np.abs(steps).max() <= 3, np.unique(steps, return_counts=True)
    assert (steps == 0).mean() >= 0.4  # most rows identical or one step apart
    y = case["frame"]["label"].astype(int).to_numpy()
    assert abs(M.roc_auc(y, got) - M.roc_auc(y, ref)) <= 0.005


def test_dynamic_range_model_does_not_load_on_2_14(device, case, tmp_path):
    r = _device_scores(device, case, "dynamic_range", tmp_path / "s.csv")
    assert r.returncode == 2
    assert "FULLY_CONNECTED" in r.stderr and "version '12'" in r.stderr, r.stderr
    assert "use the float32 or int8 variant" in r.stderr
