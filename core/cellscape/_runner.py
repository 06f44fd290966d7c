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

from ._data import Artefact, Table
from ._errors import InputError, StepError
from ._executor import Executor, ExecutorConfig, InputFileError, compute_chunked_step, compute_step, make_executor
from ._mpi import patient_bcast, rank_alone
from ._params import build_params, params_to_json
from ._payload import atomic_write
from ._progress import RichProgress, showing_progress
from ._registry import Registry, get_registry
from ._spec import Spec, Step, Sweep, SweepMember, load_spec
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
    member_outputs: list[dict[str, dict[str, str]]] = attrs.field(factory=list)  # per sweep member
    sweep_table: Table | None = None

    def artefact(self, step: str, output: str | None = None, member: int | None = None) -> Artefact:
        """Load an output of a step (its only output when ``output`` is None; of sweep member ``member``)."""
        if member is None and not self.outputs and self.member_outputs:
            raise KeyError("this run is a sweep: name the member (member=0, 1, ...)")
        outs = self.outputs[step] if member is None else self.member_outputs[member][step]
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


@attrs.define
class _MemberState:
    """Progress of one pipeline (the run itself, or one sweep member) during a run."""

    index: int | None
    spec: Spec
    run_dir: Path
    remaining: list[Step] = attrs.field(init=False)
    hashes: dict[str, dict[str, str]] = attrs.field(factory=dict)
    records: list[dict[str, Any]] = attrs.field(factory=list)

    def __attrs_post_init__(self) -> None:
        self.remaining = list(self.spec.steps)


