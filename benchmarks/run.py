"""Run the benchmarks and write their tables to benchmarks/results/.

Each ``bench_*.py`` module beside this file has a ``run() -> Result``. Speed
is always reported as a ratio against a named peer measured on the same
input in the same run, never as an absolute pass/fail time.

    python benchmarks/run.py [NAME ...]      # all benchmarks, or those whose name contains NAME
"""

from __future__ import annotations

import importlib.util
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
RESULTS = HERE / "results"


def _markdown(result: dict) -> str:
    rows = result["rows"]
    names = list(rows[0]) if rows else []
    lines = [f"# {result['title']}", "", result.get("setup", ""), ""]
    lines.append("| " + " | ".join(names) + " |")
    lines.append("|" + "---|" * len(names))
    for row in rows:
        cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    if result.get("notes"):
        lines += ["", result["notes"]]
    lines += ["", f"_Measured {time.strftime('%Y-%m-%d')} on {platform.node()} ({platform.processor() or platform.machine()}, "
              f"Python {platform.python_version()})._", ""]
    return "\n".join(lines)


def main(filters: list[str]) -> int:
    RESULTS.mkdir(exist_ok=True)
    for path in sorted(HERE.glob("bench_*.py")):
        name = path.stem.removeprefix("bench_")
        if filters and not any(f in name for f in filters):
            continue
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        print(f"benchmark {name} ...", flush=True)
        result = module.run()
        text = _markdown(result)
        (RESULTS / f"{name}.md").write_text(text)
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
