"""Container health checks for the Airflow components (stdlib only; the slim image has no curl).

python healthcheck.py api | scheduler | dag-processor | triggerer | worker
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request

JOBS = {"scheduler": "SchedulerJob", "dag-processor": "DagProcessorJob", "triggerer": "TriggererJob"}


def main(component: str) -> int:
    if component == "api":
        port = os.environ.get("AIRFLOW__API__PORT", "8080")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=10) as r:
            return 0 if json.loads(r.read())["metadatabase"]["status"] == "healthy" else 1
    if component in JOBS:
        cmd = ["airflow", "jobs", "check", "--job-type", JOBS[component], "--local"]
        return subprocess.run(cmd, capture_output=True, timeout=60).returncode
    if component == "worker":
        app = "airflow.providers.celery.executors.celery_executor.app"
        cmd = ["celery", "--app", app, "inspect", "ping", "-d", f"celery@{socket.gethostname()}"]
        return subprocess.run(cmd, capture_output=True, timeout=60).returncode
    print(f"unknown component {component!r}: expected api, {', '.join(JOBS)} or worker", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else "api"))
