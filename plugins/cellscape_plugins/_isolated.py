"""Run a function in a fresh interpreter, so that a crash or a hang there becomes an error here.

Some libraries end the process instead of raising: TetGen aborts on some
surfaces, VTK segfaults when no off-screen OpenGL context can be made. The
plugins that call them go through :func:`isolated`: the function runs in a
fresh ``python -c`` child and this process lives on, whatever happens there.

The child is a fresh interpreter, not a multiprocessing "spawn" child: those
re-run the caller's ``__main__`` script, so a user script calling a method at
top level (no ``if __name__ == "__main__":``) would start itself again. It
finds cellscape and the plugins where this process imported them from (also
when they are not installed). Arguments and result travel through files of
one temporary folder: arrays in an ``.npz`` (read with ``allow_pickle=False``),
everything else as JSON; nothing is pickled and nothing is kept.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ChildDied", "isolated"]


class ChildDied(Exception):
    """The child process died (a signal or a non-zero exit) or ran out of time; ``reason`` says which."""

    def __init__(self, reason: str, timed_out: bool = False):
        super().__init__(reason if timed_out else f"crashed (its process {reason})")
        self.reason, self.timed_out = reason, timed_out


_CHILD = """
import importlib, json, sys
import numpy as np
from cellscape_plugins._isolated import _pack, _unpack
folder = sys.argv[1]
with open(folder + "/call.json") as f:
    call = json.load(f)
with np.load(folder + "/args.npz", allow_pickle=False) as stored:
    arrays = {name: stored[name] for name in stored.files}
function = importlib.import_module(call["module"])
for part in call["name"].split("."):
    function = getattr(function, part)
returned = {}
try:
    value = function(*_unpack(call["args"], arrays))
    result = {"status": "ok", "value": _pack(value, returned)}
except Exception as exc:
    result = {"status": "error", "type": type(exc).__name__, "message": str(exc)}
np.savez(folder + "/result.npz", **returned)
with open(folder + "/result.json", "w") as f:
    json.dump(result, f)
"""

#: exceptions a child's error comes back as (by name); any other becomes a RuntimeError with its type in the message
_RAISED_AS = {"RuntimeError": RuntimeError, "ValueError": ValueError, "MemoryError": MemoryError,
              "TypeError": TypeError, "OSError": OSError}


def _pack(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    """``value`` as JSON, its arrays moved into ``arrays`` (referenced by name); tuples and lists become lists."""
    if isinstance(value, np.ndarray):
        name = f"a{len(arrays)}"
        arrays[name] = value
        return {"__array__": name}
    if isinstance(value, (tuple, list)):
        return [_pack(v, arrays) for v in value]
    if isinstance(value, dict):
        return {"__dict__": [[k, _pack(v, arrays)] for k, v in value.items()]}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _unpack(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    """The inverse of :func:`_pack` (sequences come back as tuples)."""
    if isinstance(value, dict):
        if "__array__" in value:
            return arrays[value["__array__"]]
        return {k: _unpack(v, arrays) for k, v in value["__dict__"]}
    if isinstance(value, list):
        return tuple(_unpack(v, arrays) for v in value)
    return value


def isolated(function: Any, args: tuple, timeout_s: float, env: Mapping[str, str] | None = None) -> Any:
    """``function(*args)`` in a fresh child process: a crash or hang there is reported here, this process lives on.

    ``function`` must be importable by name (a module-level function); ``args`` and its result may hold numpy
    arrays, numbers, strings, sequences and dicts (sequences come back as tuples). An exception it raises is
    raised here (as its builtin type where that is a common one, else as RuntimeError naming the type). A crash
    (segfault, abort) or a run longer than ``timeout_s`` seconds raises :class:`ChildDied`. ``env``: variables
    set for the child on top of this process's environment.
    """
    with tempfile.TemporaryDirectory(prefix="cellscape-child-") as folder:
        work = Path(folder)
        arrays: dict[str, np.ndarray] = {}
        call = {"module": function.__module__, "name": function.__qualname__, "args": _pack(tuple(args), arrays)}
        np.savez(work / "args.npz", **arrays)
        (work / "call.json").write_text(json.dumps(call))
        environment = {**os.environ, "PYTHONPATH": _import_path(), **(env or {})}
        try:
            done = subprocess.run([sys.executable, "-c", _CHILD, folder], capture_output=True, timeout=timeout_s,
                                  check=False, env=environment)
        except subprocess.TimeoutExpired as exc:
            raise ChildDied(f"did not finish within timeout_s={timeout_s:g} s", timed_out=True) from exc
        taken = work / "result.json"
        if done.returncode != 0 or not taken.exists():
            raise ChildDied(_death(done))
        result = json.loads(taken.read_text())
        if result["status"] == "error":
            kind = _RAISED_AS.get(result["type"])
            raise kind(result["message"]) if kind else RuntimeError(f"{result['type']}: {result['message']}")
        with np.load(work / "result.npz", allow_pickle=False) as stored:
            returned = {name: np.array(stored[name]) for name in stored.files}
        return _unpack(result["value"], returned)


def _import_path() -> str:
    """PYTHONPATH for the child: where the plugins and cellscape were imported from (also when not installed)."""
    import cellscape

    roots = [Path(__file__).resolve().parents[1], Path(cellscape.__file__).resolve().parents[1]]
    return os.pathsep.join(dict.fromkeys([*map(str, roots), *filter(None, [os.environ.get("PYTHONPATH")])]))


def _death(done: subprocess.CompletedProcess) -> str:
    """How a child ended without a result: the signal that killed it, or its exit code, and its last line on stderr."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", done.stderr.decode(errors="replace"))  # e.g. VTK colours its log lines
    lines = [line for line in text.splitlines() if line.strip()]
    # a log line "date (time) [thread]file:line WARN| message" (VTK's) keeps its message, without object addresses
    last = re.sub(r" ?\(0x[0-9a-f]+\)", "", lines[-1].split("| ", 1)[-1]).strip()[-200:] if lines else ""
    if done.returncode < 0:
        try:
            name = signal.Signals(-done.returncode).name
        except ValueError:
            name = f"signal {-done.returncode}"
        return f"died of {name}" + (f" after: {last}" if last else "")
    return f"exited with code {done.returncode}" + (f": {last}" if last else "")
