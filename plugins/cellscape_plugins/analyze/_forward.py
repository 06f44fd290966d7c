"""The forward model of fitting, surrogates and uncertainty quantification.

A forward model maps a parameter vector θ (physical units, one entry per
named parameter) to an output vector y (e.g. mean concentrations per region
at the observed times, flattened column by column). Two kinds share one
evaluation path (:class:`CachedForward`):

- a solver method of the pipeline (``solve.reaction_diffusion``,
  ``solve.stationary``...) run on a mesh, whose parameters are its spec
  parameters with the named model constants replaced (:class:`SolverForward`);
- any Python function ``f(theta) -> outputs`` (analytic models, tests).

Every evaluation is cached in memory by the bytes of θ and, when a cache
folder is given, on disk as one ``.npz`` per θ, named by a hash of the model
(solver, its parameters, the mesh's content hash, the outputs) and θ: a refit
or a repeated UQ study reruns no simulation it already ran. A forward run
that raises is recorded (θ, error) and yields NaN outputs; callers exclude
those samples and report how many there were.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

import cellscape as cs

__all__ = ["CachedForward", "ForwardFailure", "ParameterSpec", "SolverForward", "parse_parameters", "set_path"]

TIME_TOLERANCE_S = 1e-9


@attrs.frozen
class ParameterSpec:
    """One estimated or uncertain parameter.

    Attributes
    ----------
    name : str
        Its name (the model constant it replaces unless ``path`` says otherwise).
    low, high : float
        Bounds (fit, surrogate box, uniform distribution); NaN when not given.
    initial : float
        Starting value of a fit; NaN when not given (the box centre is used).
    path : tuple of str
        Keys leading to the value inside the solver's parameters, e.g.
        ``("model", "parameters", "k")`` or ``("model", "species", "A", "D")``.
    log : bool
        Work with log(θ) (fit, sampling of the box): for rates spanning decades.
    distribution : str
        "uniform" (bounds), "normal" (mean, std), "lognormal" (median, sigma of log) — UQ only.
    mean, std : float
        Parameters of the normal (mean, standard deviation) or lognormal (median, σ of ln θ) distribution.
    """

    name: str
    low: float = math.nan
    high: float = math.nan
    initial: float = math.nan
    path: tuple[str, ...] = ()
    log: bool = False
    distribution: str = "uniform"
    mean: float = math.nan
    std: float = math.nan

    @property
    def bounded(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    def start(self) -> float:
        """The fit's starting value: ``initial`` or the (geometric, for log) centre of the bounds."""
        if math.isfinite(self.initial):
            return self.initial
        return math.sqrt(self.low * self.high) if self.log else 0.5 * (self.low + self.high)

    def to_unit(self, value: np.ndarray) -> np.ndarray:
        """Map physical values into [0, 1] over the bounds (log-linear when ``log``)."""
        if self.log:
            return (np.log(value) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return (value - self.low) / (self.high - self.low)

    def from_unit(self, unit: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_unit`."""
        if self.log:
            return np.exp(math.log(self.low) + unit * (math.log(self.high) - math.log(self.low)))
        return self.low + unit * (self.high - self.low)

    def quantile(self, u: np.ndarray) -> np.ndarray:
        """Inverse CDF of the parameter's distribution at probabilities ``u`` in (0, 1)."""
        from scipy import stats

        if self.distribution == "uniform":
            return self.from_unit(u)
        if self.distribution == "normal":
            return stats.norm.ppf(u, loc=self.mean, scale=self.std)
        return self.mean * np.exp(self.std * stats.norm.ppf(u))  # lognormal: median · exp(σ z)


_KEYS = {"bounds", "initial", "path", "log", "distribution", "mean", "std", "median", "sigma"}
_DISTRIBUTIONS = ("uniform", "normal", "lognormal")


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise cs.InputError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def parse_parameters(spec: Mapping[str, Any], where: str, require_bounds: bool = True,
                     distributions: bool = False) -> list[ParameterSpec]:
    """Read the ``parameters:`` mapping of analyze.fit / analyze.uq.

    Parameters
    ----------
    spec : mapping
        Name → ``{bounds: [low, high], initial: x, path: "model.species.A.D", log: false}``;
        with ``distributions`` also ``{distribution: normal, mean: m, std: s}`` or
        ``{distribution: lognormal, median: m, sigma: s}``.
    where : str
        Method name, for messages.
    require_bounds : bool
        Every parameter needs finite bounds low < high (fits, surrogates, uniform distributions).
    distributions : bool
        Accept the distribution keys (analyze.uq).

    Raises
    ------
    cellscape.InputError
        Naming the parameter: no parameters, unknown keys, missing or inverted bounds, an initial value
        outside them, non-positive values of a log parameter, an unknown distribution.
    """
    if not isinstance(spec, Mapping) or not spec:
        raise cs.InputError(f"{where}: parameter 'parameters' is empty; give e.g. "
                            "parameters: {{k: {{bounds: [0.1, 10], initial: 1}}}}")
    result = []
    for name, entry in spec.items():
        what = f"{where}: parameter '{name}'"
        if not isinstance(entry, Mapping):
            raise cs.InputError(f"{what} must be a mapping such as {{bounds: [0.1, 10], initial: 1}}, got {entry!r}")
        unknown = sorted(set(entry) - _KEYS)
        if unknown:
            raise cs.InputError(f"{what}: unknown key(s) {unknown}; allowed: {sorted(_KEYS)}")
        distribution = str(entry.get("distribution", "uniform"))
        if distribution != "uniform" and not distributions:
            raise cs.InputError(f"{what}: 'distribution' is for analyze.uq; a fit needs bounds")
        if distribution not in _DISTRIBUTIONS:
            raise cs.InputError(f"{what}: distribution {distribution!r} is not one of {', '.join(_DISTRIBUTIONS)}")
        low = high = mean = std = math.nan
        bounds = entry.get("bounds")
        if bounds is not None:
            if not isinstance(bounds, (list, tuple)) or len(bounds) != 2:
                raise cs.InputError(f"{what}: bounds must be [low, high], got {bounds!r}")
            low, high = (_number(b, f"{what}: bound") for b in bounds)
            if not low < high:
                raise cs.InputError(f"{what}: bounds [{low:g}, {high:g}] must have low < high")
        needs_bounds = require_bounds or distribution == "uniform"
        if needs_bounds and bounds is None:
            raise cs.InputError(f"{what} has no bounds; give bounds: [low, high] "
                                f"({'a fit and a surrogate need a box' if require_bounds else 'a uniform distribution'})")
        if distribution == "normal":
            mean = _number(entry.get("mean"), f"{what}: mean")
            std = _number(entry.get("std"), f"{what}: std")
        elif distribution == "lognormal":
            mean = _number(entry.get("median"), f"{what}: median")
            std = _number(entry.get("sigma"), f"{what}: sigma")
            if mean <= 0:
                raise cs.InputError(f"{what}: the median of a lognormal distribution must be > 0, got {mean:g}")
        if distribution != "uniform" and not std > 0:
            raise cs.InputError(f"{what}: the spread (std or sigma) must be > 0, got {std:g}")
        log = entry.get("log", False)
        if not isinstance(log, bool):
            raise cs.InputError(f"{what}: log must be true or false, got {log!r}")
        if log and bounds is not None and low <= 0:
            raise cs.InputError(f"{what}: log: true needs bounds > 0, got [{low:g}, {high:g}]")
        initial = _number(entry["initial"], f"{what}: initial") if "initial" in entry else math.nan
        if math.isfinite(initial) and bounds is not None and not low <= initial <= high:
            raise cs.InputError(f"{what}: initial value {initial:g} lies outside its bounds [{low:g}, {high:g}]")
        path_text = entry.get("path", f"model.parameters.{name}")
        if not isinstance(path_text, str) or not path_text:
            raise cs.InputError(f"{what}: path must be dotted keys like 'model.species.A.D', got {path_text!r}")
        result.append(ParameterSpec(str(name), low, high, initial, tuple(path_text.split(".")), log,
                                    distribution, mean, std))
    return result


def _replace_number(old: Any, value: float) -> Any:
    """``value`` in the form of ``old``: a number, ``"<number> <unit>"``, or ``{value, unit}``."""
    if isinstance(old, Mapping):
        return {**old, "value": value}
    if isinstance(old, str):
        parts = old.strip().split(None, 1)
        return f"{value!r} {parts[1]}" if len(parts) == 2 else repr(value)
    return value


def set_path(params: dict[str, Any], path: Sequence[str], value: float, where: str) -> None:
    """Replace the number at ``path`` inside nested solver parameters, keeping its unit.

    Raises
    ------
    cellscape.InputError
        When a key on the path is missing, naming the keys that exist there.
    """
    node: Any = params
    for depth, key in enumerate(path):
        if not isinstance(node, dict) or key not in node:
            here = ".".join(path[:depth]) or "the solver parameters"
            known = ", ".join(map(str, node)) if isinstance(node, dict) else f"a {type(node).__name__}"
            raise cs.InputError(f"{where}: '{'.'.join(path)}' does not exist: {here} has no '{key}' "
                                f"(it holds: {known}); set 'path' or add the constant to the model")
        if depth == len(path) - 1:
            node[key] = _replace_number(node[key], value)
        else:
            node = node[key]


class ForwardFailure(cs.InputError):
    """The forward model failed for every sample, or for the point a fit needs."""


class CachedForward:
    """Evaluate a forward model at many parameter vectors, with memory and disk caches and a failure record.

    Parameters
    ----------
    function : callable
        ``function(theta) -> outputs``: θ of shape (p,) in physical units, outputs of shape (m,).
    n_outputs : int
        m.
    key : str
        Identifies the model for the disk cache (two models never share a key).
    cache_dir : path, optional
        Folder of the disk cache (created when needed).
    workers : int
        Threads evaluating a batch at once.

    Attributes
    ----------
    runs : int
        Model evaluations actually computed (not served by a cache).
    memory_hits, disk_hits : int
        Evaluations served by the caches.
    failures : list of (tuple of float, str)
        θ and the error of every failed evaluation.
    """

    def __init__(self, function: Callable[[np.ndarray], np.ndarray], n_outputs: int, key: str = "",
                 cache_dir: str | Path | None = None, workers: int = 1):
        self.function, self.n_outputs, self.key = function, n_outputs, key
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.workers = max(1, int(workers))
        self.memory: dict[bytes, np.ndarray] = {}
        self.runs = self.memory_hits = self.disk_hits = 0
        self.failures: list[tuple[tuple[float, ...], str]] = []
        self._lock = threading.Lock()

    def _file(self, theta: np.ndarray) -> Path | None:
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256(self.key.encode() + b"\0" + theta.astype(np.float64).tobytes()).hexdigest()[:32]
        return self.cache_dir / f"{digest}.npz"

    def _one(self, theta: np.ndarray) -> np.ndarray:
        theta = np.ascontiguousarray(theta, dtype=np.float64)
        token = theta.tobytes()
        with self._lock:
            if token in self.memory:
                self.memory_hits += 1
                return self.memory[token]
        path = self._file(theta)
        if path is not None and path.exists():
            with np.load(path, allow_pickle=False) as stored:
                outputs = stored["outputs"]
            with self._lock:
                self.disk_hits += 1
                self.memory[token] = outputs
            return outputs
        try:
            outputs = np.asarray(self.function(theta.copy()), dtype=np.float64).reshape(-1)
            if outputs.shape != (self.n_outputs,):
                raise cs.InputError(f"the forward model returned {outputs.size} outputs, expected {self.n_outputs}")
            if not np.isfinite(outputs).all():
                raise ArithmeticError("the forward model returned NaN or infinite outputs")
        except Exception as exc:  # recorded and reported as a failed sample, never silently dropped
            self._failed(theta, exc)
            return self.memory[token]
        self._store(theta, outputs, path)
        return outputs

    def record(self, theta: np.ndarray, outputs: np.ndarray) -> None:
        """Count and cache a run of the model at θ computed elsewhere (e.g. a snapshot run of a reduced basis)."""
        theta = np.ascontiguousarray(theta, dtype=np.float64)
        outputs = np.asarray(outputs, dtype=np.float64).reshape(-1)
        if outputs.shape != (self.n_outputs,):
            raise cs.InputError(f"the forward model returned {outputs.size} outputs, expected {self.n_outputs}")
        self._store(theta, outputs, self._file(theta))

    def record_failure(self, theta: np.ndarray, error: BaseException) -> None:
        """Count and record a run at θ that failed elsewhere."""
        with self._lock:
            self.runs += 1
            self.failures.append((tuple(float(v) for v in np.asarray(theta, float)), f"{type(error).__name__}: {error}"))

    def _failed(self, theta: np.ndarray, error: BaseException) -> None:
        """A run of this model that failed: recorded, and NaN remembered for θ (a failed sample is not rerun)."""
        self.record_failure(theta, error)
        with self._lock:
            self.memory[theta.tobytes()] = np.full(self.n_outputs, np.nan)

    def _store(self, theta: np.ndarray, outputs: np.ndarray, path: Path | None) -> None:
        """Count a successful run and keep its outputs in memory and, with a cache folder, on disk (atomically)."""
        with self._lock:
            self.runs += 1
            self.memory[theta.tobytes()] = outputs
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(f".{threading.get_ident()}.tmp.npz")
            np.savez(temporary, outputs=outputs, theta=theta)
            temporary.replace(path)

    def __call__(self, theta: np.ndarray) -> np.ndarray:
        """Outputs at one θ (shape (m,); NaN when the model failed there)."""
        return self._one(np.asarray(theta, dtype=np.float64))

    def batch(self, thetas: np.ndarray) -> np.ndarray:
        """Outputs at each row of ``thetas`` (shape (n, p)) → (n, m), NaN rows where the model failed."""
        thetas = np.asarray(thetas, dtype=np.float64)
        if self.workers == 1 or len(thetas) < 2:
            return np.stack([self._one(t) for t in thetas]) if len(thetas) else np.zeros((0, self.n_outputs))
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.workers) as pool:
            return np.stack(list(pool.map(self._one, thetas)))

    def statistics(self) -> dict[str, float]:
        """Counts for the report: runs computed, cache hits, failures."""
        return {"forward_runs": float(self.runs), "memory_cache_hits": float(self.memory_hits),
                "disk_cache_hits": float(self.disk_hits), "failed_runs": float(len(self.failures))}


def _matching_rows(model_times: np.ndarray, wanted: np.ndarray) -> np.ndarray | None:
    rows = np.searchsorted(model_times, wanted - TIME_TOLERANCE_S)
    rows = np.clip(rows, 0, len(model_times) - 1)
    ok = np.abs(model_times[rows] - wanted) <= TIME_TOLERANCE_S * max(1.0, float(np.abs(wanted).max(initial=0)))
    return rows if ok.all() else None


class SolverForward:
    """A pipeline solver as a forward model: named parameters in, chosen output columns at chosen times out.

    Parameters
    ----------
    where : str
        The analysis method's name, for messages.
    solver : str
        Method name (e.g. ``"solve.reaction_diffusion"``).
    solver_params : mapping
        Its parameters as in a spec (the model included); the parameters' paths point inside it.
    parameters : list of ParameterSpec
    mesh : cellscape.TetMesh
    times_s : ndarray, shape (n_t,)
        Times of the outputs. When the solver has ``output_times_s`` they are asked for exactly;
        otherwise they must be among the solver's own output times.
    columns : list of str
        Columns of the solver's output table ``output`` to compare (e.g. ``mean_A_cytosol``), or species
        when ``output`` is a Fields output.
    output : str
        Which output of the solver holds them: a Table with ``time_s`` (``probes`` for the built-in solvers)
        or Fields (``fields``: every node's value, for fits to field snapshots).

    The outputs are the columns one after another: ``y[j * n_t + i]`` is column j at time i; for Fields,
    species j at time i is the block of ``n_points`` values starting at ``(j * n_t + i) * n_points``.
    """

    def __init__(self, where: str, solver: str, solver_params: Mapping[str, Any], parameters: Sequence[ParameterSpec],
                 mesh: cs.TetMesh, times_s: np.ndarray, columns: Sequence[str], output: str = "probes"):
        self.where, self.solver, self.parameters = where, solver, list(parameters)
        self.mesh, self.times_s, self.columns, self.output = mesh, np.asarray(times_s, float), list(columns), output
        self.base = copy.deepcopy(dict(solver_params))
        try:
            info = next(m for m in cs.methods("solve") if m.name == solver)
        except StopIteration:
            names = ", ".join(m.name for m in cs.methods("solve"))
            raise cs.InputError(f"{where}: solver '{solver}' is not a registered solve method; known: {names}") from None
        param_names = {p.name for p in info.params}
        if output not in info.outputs or info.outputs[output] not in ("Table", "Fields"):
            raise cs.InputError(f"{where}: solver '{solver}' has no Table or Fields output '{output}'; outputs: "
                                f"{', '.join(info.outputs)}")
        self.fields = info.outputs[output] == "Fields"
        self.sets_times = "output_times_s" in param_names
        if self.sets_times:
            t_end = float(self.base.get("t_end_s", next(p.default for p in info.params if p.name == "t_end_s")))
            late = self.times_s[self.times_s > t_end * (1 + 1e-12)]
            if len(late):
                raise cs.InputError(f"{where}: the observed times reach {late.max():g} s but the solver's t_end_s is "
                                    f"{t_end:g} s; simulate longer or drop the late observations")
            self.base["output_times_s"] = [float(t) for t in self.times_s]
            self.base.pop("n_outputs", None)
        for spec in self.parameters:  # fail now, naming the path, rather than in every sample
            set_path(copy.deepcopy(self.base), spec.path, spec.start() if spec.bounded else spec.mean, where)
        self.key = json.dumps({"solver": solver, "params": self.base, "mesh": cs.content_hash(mesh),
                               "columns": self.columns, "times": self.times_s.tolist(), "output": output,
                               "paths": [".".join(p.path) for p in self.parameters]}, sort_keys=True, default=str)

    @property
    def n_outputs(self) -> int:
        return len(self.columns) * len(self.times_s) * (len(self.mesh.points) if self.fields else 1)

    def params_at(self, theta: np.ndarray) -> dict[str, Any]:
        """The solver's parameters with θ put in place."""
        params = copy.deepcopy(self.base)
        for spec, value in zip(self.parameters, theta, strict=True):
            set_path(params, spec.path, float(value), self.where)
        return params

    def output_at(self, theta: np.ndarray) -> cs.Table | cs.Fields:
        """The solver's compared output (a Table or Fields) at θ."""
        outputs = cs.method(self.solver, **self.params_at(theta)).run(mesh=self.mesh)
        return outputs[self.output]  # type: ignore[return-value]

    def check_output(self, output: cs.Table | cs.Fields) -> np.ndarray:
        """Rows (time indices) of the output at the wanted times, after checking its columns/species and times."""
        names = list(output.values) if isinstance(output, cs.Fields) else list(output.columns)
        missing = [c for c in self.columns if c not in names]
        if missing:
            available = ", ".join(c for c in names if c != "time_s")
            what = "species" if self.fields else "column(s)"
            raise cs.InputError(f"{self.where}: observed {what} {missing} are not outputs of {self.solver}; "
                                f"its '{self.output}' output has: {available} (name the observations like these)")
        model_times = np.asarray(output.times_s if isinstance(output, cs.Fields) else output.columns["time_s"], float)
        rows = _matching_rows(model_times, self.times_s)
        if rows is None:
            raise cs.InputError(f"{self.where}: the observed times {self.times_s.tolist()} s are not among the solver's "
                                f"output times {model_times.tolist()} s")
        return rows

    def __call__(self, theta: np.ndarray) -> np.ndarray:
        return self.extract(self.output_at(theta))

    def extract(self, output: cs.Table | cs.Fields) -> np.ndarray:
        """The output vector (observed columns at the observed times) of a solver output."""
        rows = self.check_output(output)
        if isinstance(output, cs.Fields):
            return np.concatenate([np.asarray(output.values[c], float)[rows].ravel() for c in self.columns])
        return np.concatenate([np.asarray(output.columns[c], float)[rows] for c in self.columns])
