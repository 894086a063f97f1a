"""Helpers shared by the benchmark scripts: timing, peak RSS, result files."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def timed(
    fn: Callable[[], Any], *, repeat: int = 1, setup: Callable[[], Any] | None = None
) -> dict[str, float]:
    """Wall and CPU seconds of ``fn`` over ``repeat`` runs (``setup`` runs untimed before each)."""
    walls, cpus = [], []
    for _ in range(repeat):
        if setup is not None:
            setup()
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return {
        "wall_s": statistics.median(walls),
        "cpu_s": statistics.median(cpus),
        "runs": repeat,
        "wall_all_s": [round(w, 4) for w in walls],
    }


def peak_rss_mb() -> float:
    """This process's peak RSS. /proc's VmHWM restarts at exec; ru_maxrss on Linux keeps the parent's
    peak from before the exec, which would charge a benchmark driver's memory to its subprocesses."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_result(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    payload = {
        "benchmark": name,
        "machine": machine(),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **payload,
    }
    out.write_text(json.dumps(payload, indent=2) + "\n")
    return out


def table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    widths = {c: max(len(c), *(len(f"{r.get(c, '')}") for r in rows)) for c in cols}
    head = "  ".join(c.ljust(widths[c]) for c in cols)
    lines = [head, "  ".join("-" * widths[c] for c in cols)]
    lines += ["  ".join(f"{r.get(c, '')}".ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(lines)
