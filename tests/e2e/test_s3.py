"""The storage layer and the ETL stage on a real S3-compatible server (moto) on 127.0.0.1, and DVC's S3 remote."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from pipelines.core import storage
from pipelines.data.etl import lake_dates, read_partition, run_etl
from pipelines.data.generate import generate_landing

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
pytestmark = [pytest.mark.live, pytest.mark.xdist_group("s3")]


# --------------------------------------------------------------------------- the backend


def test_roundtrip_listing_and_prefix_delete(s3_bucket) -> None:
    base = s3_bucket.uri("area")
    storage.write_bytes(storage.join(base, "a.txt"), b"one")
    storage.write_bytes(storage.join(base, "sub", "b.txt"), b"two")
    storage.write_bytes(storage.join(base, ".tmp-x"), b"hidden")  # a temporary: readers skip it
    storage.write_bytes(s3_bucket.uri("area2", "c.txt"), b"other prefix, same start")

    assert storage.read_bytes(storage.join(base, "a.txt")) == b"one"
    assert storage.list_files(base) == [storage.join(base, "a.txt")]  # one level, like a folder
    assert storage.list_files(base, recursive=True) == [
        storage.join(base, "a.txt"),
        storage.join(base, "sub", "b.txt"),
    ]
    assert storage.list_files(base, "*.parquet", recursive=True) == []
    assert storage.exists(base) and storage.exists(storage.join(base, "sub"))  # a prefix exists
    assert not storage.exists(s3_bucket.uri("nothing", "here"))
    assert storage.stat(storage.join(base, "a.txt"))[0] == 3

    storage.delete(base)
    assert not storage.exists(base)
    assert storage.list_files(s3_bucket.uri(), recursive=True) == [s3_bucket.uri("area2", "c.txt")]


@pytest.mark.slow
def test_listing_paginates_past_1000_keys(s3_bucket) -> None:
    from concurrent.futures import ThreadPoolExecutor

    client = s3_bucket.server.client()
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda i: client.put_object(Bucket=s3_bucket.name, Key=f"many/k{i:05d}", Body=b""),
                range(1105),
            )
        )
    assert len(storage.list_files(s3_bucket.uri("many"))) == 1105
    storage.delete(s3_bucket.uri("many"))  # batches of 1000
    assert storage.list_files(s3_bucket.uri("many")) == []


def test_parquet_helpers_read_through_bytes(s3_bucket) -> None:
    t = pa.table({"a": list(range(1000)), "b": [f"x{i}" for i in range(1000)]})
    loc = s3_bucket.uri("t", "one.parquet")
    storage.write_parquet(loc, t)
    assert storage.local_path(loc) is None
    assert storage.read_parquet(loc).equals(t)
    assert storage.read_parquet(loc, columns=["b"]).column_names == ["b"]
    assert sum(b.num_rows for b in storage.iter_parquet_batches(loc, batch_size=128)) == 1000
    import hashlib

    assert storage.sha256_of(loc) == hashlib.sha256(storage.parquet_bytes(t)).hexdigest()


def test_big_object_goes_multipart_and_is_whole(s3_bucket) -> None:
    from pipelines.core.s3_storage import S3Backend

    backend = S3Backend(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)
    data = os.urandom(12 * 1024 * 1024)
    loc = s3_bucket.uri("big", "blob.bin")
    backend.write_bytes(loc, data)
    etag = s3_bucket.server.client().head_object(Bucket=s3_bucket.name, Key="big/blob.bin")["ETag"]
    assert etag.strip('"').endswith("-3")  # a multipart ETag: 3 parts of <= 5 MiB
    assert storage.read_bytes(loc) == data


def test_errors_name_the_bucket_key_and_fix(s3_bucket) -> None:
    with pytest.raises(FileNotFoundError, match=rf"s3://{s3_bucket.name}/no/such/key: no such object"):
        storage.read_bytes(s3_bucket.uri("no", "such", "key"))
    with pytest.raises(
        FileNotFoundError, match=r"bucket 'loopline-missing-bucket' does not exist.*aws s3 mb"
    ):
        storage.write_bytes("s3://loopline-missing-bucket/x/y.json", b"{}")
    with pytest.raises(ValueError, match="refusing to delete a whole bucket"):
        storage.delete(s3_bucket.uri())


def test_unreachable_endpoint_is_named_after_retries(s3_env, monkeypatch) -> None:
    from s3_fixtures import free_port

    monkeypatch.setenv("LOOPLINE_S3_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    with pytest.raises(
        ConnectionError, match=r"S3 endpoint http://127\.0\.0\.1:\d+ unreachable after 2 attempts"
    ):
        storage.read_bytes("s3://some-bucket/key.json")


def test_an_unreachable_endpoint_ends_in_one_line_within_the_retry_budget(s3_env) -> None:
    """The one line naming bucket, endpoint and fix came after 80-160 lines of chained tracebacks, and
    37-62 s of retries. Now: retries bounded by LOOPLINE_S3_RETRY_SECONDS, then one line; -v adds the rest."""
    import subprocess
    import sys
    import time

    from s3_fixtures import free_port

    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens
    env = {**os.environ, "LOOPLINE_S3_ENDPOINT_URL": endpoint, "LOOPLINE_S3_RETRY_SECONDS": "4"}
    env.pop("AWS_MAX_ATTEMPTS", None)  # the default 8 attempts: the time budget ends it first
    cmd = [str(Path(sys.executable).parent / "loopline"), "lake", "check", "--lake", "s3://some-bucket/lake"]
    t0 = time.monotonic()
    quiet = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    seconds = time.monotonic() - t0
    assert quiet.returncode == 2
    lines = quiet.stderr.strip().splitlines()
    assert "Traceback" not in quiet.stderr and all("retrying" in ln for ln in lines[:-1]), quiet.stderr
    assert lines[-1].startswith(
        f"error: list s3://some-bucket/lake: S3 endpoint {endpoint} unreachable after"
    )
    assert seconds < 4 + 10, seconds  # the budget, plus starting Python and the CLI
    verbose = subprocess.run([*cmd[:1], "-v", *cmd[1:]], env=env, capture_output=True, text=True, timeout=120)
    assert "Traceback" in verbose.stderr
    assert (
        verbose.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: list s3://some-bucket/lake: S3 endpoint {endpoint}")
    )


def test_no_credentials_is_a_clear_error(s3_env, monkeypatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    from pipelines.core.s3_storage import S3Backend

    with pytest.raises(
        PermissionError, match=r"no AWS credentials found.*never reads credentials from params"
    ):
        S3Backend().read_bytes("s3://some-bucket/key.json")  # a new backend: the chain is read anew


# --------------------------------------------------------------------------- the ETL stage on S3


def _relative_files(root: str) -> dict[str, bytes]:
    """Every visible file under a location, by path relative to it, with its bytes."""
    prefix = root.rstrip("/") + ("/" if "://" in root else os.sep)
    return {
        f[len(prefix) :].replace(os.sep, "/"): storage.read_bytes(f)
        for f in storage.list_files(root, recursive=True)
    }


def test_etl_on_s3_equals_etl_on_disk(s3_bucket, params, tmp_path) -> None:
    cfg = params.synthetic.model_copy(update={"days": 4, "rows_per_day": 1500})
    cfg = cfg.model_copy(update={"bad_records": cfg.bad_records.model_copy(update={"enabled": True})})
    landing = tmp_path / "landing"
    generate_landing(cfg, out=str(landing), seed=7, progress=False)
    s3_landing = s3_bucket.uri("landing")
    for f in storage.list_files(landing):
        storage.copy_file(f, storage.join(s3_landing, Path(f).name))

    local = {k: str(tmp_path / k) for k in ("lake", "quarantine")}
    remote = {k: s3_bucket.uri(k) for k in ("lake", "quarantine")}
    m_local = run_etl(landing=str(landing), params=params, progress=False, **local)
    m_s3 = run_etl(landing=s3_landing, params=params, progress=False, **remote)

    assert m_s3["totals"] == m_local["totals"]
    assert m_s3["totals"]["rows_quarantined"] > 0  # bad records exercised the quarantine path
    assert m_s3["quarantined_by_reason"] == m_local["quarantined_by_reason"]
    assert lake_dates(remote["lake"]) == lake_dates(local["lake"])
    date = lake_dates(local["lake"])[1]
    assert read_partition(remote["lake"], date).equals(read_partition(local["lake"], date))

    def data_files(root: str) -> dict[str, bytes]:
        return {k: v for k, v in _relative_files(root).items() if not k.startswith("_etl/")}

    lake_s3, lake_local = data_files(remote["lake"]), data_files(local["lake"])
    assert sorted(lake_s3) == sorted(lake_local) and len(lake_s3) >= 4
    assert lake_s3 == lake_local  # byte-identical partitions
    assert _relative_files(remote["quarantine"]) == _relative_files(local["quarantine"])

    again = run_etl(landing=s3_landing, params=params, progress=False, **remote)
    assert again["totals"]["files_unchanged"] == 4 and again["totals"]["files_processed"] == 0


# --------------------------------------------------------------------------- DVC remote on S3


def _git_env() -> dict[str, str]:
    return {
        "GIT_AUTHOR_NAME": "loopline-test",
        "GIT_AUTHOR_EMAIL": "test@example.invalid",
        "GIT_COMMITTER_NAME": "loopline-test",
        "GIT_COMMITTER_EMAIL": "test@example.invalid",
        "DVC_NO_ANALYTICS": "1",
        "PATH": f"{BIN}:{os.environ['PATH']}",
    }


def _sh(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    return res.stdout + res.stderr


@pytest.mark.slow
def test_dvc_push_then_fresh_clone_pulls_and_is_clean(s3_bucket, params, tmp_path) -> None:
    env = {**s3_bucket.server.env(), **_git_env()}
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "params.yaml").write_bytes((ROOT / "params.yaml").read_bytes())
    cfg = params.synthetic.model_copy(update={"days": 3, "rows_per_day": 400})
    generate_landing(cfg, out=str(repo / "data" / "landing"), seed=3, progress=False)
    (repo / "dvc.yaml").write_text(
        "stages:\n"
        "  etl:\n"
        f"    cmd: {BIN / 'loopline'} etl --landing data/landing --lake data/lake"
        " --quarantine data/quarantine --params params.yaml\n"
        "    deps: [data/landing]\n"
        "    outs: [data/lake, data/quarantine]\n"
    )
    remote = s3_bucket.uri("dvc")
    for cmd in (
        ["git", "init", "-q"],
        ["dvc", "init", "-q"],
        ["dvc", "add", "-q", "data/landing"],
        ["dvc", "repro", "-q"],
        ["dvc", "remote", "add", "-d", "s3remote", remote],
        ["dvc", "remote", "modify", "s3remote", "endpointurl", s3_bucket.endpoint],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "pipeline on an S3 remote"],
        ["dvc", "push", "-q"],
    ):
        _sh(cmd, repo, env)
    assert storage.list_files(remote, recursive=True), "dvc push stored nothing on the S3 remote"

    clone = tmp_path / "clone"
    _sh(["git", "clone", "-q", str(repo), str(clone)], tmp_path, env)
    assert not (clone / "data" / "lake").exists() and not (clone / ".dvc" / "cache").exists()
    _sh(["dvc", "pull", "-q"], clone, env)
    status = _sh(["dvc", "status"], clone, env)
    assert "up to date" in status.lower(), status
    original = sorted(p.relative_to(repo) for p in (repo / "data").rglob("*") if p.is_file())
    assert {p.parts[1] for p in original} >= {"landing", "lake"}
    for rel in original:
        assert (clone / rel).read_bytes() == (repo / rel).read_bytes(), rel


def test_exclusive_create_has_exactly_one_winner(s3_bucket) -> None:
    """``storage.create_bytes`` (the registry's alias generations) is a conditional PUT on S3."""
    from concurrent.futures import ThreadPoolExecutor

    loc = s3_bucket.uri("aliases", "gen-000001.json")
    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(lambda i: storage.create_bytes(loc, f"writer {i}".encode()), range(8)))
    assert won.count(True) == 1
    assert storage.read_bytes(loc) == f"writer {won.index(True)}".encode()
    assert storage.create_bytes(loc, b"late") is False and storage.read_bytes(loc) != b"late"
