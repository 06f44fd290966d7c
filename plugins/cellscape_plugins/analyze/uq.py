"""``analyze.uq``: Monte Carlo propagation of parameter distributions, Sobol indices, Morris screening.

Monte Carlo
    θ drawn from the parameters' distributions by inverse transform of a
    scrambled Sobol sequence together with its antithetic partner (u, 1 − u):
    for distributions symmetric about their mean the sample mean of θ is then
    the mean exactly, so the estimated mean of any output linear in θ is exact.
    Reported per output: mean, standard deviation, quantiles.
Sobol indices (Saltelli sampling)
    Two independent N × d samples A, B and d matrices AB_i (A with column i
    taken from B), N (d + 2) model runs. With f the model and V the variance
    of f over A and B::

        first order  S_i  = mean( f(B) (f(AB_i) − f(A)) ) / V          (Saltelli et al. 2010)
        total        ST_i = mean( (f(A) − f(AB_i))² ) / (2 V)           (Jansen 1999)

    Confidence half-widths come from bootstrap resampling of the N rows.
    The indices measure shares of variance of each output over the joint
    distribution of the parameters, which is assumed independent.

Morris screening
    ``r`` one-at-a-time trajectories (r (d + 1) runs) give each parameter's
    elementary effects; μ* ranks influence, σ flags nonlinearity or interactions.

With ``surrogate: gp`` the studies run on a Gaussian-process surrogate
trained on ``surrogate_points`` solver runs over the parameters' box, whose
error on ``validation_points`` further runs is reported (``runs`` table).

Forward runs that fail are recorded, never silently dropped: a Monte Carlo
sample whose run failed is excluded and counted (``n_failed``); a Sobol row
(A_j, B_j and every AB_i,j) with any failed run is excluded as a whole.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np

import cellscape as cs

from ._forward import CachedForward, ForwardFailure, ParameterSpec, SolverForward, parse_parameters

__all__ = ["UQ", "UQParams", "monte_carlo", "morris_study", "morris_trajectories", "saltelli_samples", "sobol_indices",
           "sobol_study"]

_EDGE = 1e-12


def unit_sobol(n: int, d: int, seed: int) -> np.ndarray:
    """n scrambled Sobol points in (0, 1)^d (n rounded up to a power of two for balance, then cut)."""
    from scipy.stats import qmc

    m = max(1, int(np.ceil(np.log2(max(n, 2)))))
    points = qmc.Sobol(d, scramble=True, seed=np.random.default_rng(seed)).random_base2(m)[:n]
    return np.clip(points, _EDGE, 1 - _EDGE)


def _to_parameters(unit: np.ndarray, specs: list[ParameterSpec]) -> np.ndarray:
    return np.column_stack([spec.quantile(unit[:, i]) for i, spec in enumerate(specs)])


def monte_carlo(forward: CachedForward, specs: list[ParameterSpec], n_samples: int, seed: int,
                quantiles: tuple[float, ...] = (0.05, 0.5, 0.95)) -> dict[str, Any]:
    """Propagate the parameter distributions through the forward model.

    Parameters
    ----------
    forward : CachedForward
        The model, θ (p,) → outputs (m,).
    specs : list of ParameterSpec
        One distribution per parameter.
    n_samples : int
        Number of samples (even: half are the antithetic partners of the other half).
    seed : int
        Seed of the scrambled Sobol sequence.
    quantiles : tuple of float
        Probabilities of the reported quantiles.

    Returns
    -------
    dict
        ``theta`` (n, p), ``outputs`` (n, m; NaN rows failed), ``ok`` (n,) bool, ``mean``, ``std``
        (m,), ``quantiles`` (len(quantiles), m), ``n_failed``.
    """
    half = max(1, n_samples // 2)
    unit = unit_sobol(half, len(specs), seed)
    unit = np.concatenate([unit, 1.0 - unit])
    theta = _to_parameters(unit, specs)
    outputs = forward.batch(theta)
    ok = np.isfinite(outputs).all(axis=1)
    if not ok.any():
        raise ForwardFailure(f"every one of the {len(theta)} forward runs failed; first error: {forward.failures[0][1]}")
    good = outputs[ok]
    return {"theta": theta, "outputs": outputs, "ok": ok, "mean": good.mean(axis=0),
            "std": good.std(axis=0, ddof=1) if len(good) > 1 else np.zeros(good.shape[1]),
            "quantiles": np.quantile(good, quantiles, axis=0), "n_failed": int((~ok).sum())}


def saltelli_samples(n: int, specs: list[ParameterSpec], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Saltelli's design in parameter space.

    Returns
    -------
    A, B : ndarray, shape (n, d)
        Two independent samples (columns 0..d−1 and d..2d−1 of one 2d-dimensional Sobol sequence).
    AB : ndarray, shape (d, n, d)
        ``AB[i]`` is A with column i taken from B.
    """
    d = len(specs)
    unit = unit_sobol(n, 2 * d, seed)
    a, b = _to_parameters(unit[:, :d], specs), _to_parameters(unit[:, d:], specs)
    ab = np.repeat(a[None], d, axis=0)
    for i in range(d):
        ab[i, :, i] = b[:, i]
    return a, b, ab


