"""`loopline registry gc`: a `register` killed midway leaves files without lineage.json; gc finds them,
removes them only when asked, and never touches a complete version, an aliased one or a fresh write."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from eval_support import minimal_evaluation
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.core import storage
from pipelines.registry.store import Registry

T0 = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)

REGISTER = r"""
import datetime as dt, sys
from pipelines.registry.store import Registry
Registry(sys.argv[1]).register(model_dir=sys.argv[2], evaluation_dir=sys.argv[3],
                               created_at=dt.datetime(2025, 3, 2, tzinfo=dt.UTC))
"""


def _candidate(base: Path, i: int, *, blobs: int = 0, blob_mb: int = 0) -> tuple[str, str]:
    model, ev = base / f"m{i}", base / f"e{i}"
    storage.write_json(str(model / "spec.json"), {"digest": f"spec-{i}", "feature_names": []})
    storage.write_bytes(str(model / "xgboost.ubj"), f"model {i}".encode())
    for k in range(blobs):  # large artifacts: a register takes long enough to be killed midway
        storage.write_bytes(str(model / f"blob{k}.bin"), os.urandom(blob_mb << 20))
    storage.write_json(str(ev / "evaluation.json"), minimal_evaluation())
    storage.write_json(str(ev / "metrics.json"), {"primary_pr_auc": 0.4})
    storage.write_bytes(str(ev / "report.html"), b"<html></html>")
    return str(model), str(ev)


@pytest.mark.slow
def test_a_killed_register_leaves_an_invisible_version_that_gc_removes(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    reg = Registry(str(registry))
    keep = reg.register(model_dir=_candidate(tmp_path, 1)[0], evaluation_dir=_candidate(tmp_path, 1)[1],
                        created_at=T0)  # fmt: skip
    reg.promote(keep, force=True, reason="first")
    model, ev = _candidate(tmp_path, 2, blobs=6, blob_mb=40)
    before = set((registry / "versions").iterdir())
    orphan = _killed_register_beside(registry, model, ev, before)

    assert not (orphan / "lineage.json").exists() and any(orphan.iterdir())
    assert reg.versions() == [keep]  # invisible: never listed, never loaded

    runner = CliRunner()
    fresh = runner.invoke(app, ["registry", "gc", "-r", str(registry)])  # default min age: a register may run
    assert fresh.exit_code == 0 and "kept: written" in fresh.output and orphan.exists(), fresh.output
    dry = runner.invoke(app, ["registry", "gc", "-r", str(registry), "--min-age-minutes", "0"])
    assert dry.exit_code == 0 and f"{orphan.name}:" in dry.output and "removable" in dry.output, dry.output
    assert "dry run: 1 removable" in dry.output and orphan.exists()
    done = runner.invoke(app, ["registry", "gc", "-r", str(registry), "--min-age-minutes", "0", "--delete"])
    assert done.exit_code == 0 and "removed" in done.output, done.output
    assert not orphan.exists() and reg.versions() == [keep] and reg.alias("champion") == keep
    reg.verify(keep)  # the champion's files untouched

    # the same candidate registers completely afterwards
    again = reg.register(model_dir=model, evaluation_dir=ev, created_at=T0 + dt.timedelta(days=1))
    assert again in reg.versions() and len(reg.versions()) == 2
    assert "no incomplete version" in runner.invoke(app, ["registry", "gc", "-r", str(registry)]).output


def _killed_register_beside(registry: Path, model: str, ev: str, before: set[Path]) -> Path:
    """_killed_register for a registry that already holds versions: the new folder is the orphan."""
    proc = subprocess.Popen([sys.executable, "-c", REGISTER, str(registry), model, ev])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        new = [p for p in (registry / "versions").iterdir() if p not in before]
        if new and any(p.is_file() for p in new[0].iterdir()):
            os.kill(proc.pid, signal.SIGKILL)
            break
        assert proc.poll() is None, "register finished before any file was seen"
        time.sleep(0.002)
    assert proc.wait(timeout=30) == -signal.SIGKILL, "register finished before the kill"
    (orphan,) = [p for p in (registry / "versions").iterdir() if p not in before]
    return orphan


def test_gc_never_removes_a_version_an_alias_names(tmp_path: Path) -> None:
    """Were lineage.json of the champion lost, it would look incomplete: an alias still protects it."""
    registry = tmp_path / "registry"
    reg = Registry(str(registry))
    model, ev = _candidate(tmp_path, 1)
    champion = reg.register(model_dir=model, evaluation_dir=ev, created_at=T0)
    reg.promote(champion, force=True, reason="first")
    (registry / "versions" / champion / "lineage.json").unlink()
    (found,) = reg.gc(min_age=dt.timedelta(0), delete=True)
    assert (
        found["version"] == champion
        and not found["removable"]
        and found["kept_because"] == "an alias names it"
    )
    assert (registry / "versions" / champion / "xgboost.ubj").exists()


@pytest.mark.xdist_group("s3")
def test_gc_on_s3_removes_every_object_of_an_incomplete_version(tmp_path: Path, s3_bucket) -> None:  # type: ignore[no-untyped-def]
    registry = s3_bucket.uri("registry")
    reg = Registry(registry)
    model, ev = _candidate(tmp_path, 1)
    kept = reg.register(model_dir=model, evaluation_dir=ev, created_at=T0)
    model, ev = _candidate(tmp_path, 2)
    cut = reg.register(model_dir=model, evaluation_dir=ev, created_at=T0 + dt.timedelta(minutes=1))
    storage.delete(storage.join(reg.version_dir(cut), "lineage.json"))  # as if cut off before its last write
    assert reg.versions() == [kept]
    (found,) = reg.gc(min_age=dt.timedelta(0))
    assert found["version"] == cut and found["removable"] and found["files"] >= 4
    assert storage.list_files(reg.version_dir(cut))  # a dry run removes nothing
    reg.gc(min_age=dt.timedelta(0), delete=True)
    assert storage.list_files(reg.version_dir(cut)) == [] and reg.versions() == [kept]
