"""The whole pipeline by CLI with every location it supports on a real S3-compatible server (moto) on 127.0.0.1.

generate -> etl -> validate -> sample -> label -> features -> tune -> train -> evaluate -> register ->
quantize -> predict -> monitor, each stage a ``loopline`` subprocess with the server's endpoint in its
environment. Landing, lake, quarantine, the intermediate folders (training, labeled, features, the candidate
model), the reports, the registry and the predictions are all ``s3://`` URIs. Local on purpose (the stage
refuses an s3:// URI there with a message saying so): the validate stage's ``--reports`` (GX Data Docs and
its result store are local folders) and the Optuna study (``tune.storage``, an SQLAlchemy URL: sqlite file).

Then the tamper test: one artifact object of the champion version is overwritten in the bucket; the registry
and ``loopline predict`` refuse to load it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from tiny_params import shrink_for_wiring

from pipelines.core import storage

ROOT = Path(__file__).resolve().parents[2]
LOOPLINE = Path(sys.executable).parent / "loopline"
DAYS, ROWS_PER_DAY = 45, 600
pytestmark = [pytest.mark.live, pytest.mark.slow, pytest.mark.xdist_group("s3")]


def _small_params(tmp: Path) -> Path:
    """params.yaml with budgets shrunk for a 45 x 600-row lake; the Optuna study in a local sqlite file."""
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    shrink_for_wiring(p, days=DAYS, rows_per_day=ROWS_PER_DAY)
    p["tune"].update(workers=1, storage=f"sqlite:///{tmp / 'study.db'}")
    p["quantize"]["variants"] = ["float32", "dynamic_range"]
    p["quantize"]["default_variant"] = "dynamic_range"
    out = tmp / "params.yaml"
    out.write_text(yaml.safe_dump(p, sort_keys=False))
    return out


@dataclass
class S3Run:
    bucket: str
    env: dict[str, str]
    params: Path
    cwd: Path
    outputs: dict[str, str]  # stage -> stdout

    def uri(self, *parts: str) -> str:
        return "/".join([f"s3://{self.bucket}", *parts])

    def loopline(
        self, *args: str, check: bool = True, params: bool = True
    ) -> subprocess.CompletedProcess[str]:
        cmd = [str(LOOPLINE), *args, *(["--params", str(self.params)] if params else [])]
        res = subprocess.run(cmd, cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=600)
        if check:
            assert res.returncode == 0, (
                f"{' '.join(args[:1])} failed ({res.returncode}):\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}"
            )
        return res


@pytest.fixture(scope="module")
def s3_run(moto_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Run]:
    tmp = tmp_path_factory.mktemp("s3_pipeline")
    bucket = f"loopline-{uuid.uuid4().hex[:12]}"
    moto_server.client().create_bucket(Bucket=bucket)
    env = moto_server.env(AWS_MAX_ATTEMPTS="3")
    with pytest.MonkeyPatch.context() as mp:  # this process too (storage, Registry) talks to the server
        for k in [k for k in os.environ if k.startswith("AWS_")]:
            mp.delenv(k)
        for k, v in env.items():
            if k.startswith(("AWS_", "LOOPLINE_S3_")):
                mp.setenv(k, v)
        run = S3Run(bucket=bucket, env=env, params=_small_params(tmp), cwd=tmp, outputs={})
        S = run.uri
        stages = {
            "generate": ["--out", S("landing")],
            "etl": ["--landing", S("landing"), "--lake", S("lake"), "--quarantine", S("quarantine"),
                    "--manifest-out", S("reports/etl/manifest.json")],
            "validate": ["--lake", S("lake"), "--reports", str(tmp / "reports" / "validation")],
            "sample": ["--lake", S("lake"), "--out", S("training")],
            "label": ["--training", S("training"), "--hand-labels", S("hand_labels"), "--out", S("labeled"),
                      "--reports", S("reports/labeling")],
            "features": ["--labeled", S("labeled"), "--lake", S("lake"), "--out", S("features"),
                         "--reports", S("reports/features")],
            "tune": ["--features", S("features"), "--out", S("reports/tuning")],
            "train": ["--features", S("features"), "--best-params", S("reports/tuning/best_params.json"),
                      "--out", S("models/candidate"), "--reports", S("reports/train")],
            "evaluate": ["--features", S("features"), "--model", S("models/candidate"),
                         "--out", S("reports/evaluation")],
            "register": ["--model", S("models/candidate"), "--evaluation", S("reports/evaluation"),
                         "--registry", S("registry"), "--features", S("features"),
                         "--out", S("reports/registry/register.json")],
            "quantize": ["--features", S("features"), "--model", S("models/candidate"), "--out", S("models/tflite"),
                         "--reports", S("reports/quantize"), "--registry", S("registry"),
                         "--register-report", S("reports/registry/register.json")],
            "predict": ["--lake", S("lake"), "--registry", S("registry"), "--out", S("predictions"),
                        "--summary", S("reports/predict/summary.json")],
            "monitor": ["--lake", S("lake"), "--predictions", S("predictions"), "--registry", S("registry"),
                        "--out", S("reports/monitor")],
        }  # fmt: skip
        for stage, args in stages.items():
            run.outputs[stage] = run.loopline(stage, *args).stdout
        yield run


def test_whole_pipeline_on_s3(s3_run: S3Run) -> None:
    from pipelines.registry.store import Registry

    S = s3_run.uri
    # Nothing leaked to the working folder as a mangled "s3:/bucket/..." local path.
    assert not (s3_run.cwd / "s3:").exists()

    # ETL row accounting, from the manifest on S3.
    manifest = storage.read_json(S("reports/etl/manifest.json"))
    t = manifest["totals"]
    assert t["files_processed"] == DAYS and t["files_rejected"] == 0
    assert t["rows_read"] == DAYS * ROWS_PER_DAY == t["rows_loaded"] + t["rows_quarantined"]
    parts = storage.list_files(S("lake"), "part-*.parquet", recursive=True)
    assert len(parts) == DAYS
    assert sum(storage.read_parquet(f, columns=["event_id"]).num_rows for f in parts) == t["rows_loaded"]

    # The intermediate folders live on S3.
    for loc in ("training/train.parquet", "labeled/train.parquet", "features/spec.json",
                "reports/tuning/best_params.json", "models/candidate/spec.json",
                "reports/evaluation/evaluation.json"):  # fmt: skip
        assert storage.exists(S(loc)), loc

    # The registry on S3 has a champion whose artifacts verify against its lineage.
    reg = Registry(S("registry"))
    champion = reg.alias("champion")
    decision = storage.read_json(S("reports/registry/register.json"))
    assert champion is not None and champion == decision["version"], decision
    blobs = reg.verify(champion)
    assert {"spec.json", "xgboost.ubj"} <= set(blobs), sorted(blobs)
    scorers, spec = reg.load_version(champion)
    assert "xgboost" in scorers and spec is not None
    # quantize attached its published variants to the champion version on S3.
    q = storage.read_json(storage.join(reg.version_dir(champion), "quantize.json"))
    published = [v for v, r in q["variants"].items() if r["published"]]
    for v in published:
        assert storage.exists(storage.join(reg.version_dir(champion), "tflite", f"{v}.tflite"))

    # Predictions on S3, scored by the champion.
    summary = storage.read_json(S("reports/predict/summary.json"))
    assert summary["model_version"] == champion and summary["rows"] == 3 * ROWS_PER_DAY
    pred_files = storage.list_files(S("predictions"), "part-*.parquet", recursive=True)
    assert len(pred_files) == 3
    for f in pred_files:
        table = storage.read_parquet(f, columns=["event_id", "score", "model_version"])
        assert set(table.column("model_version").to_pylist()) == {champion}
        assert table.num_rows == ROWS_PER_DAY

    # The monitor's decision on S3.
    d = storage.read_json(S("reports/monitor/latest/decision.json"))
    assert isinstance(d["retrain"], bool) and d["reasons"], d

    # The run report reads a local reports folder (relative links in a static page); the model card comes
    # from the registry on S3.
    local_reports = s3_run.cwd / "reports"
    storage.copy_file(S("reports/registry/register.json"), str(local_reports / "registry" / "register.json"))
    s3_run.loopline("report", "--reports", str(local_reports), "--registry", S("registry"), params=False)
    card = (local_reports / "model_card.html").read_text()
    assert champion in card and "not run" not in card.lower()


def test_tampered_champion_artifact_on_s3_is_refused(s3_run: S3Run) -> None:
    """Runs after the pipeline test (file order, one xdist group): it damages the champion."""
    from pipelines.registry.store import Registry, TamperedArtifactError

    reg = Registry(s3_run.uri("registry"))
    champion = reg.alias("champion")
    assert champion is not None
    loc = storage.join(reg.version_dir(champion), "xgboost.ubj")
    original = storage.read_bytes(loc)
    # Overwrite the object in the bucket directly (not through the storage layer): an outside writer.
    key = loc.split(f"s3://{s3_run.bucket}/", 1)[1]
    import boto3

    client = boto3.session.Session().client("s3", endpoint_url=s3_run.env["LOOPLINE_S3_ENDPOINT_URL"])
    client.put_object(Bucket=s3_run.bucket, Key=key, Body=original[:-1] + bytes([original[-1] ^ 0xFF]))

    with pytest.raises(TamperedArtifactError, match=rf"{key}: sha256 .* does not match"):
        reg.load_version(champion)
    res = s3_run.loopline(
        "predict", "--lake", s3_run.uri("lake"), "--registry", s3_run.uri("registry"),
        "--out", s3_run.uri("predictions_after_tamper"), check=False,
    )  # fmt: skip
    assert res.returncode == 2, (res.stdout, res.stderr[-3000:])
    assert "refusing to load version" in res.stderr and "xgboost.ubj" in res.stderr, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    assert storage.list_files(s3_run.uri("predictions_after_tamper"), recursive=True) == []
