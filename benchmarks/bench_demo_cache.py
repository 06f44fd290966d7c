"""The demo pipeline: a first run against a second run with nothing changed (the cache).

Peer: the same spec's first run in the same process. The README promises
that a rerun with nothing changed costs under 10% of the first run.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import cellscape as cs

SPEC = Path(__file__).resolve().parents[1] / "spec" / "examples" / "demo.yaml"


def run() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        first = cs.run(SPEC, run_dir=Path(tmp) / "run")
        first_s = time.perf_counter() - start
        start = time.perf_counter()
        second = cs.run(SPEC, run_dir=Path(tmp) / "run")
        second_s = time.perf_counter() - start
    rows = [
        {"run": "first (computes every step, builds the report)", "steps computed": len(first.computed),
         "wall time [s]": first_s, "ratio to first": 1.0},
        {"run": "second (nothing changed)", "steps computed": len(second.computed),
         "wall time [s]": second_s, "ratio to first": second_s / first_s},
    ]
    return {
        "title": "Demo pipeline: cost of a rerun with nothing changed",
        "setup": f"`{SPEC.relative_to(SPEC.parents[2])}`, report included, in-process (`cs.run`).",
        "rows": rows,
        "notes": "Target: second run ≤ 10% of the first.",
    }