def _sweep_figure(table: Table, sweep: Sweep, path: Path) -> Path | None:
    """Each gathered number against the first swept value (members of other values as separate lines)."""
    import numpy as np

    from ._payload import atomic_write

    first = sweep.keys[0]
    if table.columns[first].dtype.kind not in "fiub":
        return None
    gathered = [n for n in table.columns if n not in ("member", *sweep.keys) and table.columns[n].dtype.kind in "fiub"]
    if not gathered:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(gathered[:6])
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.2), squeeze=False)
    others = [k for k in sweep.keys[1:]]
    groups = (np.unique(np.stack([table.columns[k].astype(str) for k in others], axis=1), axis=0, return_inverse=True)[1]
              if others else np.zeros(table.n_rows, int))
    for ax, name in zip(axes[0], gathered[:6], strict=False):
        for group in np.unique(groups):
            rows = np.flatnonzero(groups == group)
            rows = rows[np.argsort(table.columns[first][rows])]
            label = ", ".join(f"{k}={table.columns[k][rows[0]]}" for k in others) or None
            ax.plot(table.columns[first][rows], table.columns[name][rows], "o-", ms=3, label=label)
        unit = table.units.get(name, "")
        ax.set_xlabel(first)
        ax.set_ylabel(f"{name} [{unit}]" if unit else name)
        if others and len(np.unique(groups)) <= 8:
            ax.legend(fontsize=6)
    fig.suptitle(table.title, fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path


def default_run_dir(spec: Spec) -> Path:
    return Path.cwd() / "cellscape-runs" / spec.name


class Runner:
    """Runs one spec in one run directory."""

    def __init__(self, spec: Spec, run_dir: str | os.PathLike[str] | None = None,
                 registry: Registry | None = None, executor: ExecutorConfig | None = None):
        self.spec = spec
        self.executor_config = executor or ExecutorConfig.from_mapping(spec.executor)
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
        if step.chunks is not None:  # chunked results equal the whole array's to float tolerance, not bit for bit
            params = {**params, "__chunks__": list(step.chunks)}
        return cache_key(step.use, entry.cache_version, params, inputs)

    def plan(self, force: Iterable[str] = ()) -> list[StepPlan]:
        """Which steps are cached and which would run, and why (nothing is computed)."""
        return self._plan(self.spec, self._forced(force))

    def plan_members(self, force: Iterable[str] = ()) -> list[tuple[SweepMember, list[StepPlan]]]:
        """The plan of every sweep member (an error for a spec without ``sweep:``)."""
        if self.spec.sweep is None:
            raise InputError(f"{self.spec.path}: no sweep: block, so no members to plan")
        forced = self._forced(force)
        return [(member, self._plan(member.spec, forced)) for member in self.spec.sweep.members]

    def _plan(self, spec: Spec, forced: set[str]) -> list[StepPlan]:
        hashes: dict[str, dict[str, str]] = {}
        plans = []
        for step in spec.steps:
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

    def _save(self, step: Step, outputs: dict[str, str], saves_index: dict[str, str], base: Path) -> list[Path]:
        from .io import write

        saved = []
        for name, target in step.save.items():
            path = Path(target) if Path(target).is_absolute() else base / target  # relative to the run (or member)
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

    def run(self, force: Iterable[str] = (), quiet: bool = True, report: bool = True,
            executor: Executor | None = None) -> RunResult:
        """Run every step (of every sweep member); return a RunResult. Raises StepError if a method fails.

        Steps whose inputs are ready run concurrently when the executor has
        more than one worker (``executor:`` in the spec, or ``executor=``);
        steps with the same cache key, e.g. the shared upstream part of sweep
        members, are computed once.
        """
        from ._mpi import world

        forced = self._forced(force)
        comm = world()
        self._root = comm is None or comm.Get_rank() == 0
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self._root:
            self.store.clean_temporaries()
        if comm is not None:
            comm.Barrier()  # no rank reads the store while rank 0 tidies it
        saves_path = self.run_dir / ".saved.json"
        saves_index: dict[str, str] = json.loads(saves_path.read_text()) if saves_path.exists() else {}
        provenance = self._provenance_header()
        sweep = self.spec.sweep
        members = [_MemberState(None, self.spec, self.run_dir)] if sweep is None else [
            _MemberState(m.index, m.spec, self.run_dir / "members" / f"{m.index:03d}") for m in sweep.members]
        own = executor is None and comm is None
        if comm is not None:
            executor = None
            provenance["executor"] = {"type": "mpi", "ranks": comm.Get_size()}
        elif executor is None:
            executor = make_executor(self.executor_config)
        if executor is not None:
            provenance["executor"] = executor.describe()
        sink = contextlib.nullcontext() if quiet or not self._root else RichProgress()
        try:
            with sink as display, showing_progress(display):  # type: ignore[arg-type]
                if comm is not None:
                    self._schedule_mpi(members, forced, quiet, comm, provenance, saves_index)
                else:
                    self._schedule(members, forced, quiet, executor, provenance, saves_index)  # type: ignore[arg-type]
        finally:
            if own:
                executor.close()  # type: ignore[union-attr]
            if self._root:
                atomic_write(saves_path, lambda tmp: tmp.write_text(json.dumps(saves_index, indent=1, sort_keys=True)))
        saved = [Path(p) for state in members for record in state.records for p in record.get("saved", [])]
        sweep_table = None
        if not self._root:  # the other MPI ranks: the same hashes, nothing written
            return RunResult(self.run_dir, provenance, members[0].hashes if sweep is None else {}, [], None, self.store,
                             [m.hashes for m in members] if sweep is not None else [], None)
        if sweep is not None:
            sweep_table, sweep_files = self._gather(members, sweep)
            provenance["sweep"] = {
                "mode": sweep.mode, "keys": sweep.keys, "gather": sweep.gather_step,
                "members": [{"index": m.index, "values": m.values,
                             "computed": [r["id"] for r in state.records if r["status"] == "computed"]}
                            for m, state in zip(sweep.members, members, strict=True)],
                "files": [str(p) for p in sweep_files],
            }
            saved += sweep_files
        provenance["finished"] = time.time()
        provenance["wall_time_s"] = round(provenance["finished"] - provenance["started"], 3)
        self._write_provenance(provenance)
        report_path = None
        if report:
            from ._report import build_report

            report_path = build_report(self.run_dir, registry=self.registry)
        outputs = members[0].hashes if sweep is None else {}
        return RunResult(self.run_dir, provenance, outputs, saved, report_path, self.store,
                         [m.hashes for m in members] if sweep is not None else [], sweep_table)

    def _schedule(self, members: list[_MemberState], forced: set[str], quiet: bool, executor: Executor,
                  provenance: dict[str, Any], saves_index: dict[str, str]) -> None:
        """Submit every step whose inputs are ready; record results as they arrive; stop at the first failure."""
        inflight: dict[str, Any] = {}  # cache key -> future
        waiters: dict[str, list[tuple[_MemberState, Step, dict[str, Any]]]] = {}
        done_in_run: dict[str, dict[str, Any]] = {}  # cache key -> entry computed by this run
        failure: StepError | InputError | None = None
        order = {(state.index, step.id): n for n, (state, step) in
                 enumerate((state, step) for state in members for step in state.spec.steps)}

        def finish(state: _MemberState, step: Step, record: dict[str, Any], entry: dict[str, Any], status: str) -> None:
            where = {k: entry[k] for k in ("worker", "started", "finished", "chunks") if k in entry}
            self._finish(state, step, record, entry, status, where, "", provenance, order, saves_index, quiet)

        while True:
            progressed = failure is None
            while progressed:
                progressed = False
                for state in members:
                    for step in list(state.remaining):
                        if any(up not in state.hashes for up in step.upstream()):
                            continue
                        state.remaining.remove(step)
                        progressed = True
                        key = self._key(step, state.hashes)
                        assert key is not None  # every upstream step has finished
                        record = self._record(step, key, state)
                        cached = None if step.id in forced else self.store.lookup(key)
                        if key in done_in_run:
                            finish(state, step, record, done_in_run[key], "cached")
                        elif key in inflight:
                            waiters[key].append((state, step, record))
                        elif cached is not None:
                            finish(state, step, record, cached, "cached")
                        else:
                            if not quiet:
                                where = "" if state.index is None else f"[{state.index:03d}] "
                                print(f"  … {where}{step.id:<20} {step.use:<28} running", file=sys.stderr)
                            waiters[key] = [(state, step, record)]
                            inflight[key] = self._submit(executor, step, state)
            if not inflight:
                break
            keys_of = {id(future): key for key, future in inflight.items()}
            for future in executor.wait_any(inflight.values()):
                key = keys_of[id(future)]
                del inflight[key]
                state, step, _ = waiters[key][0]
                try:
                    result = executor.result(future)
                except InputFileError as exc:  # a file named in the spec: the user's to fix
                    failure = failure or InputError(f"step '{step.id}', {exc}")
                    failure.__cause__ = failure.__cause__ or exc
                    waiters.pop(key)
                    continue
                except Exception as exc:  # the method's error (or a plugin's bug): name the step
                    failure = failure or StepError(step.id, step.use, exc)
                    failure.__cause__ = failure.__cause__ or exc
                    waiters.pop(key)
                    continue
                entry = {"step": step.id, "method": step.use, **result}
                self.store.record(key, entry)
                done_in_run[key] = entry
                for n, (state, step, record) in enumerate(waiters.pop(key)):
                    finish(state, step, record, entry, "computed" if n == 0 else "cached")
        if failure is not None:
            raise failure

    def _schedule_mpi(self, members: list[_MemberState], forced: set[str], quiet: bool, comm: Any,
                      provenance: dict[str, Any], saves_index: dict[str, str]) -> None:
        """One step after another on every rank: rank 0 decides and broadcasts; collective methods run everywhere."""
        rank = comm.Get_rank()
        order = {(state.index, step.id): n for n, (state, step) in
                 enumerate((state, step) for state in members for step in state.spec.steps)}
        done_in_run: dict[str, dict[str, Any]] = {}
        for state in members:
            for step in state.spec.steps:
                key = self._key(step, state.hashes)
                assert key is not None
                record = self._record(step, key, state)
                entry_cls = self.registry.get(step.use).cls
                collective = entry_cls(build_params(entry_cls.Params, step.params, where=step.id)).runs_collectively()
                decision: tuple[str, Any] = ("", None)
                if rank == 0:
                    cached = done_in_run.get(key) or (None if step.id in forced else self.store.lookup(key))
                    if cached is not None:
                        decision = ("cached", cached)
                    elif collective:
                        decision = ("collective", None)
                    else:
                        decision = ("root", self._mpi_compute(step, state, store_outputs=True, collective=False))
                status, entry = patient_bcast(comm, decision)
                if status == "collective":
                    mine = self._mpi_compute(step, state, store_outputs=rank == 0, collective=True)
                    results = comm.gather(mine, root=0)
                    if rank == 0:
                        failed = [r for r in results if "error" in r]
                        mine = failed[0] if failed else mine
                    status, entry = patient_bcast(comm, ("computed", mine))
                elif status == "root":
                    status = "computed"
                if "error" in entry:
                    raise StepError(step.id, step.use, RuntimeError(entry["error"]))
                if status == "computed" and rank == 0:
                    self.store.record(key, {"step": step.id, "method": step.use, **entry})
                    done_in_run[key] = entry
                how = f" on {comm.Get_size()} ranks" if collective else " on rank 0"
                self._finish(state, step, record, entry, status, {"ranks": comm.Get_size() if collective else 1}, how,
                             provenance, order, saves_index, quiet)

    def _finish(self, state: _MemberState, step: Step, record: dict[str, Any], entry: dict[str, Any], status: str,
                where: dict[str, Any], how: str, provenance: dict[str, Any], order: dict[tuple[Any, str], int],
                saves_index: dict[str, str], quiet: bool) -> None:
        """Record a finished (computed or cached) step: its hashes, its provenance record, its saved files, a line.

        ``where`` (worker, times, MPI ranks) goes into the record of a computed step, ``how`` after its time.
        Only the process that owns the run (rank 0 under MPI) saves files, writes provenance and prints.
        """
        state.hashes[step.id] = {name: out["hash"] for name, out in entry["outputs"].items()}
        record.update(status=status, outputs=entry["outputs"], time_s=entry.get("time_s"))
        if status == "computed":
            record.update(where)
        state.records.append(record)
        if not self._root:
            return
        record["saved"] = [str(p) for p in self._save(step, state.hashes[step.id], saves_index, state.run_dir)]
        provenance["steps"].append(record)
        provenance["steps"].sort(key=lambda r: order[(r.get("member"), r["id"])])
        self._write_provenance(provenance)
        if not quiet:
            member = "" if state.index is None else f"[{state.index:03d}] "
            timing = "cached" if status == "cached" else f"{entry.get('time_s') or 0:7.2f} s{how}"
            print(f"  ✓ {member}{step.id:<20} {step.use:<28} {timing}", file=sys.stderr)

    def _mpi_compute(self, step: Step, state: _MemberState, store_outputs: bool, collective: bool) -> dict[str, Any]:
        """compute_step on this rank; an error becomes {"error": message} so every rank learns of it."""
        entry = self.registry.get(step.use)
        params = build_params(entry.cls.Params, step.params, where=step.id)
        inputs = {name: ("file", str(ref.file), entry.cls.input_ports()[name].kind) if ref.file is not None
                  else ("store", state.hashes[ref.step][ref.output], None)  # type: ignore[index]
                  for name, ref in step.inputs.items()}
        try:
            with contextlib.nullcontext() if collective else rank_alone():
                return compute_step(str(self.store.root), entry.cls, params, inputs, store_outputs)
        except Exception as exc:  # reported on every rank as the step's failure
            return {"error": f"{type(exc).__name__}: {exc}"}

    def _submit(self, executor: Executor, step: Step, state: _MemberState) -> Any:
        entry = self.registry.get(step.use)
        params = build_params(entry.cls.Params, step.params, where=step.id)
        inputs: dict[str, tuple[str, str, Any]] = {}
        for name, ref in step.inputs.items():
            if ref.file is not None:
                inputs[name] = ("file", str(ref.file), entry.cls.input_ports()[name].kind)
            else:
                inputs[name] = ("store", state.hashes[ref.step][ref.output], None)  # type: ignore[index]
        if step.chunks is not None:
            return executor.submit_chunked(compute_chunked_step, str(self.store.root), entry.cls, params, inputs,
                                           step.chunks)
        return executor.submit(compute_step, str(self.store.root), entry.cls, params, inputs)

    def _record(self, step: Step, key: str, state: _MemberState) -> dict[str, Any]:
        entry = self.registry.get(step.use)
        params_json = params_to_json(build_params(entry.cls.Params, step.params, where=step.id))
        record: dict[str, Any] = {
            "id": step.id, "method": step.use, "distribution": entry.distribution,
            "version": entry.cache_version, "params": params_json,
            "seeds": {k: v for k, v in params_json.items() if "seed" in k},
            "inputs": {name: {"from": ref.describe(), "hash": self._input_hash(step, name, state.hashes)}
                       for name, ref in step.inputs.items()},
            "key": key,
        }
        if state.index is not None:
            record["member"] = state.index
        return record

    def _gather(self, members: list[_MemberState], sweep: Sweep) -> tuple[Table, list[Path]]:
        """One row per member: its swept values and the last row of the gathered step's Table."""
        import numpy as np

        from ._data import Table
        from .io import write

        rows: list[dict[str, Any]] = []
        units: dict[str, str] = {}
        for member, state in zip(sweep.members, members, strict=True):
            row: dict[str, Any] = {"member": member.index, **member.values}
            if sweep.gather_step is not None:
                table = self.store.get(state.hashes[sweep.gather_step][sweep.gather_output], verify=False)  # type: ignore[index]
                for name, column in table.columns.items():
                    if column.dtype.kind in "fiub" and len(column):
                        row[name] = column[-1].item()
                        units.setdefault(name, table.units.get(name, ""))
            rows.append(row)
        names = list(dict.fromkeys(name for row in rows for name in row))
        columns = {}
        for name in names:
            values = [row.get(name, np.nan) for row in rows]
            columns[name] = np.asarray(values) if all(isinstance(v, str) for v in values) else np.asarray(values, float)
        table = Table(columns, units=units, title=f"sweep of {self.spec.name}: {len(rows)} members")
        csv_path = self.run_dir / "sweep.csv"
        write(table, csv_path)
        files = [csv_path]
        figure = _sweep_figure(table, sweep, self.run_dir / "sweep.png")
        if figure is not None:
            files.append(figure)
        return table, files

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
        if not getattr(self, "_root", True):
            return
        text = json.dumps(provenance, indent=1, sort_keys=False, default=str)
        atomic_write(self.run_dir / "provenance.json", lambda tmp: tmp.write_text(text))


def run_spec(spec: str | os.PathLike[str] | Spec, run_dir: str | os.PathLike[str] | None = None,
             force: Iterable[str] = (), quiet: bool = True, report: bool = True,
             workers: int | None = None, scheduler: str | None = None) -> RunResult:
    """Load, validate and run a spec file (what ``cs.run`` and ``cellscape run`` do).

    ``workers`` and ``scheduler`` override the spec's ``executor:`` block: N
    local threads, or the Dask scheduler at an address (``tcp://host:8786``).
    """
    loaded = spec if isinstance(spec, Spec) else load_spec(spec)
    config = ExecutorConfig.from_mapping(loaded.executor, workers=workers, scheduler=scheduler)
    return Runner(loaded, run_dir, executor=config).run(force=force, quiet=quiet, report=report)