def _indices(f_a: np.ndarray, f_b: np.ndarray, f_ab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """S_i and ST_i, shape (d, m), from f(A), f(B) (n, m) and f(AB) (d, n, m)."""
    variance = np.var(np.concatenate([f_a, f_b]), axis=0)
    variance = np.where(variance > 0, variance, np.nan)  # a constant output has no variance to share out
    first = np.mean(f_b[None] * (f_ab - f_a[None]), axis=1) / variance
    total = 0.5 * np.mean((f_a[None] - f_ab) ** 2, axis=1) / variance
    return first, total


def sobol_indices(f_a: np.ndarray, f_b: np.ndarray, f_ab: np.ndarray, n_bootstrap: int = 200,
                  seed: int = 0, confidence: float = 0.95) -> dict[str, np.ndarray]:
    """First-order and total Sobol indices with bootstrap confidence half-widths.

    Parameters
    ----------
    f_a, f_b : ndarray, shape (n, m)
        Model outputs on Saltelli's A and B.
    f_ab : ndarray, shape (d, n, m)
        Outputs on AB_i.

    Returns
    -------
    dict
        ``first``, ``total``, ``first_conf``, ``total_conf``: each (d, m); NaN for an output without variance.
    """
    first, total = _indices(f_a, f_b, f_ab)
    rng = np.random.default_rng(seed)
    n = len(f_a)
    draws_first, draws_total = [], []
    for _ in range(n_bootstrap):
        rows = rng.integers(0, n, n)
        s1, st = _indices(f_a[rows], f_b[rows], f_ab[:, rows])
        draws_first.append(s1)
        draws_total.append(st)
    z = _normal_quantile(0.5 + confidence / 2)
    spread = (lambda draws: z * np.std(np.stack(draws), axis=0, ddof=1)) if n_bootstrap > 1 else \
        (lambda draws: np.full(first.shape, np.nan))
    return {"first": first, "total": total, "first_conf": spread(draws_first), "total_conf": spread(draws_total)}


def _normal_quantile(p: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(p))


def sobol_study(forward: CachedForward, specs: list[ParameterSpec], n: int, seed: int,
                n_bootstrap: int = 200) -> dict[str, Any]:
    """Run Saltelli's design through the model and estimate the indices.

    Returns
    -------
    dict
        The :func:`sobol_indices` arrays plus ``n_rows`` (rows used), ``n_excluded`` (rows with a failed
        run), ``n_runs`` (model evaluations asked for: n (d + 2)).
    """
    a, b, ab = saltelli_samples(n, specs, seed)
    d = len(specs)
    outputs = forward.batch(np.concatenate([a, b, ab.reshape(-1, d)]))
    f_a, f_b, f_ab = outputs[:n], outputs[n:2 * n], outputs[2 * n:].reshape(d, n, -1)
    ok = np.isfinite(f_a).all(axis=1) & np.isfinite(f_b).all(axis=1) & np.isfinite(f_ab).all(axis=(0, 2))
    if ok.sum() < 2:
        first = forward.failures[0][1] if forward.failures else "none"
        raise ForwardFailure(f"only {int(ok.sum())} of {n} Sobol rows have every forward run; first error: {first}")
    result = sobol_indices(f_a[ok], f_b[ok], f_ab[:, ok], n_bootstrap=n_bootstrap, seed=seed)
    result.update({"n_rows": int(ok.sum()), "n_excluded": int((~ok).sum()), "n_runs": len(outputs)})
    return result


MORRIS_LEVELS = 4


def morris_trajectories(r: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Morris one-at-a-time trajectories on a 4-level grid of probabilities.

    The grid is the mid-quantiles (k + ½)/4, k = 0..3, so every level maps to a finite parameter value
    for any distribution; each step moves one parameter two levels (Δ = ½ in probability), up from the lower
    half and down from the upper half, in a random order.

    Returns
    -------
    points : ndarray, shape (r, d + 1, d)
        Probabilities along each trajectory.
    moved : ndarray, shape (r, d), int
        Which parameter the j-th step of each trajectory moves.
    steps : ndarray, shape (r, d)
        The signed step (±½) of that move.
    """
    rng = np.random.default_rng(seed)
    levels = (np.arange(MORRIS_LEVELS) + 0.5) / MORRIS_LEVELS
    delta = MORRIS_LEVELS / (2 * (MORRIS_LEVELS - 1)) * (levels[-1] - levels[0])
    points = np.empty((r, d + 1, d))
    moved = np.empty((r, d), dtype=np.int64)
    steps = np.empty((r, d))
    for t in range(r):
        x = levels[rng.integers(0, MORRIS_LEVELS, d)]
        points[t, 0] = x
        order = rng.permutation(d)
        for j, i in enumerate(order):
            step = delta if x[i] + delta <= levels[-1] + 1e-12 else -delta
            x = x.copy()
            x[i] += step
            points[t, j + 1] = x
            moved[t, j], steps[t, j] = i, step
    return points, moved, steps


def morris_study(forward: CachedForward, specs: list[ParameterSpec], r: int, seed: int) -> dict[str, Any]:
    """Elementary effects: μ* (mean |EE|), μ (mean EE) and σ (their SD) per parameter and output.

    An elementary effect is the change of an output when one parameter moves Δ = ½ in probability,
    divided by Δ (output units per unit of probability: for a uniform parameter, per its whole range).
    A trajectory with a failed run loses only the effects that need that run.

    Returns
    -------
    dict
        ``mu_star``, ``mu``, ``sigma`` (d, m); ``n_effects`` (d,) effects per parameter; ``n_runs`` r (d + 1).
    """
    d = len(specs)
    points, moved, steps = morris_trajectories(r, d, seed)
    outputs = forward.batch(_to_parameters(points.reshape(-1, d), specs)).reshape(r, d + 1, -1)
    effects: list[list[np.ndarray]] = [[] for _ in range(d)]
    for t in range(r):
        for j in range(d):
            change = (outputs[t, j + 1] - outputs[t, j]) / steps[t, j]
            if np.isfinite(change).all():
                effects[moved[t, j]].append(change)
    if any(not e for e in effects):
        first = forward.failures[0][1] if forward.failures else "none"
        raise ForwardFailure(f"no elementary effect could be computed for some parameter; first error: {first}")
    stacked = [np.stack(e) for e in effects]
    return {"mu_star": np.stack([np.abs(e).mean(axis=0) for e in stacked]),
            "mu": np.stack([e.mean(axis=0) for e in stacked]),
            "sigma": np.stack([e.std(axis=0, ddof=1) if len(e) > 1 else np.zeros(e.shape[1]) for e in stacked]),
            "n_effects": np.array([len(e) for e in stacked]), "n_runs": r * (d + 1)}


@attrs.frozen
class UQParams:
    solver_params: dict[str, Any] = cs.param(help="the solver's parameters as in a solve step (its model included)")
    parameters: dict[str, dict[str, Any]] = cs.param(
        help="uncertain parameters: name -> {distribution: uniform|normal|lognormal, bounds | mean, std | median, "
             "sigma, path (default model.parameters.<name>)}")
    outputs: list[str] = cs.param(help="columns of the solver's output table to study, e.g. [mean_A_cytosol]")
    times_s: list[float] = cs.param(ge=0, unit="s", help="times at which the outputs are studied")
    solver: str = cs.param("solve.reaction_diffusion", help="the solve method used as the forward model")
    solver_output: str = cs.param("probes", help="the solver's Table output holding the columns")
    analyses: list[str] = cs.param(["monte_carlo", "sobol"],
                                   help="which studies to run: monte_carlo, sobol and/or morris (screening)")
    n_samples: int = cs.param(256, ge=2, help="Monte Carlo samples (antithetic pairs)")
    n_sobol: int = cs.param(256, ge=4, help="Saltelli base samples N; the Sobol study runs N (d + 2) simulations")
    n_trajectories: int = cs.param(20, ge=2, help="Morris trajectories; the screening runs r (d + 1) simulations")
    n_bootstrap: int = cs.param(200, ge=0, help="bootstrap resamples for the Sobol confidence half-widths (95 %)")
    quantiles: list[float] = cs.param([0.05, 0.5, 0.95], gt=0, lt=1, help="probabilities of the reported quantiles")
    seed: int = cs.param(0, help="seed of the sampling")
    workers: int = cs.param(1, ge=1, help="forward runs in parallel (threads)")
    cache_dir: str | None = cs.param(None, help="folder of the on-disk cache of forward runs (e.g. in the run directory)")
    surrogate: str = cs.param("none", choices=("none", "gp"),
                              help="gp: run the studies on a Gaussian-process surrogate trained on a few solver runs")
    surrogate_points: int = cs.param(32, ge=2, help="solver runs the surrogate is trained on (Sobol points of the box)")
    validation_points: int = cs.param(8, ge=1, help="further solver runs that measure the surrogate's error")

    def __attrs_post_init__(self) -> None:
        parse_parameters(self.parameters, "analyze.uq", require_bounds=False, distributions=True)
        unknown = sorted(set(self.analyses) - {"monte_carlo", "sobol", "morris"})
        if unknown or not self.analyses:
            raise cs.InputError("analyze.uq: parameter 'analyses' must list monte_carlo, sobol and/or morris, "
                                f"got {self.analyses}")
        if not self.outputs:
            raise cs.InputError("analyze.uq: parameter 'outputs' is empty; name the solver output columns to study")
        if not self.times_s:
            raise cs.InputError("analyze.uq: parameter 'times_s' is empty; give the times of the outputs")


def _output_labels(outputs: list[str], times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.repeat(np.array(outputs), len(times)), np.tile(times, len(outputs))


class UQ(cs.Analyzer):
    """Monte Carlo propagation of parameter distributions and Sobol (Saltelli) sensitivity indices of a simulation.

    Outputs
    -------
    table : Table
        One row per studied output and time: ``output``, ``time_s``, ``mean``, ``std``, ``q<p>`` per quantile
        (output units), ``n_samples`` and ``n_failed`` (runs excluded). Empty without ``monte_carlo``.
    sensitivity : Table
        One row per output, time and parameter: ``output``, ``time_s``, ``parameter``, ``S1``, ``S1_conf``,
        ``ST``, ``ST_conf`` (dimensionless; conf = 95 % bootstrap half-width), ``n_rows``, ``n_excluded``.
        Empty without ``sobol``.
    screening : Table
        Morris elementary effects, one row per output, time and parameter: ``output``, ``time_s``, ``parameter``,
        ``mu_star``, ``mu``, ``sigma`` (output units per unit of probability), ``n_effects``. Empty without ``morris``.
    samples : Table
        The Monte Carlo samples: one column per parameter, one per output ``"<column>@<t>s"``, and ``ok``
        (1 when the run succeeded).
    runs : Table
        ``quantity``/``value``: forward runs computed, cache hits, failed runs, and the first errors.
    """

    name = "analyze.uq"
    Params = UQParams
    inputs = {"mesh": cs.Port(cs.TetMesh, help="the mesh the solver runs on")}
    outputs = {"table": cs.Table, "sensitivity": cs.Table, "screening": cs.Table, "samples": cs.Table, "runs": cs.Table}

    def analyze(self, mesh: cs.TetMesh) -> dict[str, cs.Table]:  # type: ignore[override]
        p = self.params
        specs = parse_parameters(p.parameters, self.name, require_bounds=False, distributions=True)
        times = np.unique(np.asarray(p.times_s, float))
        model = SolverForward(self.name, p.solver, p.solver_params, specs, mesh, times, p.outputs, p.solver_output)
        forward = CachedForward(model, model.n_outputs, model.key, p.cache_dir, p.workers)
        if p.surrogate == "none":
            return self.study(forward, specs, p.outputs, times)
        cheap, extra = self.surrogate(forward, specs)
        result = self.study(cheap, specs, p.outputs, times)
        result["runs"] = runs_table(forward, extra)
        return result

    def surrogate(self, forward: CachedForward, specs: list[ParameterSpec]) -> tuple[CachedForward, dict[str, float]]:
        """A GP surrogate of ``forward`` over the parameters' box, and its validation numbers.

        The box is each parameter's bounds, or its 0.1–99.9 % quantiles; samples beyond it are clipped
        to it. The validation error (relative RMS error on ``validation_points`` runs the surrogate was
        not trained on, over the outputs' spread) is measured before those runs join the training set.
        """
        from ._surrogate import GaussianProcess, relative_rms_error

        p = self.params
        boxes = [spec if spec.bounded else
                 attrs.evolve(spec, low=float(spec.quantile(np.array([1e-3]))[0]),
                              high=float(spec.quantile(np.array([1 - 1e-3]))[0]))
                 for spec in specs]
        d = len(specs)
        unit = unit_sobol(p.surrogate_points + p.validation_points, d, p.seed + 1)

        def theta_of(z: np.ndarray) -> np.ndarray:
            return np.column_stack([b.from_unit(z[:, i]) for i, b in enumerate(boxes)])

        outputs = forward.batch(theta_of(unit))
        ok = np.isfinite(outputs).all(axis=1)
        train = ok & (np.arange(len(unit)) < p.surrogate_points)
        check = ok & (np.arange(len(unit)) >= p.surrogate_points)
        if train.sum() < 2:
            first = forward.failures[0][1] if forward.failures else "none"
            raise ForwardFailure(f"{self.name}: only {int(train.sum())} surrogate training runs succeeded; first error: {first}")
        gp = GaussianProcess(seed=p.seed).fit(unit[train], outputs[train])
        error = relative_rms_error(gp.predict(unit[check]), outputs[check], outputs[train]) if check.any() else math.nan
        gp.fit(unit[ok], outputs[ok])

        def predict(theta: np.ndarray) -> np.ndarray:
            z = np.array([b.to_unit(v) for b, v in zip(boxes, theta, strict=True)])
            return gp.predict(np.clip(z, 0.0, 1.0))

        extra = {"surrogate_training_runs": float(train.sum()), "surrogate_validation_runs": float(check.sum()),
                 "surrogate_validation_error": error}
        return CachedForward(predict, forward.n_outputs), extra

    def study(self, forward: CachedForward, specs: list[ParameterSpec], outputs: list[str],
              times: np.ndarray) -> dict[str, cs.Table]:
        """Run the requested studies on any forward model whose outputs are ``outputs`` × ``times``."""
        p = self.params
        names, at = _output_labels(outputs, times)
        table = cs.Table({"output": np.array([], str), "time_s": np.zeros(0)}, {"time_s": "s"}, "Monte Carlo")
        samples = cs.Table({"ok": np.zeros(0)}, {}, "Monte Carlo samples")
        if "monte_carlo" in p.analyses:
            mc = monte_carlo(forward, specs, p.n_samples, p.seed, tuple(p.quantiles))
            columns: dict[str, np.ndarray] = {"output": names, "time_s": at, "mean": mc["mean"], "std": mc["std"]}
            for q, values in zip(p.quantiles, mc["quantiles"], strict=True):
                columns[f"q{100 * q:g}"] = values
            columns["n_samples"] = np.full(len(names), int(mc["ok"].sum()))
            columns["n_failed"] = np.full(len(names), mc["n_failed"])
            table = cs.Table(columns, {"time_s": "s"},
                             f"Monte Carlo: {int(mc['ok'].sum())} runs used, {mc['n_failed']} failed and excluded")
            sample_columns = {spec.name: mc["theta"][:, i] for i, spec in enumerate(specs)}
            for j, (name, t) in enumerate(zip(names, at, strict=True)):
                sample_columns[f"{name}@{t:g}s"] = np.nan_to_num(mc["outputs"][:, j], nan=0.0)
            sample_columns["ok"] = mc["ok"].astype(np.int64)
            samples = cs.Table(sample_columns, {}, "Monte Carlo samples (outputs of failed runs shown as 0, ok = 0)")
        sensitivity = cs.Table({"output": np.array([], str), "time_s": np.zeros(0), "parameter": np.array([], str)},
                               {"time_s": "s"}, "Sobol indices")
        if "sobol" in p.analyses:
            sobol = sobol_study(forward, specs, p.n_sobol, p.seed, p.n_bootstrap)
            d = len(specs)
            sensitivity = cs.Table({
                "output": np.repeat(names, d), "time_s": np.repeat(at, d),
                "parameter": np.tile(np.array([s.name for s in specs]), len(names)),
                "S1": sobol["first"].T.ravel(), "S1_conf": sobol["first_conf"].T.ravel(),
                "ST": sobol["total"].T.ravel(), "ST_conf": sobol["total_conf"].T.ravel(),
                "n_rows": np.full(len(names) * d, sobol["n_rows"]), "n_excluded": np.full(len(names) * d, sobol["n_excluded"]),
            }, {"time_s": "s", "S1": "", "ST": "", "S1_conf": "", "ST_conf": ""},
                f"Sobol indices (Saltelli, N = {p.n_sobol}, {sobol['n_runs']} runs; "
                f"{sobol['n_excluded']} rows excluded for failed runs)")
        screening = cs.Table({"output": np.array([], str), "time_s": np.zeros(0), "parameter": np.array([], str)},
                             {"time_s": "s"}, "Morris screening")
        if "morris" in p.analyses:
            morris = morris_study(forward, specs, p.n_trajectories, p.seed)
            d = len(specs)
            screening = cs.Table({
                "output": np.repeat(names, d), "time_s": np.repeat(at, d),
                "parameter": np.tile(np.array([s.name for s in specs]), len(names)),
                "mu_star": morris["mu_star"].T.ravel(), "mu": morris["mu"].T.ravel(), "sigma": morris["sigma"].T.ravel(),
                "n_effects": np.tile(morris["n_effects"], len(names)),
            }, {"time_s": "s"}, f"Morris screening ({p.n_trajectories} trajectories, {morris['n_runs']} runs)")
        return {"table": table, "sensitivity": sensitivity, "screening": screening, "samples": samples,
                "runs": runs_table(forward)}


def runs_table(forward: CachedForward, extra: Mapping[str, float | str] | None = None) -> cs.Table:
    """Forward-run bookkeeping as a quantity/value table, with the first few failure messages."""
    stats = {**forward.statistics(), **(extra or {})}
    quantities = list(stats)
    # a text entry (e.g. which surrogate ran) goes to the note column
    values = [math.nan if isinstance(v, str) else float(v) for v in stats.values()]
    notes = [v if isinstance(v, str) else "" for v in stats.values()]
    for theta, error in forward.failures[:5]:
        quantities.append("failed at theta")
        values.append(float("nan"))
        notes.append(f"{list(theta)}: {error}"[:300])
    return cs.Table({"quantity": np.array(quantities), "value": np.array(values), "note": np.array(notes)}, {},
                    "forward runs")
