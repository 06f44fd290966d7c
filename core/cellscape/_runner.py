"""The runner: executes a validated spec step by step, with caching and provenance.

For each step, in dependency order, the runner computes a cache key from the
method name, the plugin and method versions, the parameters and the content
hashes of the inputs. A key already in the store is a cache hit: nothing is
recomputed. Otherwise the method runs, its outputs go into the
content-addressed store, and only then is the key recorded. Changing one
parameter therefore recomputes that step and whatever its new outputs feed.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs

from ._data import Artefact
from ._errors import CellscapeError, InputError, StepError
from ._params import build_params, params_to_json
from ._payload import atomic_write
from ._progress import RichProgress, showing_progress
from ._registry import Registry, get_registry
from ._spec import Spec, Step, load_spec
from ._store import Store, cache_key, file_hash

__all__ = ["RunResult", "Runner", "StepPlan", "run_spec"]


@attrs.frozen
class StepPlan:
    """What a run would do with one step, and why."""

    step: str
    method: str
    status: str  # "cached" | "run"
    reason: str
    key: str | None


@attrs.frozen
class RunResult:
    """What ``cs.run`` returns: where things are and what each step produced."""

    run_dir: Path
    provenance: dict[str, Any]
    outputs: dict[str, dict[str, str]]  # step -> output -> artefact hash
    saved: list[Path]
    report: Path | None
    store: Store

    def artefact(self, step: str, output: str | None = None) -> Artefact:
        """Load an output of a step (its only output when ``output`` is None)."""
        outs = self.outputs[step]
        if output is None:
            if len(outs) != 1:
                raise KeyError(f"step '{step}' has outputs {list(outs)}: name one")
            output = next(iter(outs))
        return self.store.get(outs[output])

    @property
    def computed(self) -> list[str]:
        return [s["id"] for s in self.provenance["steps"] if s["status"] == "computed"]

    @property
    def cached(self) -> list[str]:
        return [s["id"] for s in self.provenance["steps"] if s["status"] == "cached"]


def default_run_dir(spec: Spec) -> Path:
    return Path.cwd() / "cellscape-runs" / spec.name


class Runner:
    """Runs one spec in one run directory."""

    def __init__(self, spec: Spec, run_dir: str | os.PathLike[str] | None = None,
                 registry: Registry | None = None):
        self.spec = spec
        self.registry = registry or get_registry()
        self.run_dir = Path(run_dir) if run_dir is not None else default_run_dir(spec)
        self.store = Store(self.run_dir / "store")
        self._file_hashes: dict[Path, str] = {}

    # -- keys -----------------------------------------------------------------
    def _input_hash(self, step: Step, name: str, hashes: dict[str, dict[str, str]]) -> str | None:
        ref = step.inputs[name]
        if ref.file is not None:
            if ref.file not in self._file_hashes:
                self._file_hashes[ref.file] = "file:" + file_hash(ref.file)
            return self._file_hashes[ref.file]
        return hashes.get(ref.step, {}).get(ref.output)  # type: ignore[arg-type]

    def _key(self, step: Step, hashes: dict[str, dict[str, str]]) -> str | None:
        entry = self.registry.get(step.use)
        params = params_to_json(build_params(entry.cls.Params, step.params, where=step.id))
        inputs = {}
        for name in sorted(step.inputs):
            digest = self._input_hash(step, name, hashes)
            if digest is None:
                return None
            inputs[name] = digest
        return cache_key(step.use, entry.cache_version, params, inputs)

    def plan(self, force: Iterable[str] = ()) -> list[StepPlan]:
        """Which steps are cached and which would run, and why (nothing is computed)."""
        forced = self._forced(force)
        hashes: dict[str, dict[str, str]] = {}
        plans = []
        for step in self.spec.steps:
            key = self._key(step, hashes)
            if key is None:
                waiting = [r.step for r in step.inputs.values() if r.step is not None and r.step not in hashes]
                plans.append(StepPlan(step.id, step.use, "run", f"input from step '{waiting[0]}' will be computed", None))
                continue
            entry = self.store.lookup(key)
            if step.id in forced:
                plans.append(StepPlan(step.id, step.use, "run", "forced (--force)", key))
            elif entry is None:
                plans.append(StepPlan(step.id, step.use, "run", "no cached result for these parameters and inputs", key))
            else:
                plans.append(StepPlan(step.id, step.use, "cached", "same method, version, parameters and inputs", key))
            if entry is not None and step.id not in forced:
                hashes[step.id] = {name: out["hash"] for name, out in entry["outputs"].items()}
        return plans

    def _forced(self, force: Iterable[str]) -> set[str]:
        forced = set(force)
        if "all" in forced:
            return {s.id for s in self.spec.steps}
        unknown = forced - {s.id for s in self.spec.steps}
        if unknown:
            raise InputError(f"--force: no step named {', '.join(sorted(unknown))} in {self.spec.path}")
        return forced

    # -- running ----------------------------------------------------------------
    def _load_input(self, step: Step, name: str, hashes: dict[str, dict[str, str]]) -> Artefact:
        from .io import read

        ref = step.inputs[name]
        kind = self.registry.get(step.use).cls.input_ports()[name].kind
        if ref.file is not None:
            try:
                return read(ref.file, kind=kind)
            except InputError as exc:
                raise InputError(f"step '{step.id}', input '{name}': {exc}") from exc
        return self.store.get(hashes[ref.step][ref.output], verify=False)  # type: ignore[index]

    def _save(self, step: Step, outputs: dict[str, str], saves_index: dict[str, str]) -> list[Path]:
        from .io import write

        saved = []
        for name, target in step.save.items():
            path = Path(target) if Path(target).is_absolute() else self.run_dir / target  # relative to the run
            digest = outputs[name]
            if saves_index.get(str(path)) == digest and path.exists():
                saved.append(path)
                continue
            artefact = self.store.get(digest, verify=False)
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write into a private folder, then move every file written (formats may add side files).
            with tempfile.TemporaryDirectory(prefix=".save-", dir=path.parent) as tmp:
                write(artefact, Path(tmp) / path.name)
                for produced in sorted(Path(tmp).iterdir()):
                    destination = path.parent / produced.name
                    if destination.is_dir():
                        shutil.rmtree(destination)
                    os.replace(produced, destination)
            saves_index[str(path)] = digest
            saved.append(path)
        return saved

    def run(self, force: Iterable[str] = (), quiet: bool = True, report: bool = True) -> RunResult:
        """Run every step; return a RunResult. Raises StepError if a method fails."""
        forced = self._forced(force)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.store.clean_temporaries()
        saves_path = self.run_dir / ".saved.json"
        saves_index: dict[str, str] = json.loads(saves_path.read_text()) if saves_path.exists() else {}
        provenance = self._provenance_header()
        hashes: dict[str, dict[str, str]] = {}
        saved: list[Path] = []
        sink = contextlib.nullcontext() if quiet else RichProgress()
        with sink as display, showing_progress(display):  # type: ignore[arg-type]
            steps = self.spec.steps
            for step in steps:
                record = self._run_step(step, hashes, forced, quiet)
                provenance["steps"].append(record)
                step_saved = self._save(step, hashes[step.id], saves_index)
                record["saved"] = [str(p) for p in step_saved]
                saved += step_saved
                self._write_provenance(provenance)
        atomic_write(saves_path, lambda tmp: tmp.write_text(json.dumps(saves_index, indent=1, sort_keys=True)))
        provenance["finished"] = time.time()
        provenance["wall_time_s"] = round(provenance["finished"] - provenance["started"], 3)
        self._write_provenance(provenance)
        report_path = None
        if report:
            from ._report import build_report

            report_path = build_report(self.run_dir, registry=self.registry)
        return RunResult(self.run_dir, provenance, hashes, saved, report_path, self.store)

    def _run_step(self, step: Step, hashes: dict[str, dict[str, str]], forced: set[str], quiet: bool) -> dict[str, Any]:
        entry = self.registry.get(step.use)
        params = build_params(entry.cls.Params, step.params, where=step.id)
        params_json = params_to_json(params)
        key = self._key(step, hashes)
        assert key is not None  # every upstream step has run by now
        input_hashes = {name: self._input_hash(step, name, hashes) for name in sorted(step.inputs)}
        record: dict[str, Any] = {
            "id": step.id, "method": step.use, "distribution": entry.distribution,
            "version": entry.cache_version, "params": params_json,
            "seeds": {k: v for k, v in params_json.items() if "seed" in k},
            "inputs": {name: {"from": ref.describe(), "hash": input_hashes[name]} for name, ref in step.inputs.items()},
            "key": key,
        }
        cached = None if step.id in forced else self.store.lookup(key)
        if cached is not None:
            hashes[step.id] = {name: out["hash"] for name, out in cached["outputs"].items()}
            record.update(status="cached", outputs=cached["outputs"], time_s=cached.get("time_s"))
            if not quiet:
                print(f"  ✓ {step.id:<20} {step.use:<28} cached", file=sys.stderr)
            return record
        inputs = {name: self._load_input(step, name, hashes) for name in step.inputs}
        method = entry.cls(params)
        if not quiet:
            print(f"  … {step.id:<20} {step.use:<28} running", file=sys.stderr)
        start = time.perf_counter()
        try:
            method._check_inputs(inputs)
            outputs = method._check_outputs(method.run(**inputs))
        except CellscapeError as exc:
            raise StepError(step.id, step.use, exc) from exc
        except Exception as exc:  # a plugin's bug: report which step and method
            raise StepError(step.id, step.use, exc) from exc
        elapsed = time.perf_counter() - start
        stored = {name: {"hash": self.store.put(a), "kind": a.kind} for name, a in outputs.items()}
        self.store.record(key, {"step": step.id, "method": step.use, "outputs": stored, "time_s": round(elapsed, 4)})
        hashes[step.id] = {name: out["hash"] for name, out in stored.items()}
        record.update(status="computed", outputs=stored, time_s=round(elapsed, 4))
        if not quiet:
            print(f"  ✓ {step.id:<20} {step.use:<28} {elapsed:7.2f} s", file=sys.stderr)
        return record

    def _provenance_header(self) -> dict[str, Any]:
        from . import __version__

        return {
            "cellscape": __version__,
            "spec": {"path": str(self.spec.path), "sha256": self.spec.sha256, "name": self.spec.name,
                     "text": self.spec.text},
            "run_dir": str(self.run_dir.resolve()),
            "host": {"hostname": socket.gethostname(), "platform": platform.platform(),
                     "python": platform.python_version(), "cpus": os.cpu_count()},
            "plugins": {name: {"distribution": d, "version": v} for name, (d, v) in sorted(self.registry.plugins.items())},
            "started": time.time(),
            "steps": [],
        }

    def _write_provenance(self, provenance: dict[str, Any]) -> None:
        text = json.dumps(provenance, indent=1, sort_keys=False, default=str)
        atomic_write(self.run_dir / "provenance.json", lambda tmp: tmp.write_text(text))


def run_spec(spec: str | os.PathLike[str] | Spec, run_dir: str | os.PathLike[str] | None = None,
             force: Iterable[str] = (), quiet: bool = True, report: bool = True) -> RunResult:
    """Load, validate and run a spec file (what ``cs.run`` and ``cellscape run`` do)."""
    loaded = spec if isinstance(spec, Spec) else load_spec(spec)
    return Runner(loaded, run_dir).run(force=force, quiet=quiet, report=report)
