"""Racing promotions: several processes promote different versions at the same moment; exactly one wins.

Each worker reads the alias state, waits at a file barrier until every worker has read it (so they all
hold the same generation), then promotes its own version against that generation. Run on a local folder
and on S3 (moto's server on 127.0.0.1) where the exclusive create is a conditional PUT.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from eval_support import minimal_evaluation

from pipelines.core import storage
from pipelines.registry.store import ConcurrentUpdateError, Registry

ROOT = Path(__file__).resolve().parents[2]
T0 = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)

WORKER = r"""
import json, sys, time
from pathlib import Path
from pipelines.registry.store import ConcurrentUpdateError, Registry

registry, version, barrier, me, n = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4], int(sys.argv[5])
reg = Registry(registry)
seen = reg.state().generation
(barrier / f"ready-{me}").write_text("")
deadline = time.monotonic() + 60
while len(list(barrier.glob("ready-*"))) < n:
    if time.monotonic() > deadline:
        raise SystemExit("barrier timeout")
    time.sleep(0.001)
try:
    st = reg.promote(version, force=True, reason=f"race {me}", expected_generation=seen)
    print(json.dumps({"won": True, "generation": st.generation}))
except ConcurrentUpdateError as err:
    print(json.dumps({"won": False, "error": str(err)}))
"""


def _version(registry: str, i: int) -> str:
    """A minimal registered version (the race is about aliases, so the artifacts are small stand-ins)."""
    model = f"{registry}-src/m{i}"
    ev = f"{registry}-src/e{i}"
    storage.write_json(storage.join(model, "spec.json"), {"digest": f"spec-{i}", "feature_names": []})
    storage.write_bytes(storage.join(model, "xgboost.ubj"), f"model {i}".encode())
    storage.write_json(storage.join(ev, "evaluation.json"), minimal_evaluation())
    storage.write_json(storage.join(ev, "metrics.json"), {"primary_pr_auc": 0.4})
    storage.write_bytes(storage.join(ev, "report.html"), b"<html></html>")
    reg = Registry(registry)
    return reg.register(model_dir=model, evaluation_dir=ev, created_at=T0 + dt.timedelta(minutes=i))


def _race(registry: str, versions: list[str], barrier: Path, env: dict[str, str] | None = None) -> list[dict]:
    barrier.mkdir(parents=True)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, registry, v, str(barrier), str(i), str(len(versions))],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env or dict(os.environ),
        )
        for i, v in enumerate(versions)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def _check_consistent(registry: str, rounds: int, winners: list[str]) -> None:
    reg = Registry(registry)
    gens = sorted(f.rsplit("/", 1)[-1] for f in storage.list_files(storage.join(registry, "aliases")))
    assert gens == [f"gen-{g:08d}.json" for g in range(1, rounds + 1)]  # no gap, no duplicate, no temp left
    history = reg.history()
    assert [e["version"] for e in history] == winners
    assert reg.alias("champion") == winners[-1]
    assert reg.state().stacks["champion"] == winners


def _run_rounds(
    registry: str, tmp_path: Path, *, n_workers: int, rounds: int, env: dict[str, str] | None = None
) -> None:
    everyone = [_version(registry, i) for i in range(n_workers + 1)]
    winners: list[str] = []
    for r in range(rounds):
        # every round races versions that are not the champion, so each promotion is a real change
        versions = [v for v in everyone if not winners or v != winners[-1]][:n_workers]
        results = _race(registry, versions, tmp_path / f"barrier-{r}", env)
        won = [v for v, res in zip(versions, results, strict=True) if res["won"]]
        assert len(won) == 1, results
        winners.append(won[0])
    _check_consistent(registry, rounds, winners)


@pytest.mark.slow
def test_concurrent_promotions_local_exactly_one_wins(tmp_path: Path) -> None:
    _run_rounds(str(tmp_path / "registry"), tmp_path, n_workers=4, rounds=2)


@pytest.mark.slow
@pytest.mark.live
def test_concurrent_promotions_s3_exactly_one_wins(tmp_path: Path, s3_bucket, moto_server) -> None:  # type: ignore[no-untyped-def]
    registry = s3_bucket.uri("registry")
    _run_rounds(registry, tmp_path, n_workers=3, rounds=2, env=moto_server.env())


def test_commit_on_a_stale_generation_is_refused(tmp_path: Path) -> None:
    """Deterministic: two writers read generation n; the second one's exclusive create of n+1 fails."""
    registry = str(tmp_path / "registry")
    a, b = _version(registry, 0), _version(registry, 1)
    r1, r2 = Registry(registry), Registry(registry)
    stale = r2.state()
    r1.promote(a, force=True, reason="first")
    with pytest.raises(ConcurrentUpdateError, match="created by another process"):
        r2._commit(stale, {"champion": b, "challenger": None}, {"champion": [b], "challenger": []},
                   {"action": "promote", "version": b})  # fmt: skip
    assert r2.alias("champion") == a
    with pytest.raises(ConcurrentUpdateError, match="generation 1, not 0"):
        r2.promote(b, force=True, reason="late", expected_generation=0)


def test_create_bytes_is_exclusive_locally(tmp_path: Path) -> None:
    target = tmp_path / "k" / "gen-00000001.json"
    assert storage.create_bytes(target, b"first") is True
    assert storage.create_bytes(target, b"second") is False
    assert target.read_bytes() == b"first"
    assert [p.name for p in target.parent.iterdir()] == ["gen-00000001.json"]  # no temp file left
