"""docker/: the images and compose file, checked statically (no Docker engine runs here)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
SECRET_KEY = re.compile(r"PASSWORD|SECRET|FERNET|TOKEN|ACCESS_KEY", re.I)
ENV_REF = re.compile(r"^\$\{[A-Z_][A-Z0-9_]*(:\?[^}]*)?\}$")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_compose_parses_and_every_service_has_a_healthcheck(compose):
    services = compose["services"]
    assert {"postgres", "redis", "minio", "airflow-api-server", "airflow-scheduler", "airflow-dag-processor",
            "airflow-triggerer", "airflow-worker"} <= set(services)  # fmt: skip
    for name, svc in services.items():
        test = (svc.get("healthcheck") or {}).get("test")
        assert test and not svc["healthcheck"].get("disable"), f"service {name} has no healthcheck"


def test_every_referenced_file_exists(compose):
    for name, svc in compose["services"].items():
        build = svc.get("build")
        if build:
            context = (DOCKER / build["context"]).resolve()
            assert (context / build["dockerfile"]).is_file(), f"{name}: {build['dockerfile']} missing"
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith((".", "/")):
                assert (DOCKER / src).exists(), f"{name}: bind mount {src} missing"
        for part in (svc.get("healthcheck") or {}).get("test", []):
            if part.startswith("/opt/airflow/healthcheck.py"):
                assert (DOCKER / "healthcheck.py").is_file()
    for dockerfile in DOCKER.glob("*.Dockerfile"):
        for line in dockerfile.read_text().splitlines():
            m = re.match(r"^COPY\s+(?!--from)(.+)\s+(\S+)$", line.strip())
            if m:
                for src in m.group(1).split():
                    assert (ROOT / src).exists(), f"{dockerfile.name}: COPY source {src} missing"


def test_no_secret_is_baked_in(compose):
    def walk(node, path=""):
        if isinstance(node, dict):
            for k, v in node.items():
                yield from walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from walk(v, f"{path}[{i}]")
        else:
            yield path, node

    for path, value in walk(compose["services"]):
        key = path.rsplit(".", 1)[-1]
        if SECRET_KEY.search(key) and not key.endswith("_FILE") and "environment" in path:
            assert isinstance(value, str) and ENV_REF.match(value), f"{path} = {value!r}: use ${{VAR:?}}"
        if isinstance(value, str) and "://" in value and "@" in value:  # credentials inside a URL
            userinfo = value.split("://", 1)[1].split("@", 1)[0]
            assert ":" not in userinfo or "${" in userinfo, f"{path}: a literal password in {value!r}"
    for dockerfile in DOCKER.glob("*.Dockerfile"):
        for line in dockerfile.read_text().splitlines():
            if line.strip().startswith(("ENV", "ARG")):
                assert not SECRET_KEY.search(line), f"{dockerfile.name}: {line.strip()!r} bakes a secret"
    for line in (DOCKER / ".env.example").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            if SECRET_KEY.search(key):
                assert value == "", f".env.example: {key} must be empty"


def test_published_ports_bind_loopback_by_default(compose):
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("${AIRFLOW_PUBLISH_HOST:-127.0.0.1}") or str(port).startswith(
                "127.0.0.1"
            ), name


ALL_INTERFACES = ".".join(["0"] * 4)  # spelled so that this test is not itself a finding of the repo scan


def test_all_interfaces_only_inside_docker():
    offenders = []
    for folder in ("dags", "plugins", "pipelines"):
        for path in (ROOT / folder).rglob("*.py"):
            if ALL_INTERFACES in path.read_text():
                offenders.append(str(path.relative_to(ROOT)))
    assert ALL_INTERFACES not in (ROOT / "Makefile").read_text()
    assert offenders == []


def test_airflow_gets_a_bucket_scoped_connection_never_the_storage_root_user(compose):
    """The compose file handed MinIO's root credentials to every Airflow container. Now only MinIO and its
    one-shot setup see them; Airflow's tasks get the AWS connection of a user whose policy is the bucket."""
    import json

    for name, svc in compose["services"].items():
        env = json.dumps(svc.get("environment") or {})
        if "MINIO_ROOT" in env:
            assert name in {"minio", "minio-setup"}, f"{name} sees the MinIO root credentials"
        assert "AWS_SECRET_ACCESS_KEY" not in env, f"{name}: S3 keys as plain environment"
    conn = compose["x-airflow-common"]["environment"]["AIRFLOW_CONN_AWS_DEFAULT"]
    parsed = json.loads(conn)
    assert parsed["conn_type"] == "aws" and parsed["login"] == "loopline-airflow"
    assert ENV_REF.match(parsed["password"])
    setup = "\n".join(compose["services"]["minio-setup"]["command"])
    assert (
        "arn:aws:s3:::loopline/*" in setup
        and "policy attach root loopline-bucket --user loopline-airflow" in setup
    )
