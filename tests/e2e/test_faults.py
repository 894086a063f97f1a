"""Faults lose nothing and show nothing half-written: SIGKILL mid-run, the S3 server going down, a quarantine
that cannot be written.

Each test runs the real ``loopline etl`` as a subprocess and compares what it leaves with an uninterrupted
run of the same landing files (byte for byte: lake partitions, ledgers, quarantine; run manifests differ
by design, they carry timestamps).

The S3 server restart: moto keeps objects in memory, so a plain restart would come back empty, which no
real store does. The tests freeze the ETL (SIGSTOP), let in-flight requests finish, copy every object the
server holds, stop the server, and only then let the ETL go on against the dead endpoint. The restarted
server (same port) is seeded with exactly that copy: the state a durable store (S3, MinIO) would come
back with. Nothing the ETL wrote after the freeze can be in the copy, because it wrote nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pipelines.core import storage
from pipelines.data.etl import run_etl
from pipelines.data.generate import generate_landing
from pipelines.data.sources.base import count_data_lines

BIN = Path(sys.executable).parent
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("s3")]
DAYS = 12  # landing files in the big data set


# --------------------------------------------------------------------------- helpers


def _etl_cmd(landing: Path | str, lake: str, quarantine: str) -> list[str]:
    return [
        str(BIN / "loopline"),
        "etl",
        "--landing",
        str(landing),
        "--lake",
        lake,
        "--quarantine",
        quarantine,
    ]


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as fh:
        return subprocess.Popen(cmd, env=env, stdout=fh, stderr=fh)


def _visible(root: str) -> dict[str, bytes]:
    """What a reader sees under a location: every listed file (temporaries are not listed), by relative
    path, without the run manifests (they carry each run's timestamps)."""
    prefix = root.rstrip("/") + ("/" if "://" in root else os.sep)
    out = {}
    for f in storage.list_files(root, recursive=True):
        rel = f[len(prefix) :].replace(os.sep, "/")
        if not rel.startswith("_etl/manifests/"):
            out[rel] = storage.read_bytes(f)
    return out


def _objects_under(objects: dict[str, bytes], prefix: str) -> dict[str, bytes]:
    return {
        k[len(prefix) + 1 :]: v
        for k, v in objects.items()
        if k.startswith(prefix + "/") and not k.startswith(f"{prefix}/_etl/manifests/")
    }


def _ledger_rows(lake_files: dict[str, bytes]) -> tuple[int, int, int]:
    read = loaded = quarantined = 0
    for rel, data in lake_files.items():
        if rel.startswith("_etl/ledger/"):
            rec = json.loads(data)
            assert rec["rows_read"] == rec["rows_loaded"] + rec["rows_quarantined"], rel
            read, loaded = read + rec["rows_read"], loaded + rec["rows_loaded"]
            quarantined += rec["rows_quarantined"]
    return read, loaded, quarantined


def _manifests_add_up(lake: str, env: dict[str, str]) -> None:
    """After faults and one re-run, the run manifests count every row in the lake once (a killed run's
    committed files are counted by the next run's manifest), and `loopline lake check` agrees."""
    check = subprocess.run(
        [str(BIN / "loopline"), "lake", "check", "--lake", lake, "--json"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    got = json.loads(check.stdout)
    assert got["ok"] and got["pending_runs"] == [], got["problems"]
    assert got["lake_rows"] == got["ledger_rows"] == got["manifest_rows"] > 0
    assert got["manifests_total_rows"] == got["lake_rows"]  # summed over every run's manifest
    assert got["files_recovered"] > 0  # the interrupted runs' files, counted by a later manifest


def _landing_rows(landing: Path) -> int:
    return sum(count_data_lines(p.read_bytes()) for p in landing.glob("*.csv"))


class ReaderWatch:
    """A reader polling the lake during the runs: every part it lists must parse in full."""

    def __init__(self, lake: str) -> None:
        self.lake = lake
        self.reads = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                parts = storage.list_files(self.lake, "part-*.parquet", recursive=True)
            except OSError:
                parts = []
            for part in parts:
                try:
                    storage.read_parquet(part)
                    self.reads += 1
                except FileNotFoundError:
                    pass  # replaced or dropped between listing and reading: not a partial file
                except Exception as err:  # a partial or corrupt file visible under its final name
                    self.errors.append(f"{part}: {err!r}")
            time.sleep(0.02)

    def __enter__(self) -> ReaderWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _wait_for(predicate: Any, proc: subprocess.Popen[bytes], timeout: float = 180.0) -> bool:
    """Poll until predicate() holds; False if the process ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return bool(predicate())
        time.sleep(0.01)
    raise TimeoutError("condition not reached")


# --------------------------------------------------------------------------- data and the reference run


# Session scope: xdist may interleave this module with others in one worker, which would rebuild module ones.
@pytest.fixture(scope="session")
def big_landing(tmp_path_factory, params) -> Path:
    """12 days x 30,000 rows with bad records: enough for a run to be killed between its first parts."""
    cfg = params.synthetic.model_copy(update={"days": DAYS, "rows_per_day": 30_000})
    cfg = cfg.model_copy(update={"bad_records": cfg.bad_records.model_copy(update={"enabled": True})})
    landing = tmp_path_factory.mktemp("faults") / "landing"
    generate_landing(cfg, out=str(landing), seed=11, progress=False)
    return landing


@pytest.fixture(scope="session")
def reference(big_landing, params, tmp_path_factory) -> dict[str, dict[str, bytes]]:
    """An uninterrupted run of the same landing files."""
    base = tmp_path_factory.mktemp("reference")
    lake, quarantine = str(base / "lake"), str(base / "quarantine")
    run_etl(landing=str(big_landing), lake=lake, quarantine=quarantine, params=params, progress=False)
    return {"lake": _visible(lake), "quarantine": _visible(quarantine)}


# --------------------------------------------------------------------------- SIGKILL mid-write


@pytest.mark.parametrize("where", ["local", "s3"])
def test_sigkill_mid_run_then_rerun_equals_uninterrupted(
    where, big_landing, reference, tmp_path, request
) -> None:
    if where == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        lake, quarantine = bucket.uri("lake"), bucket.uri("quarantine")
        env = bucket.server.env(AWS_MAX_ATTEMPTS="3")
    else:
        lake, quarantine = str(tmp_path / "lake"), str(tmp_path / "quarantine")
        env = dict(os.environ)
    cmd, log = _etl_cmd(big_landing, lake, quarantine), tmp_path / "etl.log"
    rng = random.Random(5)

    def parts() -> int:
        return len(storage.list_files(lake, "part-*.parquet", recursive=True))

    with ReaderWatch(lake) as watch:
        for kill_at in (1, 4):  # two kills, each after more partitions exist, at a random moment
            proc = _start(cmd, env, log)
            assert _wait_for(lambda n=kill_at: parts() >= n, proc), log.read_text()[-3000:]
            time.sleep(rng.uniform(0.0, 0.15))
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL, (
                "the ETL finished before the kill: give it more data"
            )
            assert len(storage.list_files(storage.join(lake, "_etl", "ledger"))) < DAYS
        final = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert final.returncode == 0, final.stderr[-3000:]
        time.sleep(0.1)

    assert watch.errors == [], watch.errors[:5]
    assert watch.reads > 0  # the reader did read parts while the runs went on
    got_lake, got_quarantine = _visible(lake), _visible(quarantine)
    assert sorted(got_lake) == sorted(reference["lake"])
    assert got_lake == reference["lake"]  # partitions and ledgers, byte for byte
    assert got_quarantine == reference["quarantine"]
    read, loaded, quarantined = _ledger_rows(got_lake)
    assert read == _landing_rows(big_landing) == loaded + quarantined and quarantined > 0
    _manifests_add_up(lake, env)
    if where == "local":  # a killed local write can leave a temporary behind, but only a hidden one
        listed = set(storage.list_files(lake, recursive=True))
        unlisted = [p for p in Path(lake).rglob("*") if p.is_file() and str(p) not in listed]
        assert all(p.name.startswith(storage.TMP_PREFIX) for p in unlisted), unlisted


# --------------------------------------------------------------------------- the S3 server goes down


def _run_until_parts(server, bucket: str, cmd, env, log, n: int) -> subprocess.Popen[bytes]:
    client = server.client()

    def parts() -> int:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="lake/date=")
        return sum(len(p.get("Contents", [])) for p in pages)

    proc = _start(cmd, env, log)
    assert _wait_for(lambda: parts() >= n, proc), log.read_text()[-3000:]
    return proc


def _crash_server(server, bucket: str, proc: subprocess.Popen[bytes]) -> dict[str, bytes]:
    """Freeze the ETL, keep what the server durably holds, stop the server, let the ETL go on."""
    os.kill(proc.pid, signal.SIGSTOP)
    time.sleep(0.5)  # requests already sent complete on the server side
    state = server.snapshot(bucket)
    server.stop()
    os.kill(proc.pid, signal.SIGCONT)
    return state


@pytest.fixture
def own_server(tmp_path):
    from s3_fixtures import MotoServer

    server = MotoServer(log_path=tmp_path / "moto.log").start()
    yield server
    server.stop()


def test_s3_outage_fails_clearly_then_a_rerun_resumes(own_server, big_landing, reference, tmp_path) -> None:
    bucket = "loopline-outage"
    own_server.client().create_bucket(Bucket=bucket)
    env = own_server.env(AWS_MAX_ATTEMPTS="3")
    cmd = _etl_cmd(big_landing, f"s3://{bucket}/lake", f"s3://{bucket}/quarantine")
    log = tmp_path / "etl.log"

    proc = _run_until_parts(own_server, bucket, cmd, env, log, 2)
    state = _crash_server(own_server, bucket, proc)
    assert proc.wait(timeout=180) != 0
    err = log.read_text()
    last = err.strip().splitlines()[-1]
    assert f"S3 endpoint {own_server.endpoint} unreachable after 3 attempts" in last, last
    assert f"s3://{bucket}/" in last  # names the object it was working on
    assert "retrying" in err  # the stage retried before giving up
    done_before = sum(k.startswith("lake/_etl/ledger/") for k in state)
    assert 1 <= done_before < DAYS

    own_server.start()  # the same port, with the objects it held (module docstring)
    own_server.restore(bucket, state)
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"{DAYS - done_before} file(s) processed" in rerun.stdout  # resumed: done files not redone

    objects = own_server.snapshot(bucket)
    assert _objects_under(objects, "lake") == reference["lake"]
    assert _objects_under(objects, "quarantine") == reference["quarantine"]
    _manifests_add_up(f"s3://{bucket}/lake", env)


def test_short_s3_outage_is_ridden_out_by_retries(own_server, big_landing, reference, tmp_path) -> None:
    bucket = "loopline-blip"
    own_server.client().create_bucket(Bucket=bucket)
    env = own_server.env(AWS_MAX_ATTEMPTS="10", LOOPLINE_S3_RETRY_SECONDS="120")  # ride out the restart
    cmd = _etl_cmd(big_landing, f"s3://{bucket}/lake", f"s3://{bucket}/quarantine")
    log = tmp_path / "etl.log"

    proc = _run_until_parts(own_server, bucket, cmd, env, log, 1)
    state = _crash_server(own_server, bucket, proc)
    _wait_for(lambda: "retrying" in log.read_text(), proc, timeout=60)  # it saw the outage
    assert proc.poll() is None, log.read_text()[-3000:]
    os.kill(proc.pid, signal.SIGSTOP)  # so that it cannot see the server before its objects are back
    own_server.start()
    own_server.restore(bucket, state)
    os.kill(proc.pid, signal.SIGCONT)
    assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]

    objects = own_server.snapshot(bucket)
    assert _objects_under(objects, "lake") == reference["lake"]
    assert _objects_under(objects, "quarantine") == reference["quarantine"]


# --------------------------------------------------------------------------- a TCP forwarder cuts uploads


class CuttingForwarder:
    """A TCP forwarder on 127.0.0.1 between Loopline and the S3 server. Once armed, every ``cut_after`` bytes
    sent towards the server it cuts the connection carrying them (an upload in flight): both sockets are
    closed mid-request, ``cuts`` times; with ``die`` it also stops accepting, as a lost network would."""

    def __init__(self, target_port: int) -> None:
        import socket

        self.target_port = target_port
        self.cut_after: int | None = None
        self.cuts_left = 0
        self.cut = 0
        self.die = False
        self.sent = 0  # bytes towards the server, all connections
        self._next_cut: int | None = None
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: list[Any] = []
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def arm(self, cut_after: int, *, cuts: int = 1, die: bool = False) -> None:
        self.cut_after, self.cuts_left, self.die = cut_after, cuts, die
        self._next_cut = self.sent + cut_after

    def _due(self, n: int) -> bool:
        """Count ``n`` bytes towards the server; whether this chunk is to be cut."""
        with self._lock:
            self.sent += n
            if self._next_cut is None or self.sent <= self._next_cut or self.cuts_left <= 0:
                return False
            self.cuts_left -= 1
            self.cut += 1
            self._next_cut = self.sent + (self.cut_after or 0)
            return True

    def _accept(self) -> None:
        import socket

        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            self._open += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: Any, dst: Any, to_server: bool) -> None:
        try:
            while chunk := src.recv(65536):
                if to_server and self._due(len(chunk)):
                    dst.sendall(chunk[: len(chunk) // 2])  # half of it arrives: a request cut mid-body
                    for sock in (src, dst):
                        sock.close()
                    if self.die:
                        self.close()
                    return
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.close()

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        for sock in self._open:
            with contextlib.suppress(OSError):
                sock.close()


@pytest.fixture
def forwarded(own_server):
    fwd = CuttingForwarder(own_server.port)
    yield own_server, fwd
    fwd.close()


def test_an_upload_cut_midway_is_retried_and_the_lake_is_exact(
    forwarded, big_landing, reference, tmp_path
) -> None:
    """One connection cut while it carries a partition upload: botocore retries the request on a new
    connection, the object appears whole or not at all, and the run ends with the reference lake."""
    server, fwd = forwarded
    bucket = "loopline-cut"
    server.client().create_bucket(Bucket=bucket)
    env = server.env(LOOPLINE_S3_ENDPOINT_URL=fwd.endpoint)
    fwd.arm(cut_after=300_000, cuts=3)
    run = subprocess.run(
        _etl_cmd(big_landing, f"s3://{bucket}/lake", f"s3://{bucket}/quarantine"),
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert fwd.cut == 3  # the faults did happen
    objects = server.snapshot(bucket)
    assert _objects_under(objects, "lake") == reference["lake"]
    assert _objects_under(objects, "quarantine") == reference["quarantine"]


def test_a_network_lost_mid_upload_fails_in_one_line_then_a_rerun_completes(
    forwarded, big_landing, reference, tmp_path
) -> None:
    """The forwarder cuts an upload and stops answering: the ETL gives up within its retry budget with one
    line; with the network back, one re-run gives the reference lake and manifests that add up to it."""
    server, fwd = forwarded
    bucket = "loopline-lost"
    server.client().create_bucket(Bucket=bucket)
    env = server.env(LOOPLINE_S3_ENDPOINT_URL=fwd.endpoint, LOOPLINE_S3_RETRY_SECONDS="3")
    cmd = _etl_cmd(big_landing, f"s3://{bucket}/lake", f"s3://{bucket}/quarantine")
    fwd.arm(cut_after=3_000_000, die=True)  # a few files in
    t0 = time.monotonic()
    failed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert failed.returncode == 2 and fwd.cut == 1, (fwd.cut, failed.stderr[-3000:])
    lines = failed.stderr.strip().splitlines()
    assert "Traceback" not in failed.stderr and lines[-1].startswith("error: ") and fwd.endpoint in lines[-1]
    assert time.monotonic() - t0 < 600

    back = CuttingForwarder(server.port)  # the network is back (another port: the old one may linger)
    try:
        env["LOOPLINE_S3_ENDPOINT_URL"] = back.endpoint
        rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        objects = server.snapshot(bucket)
        assert _objects_under(objects, "lake") == reference["lake"]
        assert _objects_under(objects, "quarantine") == reference["quarantine"]
        _manifests_add_up(f"s3://{bucket}/lake", env)
    finally:
        back.close()


# --------------------------------------------------------------------------- quarantine cannot be written


@pytest.fixture(scope="session")
def small_landing(tmp_path_factory, params) -> Path:
    cfg = params.synthetic.model_copy(update={"days": 5, "rows_per_day": 4000})
    cfg = cfg.model_copy(update={"bad_records": cfg.bad_records.model_copy(update={"enabled": True})})
    landing = tmp_path_factory.mktemp("small") / "landing"
    generate_landing(cfg, out=str(landing), seed=13, progress=False)
    return landing


def _staged_landing(small_landing: Path, tmp_path: Path, params) -> tuple[Path, str, str, list[Path]]:
    """The first two days loaded; the last three landed but not yet loaded."""
    landing, lake, quarantine = tmp_path / "landing", str(tmp_path / "lake"), str(tmp_path / "quarantine")
    landing.mkdir()
    csvs = sorted(small_landing.glob("*.csv"))
    for p in csvs[:2]:
        shutil.copy2(p, landing / p.name)
    run_etl(landing=str(landing), lake=lake, quarantine=quarantine, params=params, progress=False)
    for p in csvs[2:]:
        shutil.copy2(p, landing / p.name)
    return landing, lake, quarantine, csvs


def _check_nothing_lost(
    landing: Path, lake: str, quarantine: str, lake_before: dict[str, bytes], failed, params, tmp_path: Path
) -> None:
    assert failed.returncode != 0
    after = _visible(lake)
    markers = [rel for rel in after if rel.startswith("_etl/running/")]
    assert len(markers) == 1  # the failed run is marked interrupted: the next run's manifest counts its files
    assert {k: v for k, v in after.items() if k not in markers} == lake_before  # no part, no ledger for it
    rerun = subprocess.run(_etl_cmd(landing, lake, quarantine), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "3 file(s) processed" in rerun.stdout
    read, loaded, quarantined = _ledger_rows(_visible(lake))
    assert read == _landing_rows(landing) == loaded + quarantined
    ref_lake, ref_q = str(tmp_path / "ref_lake"), str(tmp_path / "ref_q")
    run_etl(landing=str(landing), lake=ref_lake, quarantine=ref_q, params=params, progress=False)
    assert _visible(lake) == _visible(ref_lake) and _visible(quarantine) == _visible(ref_q)


def test_read_only_quarantine_fails_loudly_and_loses_no_rows(small_landing, params, tmp_path) -> None:
    landing, lake, quarantine, _ = _staged_landing(small_landing, tmp_path, params)
    lake_before = _visible(lake)
    rows_dir = Path(quarantine) / "rows"
    cmd = _etl_cmd(landing, lake, quarantine)
    if os.geteuid() == 0:  # root ignores permission bits: drop the capabilities that let it
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot make a folder read-only to the stage")
        cmd = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--inh-caps=-all", *cmd]
    rows_dir.chmod(0o555)
    try:
        failed = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    finally:
        rows_dir.chmod(0o755)
    last = failed.stderr.strip().splitlines()[-1]
    assert "Permission denied" in last and f"cannot write {rows_dir}/" in last, failed.stderr[-2000:]
    _check_nothing_lost(landing, lake, quarantine, lake_before, failed, params, tmp_path)


def _private_mount_prefix() -> list[str] | None:
    """A command prefix giving a private mount namespace where a tmpfs can be mounted, or None."""
    prefix = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-Urm"]
    if shutil.which("unshare") is None:
        return None
    probe = subprocess.run(
        [*prefix, "sh", "-c", "mount -t tmpfs -o size=4k loopline-probe /mnt"], capture_output=True
    )
    return prefix if probe.returncode == 0 else None


def test_full_disk_on_quarantine_fails_loudly_and_loses_no_rows(small_landing, params, tmp_path) -> None:
    prefix = _private_mount_prefix()
    if prefix is None:
        pytest.skip("cannot mount a tmpfs in a private mount namespace here (unshare -m / -Urm refused)")
    landing, lake, quarantine, _ = _staged_landing(small_landing, tmp_path, params)
    lake_before = _visible(lake)
    rows_dir = Path(quarantine) / "rows"
    # A 4 KiB tmpfs over quarantine/rows, visible to this one process only: the next write fills it.
    script = 'mount -t tmpfs -o size=4k loopline-full "$0" && exec "$@"'
    failed = subprocess.run(
        [*prefix, "sh", "-c", script, str(rows_dir), *_etl_cmd(landing, lake, quarantine)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    last = failed.stderr.strip().splitlines()[-1]
    assert "No space left on device" in last and f"cannot write {rows_dir}/" in last, failed.stderr[-2000:]
    _check_nothing_lost(landing, lake, quarantine, lake_before, failed, params, tmp_path)
