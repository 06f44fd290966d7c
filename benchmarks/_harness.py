"""Run one measured call in a fresh Python process, so its time and peak memory are its own.

A benchmark module defines ``child(job: dict) -> dict`` and ends with
``if __name__ == "__main__": harness.child_main(child)``; the parent calls
``harness.run_child(__file__, job, folder)``. The child saves its result array
as ``folder/result.npy`` and returns its measurements (JSON) on stdout.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def memory_mb(field: str) -> float:
    """VmHWM (peak) or VmRSS (now) of this process from /proc; ru_maxrss would carry the parent's peak over exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1]) / 1024.0
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure(call: Callable[[], np.ndarray], folder: str | Path) -> dict[str, float]:
    """Time ``call`` and its peak memory above the process's resident size before it; save its result."""
    before = memory_mb("VmRSS")
    start = time.perf_counter()
    result = call()
    seconds = time.perf_counter() - start
    peak = memory_mb("VmHWM") - before
    np.save(Path(folder) / "result.npy", result)
    return {"seconds": seconds, "peak_mb": peak}


def run_child(script: str, job: dict[str, Any], folder: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Run ``script``'s child on ``job`` in a new interpreter; return its saved result and measurements."""
    job = {**job, "folder": str(folder)}
    done = subprocess.run([sys.executable, script, json.dumps(job)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark child failed for {job.get('name')}:\n{done.stderr[-3000:]}")
    return np.load(Path(folder) / "result.npy"), json.loads(done.stdout.strip().splitlines()[-1])


def child_main(child: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    print(json.dumps(child(json.loads(sys.argv[1]))))
