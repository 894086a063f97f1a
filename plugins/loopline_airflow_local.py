"""Local Airflow for this project: ``up``, ``down``, ``status`` (run with the Airflow venv's python).

    .venv-airflow/bin/python plugins/loopline_airflow_local.py up [--port 8080]

Starts Airflow 3 on 127.0.0.1 with SQLite and the LocalExecutor, ``AIRFLOW_HOME`` in ``.airflow/``:
api-server, scheduler, dag-processor and triggerer, each a process group whose PID is recorded in
``.airflow/pids.json`` (``down`` stops exactly those); the scheduler, dag-processor and triggerer run under
``supervise``, which restarts one that exits on an error (at most 5 times in 10 minutes). Secure defaults: no example DAGs, API on loopback,
no log servers (``--skip-serve-logs``), parallelism fitted to the machine, a generated 64-byte JWT secret,
Fernet key and API secret key (``.airflow/secrets.json``, mode 0600), and the simple auth manager with a
generated admin password. The pipeline CLI never imports Airflow; this script never imports the ML stack.

Airflow imports every module in plugins/: this one does nothing on import.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
# Restarted when they exit on an error (as systemd or Kubernetes would): Airflow 3's scheduler loop can die
# on a race in its own database session (a backfill request replacing a run it was scheduling raised
# ObjectDeletedError and stopped it), and a stopped scheduler leaves every queued run waiting forever.
SUPERVISED = ("scheduler", "dag-processor", "triggerer")


def _private_json(path: Path, data: dict) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
        fh.write("\n")


def load_secrets(home: Path) -> dict[str, str]:
    """Generate once, then reuse: the admin password, JWT secret, Fernet key and API secret key."""
    path = home / "secrets.json"
    if path.exists():
        return json.loads(path.read_text())
    data = {
        "admin_password": secrets.token_urlsafe(18),
        "jwt_secret": secrets.token_urlsafe(64),  # 512 bits for HS512
        "fernet_key": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        "api_secret_key": secrets.token_urlsafe(32),
    }
    _private_json(path, data)
    return data


def default_parallelism() -> int:
    """Task slots: one per core, at least 4 (a 3-day backfill runs at once), at most 8."""
    return min(8, max(4, os.cpu_count() or 1))


def airflow_env(
    home: Path,
    *,
    port: int,
    parallelism: int,
    sql_conn: str | None = None,
    executor: str = "LocalExecutor",
    dags_folder: Path | None = None,
) -> dict[str, str]:
    sec = load_secrets(home)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder or PROJECT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": executor,
            "AIRFLOW__CORE__PARALLELISM": str(parallelism),
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(parallelism),
            "AIRFLOW__CORE__FERNET_KEY": sec["fernet_key"],
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sql_conn or f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": sec["api_secret_key"],
            "AIRFLOW__API__EXPOSE_CONFIG": "False",
            "AIRFLOW__API_AUTH__JWT_SECRET": sec["jwt_secret"],
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "PYTHONPATH": str(PROJECT / "plugins"),
            "DVC_NO_ANALYTICS": "1",
        }
    )
    return env


def _airflow_bin() -> str:
    return str(Path(sys.executable).parent / "airflow")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a child of ours that exited: reap it
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:  # a zombie counts as dead; the command name in /proc/PID/stat may hold spaces
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2] != "Z"
    except (OSError, ValueError, IndexError):
        return False


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def health(port: int, timeout: float = 3.0) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=timeout) as r:
            return json.loads(r.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def up(
    home: Path,
    *,
    port: int,
    parallelism: int,
    wait: float = 180.0,
    extra_env: dict | None = None,
    dags_folder: Path | None = None,
    sql_conn: str | None = None,
    executor: str = "LocalExecutor",
    components: tuple[str, ...] = COMPONENTS,
    extra_commands: dict[str, list[str]] | None = None,
) -> dict:
    """Start the components (each its own process group) and wait for the API; ``extra_env`` wins."""
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o700)
    pids_file = home / "pids.json"
    if pids_file.exists() and any(_alive(p) for p in json.loads(pids_file.read_text())["pids"].values()):
        raise SystemExit(f"Airflow already runs from {home} (see `status`); run `down` first")
    if not _port_free(port):
        raise SystemExit(f"port {port} on 127.0.0.1 is in use: pass --port")
    sec = load_secrets(home)
    _private_json(home / "passwords.json", {"admin": sec["admin_password"]})
    env = airflow_env(
        home,
        port=port,
        parallelism=parallelism,
        sql_conn=sql_conn,
        executor=executor,
        dags_folder=dags_folder,
    )
    env.update(extra_env or {})
    (home / "logs").mkdir(exist_ok=True)
    with open(home / "logs" / "db-migrate.log", "w") as mlog:
        subprocess.run(
            [_airflow_bin(), "db", "migrate"], env=env, check=True, stdout=mlog, stderr=subprocess.STDOUT
        )
    cmds = {
        "api-server": ["api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        "scheduler": ["scheduler", "--skip-serve-logs"],
        "dag-processor": ["dag-processor"],
        "triggerer": ["triggerer", "--skip-serve-logs"],
    }
    cmds.update({k: v for k, v in (extra_commands or {}).items()})
    pids = {}
    for name, args in cmds.items():
        if name not in components and name not in (extra_commands or {}):
            continue
        cmd = [_airflow_bin(), *args]
        if name in SUPERVISED:  # the group leader is the supervisor; `down` stops the group all the same
            cmd = [sys.executable, str(Path(__file__).resolve()), "supervise", "--", *cmd]
        with open(home / "logs" / f"{name}.log", "ab") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen(
                cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        pids[name] = proc.pid
    _private_json(pids_file, {"pids": pids, "port": port, "started_at": time.time()})
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        h = health(port)
        if h and h.get("metadatabase", {}).get("status") == "healthy":
            break
        dead = [n for n, p in pids.items() if not _alive(p)]
        if dead:
            down(home)
            raise SystemExit(f"{', '.join(dead)} exited at start: see {home / 'logs'}")
        time.sleep(1)
    else:
        down(home)
        raise SystemExit(f"the API server did not answer on 127.0.0.1:{port} within {wait:.0f} s")
    return {
        "url": f"http://127.0.0.1:{port}",
        "user": "admin",
        "password": sec["admin_password"],
        "pids": pids,
    }


def supervise(cmd: list[str], *, max_restarts: int = 5, window: float = 600.0, delay: float = 2.0) -> int:
    """Run ``cmd`` and run it again when it exits with an error, at most ``max_restarts`` times within
    ``window`` seconds (then give up with its exit code). A clean exit, or a stop by signal, ends it. On
    SIGTERM (``down`` signals the whole process group) this waits for the child's own graceful exit."""
    from collections import deque

    stopping = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True  # the child got the same signal from the group; let it finish

    signal.signal(signal.SIGTERM, on_term)
    restarts: deque[float] = deque()
    name = " ".join(Path(c).name if i == 0 else c for i, c in enumerate(cmd[:2]))
    while True:
        proc = subprocess.Popen(cmd)
        while True:
            try:
                rc = proc.wait()
                break
            except InterruptedError:  # pragma: no cover - PEP 475 retries wait() itself
                continue
        if stopping or rc <= 0:
            return rc
        now = time.monotonic()
        while restarts and now - restarts[0] > window:
            restarts.popleft()
        if len(restarts) >= max_restarts:
            print(f"supervise: {name} exited with {rc}, {len(restarts)} restarts within {window:.0f} s: "
                  "giving up", flush=True)  # fmt: skip
            return rc
        restarts.append(now)
        print(f"supervise: {name} exited with {rc}; restarting in {delay:.0f} s "
              f"(restart {len(restarts)} of at most {max_restarts} within {window:.0f} s)", flush=True)  # fmt: skip
        time.sleep(delay)
        if stopping:
            return rc


