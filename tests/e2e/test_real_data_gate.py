"""The gates hold on real data: on each public data set of ``real_datasets.py``, through the real CLI and DVC.

- A planted leak (a column that is the label plus a little noise) is dropped by `loopline init` with its
  reason; declared anyway, the feature stage refuses to build features from it, naming it.
- A model trained on the true labels becomes champion; a candidate trained on shuffled labels is then
  rejected by the registry's gate and the champion stays. (A first model trained on shuffled labels can rank
  strongly structured data a little better than chance: 0.58 ROC-AUC on the hourly weather rows, beyond
  the bootstrap's doubt; the champion is what a corrupted retrain must beat.)

Rows evenly spaced over the bigger data sets' time ranges keep the test short; the benchmark runs the whole files
(benchmarks/bench_real_data.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from real_datasets import DATASETS, copy_project

from pipelines.registry.store import Registry

BIN = Path(sys.executable).parent
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("dvc_e2e")]
ROWS = {"seattle_weather": None, "nyc_weather": 8_000, "nyc_flights": 12_000, "hotel_bookings": 12_000}
LEAK = "outcome_score"


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    env.update(DVC_NO_ANALYTICS="1", GX_ANALYTICS_ENABLED="false", TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1500)


def _shuffled(features: Path, out: Path, seed: int) -> Path:
    """The features folder with the train and valid labels permuted (test keeps the truth)."""
    shutil.copytree(features, out)
    rng = np.random.default_rng(seed)
    for split in ("train", "valid"):
        df = pd.read_parquet(out / f"{split}.parquet")
        df["label"] = rng.permutation(df["label"].to_numpy())
        df.to_parquet(out / f"{split}.parquet", index=False)
    return out


@pytest.mark.parametrize("name", list(ROWS))
def test_gates_hold_on_real_data(name: str, tmp_path: Path) -> None:
    ds = DATASETS[name]
    why = ds.available()
    if why:
        pytest.skip(why)
    project = tmp_path / "project"
    copy_project(project)
    frame = ds.frame(ROWS[name])
    positive = (frame[ds.label].astype(str) == ds.positive).to_numpy()
    leak = np.round(positive + np.random.default_rng(0).normal(0, 0.15, len(frame)), 3)
    csv = ds.write_csv(tmp_path / "landing", ROWS[name], extra={LEAK: leak})
    cmd = [str(BIN / "loopline"), "init", "--from", str(csv), "--label", ds.label, "--time", ds.time,
           "--positive", ds.positive, "--name", name]  # fmt: skip
    init = _run(cmd + (["--entity", ds.entity] if ds.entity else []), project)
    assert init.returncode == 0, init.stdout[-3000:] + init.stderr[-3000:]

    # the planted leak: init drops it, with its reason
    profile_path = project / "profiles" / f"{name}.yaml"
    profile = yaml.safe_load(profile_path.read_text())
    assert LEAK in profile["source"]["generic"]["drop"], profile["source"]["generic"]["drop"]
    assert LEAK not in {c["name"] for c in profile["schema"]["columns"]}
    warnings = json.loads((project / "profiles" / f"{name}.warnings.json").read_text())
    assert LEAK in json.dumps(warnings)

    # declared anyway, the feature stage refuses it by name: no candidate is trained on it
    kept = yaml.safe_load(profile_path.read_text())
    kept["source"]["generic"]["drop"].remove(LEAK)
    kept["schema"]["columns"].append({"name": LEAK, "type": "float", "nullable": True})
    profile_path.write_text(yaml.safe_dump(kept, sort_keys=False))
    leaky = _run([str(BIN / "loopline"), "run", "--profile", name, "--until", "features"], project)
    assert leaky.returncode != 0, leaky.stdout[-3000:]
    said = leaky.stdout + leaky.stderr
    assert "FAILED at features" in said and LEAK in said, said[-3000:]

    # the profile as init wrote it: features build and the study runs; a candidate on shuffled labels (same
    # parameters) is rejected
    profile_path.write_text(yaml.safe_dump(profile, sort_keys=False))
    clean = _run([str(BIN / "loopline"), "run", "--profile", name, "--until", "tune"], project)
    assert clean.returncode == 0, clean.stdout[-3000:] + clean.stderr[-3000:]
    ws = project / "runs" / name
    _shuffled(ws / "data" / "features", ws / "data" / "features_shuffled", seed=1)
    lp = str(BIN / "loopline")

    def candidate(name: str, features: str) -> dict:
        steps = [
            [lp, "train", "--features", features, "--best-params", "reports/tuning/best_params.json", "--out",
             f"models/{name}", "--reports", f"reports/train_{name}"],
            [lp, "evaluate", "--features", features, "--model", f"models/{name}", "--out", f"reports/eval_{name}"],
            [lp, "register", "--model", f"models/{name}", "--evaluation", f"reports/eval_{name}", "--registry",
             "models/registry", "--features", features, "--out", f"reports/registry/{name}.json"],
        ]  # fmt: skip
        for step in steps:
            done = _run(step, ws)
            assert done.returncode == 0, (step[1], done.stdout[-3000:] + done.stderr[-3000:])
        return json.loads((ws / "reports" / "registry" / f"{name}.json").read_text())

    honest = candidate("honest", "data/features")  # the true labels, the study's parameters
    assert honest["status"] == "champion", honest["reasons"]
    shuffled = candidate("shuffled", "data/features_shuffled")
    assert shuffled["status"] == "rejected" and not shuffled["passed"], shuffled
    assert any(r.startswith("beats_champion") for r in shuffled["reasons"]), shuffled["reasons"]
    assert Registry(str(ws / "models" / "registry")).alias("champion") == honest["version"]
