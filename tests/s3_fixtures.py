"""A real S3-compatible server on 127.0.0.1 for tests: moto's standalone server, one process per session.

MinIO, versitygw and SeaweedFS do not install here from PyPI or Debian (only client libraries do), so the
server is moto's (``moto_server`` from ``moto[server]`` in requirements/dev.in). It speaks the S3 REST
API over HTTP like any S3-compatible store, so the code under test runs unchanged: boto3 for the
storage layer, s3fs for DVC. It keeps its state in memory: ``MotoServer.snapshot``/``restore`` carry a
bucket's objects across a restart (see tests/e2e/test_faults.py for why that is an honest restart).

Credentials are fake ("testing") and live only in the environment of the fixtures that need them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # never ask an instance-metadata service for a role
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def moto_server_bin() -> str | None:
    local = Path(sys.executable).parent / "moto_server"
    return str(local) if local.exists() else shutil.which("moto_server")


@dataclass
class MotoServer:
    """moto's S3 server as a child process bound to 127.0.0.1; stopped by its PID."""

    port: int = field(default_factory=free_port)
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> MotoServer:
        exe = moto_server_bin()
        if exe is None:
            pytest.skip("moto_server not installed (pip install 'moto[server]', see requirements/dev.in)")
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [exe, "-H", "127.0.0.1", "-p", str(self.port)], stdout=out, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self.proc.returncode} on port {self.port}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"moto_server did not listen on 127.0.0.1:{self.port} within {timeout}s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def client(self) -> Any:
        import boto3

        return boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
        ).client("s3", endpoint_url=self.endpoint)

    def env(self, **extra: str) -> dict[str, str]:
        """An environment for a subprocess that talks to this server (fake credentials only)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(FAKE_CREDENTIALS)
        env["LOOPLINE_S3_ENDPOINT_URL"] = self.endpoint
        env.update(extra)
        return env

    def snapshot(self, bucket: str) -> dict[str, bytes]:
        """Every object of a bucket, by key (the durable state a real store would keep)."""
        c = self.client()
        out = {}
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                out[obj["Key"]] = c.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
        return out

    def restore(self, bucket: str, objects: dict[str, bytes]) -> None:
        c = self.client()
        c.create_bucket(Bucket=bucket)
        for key, data in objects.items():
            c.put_object(Bucket=bucket, Key=key, Body=data)


@dataclass
class S3Bucket:
    """A fresh bucket on the session's server; ``uri("lake")`` -> ``s3://<bucket>/lake``."""

    server: MotoServer
    name: str

    def uri(self, *parts: str) -> str:
        return "/".join([f"s3://{self.name}", *parts])

    @property
    def endpoint(self) -> str:
        return self.server.endpoint


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(log_path=tmp_path_factory.mktemp("moto") / "moto_server.log").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point this process's storage layer at the session's server with fake credentials."""
    env = moto_server.env(AWS_MAX_ATTEMPTS="3")
    for k in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(k)
    for k, v in env.items():
        if k.startswith(("AWS_", "LOOPLINE_S3_")):
            monkeypatch.setenv(k, v)
    return env


@pytest.fixture
def s3_bucket(moto_server: MotoServer, s3_env: dict[str, str]) -> S3Bucket:
    name = f"loopline-{uuid.uuid4().hex[:12]}"
    moto_server.client().create_bucket(Bucket=name)
    return S3Bucket(server=moto_server, name=name)
