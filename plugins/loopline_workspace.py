"""Per-run DVC workspaces: the Airflow side of Loopline, with no Airflow and no ML import.

A DAG run gets its own workspace, ``<runs>/<dag_id>/<run_id>``: a ``git clone --shared`` of the
project's HEAD (its own .git, objects borrowed from the project's, so it is self-contained on a shared
volume and removing it is ``rm -rf``; the project's .git is only read), overlaid with the working tree's
current files (so it runs exactly the code the pipeline
environment has installed), whose DVC cache is the project's shared cache (``dvc cache dir --local``).
Two runs therefore never share DVC's repository lock (``.dvc/tmp/rwlock``) or an output path, and a stage
already run anywhere with the same deps, params and command is restored from the run-cache.

State that must accumulate across runs (landing, lake, quarantine) lives outside the workspaces, in the
*shared data* folders. A :class:`Binding` says how a stage's workspace path relates to a shared one:

- ``seed``: before the stage, files of the shared folder are copied (or hard-linked, read-only use) into
  the workspace path, optionally filtered (e.g. only the data interval's landing file and the lake's
  de-duplication window);
- ``publish``: after the stage, files the stage created, changed or deleted in the workspace path are
  applied to the shared folder, each by an atomic temp-file + rename.

So the per-run DVC outputs are a *view*: the run's inputs and its delta, cached and versioned by DVC in
the run's ``dvc.lock``; the shared lake is the accumulated result of every published delta.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PROJECT_ENV = "LOOPLINE_PROJECT_DIR"
RUNS_ENV = "LOOPLINE_RUNS_DIR"
VENV_ENV = "LOOPLINE_PIPELINE_VENV"
KEEP_ENV = "LOOPLINE_KEEP_WORKSPACES"
SHARED_ENV = {
    "landing": "LOOPLINE_LANDING",
    "lake": "LOOPLINE_LAKE",
    "quarantine": "LOOPLINE_QUARANTINE",
    # Handed from one DAG to the next: the model registry (train/retrain -> monitor), the accumulated
    # predictions (monitor), and the reports another DAG reads (register.json, the monitor's decision).
    "registry": "LOOPLINE_REGISTRY",
    "predictions": "LOOPLINE_PREDICTIONS",
    "reports": "LOOPLINE_REPORTS",
}
# Where a shared folder lives when its variable is unset (relative to the project): the paths `dvc repro` uses.
SHARED_DEFAULT = {"registry": "models/registry", "reports": "reports"}
RUN_RECORD = "airflow_run.json"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class ParamsRejected(ValueError):
    """The run's params overrides fail `loopline check-params`: a user error no retry can fix."""


@dataclass(frozen=True)
class Settings:
    """Where the project, its pipeline environment, the run workspaces and the shared data live."""

    project: Path
    venv: Path
    runs: Path
    shared: dict[str, Path]
    keep: int = 10

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        project = Path(env.get(PROJECT_ENV) or Path(__file__).resolve().parents[1]).resolve()
        venv = Path(env.get(VENV_ENV) or project / ".venv").resolve()
        runs = Path(env.get(RUNS_ENV) or project / "runs").resolve()
        shared = {
            k: Path(env.get(v) or project / SHARED_DEFAULT.get(k, f"data/{k}")).resolve()
            for k, v in SHARED_ENV.items()
        }
        keep = int(env.get(KEEP_ENV, "10"))
        if keep < 1:
            raise ValueError(f"{KEEP_ENV}={keep}: keep at least 1 workspace per DAG")
        return cls(project=project, venv=venv, runs=runs, shared=shared, keep=keep)


def safe_name(value: str) -> str:
    """A run id as a directory name: ``scheduled__2025-01-01T00:00:00+00:00`` -> ``scheduled__2025-01-01T00-00-00-00-00``."""
    name = _SAFE.sub("-", value).strip("-.")
    if not name:
        raise ValueError(f"run id {value!r} has no usable characters for a directory name")
    return name[:150]


def check_date(value: str) -> str:
    if not isinstance(value, str) or not _DATE.match(value):
        raise ValueError(f"date = {value!r}: expected YYYY-MM-DD")
    dt.date.fromisoformat(value)
    return value


