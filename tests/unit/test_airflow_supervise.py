"""The local launcher's supervisor restarts a component that exits on an error, within limits, and stops
with it on SIGTERM (real child processes; no Airflow needed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "plugins"))

import loopline_airflow_local as launcher  # noqa: E402

FLAKY = """
import sys
from pathlib import Path
runs = Path(sys.argv[1])
n = int(runs.read_text()) + 1 if runs.exists() else 1
runs.write_text(str(n))
sys.exit(0 if n >= int(sys.argv[2]) else 3)
"""


def test_a_component_that_fails_twice_is_restarted_until_it_exits_cleanly(tmp_path, capsys):
    runs = tmp_path / "runs"
    rc = launcher.supervise([sys.executable, "-c", FLAKY, str(runs), "3"], delay=0.0)
    assert rc == 0 and runs.read_text() == "3"
    out = capsys.readouterr().out
    assert out.count("exited with 3; restarting") == 2 and "restart 2 of at most 5" in out


def test_a_component_that_keeps_failing_is_given_up_with_its_exit_code(tmp_path, capsys):
    runs = tmp_path / "runs"
    rc = launcher.supervise([sys.executable, "-c", FLAKY, str(runs), "99"], max_restarts=2, delay=0.0)
    assert rc == 3 and runs.read_text() == "3"  # the first run and two restarts
    assert "giving up" in capsys.readouterr().out


def test_sigterm_to_the_group_stops_child_and_supervisor_without_a_restart(tmp_path):
    script = "import time, pathlib, sys; pathlib.Path(sys.argv[1]).write_text('up'); time.sleep(60)"
    marker = tmp_path / "up"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "plugins" / "loopline_airflow_local.py"), "supervise", "--",
         sys.executable, "-c", script, str(marker)],
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.exists()
        marker.unlink()
        os.killpg(proc.pid, signal.SIGTERM)  # as `down` does
        proc.wait(timeout=30)  # TimeoutExpired if the supervisor outlived its stopped child
        time.sleep(0.5)
        assert not marker.exists()  # not started again
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
