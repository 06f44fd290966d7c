"""Executors: where the runner's step computations run.

The runner decides *what* to compute (cache keys, dependency order, sweep
members); an executor decides *where*: in this process one step after another
(the default), in a pool of local threads, or on a Dask cluster
(``dask.distributed``: a ``LocalCluster`` of N worker processes, or an existing
scheduler at ``tcp://host:8786``).

Every executor runs the same function, :func:`compute_step`, which reads its
inputs from files or from the run's content-addressed store, runs the method
and writes the outputs back into the store by content hash. The store is
written atomically (temporary name, then rename), so a worker that dies in the
middle of a task leaves at most a temporary file that the next run removes;
the runner records a cache entry only after the task returned, on the driver.
With Dask, the run directory must therefore be on a file system that every
worker sees (a shared or local disk); Dask retries a task whose worker was
lost (``distributed.scheduler.allowed-failures``) and the runner additionally
asks for ``retries`` on failures.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from ._errors import InputError

__all__ = ["DaskExecutor", "Executor", "ExecutorConfig", "InputFileError", "LocalExecutor", "compute_step", "make_executor"]

#: how long a Dask client waits for a scheduler before giving up (s)
DEFAULT_CONNECT_TIMEOUT_S = 10.0


@attrs.frozen
class ExecutorConfig:
    """How to execute a run: the spec's ``executor:`` block, or the CLI's ``--workers``/``--scheduler``.

    Parameters
    ----------
    type : {"local", "dask"}
        "local": threads of this process (``workers`` = 1 runs steps one after
        another in the calling thread). "dask": dask.distributed.
    workers : int
        Local threads, or the number of worker processes of a Dask
        ``LocalCluster`` started for the run (ignored with ``scheduler``).
    scheduler : str or None
        Address of a running Dask scheduler (``tcp://host:8786``); implies "dask".
    timeout_s : float
        How long to wait for the scheduler before a clear error (s).
    retries : int
        How many times Dask resubmits a task that raised or whose worker died.
    """

    type: str = "local"
    workers: int = 1
    scheduler: str | None = None
    timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    retries: int = 2

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None, *, workers: int | None = None,
                     scheduler: str | None = None) -> ExecutorConfig:
        """The spec's block with the command line's overrides applied (the command line wins)."""
        data = dict(data or {})
        if workers is not None:
            data["workers"] = workers
        if scheduler is not None:
            data["scheduler"] = scheduler
            data["type"] = "dask"
        if data.get("scheduler") and data.get("type", "local") == "local":
            data["type"] = "dask"
        config = cls(**data)
        if config.type not in ("local", "dask"):
            raise InputError(f"executor type must be 'local' or 'dask', not '{config.type}'")
        if config.workers < 1:
            raise InputError(f"executor workers must be at least 1, not {config.workers}")
        return config


class InputFileError(InputError):
    """An input file of a step that cannot be read (the runner adds the step's name)."""


class Executor:
    """Runs functions somewhere and hands back futures; see the module docstring."""

    name = "executor"
    workers = 1

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        raise NotImplementedError

    def wait_any(self, futures: Iterable[Any], timeout: float | None = None) -> list[Any]:
        """The futures of ``futures`` that are done, waiting until at least one is (or ``timeout``)."""
        raise NotImplementedError

    def submit_chunked(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a chunked step: ``fn(*args, scheduler)`` spreads its chunks over this executor's workers."""
        raise NotImplementedError

    def result(self, future: Any) -> Any:
        return future.result()

    def close(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"type": self.name, "workers": self.workers}

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Done:
    """A finished future of the in-line executor."""

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]):
        try:
            self._value, self._error = fn(*args), None
        except BaseException as exc:  # handed to whoever asks for the result
            self._value, self._error = None, exc

    def done(self) -> bool:
        return True

    def result(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._value

    def cancel(self) -> bool:
        return False


class LocalExecutor(Executor):
    """Threads of this process (``workers`` = 1: in the calling thread, one step after another)."""

    name = "local"

    def __init__(self, workers: int = 1):
        self.workers = workers
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="cellscape") if workers > 1 else None

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        # progress displays live in a context variable: give each task the caller's context
        context = contextvars.copy_context()
        if self._pool is None:
            return _Done(context.run, (fn, *args))
        return self._pool.submit(context.run, fn, *args)

    def wait_any(self, futures: Iterable[Any], timeout: float | None = None) -> list[Any]:
        futures = list(futures)
        ready = [f for f in futures if isinstance(f, _Done)]
        if ready:
            return ready
        done, _ = concurrent.futures.wait(futures, timeout=timeout, return_when=concurrent.futures.FIRST_COMPLETED)
        return list(done)

    def submit_chunked(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.submit(fn, *args, "threads")  # the chunks run on every core of this machine

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


class DaskExecutor(Executor):
    """dask.distributed: an existing scheduler, or a LocalCluster of ``workers`` processes started for the run."""

    name = "dask"

    def __init__(self, scheduler: str | None = None, workers: int = 1, timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
                 retries: int = 2):
        from ._deps import require

        distributed = require("distributed", extra="dask", package="dask[distributed]", who="the Dask executor")
        self._distributed = distributed
        self.retries = retries
        self.scheduler = scheduler
        self._cluster = None
        if scheduler is None:
            self._cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                     dashboard_address=None, silence_logs=40)
            address = self._cluster.scheduler_address
        else:
            address = scheduler
        start = time.monotonic()
        try:
            self.client = distributed.Client(address, timeout=f"{timeout_s}s", set_as_default=False)
        except (OSError, TimeoutError) as exc:
            if self._cluster is not None:
                self._cluster.close()
            raise InputError(
                f"cannot reach the Dask scheduler at {address} within {timeout_s:g} s "
                f"({type(exc).__name__}: {exc}); is it running, and is the address right? "
                f"(waited {time.monotonic() - start:.1f} s)") from None
        self.workers = len(self.client.scheduler_info().get("workers", {})) or workers

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.client.submit(fn, *args, pure=False, retries=self.retries)

    def submit_chunked(self, fn: Callable[..., Any], *args: Any) -> Any:
        # driven from here, its chunks computed by the cluster's workers
        return _Done(fn, (*args, self.client))

    def wait_any(self, futures: Iterable[Any], timeout: float | None = None) -> list[Any]:
        futures = list(futures)
        ready = [f for f in futures if isinstance(f, _Done)]
        if ready:
            return ready
        try:
            with self.client.as_current():
                done, _ = self._distributed.wait(futures, timeout=timeout, return_when="FIRST_COMPLETED")
        except self._distributed.TimeoutError:  # pragma: no cover - only with a timeout
            return []
        return list(done)

    def close(self) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()

    def describe(self) -> dict[str, Any]:
        return {"type": self.name, "workers": self.workers,
                "scheduler": self.scheduler or "LocalCluster (started for this run)"}


def make_executor(config: ExecutorConfig) -> Executor:
    """The executor a config asks for."""
    if config.type == "dask":
        return DaskExecutor(config.scheduler, config.workers, config.timeout_s, config.retries)
    return LocalExecutor(config.workers)


def compute_chunked_step(store_root: str, method_cls: type, params: Any, inputs: Mapping[str, tuple[str, str, Any]],
                         chunks: tuple[int, int, int], scheduler: Any) -> dict[str, Any]:
    """Like :func:`compute_step` for a step with ``chunks:``: its chunked input is read lazily (see ``_chunked``)."""
    from ._chunked import lazy_volume, run_chunked
    from ._store import Store

    store = Store(Path(store_root))
    port = method_cls.chunk_port
    loaded: dict[str, Any] = {}
    for name, (where, ref, kind) in inputs.items():
        if name == port:
            try:
                loaded[name] = lazy_volume(Path(ref) if where == "file" else store.get(ref, verify=False))
            except InputError as exc:
                raise InputFileError(f"input '{name}': {exc}") from exc
        else:
            loaded[name] = _load(store, name, where, ref, kind)
    method = method_cls(params)
    started = time.time()
    start = time.perf_counter()
    scratch = store.root / "scratch"
    outputs = run_chunked(method, loaded, chunks, scratch, scheduler=scheduler)
    elapsed = time.perf_counter() - start
    stored = {}
    for name, artefact in outputs.items():
        stored[name] = {"hash": store.put(artefact), "kind": artefact.kind}
        backing = getattr(getattr(artefact, "data", None), "filename", None)  # a model has no array
        del artefact
        if backing is not None:
            Path(backing).unlink(missing_ok=True)
    return {"outputs": stored, "time_s": round(elapsed, 4), "worker": f"{os.uname().nodename}:{os.getpid()}",
            "started": started, "finished": time.time(), "chunks": list(chunks)}


def _load(store: Any, name: str, where: str, ref: str, kind: Any) -> Any:
    from .io import read

    if where == "file":
        try:
            return read(Path(ref), kind=kind)
        except InputError as exc:
            raise InputFileError(f"input '{name}': {exc}") from exc
    return store.get(ref, verify=False)


def compute_step(store_root: str, method_cls: type, params: Any, inputs: Mapping[str, tuple[str, str, Any]],
                 store_outputs: bool = True) -> dict[str, Any]:
    """Run one method and put its outputs into the store (on whichever worker runs it).

    Parameters
    ----------
    store_root : str
        The run's store folder (shared by every worker).
    method_cls : type
        The method class (Dask ships it by reference: its module must be importable on the workers).
    params : attrs instance
        The method's validated parameters.
    inputs : dict
        Input name → ``("file", path, kind class)`` or ``("store", content hash, None)``.
    store_outputs : bool
        False on the MPI ranks other than 0 of a collective method: they compute, rank 0 stores.

    Returns
    -------
    dict
        ``{"outputs": {name: {"hash", "kind"}}, "time_s": float, "worker": "host:pid", "started": float,
        "finished": float}`` (epoch seconds of the method's start and of the outputs being stored).
    """
    from ._store import Store

    store = Store(Path(store_root))
    loaded = {name: _load(store, name, where, ref, kind) for name, (where, ref, kind) in inputs.items()}
    method = method_cls(params)
    started = time.time()
    start = time.perf_counter()
    method._check_inputs(loaded)
    outputs = method._check_outputs(method.run(**loaded))
    elapsed = time.perf_counter() - start
    stored = {name: {"hash": store.put(a), "kind": a.kind} for name, a in outputs.items()} if store_outputs else {}
    return {"outputs": stored, "time_s": round(elapsed, 4), "worker": f"{os.uname().nodename}:{os.getpid()}",
            "started": started, "finished": time.time()}
