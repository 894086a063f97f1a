"""Security checks: partition parameters cannot smuggle paths, the repo holds no credentials, and no server
listens beyond loopback outside docker/."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.data.etl import partition_path, validate_date

ROOT = Path(__file__).resolve().parents[2]

# --------------------------------------------------------------------------- date / partition parameters

BAD_DATES = [
    "../../etc",
    "2025-01-01/../x",
    "2025-01-01/../../etc/passwd",
    "..",
    "/etc/passwd",
    "2025-13-01",
    "2025-02-30",
    "2025-1-1",
    "2025-01-01 ",
    "2025-01-01\n",
    "2025-01-01\x00",
    "2025-01-01%2F..",
    "date=2025-01-01",
    "",
]


@pytest.mark.parametrize("value", BAD_DATES)
def test_validate_date_rejects(value: str) -> None:
    with pytest.raises(ValueError, match=r"--date = .*expected YYYY-MM-DD|--date = .*expected a date"):
        validate_date(value, name="--date")


@pytest.mark.parametrize("value", BAD_DATES)
def test_partition_path_never_builds_a_path_from_a_bad_date(value: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        partition_path(str(tmp_path / "lake"), value)


def test_good_dates_stay_inside_the_lake(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    for value in ("2025-01-01", "2024-02-29", "1999-12-31"):
        assert validate_date(value) == value
        p = Path(partition_path(str(lake), value)).resolve()
        assert p.parent == lake.resolve() and p.name == f"date={value}"
    assert partition_path("s3://bucket/lake", "2025-01-01") == "s3://bucket/lake/date=2025-01-01"


def test_cli_refuses_a_traversal_date(tmp_path: Path) -> None:
    res = subprocess.run(
        [str(Path(sys.executable).parent / "loopline"), "etl", "--date", "../../etc",
         "--landing", str(tmp_path / "l"), "--lake", str(tmp_path / "k"), "--quarantine", str(tmp_path / "q"),
         "--params", str(ROOT / "params.yaml")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 2
    assert "--date = '../../etc': expected a date as YYYY-MM-DD" in res.stderr
    assert not (tmp_path / "k").exists()


# --------------------------------------------------------------------------- credentials in the repo


def repo_files() -> list[Path]:
    """Files git tracks, plus new ones not ignored (so a secret is caught before its first commit)."""
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    return [ROOT / f for f in out.split("\0") if f and (ROOT / f).is_file()]


# Fake values that tests and docs may show; anything else assigned to a secret-named key is a finding.
PLACEHOLDERS = {
    "", "testing", "test", "fake", "dummy", "example", "redacted", "none", "null", "~", "changeme",
    "secret", "password", "pass", "***",
}  # fmt: skip
_SECRET_NAME = r"[\w.-]*(?:password|passwd|secret|token|api_?key|access_?key|private_?key)[\w.-]*"
PATTERNS: dict[str, re.Pattern[str]] = {
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b"),
    "AWS secret access key": re.compile(
        r"(?i)aws_?secret_?access_?key[\"']?\s*[:=]\s*[\"']?(?P<value>[A-Za-z0-9/+=]{40})\b"
    ),
    "private key": re.compile("-----BEGIN " + r"(?:[A-Z0-9]+ )*PRIVATE KEY-----"),
    "credentials in a URL": re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s/:@'\"]+:(?P<value>[^\s/@'\"{}$]+)@"),
    # key: value (YAML needs the space after the colon) or key=value; *_FILE/_PATH keys name files
    "secret in YAML/INI/env": re.compile(
        rf"(?im)^[ \t]*-?[ \t]*[\"']?(?!{_SECRET_NAME}_(?:file|path|dir)\b){_SECRET_NAME}[\"']?"
        r"[ \t]*(?::[ \t]|=)[ \t]*(?P<value>[^\s#]+)"
    ),
    "secret literal in code": re.compile(
        rf"(?i)\b{_SECRET_NAME}[\"']?\s*[:=]\s*(?P<q>[\"'])(?P<value>[^\"'\s]{{8,}})(?P=q)"
    ),
}
_CONFIG_SUFFIXES = {".yaml", ".yml", ".ini", ".cfg", ".env", ".conf", ".properties", ".toml"}


def _is_placeholder(value: str) -> bool:
    v = value.strip().strip("\"'").strip()
    return (
        v.lower() in PLACEHOLDERS
        or v.startswith(("$", "{", "<", "%(", "os.environ", "env(", "!env", "/", "./", "~/"))
        or bool(re.fullmatch(r"[xX*.]+", v))
    )


def find_credentials(text: str, *, suffix: str) -> list[tuple[str, int, str]]:
    """(kind, line number, excerpt) for each credential-looking string in a file's text."""
    found = []
    for kind, pattern in PATTERNS.items():
        if kind == "secret in YAML/INI/env" and suffix not in _CONFIG_SUFFIXES:
            continue
        for m in pattern.finditer(text):
            value = m.groupdict().get("value")
            if value is not None and _is_placeholder(value):
                continue
            line = text.count("\n", 0, m.start()) + 1
            found.append((kind, line, m.group(0)[:12] + "..."))
    return found