@contextlib.contextmanager
def file_lock(path: Path, *, blocking: bool = True) -> Iterator[bool]:
    """An exclusive ``flock`` on ``path``; yields False (without waiting) when not blocking and held."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _git(project: Path, *args: str, cwd: Path | None = None) -> str:
    res = subprocess.run(
        ["git", *args], cwd=cwd or project, capture_output=True, text=True, check=False, timeout=300
    )
    if res.returncode:
        raise RuntimeError(f"git {' '.join(args)} in {cwd or project} failed: {res.stderr.strip()}")
    return res.stdout


def pipeline_env(settings: Settings) -> dict[str, str]:
    """The environment a stage runs in: the pipeline venv first on PATH, no Airflow interpreter leaking in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "_AIRFLOW"))}
    for k in ("VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH"):
        env.pop(k, None)
    env["PATH"] = f"{settings.venv / 'bin'}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    env["VIRTUAL_ENV"] = str(settings.venv)
    env.update(
        DVC_NO_ANALYTICS="1", GX_ANALYTICS_ENABLED="false", TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1"
    )
    return env


def run_logged(cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: float | None = None) -> str:
    """Run a command, streaming each output line to the log (the Airflow task log); fail with its tail."""
    log.info("$ %s  (in %s)", " ".join(cmd), cwd)
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    lines: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout if timeout else None
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        log.info("%s", lines[-1])
        if deadline and time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError(f"{cmd[:3]} took more than {timeout} s in {cwd}")
    rc = proc.wait()
    if rc:
        tail = "\n".join(lines[-20:])
        raise RuntimeError(f"{' '.join(cmd)} failed with exit code {rc} in {cwd}:\n{tail}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- workspaces


def workspace_path(settings: Settings, dag_id: str, run_id: str) -> Path:
    return settings.runs / safe_name(dag_id) / safe_name(run_id)


def _overlay_working_tree(project: Path, ws: Path) -> int:
    """Copy the working tree's tracked and untracked (not ignored) files over the clone of HEAD."""
    files = _git(project, "ls-files", "-z", "-c", "-o", "--exclude-standard").split("\0")
    deleted = set(_git(project, "ls-files", "-z", "-d").split("\0"))
    n = 0
    for rel in files:
        if not rel or rel in deleted or rel.startswith(("runs/", ".airflow/")):
            continue
        src, dst = project / rel, ws / rel
        if not src.is_file():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.exists() and dst.stat().st_size == src.stat().st_size and dst.read_bytes() == src.read_bytes():
            continue
        shutil.copy2(src, dst)
        n += 1
    for rel in deleted:
        if rel and (ws / rel).is_file():
            (ws / rel).unlink()
    return n


def set_params(params_file: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys (``synthetic.days``) in a params file; the pipeline validates it afterwards."""
    import yaml

    data = yaml.safe_load(params_file.read_text()) or {}
    for key, value in sorted(overrides.items()):
        if not isinstance(key, str) or not re.fullmatch(
            r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", key
        ):
            raise ValueError(f"params override key {key!r}: expected a dotted name such as 'synthetic.days'")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            if part not in node:  # the file holds only what differs from the defaults: add the section
                node[part] = {}
            if not isinstance(node[part], dict):
                raise ValueError(f"params override {key!r}: {part!r} is not a section of {params_file.name}")
            node = node[part]
        node[parts[-1]] = value
    params_file.write_text(yaml.safe_dump(data, sort_keys=False))
    return data


def ensure_workspace(
    settings: Settings,
    *,
    dag_id: str,
    run_id: str,
    run_record: dict[str, Any],
    params_overrides: dict[str, Any] | None = None,
) -> Path:
    """Create the run's workspace once (idempotent; safe under concurrent tasks and runs)."""
    ws = workspace_path(settings, dag_id, run_id)
    if not (settings.venv / "bin" / "dvc").exists():
        raise FileNotFoundError(
            f"pipeline environment not found: {settings.venv / 'bin' / 'dvc'} is missing; run `make venv` "
            f"in {settings.project} or set {VENV_ENV} to the pipeline venv"
        )
    with file_lock(ws.parent / f".{ws.name}.lock"):  # this run's tasks only; other runs go on in parallel
        if (ws / RUN_RECORD).exists():
            return ws
        if ws.exists():  # a half-made workspace from a crashed attempt
            _remove_workspace(settings, ws)
        ws.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        _git(settings.project, "clone", "--quiet", "--shared", str(settings.project), str(ws))
        copied = _overlay_working_tree(settings.project, ws)
        env = pipeline_env(settings)
        cache = settings.project / ".dvc" / "cache"
        subprocess.run(
            [str(settings.venv / "bin" / "dvc"), "cache", "dir", "--local", str(cache)],
            cwd=ws, env=env, check=True, capture_output=True, text=True,
        )  # fmt: skip
        if params_overrides:
            set_params(ws / "params.yaml", params_overrides)
            res = subprocess.run(
                [str(settings.venv / "bin" / "loopline"), "check-params", "--params", "params.yaml"],
                cwd=ws, env=env, capture_output=True, text=True, check=False,
            )  # fmt: skip
            if res.returncode:
                raise ParamsRejected(f"run params rejected for {dag_id}/{run_id}: {res.stderr.strip()}")
        record = {
            **run_record,
            "dag_id": dag_id,
            "run_id": run_id,
            "workspace": str(ws),
            "project": str(settings.project),
            "git_commit": _git(settings.project, "rev-parse", "HEAD").strip(),
            "working_tree_files_overlaid": copied,
            "params_overrides": params_overrides or {},
            "params_sha256": hashlib.sha256((ws / "params.yaml").read_bytes()).hexdigest(),
            "created_at": dt.datetime.now(dt.UTC).isoformat(),
        }
        (ws / RUN_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
        log.info(
            "workspace %s ready in %.2f s (%d working-tree files overlaid)",
            ws,
            time.monotonic() - started,
            copied,
        )
        prune_workspaces(settings, dag_id, keep=settings.keep, protect={ws})
    return ws


def _remove_workspace(settings: Settings, ws: Path) -> None:
    shutil.rmtree(ws, ignore_errors=True)
    (ws.parent / f".{ws.name}.lock").unlink(missing_ok=True)


def prune_workspaces(
    settings: Settings, dag_id: str, *, keep: int, protect: set[Path] = frozenset()
) -> list[Path]:  # type: ignore[assignment]
    """Keep the newest ``keep`` workspaces of a DAG; never remove one a running task holds."""
    base = settings.runs / safe_name(dag_id)
    if not base.is_dir():
        return []
    spaces = sorted(
        (p for p in base.iterdir() if p.is_dir() and (p / RUN_RECORD).exists()),
        key=lambda p: (p / RUN_RECORD).stat().st_mtime,
        reverse=True,
    )
    removed = []
    for ws in spaces[keep:]:
        if ws in protect:
            continue
        with file_lock(ws / ".loopline.lock", blocking=False) as free:
            if not free:
                continue
        _remove_workspace(settings, ws)
        removed.append(ws)
        log.info("removed old workspace %s (keeping %d)", ws, keep)
    return removed


# --------------------------------------------------------------------------- shared data bindings


def _snapshot(root: Path, *, content: bool = False) -> dict[str, str]:
    """Relative path -> content digest (``content``) or size only; DVC may re-link files and touch mtimes."""
    if not root.is_dir():
        return {}
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if content else str(p.stat().st_size)
    return out


def _atomic_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".{dst.name}.tmp-{os.getpid()}"
    shutil.copy2(src, tmp)
    os.replace(tmp, dst)


@dataclass
class Binding:
    """A workspace path (``data/lake``) bound to a shared folder (``lake``).

    ``select(rel_path) -> bool`` filters what is seeded; ``link`` hard-links instead of copying (for inputs
    the stage only reads); ``publish`` applies the stage's changes back to the shared folder. ``sub`` binds a
    subfolder of the shared folder (``reports`` + ``monitor``). ``symlink`` makes the workspace path a
    symlink to the shared folder itself, for state with its own atomic-update protocol that no DVC stage
    declares (the model registry: concurrent writers meet its generation check, not a last-copy-wins publish).
    """

    workspace_path: str
    shared: str
    sub: str = ""
    select: Callable[[str], bool] | None = None
    link: bool = False
    publish: bool = False
    required: bool = False
    select_doc: str = ""
    symlink: bool = False
    _before: dict[str, str] = field(default_factory=dict, repr=False)

    def seed(self, ws: Path, settings: Settings) -> int:
        src, dst = settings.shared[self.shared] / self.sub, ws / self.workspace_path
        if self.symlink:
            if dst.is_symlink() or dst.is_file():
                dst.unlink()
            elif dst.exists():
                shutil.rmtree(dst)
            src.mkdir(parents=True, exist_ok=True)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(src, target_is_directory=True)
            log.info("linked %s -> %s", self.workspace_path, src)
            return 0
        if dst.is_symlink():
            dst.unlink()
        elif dst.exists():
            shutil.rmtree(dst)
        dst.mkdir(parents=True)
        n = 0
        for rel in sorted(_snapshot(src)):
            if self.select is not None and not self.select(rel):
                continue
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            if self.link:
                try:
                    os.link(src / rel, dst / rel)
                except OSError:
                    shutil.copy2(src / rel, dst / rel)
            else:
                shutil.copy2(src / rel, dst / rel)
            n += 1
        if self.required and n == 0:
            raise FileNotFoundError(
                f"no input for {self.workspace_path} in {src} (selected by {self.select_doc or 'all'}): "
                "the files have not landed yet; the task retries, or load them and clear it"
            )
        self._before = _snapshot(dst, content=self.publish)
        log.info("seeded %s with %d file(s) from %s", self.workspace_path, n, src)
        return n

    def publish_changes(self, ws: Path, settings: Settings) -> dict[str, list[str]]:
        src, dst = ws / self.workspace_path, settings.shared[self.shared] / self.sub
        after = _snapshot(src, content=True)
        written = sorted(rel for rel, sig in after.items() if self._before.get(rel) != sig)
        deleted = sorted(set(self._before) - set(after))
        for rel in written:
            _atomic_copy(src / rel, dst / rel)
        for rel in deleted:
            with contextlib.suppress(FileNotFoundError):
                (dst / rel).unlink()
        log.info(
            "published %s -> %s: %d written, %d deleted", self.workspace_path, dst, len(written), len(deleted)
        )
        return {"written": written, "deleted": deleted}


def landing_for_date(date: str) -> Callable[[str], bool]:
    """Landing files of one day (the ETL CLI's ``--date`` rule: the date appears in the file name)."""
    check_date(date)
    return lambda rel: "/" not in rel and date in rel


def lake_window(date: str, *, lookback_days: int) -> Callable[[str], bool]:
    """The lake files an ETL run for ``date`` reads: the ledger and the partitions of its de-dup window."""
    day = dt.date.fromisoformat(check_date(date))
    keep = {f"date={(day + dt.timedelta(days=k)).isoformat()}/" for k in range(-lookback_days - 1, 2)}
    return lambda rel: rel.startswith("_etl/ledger/") or any(rel.startswith(k) for k in keep)


# --------------------------------------------------------------------------- DVC stages


def dvc_stages(ws: Path) -> list[str]:
    import yaml

    data = yaml.safe_load((ws / "dvc.yaml").read_text()) or {}
    return list((data.get("stages") or {}).keys())


def lock_digest(ws: Path, stage: str) -> tuple[str, dict[str, Any]]:
    """The sha256 of the workspace's dvc.lock and the stage's entry in it."""
    import yaml

    lock = ws / "dvc.lock"
    if not lock.exists():
        return "", {}
    raw = lock.read_bytes()
    entry = ((yaml.safe_load(raw) or {}).get("stages") or {}).get(stage, {})
    return hashlib.sha256(raw).hexdigest(), entry


def aws_env(login: str | None, password: str | None, extra: dict[str, Any]) -> dict[str, str]:
    """The stage environment for an Airflow AWS connection (the Amazon provider's fields): login = access key
    id, password = secret key; extras ``aws_session_token``, ``region_name`` and ``endpoint_url`` (or
    ``service_config.s3.endpoint_url``). Only what the connection sets; the AWS chain does the rest."""
    env: dict[str, str] = {}
    if login and password:
        env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = login, password
    if extra.get("aws_session_token"):
        env["AWS_SESSION_TOKEN"] = str(extra["aws_session_token"])
    if extra.get("region_name"):
        env["AWS_DEFAULT_REGION"] = str(extra["region_name"])
    endpoint = extra.get("endpoint_url") or ((extra.get("service_config") or {}).get("s3") or {}).get(
        "endpoint_url"
    )
    if endpoint:
        env["LOOPLINE_S3_ENDPOINT_URL"] = str(endpoint)
    return env


def run_stage(
    settings: Settings,
    ws: Path,
    stage: str,
    *,
    bindings: list[Binding] = (),  # type: ignore[assignment]
    timeout: float | None = None,
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run one DVC stage in a workspace (serialised within the run), seeding and publishing its bindings.
    ``extra_env`` (an Airflow connection's credentials) is added to the stage's environment only."""
    env = {**pipeline_env(settings), **(extra_env or {})}
    with file_lock(ws / ".loopline.lock"):
        for b in bindings:
            b.seed(ws, settings)
        started = time.monotonic()
        out = run_logged(
            [str(settings.venv / "bin" / "dvc"), "repro", "--single-item", stage],
            cwd=ws,
            env=env,
            timeout=timeout,
        )
        seconds = time.monotonic() - started
        published = {b.workspace_path: b.publish_changes(ws, settings) for b in bindings if b.publish}
        digest, entry = lock_digest(ws, stage)
    cached = "skipping run" in out or "didn't change" in out
    log.info(
        "stage %s %s in %.2f s; dvc.lock sha256=%s",
        stage,
        "restored/unchanged" if cached else "ran",
        seconds,
        digest,
    )
    outs = {o.get("path"): o.get("md5") for o in entry.get("outs", [])}
    log.info("stage %s outs: %s", stage, json.dumps(outs))
    return {
        "stage": stage,
        "workspace": str(ws),
        "seconds": round(seconds, 3),
        "cached": cached,
        "dvc_lock_sha256": digest,
        "outs": outs,
        "published": {
            k: {"written": len(v["written"]), "deleted": len(v["deleted"])} for k, v in published.items()
        },
        "published_files": published,
    }