def down(home: Path, *, grace: float = 20.0) -> list[int]:
    """Stop the process groups recorded at ``up`` (and only them): SIGTERM, then SIGKILL after ``grace``."""
    pids_file = home / "pids.json"
    if not pids_file.exists():
        return []
    pids = list(json.loads(pids_file.read_text())["pids"].values())
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)  # the group led by the process we started
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.3)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    pids_file.unlink()
    return pids


def status(home: Path) -> dict:
    pids_file = home / "pids.json"
    if not pids_file.exists():
        return {"running": False}
    info = json.loads(pids_file.read_text())
    procs = {n: {"pid": p, "alive": _alive(p)} for n, p in info["pids"].items()}
    return {"running": all(p["alive"] for p in procs.values()), "url": f"http://127.0.0.1:{info['port']}",
            "processes": procs, "health": health(info["port"])}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["supervise"]:  # supervise -- CMD...: what `up` runs the restartable components under
        cmd = argv[2:] if argv[1:2] == ["--"] else argv[1:]
        if not cmd:
            raise SystemExit("supervise: no command (supervise -- CMD ...)")
        return supervise(cmd)
    ap = argparse.ArgumentParser(prog="loopline-airflow", description=__doc__.split("\n")[0])
    ap.add_argument("command", choices=["up", "down", "status"])
    ap.add_argument(
        "--home", type=Path, default=PROJECT / ".airflow", help="AIRFLOW_HOME (default .airflow/)"
    )
    ap.add_argument("--port", type=int, default=int(os.environ.get("LOOPLINE_AIRFLOW_PORT", "8080")))
    ap.add_argument("--parallelism", type=int, default=default_parallelism())
    a = ap.parse_args(argv)
    home = a.home.resolve()
    if a.command == "up":
        info = up(home, port=a.port, parallelism=a.parallelism)
        print(f"Airflow is up: {info['url']}  (user admin, password {info['password']})")
        print(f"processes: {info['pids']}; logs in {home / 'logs'}; stop with `make airflow-down`")
    elif a.command == "down":
        stopped = down(home)
        print(f"stopped process groups {stopped}" if stopped else "Airflow is not running")
    else:
        print(json.dumps(status(home), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