def test_scanner_finds_planted_credentials() -> None:
    # Built at run time so that this file itself holds no credential-shaped string.
    key_id = "AKIA" + "Q7" * 8
    secret = "wJalr" + "9x/K7" * 7
    pem = "-----BEGIN " + "RSA PRIVATE KEY-----\nMIIE...\n"
    samples = {
        ".py": f'client = boto3.client("s3", aws_access_key_id="{key_id}")\n',
        ".yaml": f"aws_secret_access_key: {secret}\n",
        ".pem": pem,
        ".cfg": "db_password = hunter2hunter2\n",
        ".yml": "  MINIO_ROOT_PASSWORD: hunter2hunter2\n",
        ".sh": "export DB_URL=postgresql://airflow:" + "s3cr3tpass" + "@127.0.0.1/airflow\n",
    }
    for suffix, text in samples.items():
        assert find_credentials(text, suffix=suffix), (suffix, text)
    clean = {
        ".yaml": "password: ${POSTGRES_PASSWORD}\ntoken: \nX_PASSWORDS_FILE: /run/p.json\n- airflow-secrets:/opt/s\n",
        ".py": 'os.environ["AWS_ACCESS_KEY_ID"] = "testing"\npassword = secrets.token_urlsafe(18)\n',
        ".sh": "export AIRFLOW_CONN=postgresql://airflow@127.0.0.1/airflow\n",
    }
    for suffix, text in clean.items():
        assert not find_credentials(text, suffix=suffix), (suffix, text)


def test_repo_holds_no_credentials() -> None:
    findings = []
    files = repo_files()
    assert len(files) > 20  # the scan did see the repository
    for path in files:
        if path.stat().st_size > 2_000_000:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary
        for kind, line, excerpt in find_credentials(text, suffix=path.suffix.lower()):
            findings.append(f"{path.relative_to(ROOT)}:{line}: {kind} ({excerpt})")
    assert not findings, (
        "credentials in the repo (use the AWS chain / env / Airflow connections):\n" + "\n".join(findings)
    )


# --------------------------------------------------------------------------- listening addresses


def test_no_server_binds_beyond_loopback_outside_docker() -> None:
    any_v4 = ".".join(["0"] * 4)  # spelled at run time so this file does not match itself
    pattern = re.compile(rf"{re.escape(any_v4)}|host\s*=\s*[\"']::[\"']|--host[= ]+::(?:\s|$)")
    # a test asserting the address is absent ('"<addr>" not in text') binds nothing
    absent_check = re.compile(rf"[\"']{re.escape(any_v4)}[\"']\s+(?:not\s+)?in\b")
    offenders = []
    for path in repo_files():
        rel = path.relative_to(ROOT)
        if rel.parts[0] == "docker" or path.suffix.lower() not in {
            ".py",
            ".sh",
            ".yaml",
            ".yml",
            ".cfg",
            ".toml",
        }:
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if pattern.search(line) and not absent_check.search(line):
                offenders.append(f"{rel}:{n}: {line.strip()[:100]}")
    assert not offenders, "bind to 127.0.0.1 outside docker/:\n" + "\n".join(offenders)
