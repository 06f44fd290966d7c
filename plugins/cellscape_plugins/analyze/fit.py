"""``analyze.fit``: estimate model parameters from observed time courses by bounded least squares.

The forward model is a solver step (``solve.reaction_diffusion`` by default)
whose named model constants (or any number inside its parameters, by
``path``) are the unknowns θ. Its output table (``probes``: mean of each
species per region, amounts, probe values over time) is compared with an
observed table holding ``time_s`` and columns of the same names, or its
fields with observed field snapshots on the same mesh (every node's value)::

    minimize  ½ Σ_i ((f_i(θ) − y_i) / σ_i)²    subject to  low ≤ θ ≤ high

with SciPy's trust-region reflective method in box coordinates
(``z = (θ − low)/(high − low)``, or of log θ with ``log: true``). The
Jacobian is taken by forward differences, its columns evaluated in parallel
(``workers``). σ_i are the observed ``<column>_sd`` columns when present;
otherwise σ = 1 and the residual variance s² = Σ r² / (m − p) is estimated.
The covariance of the estimate is s² (JᵀJ)⁻¹ (J in physical units) and the
confidence intervals are θ̂ ± t_{m−p} · SE (on log θ for log parameters), or,
with ``intervals: profile``, profile-likelihood intervals (:func:`profile_intervals`).
Multi-start runs the optimizer also from scrambled Sobol points of the box
and keeps the lowest cost. Every forward run is cached (memory, and
``cache_dir`` on disk), so a refit reruns no simulation. With ``surrogate:
gp`` the fit runs on a Gaussian-process surrogate refined at its optimum
(:mod:`._surrogate`); with ``surrogate: reduced_basis`` (or ``auto``) on a
POD–Galerkin reduced model of a linear solver model whose parameters enter
affinely, refined greedily at its estimates (:mod:`._reduced_basis`; a
nonlinear or non-affine model falls back to the GP, saying why). Either
way the intervals use the surrogate's Jacobian and the real model's residuals,
and the runs table records the surrogate, its solver runs and validation error.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs
import numpy as np

import cellscape as cs

from ._forward import CachedForward, ForwardFailure, ParameterSpec, SolverForward, parse_parameters
from .uq import runs_table, unit_sobol

__all__ = ["Fit", "FitParams", "FitResult", "field_arrays", "fit_least_squares", "observed_arrays", "profile_intervals"]

JACOBIAN_STEP = 1e-6  # in box coordinates


@attrs.frozen
class FitResult:
    """What :func:`fit_least_squares` found.

    Attributes
    ----------
    estimate, std_error, ci_low, ci_high : ndarray, shape (p,)
        Physical units. SE is NaN for a parameter the data do not determine (singular JᵀJ).
    covariance : ndarray, shape (p, p)
    cost : float
        ½ Σ r² at the estimate (r weighted by σ).
    predicted, residuals : ndarray, shape (m,)
        f(θ̂) and y − f(θ̂).
    sigma_hat : float
        s, the residual standard deviation (of the weighted residuals).
    dof : int
        m − p.
    at_bound : ndarray of bool, shape (p,)
        The estimate lies on a bound (its interval then means little).
    starts : list of dict
        Per start: ``start`` (θ), ``estimate``, ``cost``, ``status`` (−10: the forward model failed, ``error``
        says how), ``evaluations``.
    best_start : int
    """

    estimate: np.ndarray
    std_error: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    covariance: np.ndarray
    cost: float
    predicted: np.ndarray
    residuals: np.ndarray
    sigma_hat: float
    dof: int
    at_bound: np.ndarray
    starts: list[dict[str, Any]]
    best_start: int


def _box(specs: list[ParameterSpec]) -> tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]:
    def to_theta(z: np.ndarray) -> np.ndarray:
        return np.array([s.from_unit(np.clip(v, 0.0, 1.0)) for s, v in zip(specs, z, strict=True)], dtype=float)

    def to_z(theta: np.ndarray) -> np.ndarray:
        return np.array([s.to_unit(v) for s, v in zip(specs, theta, strict=True)], dtype=float)

    return to_theta, to_z


def fit_least_squares(forward: CachedForward, observed: np.ndarray, specs: list[ParameterSpec],
                      sigma: np.ndarray | None = None, n_starts: int = 1, seed: int = 0, confidence: float = 0.95,
                      max_iterations: int = 100, tolerance: float = 1e-10) -> FitResult:
    """Bounded nonlinear least squares of a forward model against observations, with confidence intervals.

    Parameters
    ----------
    forward : CachedForward
        θ (p,) → predictions (m,), in the order of ``observed``.
    observed : ndarray, shape (m,)
    specs : list of ParameterSpec
        Bounds, starting values and log flags of the p parameters.
    sigma : ndarray, shape (m,), optional
        Known standard deviations of the observations; None estimates one common σ from the residuals.
    n_starts : int
        1: start at the given initial values; more: also at n_starts − 1 Sobol points of the box.
    seed : int
        Seed of the start points.
    confidence : float
        Level of the intervals.
    max_iterations : int
        Optimizer iterations per start (each costs about p + 1 forward runs).
    tolerance : float
        ``ftol``/``xtol``/``gtol`` of scipy.optimize.least_squares.

    A forward run that fails inside the optimization counts as a very poor fit (the step is rejected);
    a Jacobian uses the other side of a point where one side fails. A start whose run fails is recorded
    and skipped.

    Raises
    ------
    ForwardFailure
        The forward model fails at every starting point (or on both sides of a point it must differentiate).
    cellscape.InputError
        Fewer observations than parameters.
    """
    from scipy import optimize, stats

    observed = np.asarray(observed, dtype=float)
    m, p = observed.size, len(specs)
    if m < p:
        raise cs.InputError(f"{m} observations cannot determine {p} parameters; observe more times or columns")
    weight = 1.0 / np.asarray(sigma, float) if sigma is not None else np.ones(m)
    to_theta, to_z = _box(specs)
    penalty: list[float] = []

    def residual(z: np.ndarray) -> np.ndarray:
        predicted = forward(to_theta(z))
        if not np.isfinite(predicted).all():
            # a failed run (recorded by the forward model) costs far more than any start: the optimizer rejects the step
            return np.full(m, penalty[0])
        return (predicted - observed) * weight

    def jacobian(z: np.ndarray) -> np.ndarray:
        steps = np.where(z + JACOBIAN_STEP <= 1.0, JACOBIAN_STEP, -JACOBIAN_STEP)
        shifted = z[None] + np.diag(steps)
        base = residual(z)
        columns = forward.batch(np.stack([to_theta(s) for s in shifted]))
        for i in np.nonzero(~np.isfinite(columns).all(axis=1))[0]:  # a failed side: difference on the other side
            if 0.0 <= z[i] - steps[i] <= 1.0:
                steps[i] = -steps[i]
                other = z.copy()
                other[i] += steps[i]
                columns[i] = forward(to_theta(other))
        if not np.isfinite(columns).all():
            raise ForwardFailure(f"the forward model failed on both sides of θ = {to_theta(z).tolist()} while "
                                 f"differentiating: {forward.failures[-1][1]}")
        return ((columns - observed) * weight - base).T / steps

    starts_z = [np.clip(to_z(np.array([s.start() for s in specs])), 0.0, 1.0)]
    if n_starts > 1:
        starts_z += list(unit_sobol(n_starts - 1, p, seed))
    records: list[dict[str, Any]] = []
    best = None
    errors = []
    for index, z0 in enumerate(starts_z):
        first = forward(to_theta(z0))
        try:
            if not np.isfinite(first).all():
                raise ForwardFailure(f"the forward model fails at the starting point θ = {to_theta(z0).tolist()}: "
                                     f"{forward.failures[-1][1] if forward.failures else 'non-finite outputs'}")
            if not penalty:
                penalty.append(1e3 * max(1.0, float(np.abs((first - observed) * weight).max())))
            result = optimize.least_squares(residual, z0, jac=jacobian, bounds=(0.0, 1.0), method="trf",
                                            ftol=tolerance, xtol=tolerance, gtol=tolerance, max_nfev=max_iterations)
        except ForwardFailure as exc:  # this start is lost (and reported); the others go on
            errors.append(str(exc))
            records.append({"start": to_theta(z0), "estimate": to_theta(z0) * math.nan, "cost": math.inf,
                            "status": -10, "evaluations": 0, "error": str(exc)})
            continue
        records.append({"start": to_theta(z0), "estimate": to_theta(result.x), "cost": float(result.cost),
                        "status": int(result.status), "evaluations": int(result.nfev), "error": ""})
        if best is None or result.cost < best[1].cost:
            best = (index, result)
    if best is None:
        raise ForwardFailure(errors[0] if len(errors) == 1 else f"every one of the {len(errors)} starts failed; "
                                                                 f"first: {errors[0]}")
    index, result = best
    z = np.clip(result.x, 0.0, 1.0)
    theta = to_theta(z)
    predicted = forward(theta)
    r = (predicted - observed) * weight
    # dθ/dz per parameter turns the box Jacobian into the physical one
    dtheta_dz = np.array([(math.log(s.high) - math.log(s.low)) * t if s.log else s.high - s.low
                          for s, t in zip(specs, theta, strict=True)])
    j_theta = jacobian(z) / dtheta_dz[None]
    dof = m - p
    s2 = float(r @ r) / dof if (sigma is None and dof > 0) else 1.0
    if sigma is None and dof == 0:
        s2 = math.nan
    information = j_theta.T @ j_theta
    try:
        covariance = s2 * np.linalg.inv(information)
        if not np.isfinite(covariance).all() or np.linalg.cond(information) > 1e14:
            raise np.linalg.LinAlgError("ill-conditioned")
    except np.linalg.LinAlgError:
        covariance = np.full((p, p), np.nan)
    std_error = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
    t = float(stats.t.ppf(0.5 + confidence / 2, dof)) if dof > 0 else math.nan
    low, high = theta - t * std_error, theta + t * std_error
    for i, s in enumerate(specs):
        if s.log:  # symmetric on log θ (SE of log θ = SE / θ)
            spread = t * std_error[i] / theta[i]
            low[i], high[i] = theta[i] * math.exp(-spread), theta[i] * math.exp(spread)
    at_bound = (z <= 1e-8) | (z >= 1 - 1e-8)
    return FitResult(theta, std_error, low, high, covariance, float(0.5 * r @ r), predicted, observed - predicted,
                     math.sqrt(s2) if math.isfinite(s2) else math.nan, dof, at_bound, records, index)


def profile_intervals(forward: CachedForward, observed: np.ndarray, specs: list[ParameterSpec], result: FitResult,
                      sigma: np.ndarray | None = None, confidence: float = 0.95) -> FitResult:
    """Replace the Jacobian intervals of ``result`` by profile-likelihood intervals.

    For each parameter i the profile SSR_i(v) is the least weighted sum of squares with θ_i fixed at v and
    the others refitted. The interval holds the v with SSR_i(v) ≤ SSR_min (1 + t²/(m − p)) (σ estimated,
    the F-test form; exact for a model linear in θ) or ≤ SSR_min + t² with known σ (t of m − p degrees of
    freedom, resp. normal). Its ends are found by Brent's method between the estimate and each bound;
    an end that reaches its bound is reported at the bound. Costs a refit per trial value (cached runs).
    """
    from scipy import optimize, stats

    p, m = len(specs), observed.size
    weight = 1.0 / np.asarray(sigma, float) if sigma is not None else np.ones(m)
    ssr_min = 2.0 * result.cost
    dof = m - p
    if sigma is None:
        t = float(stats.t.ppf(0.5 + confidence / 2, dof)) if dof > 0 else math.nan
        threshold = ssr_min * (1.0 + t * t / dof) if dof > 0 else math.nan
    else:
        threshold = ssr_min + float(stats.norm.ppf(0.5 + confidence / 2)) ** 2
    lows, highs = result.ci_low.copy(), result.ci_high.copy()
    for i, spec in enumerate(specs):
        others = [s for j, s in enumerate(specs) if j != i]
        start = [float(v) for j, v in enumerate(result.estimate) if j != i]

        def excess(value: float, i: int = i, others: list[ParameterSpec] = others, start: list[float] = start) -> float:
            def with_fixed(theta: np.ndarray) -> np.ndarray:
                return forward(np.insert(np.asarray(theta, float), i, value))

            if not others:
                r = (with_fixed(np.zeros(0)) - observed) * weight
                return float(r @ r) - threshold
            begun = [attrs.evolve(s, initial=float(np.clip(v, s.low, s.high))) for s, v in zip(others, start, strict=True)]
            refit = fit_least_squares(CachedForward(with_fixed, m), observed, begun, sigma)
            return 2.0 * refit.cost - threshold

        centre = float(result.estimate[i])
        for side, bound in ((0, spec.low), (1, spec.high)):
            if not math.isfinite(threshold) or centre == bound:
                continue
            if excess(bound) <= 0:
                end = bound  # the data do not exclude the bound
            else:
                end = optimize.brentq(excess, centre, bound, xtol=1e-6 * max(abs(centre), 1e-12), rtol=1e-6)
            (lows if side == 0 else highs)[i] = end
    return attrs.evolve(result, ci_low=lows, ci_high=highs)


def observed_arrays(where: str, observed: cs.Table, columns: list[str] | None,
                    sd_suffix: str = "_sd") -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray | None]:
    """Times, fitted columns, the observation vector (columns one after another) and σ from an observed table.

    Raises
    ------
    cellscape.InputError
        No ``time_s`` column, missing or non-numeric columns, NaN values, σ columns not > 0, no columns.
    """
    if "time_s" not in observed.columns:
        raise cs.InputError(f"{where}: the observed table has no 'time_s' column; columns: {', '.join(observed.columns)}")
    times = np.asarray(observed.columns["time_s"], float)
    if columns is None:
        columns = [n for n, c in observed.columns.items()
                   if n != "time_s" and not n.endswith(sd_suffix) and c.dtype.kind in "fiu"]
    if not columns:
        raise cs.InputError(f"{where}: the observed table has no data columns besides 'time_s'")
    missing = [c for c in columns if c not in observed.columns]
    if missing:
        raise cs.InputError(f"{where}: column(s) {missing} are not in the observed table; columns: "
                            f"{', '.join(observed.columns)}")
    values, sigmas = [], []
    for name in columns:
        column = observed.columns[name]
        if column.dtype.kind not in "fiu":
            raise cs.InputError(f"{where}: observed column '{name}' is not numeric")
        values.append(np.asarray(column, float))
        sd = observed.columns.get(name + sd_suffix)
        sigmas.append(None if sd is None else np.asarray(sd, float))
    vector = np.concatenate(values)
    bad = int((~np.isfinite(vector)).sum()) + int((~np.isfinite(times)).sum())
    if bad:
        raise cs.InputError(f"{where}: the observed table holds {bad} NaN or infinite value(s); drop those rows")
    if (times < 0).any():
        raise cs.InputError(f"{where}: observed times must be >= 0 s, got {times.min():g}")
    sigma = None
    if any(s is not None for s in sigmas):
        if any(s is None for s in sigmas):
            lacking = [c for c, s in zip(columns, sigmas, strict=True) if s is None]
            raise cs.InputError(f"{where}: columns {lacking} have no '{sd_suffix}' column while others do; "
                                "give every fitted column its standard deviation or none")
        sigma = np.concatenate(sigmas)  # type: ignore[arg-type]
        if not (np.isfinite(sigma) & (sigma > 0)).all():
            raise cs.InputError(f"{where}: standard deviations ('{sd_suffix}' columns) must be finite and > 0")
    return times, list(columns), vector, sigma


def field_arrays(where: str, observed: cs.Fields, mesh: cs.TetMesh,
                 species: list[str] | None) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Times, fitted species and the observation vector (species, then time, then node) of field snapshots.

    Raises
    ------
    cellscape.InputError
        Snapshots on another mesh (node count or positions), unknown species.
    """
    if observed.mesh.points.shape != mesh.points.shape or not np.allclose(
            observed.mesh.points, mesh.points, atol=1e-6 * max(float(np.ptp(mesh.points)), 1.0)):
        raise cs.InputError(f"{where}: the observed fields live on a mesh of {len(observed.mesh.points)} nodes that is "
                            f"not the solver's mesh ({len(mesh.points)} nodes); give snapshots on the same mesh")
    names = species or list(observed.values)
    missing = [n for n in names if n not in observed.values]
    if missing:
        raise cs.InputError(f"{where}: species {missing} are not in the observed fields; they hold: "
                            f"{', '.join(observed.values)}")
    vector = np.concatenate([np.asarray(observed.values[n], float).ravel() for n in names])
    return np.asarray(observed.times_s, float), names, vector


@attrs.frozen
class FitParams:
    solver_params: dict[str, Any] = cs.param(help="the solver's parameters as in a solve step (its model included)")
    parameters: dict[str, dict[str, Any]] = cs.param(
        help="estimated parameters: name -> {bounds: [low, high], initial: x, log: false, "
             "path: model.parameters.<name> (default) or e.g. model.species.A.D}")
    solver: str = cs.param("solve.reaction_diffusion", help="the solve method used as the forward model")
    solver_output: str = cs.param("probes", help="the solver's Table output compared with the observations")
    columns: list[str] | None = cs.param(None, help="observed columns to fit (default: every numeric one but time_s)")
    species: list[str] | None = cs.param(None, help="species of observed_fields to fit (default: all of them)")
    solver_fields_output: str = cs.param("fields", help="the solver's Fields output compared with observed_fields")
    n_starts: int = cs.param(1, ge=1, help="optimizer starts: the initial values, then Sobol points of the box")
    confidence: float = cs.param(0.95, gt=0, lt=1, help="level of the confidence intervals")
    intervals: str = cs.param("jacobian", choices=("jacobian", "profile"),
                              help="confidence intervals from the Jacobian (linearized) or the profile likelihood")
    max_iterations: int = cs.param(100, ge=1, help="optimizer evaluations per start")
    seed: int = cs.param(0, help="seed of the multi-start points")
    workers: int = cs.param(1, ge=1, help="forward runs of a Jacobian in parallel (threads)")
    cache_dir: str | None = cs.param(None, help="folder of the on-disk cache of forward runs (e.g. in the run directory)")
    surrogate: str = cs.param(
        "none", choices=("none", "auto", "reduced_basis", "gp"),
        help="fit on a surrogate (fewer solver runs): reduced_basis = POD-Galerkin reduced model of a linear solver "
             "model with affine parameters, refined greedily (falls back to gp, with a warning naming the term, "
             "when the model is not linear/affine); gp = Gaussian process refined at its optimum; auto = "
             "reduced_basis where the model allows it, else gp")
    reduced_basis_tolerance: float = cs.param(
        1e-8, gt=0, lt=1, help="POD energy tolerance of the reduced basis (relative RMS of discarded snapshot energy)")
    surrogate_points: int | None = cs.param(None, ge=1, help="initial surrogate design runs (default 2 p + 2)")

    def __attrs_post_init__(self) -> None:
        parse_parameters(self.parameters, "analyze.fit", require_bounds=True)


class Fit(cs.Analyzer):
    """Fit model parameters to observed time courses: bounded least squares through the solver, CIs, multi-start.

    Outputs
    -------
    table : Table
        One row per parameter: ``parameter``, ``estimate``, ``std_error``, ``ci_low``, ``ci_high``, ``low``,
        ``high``, ``initial`` (the model's units of each constant, ``unit``), ``at_bound`` (1 when the estimate
        sits on a bound).
    residuals : Table
        One row per observation: ``output``, ``time_s``, ``observed``, ``predicted``, ``residual``
        (observed − predicted), ``standardized`` (residual / σ or / s). With ``observed_fields`` one row per
        species and time holding node means (``standardized`` by s/√n) and ``rms_residual``.
    correlation : Table
        ``parameter`` and one column per parameter: the correlation matrix of the estimates.
    runs : Table
        ``quantity``/``value``/``note``: cost, residual SD s, degrees of freedom, starts and the best one,
        forward runs computed, cache hits, failed runs (with their errors).
    """

    name = "analyze.fit"
    Params = FitParams
    inputs = {
        "mesh": cs.Port(cs.TetMesh, help="the mesh the solver runs on"),
        "observed": cs.Port(cs.Table, optional=True,
                            help="time_s and observed columns named like the solver's outputs"),
        "observed_fields": cs.Port(cs.Fields, optional=True,
                                   help="field snapshots on the solver's mesh (instead of 'observed')"),
    }
    outputs = {"table": cs.Table, "residuals": cs.Table, "correlation": cs.Table, "runs": cs.Table}

    def analyze(self, mesh: cs.TetMesh, observed: cs.Table | None = None,  # type: ignore[override]
                observed_fields: cs.Fields | None = None) -> dict[str, cs.Table]:
        p = self.params
        if (observed is None) == (observed_fields is None):
            raise cs.InputError(f"{self.name} needs exactly one of 'observed' (a table of time courses) and "
                                f"'observed_fields' (field snapshots); got {'both' if observed else 'neither'}")
        specs = parse_parameters(p.parameters, self.name, require_bounds=True)
        if observed is not None:
            times, columns, vector, sigma = observed_arrays(self.name, observed, p.columns)
            output = p.solver_output
        else:
            assert observed_fields is not None
            times, columns, vector = field_arrays(self.name, observed_fields, mesh, p.species)
            sigma, output = None, p.solver_fields_output
        model = SolverForward(self.name, p.solver, p.solver_params, specs, mesh, times, columns, output)
        forward = CachedForward(model, model.n_outputs, model.key, p.cache_dir, p.workers)
        extra: dict[str, float | str] = {}
        try:
            if p.surrogate != "none":
                result, extra = self._surrogate_fit(model, forward, vector, specs, sigma)
            else:
                result = fit_least_squares(forward, vector, specs, sigma, p.n_starts, p.seed, p.confidence,
                                           p.max_iterations)
            if p.intervals == "profile":
                result = profile_intervals(forward, vector, specs, result, sigma, p.confidence)
        except ForwardFailure as exc:
            raise ForwardFailure(f"{self.name}: {exc}") from exc
        units = [_unit_at(p.solver_params, s.path) for s in specs]
        return self.tables(result, specs, columns, times, sigma, forward, units, extra,
                           n_points=len(mesh.points) if observed_fields is not None else 1)

    def _surrogate_fit(self, model: SolverForward, forward: CachedForward, vector: np.ndarray,
                       specs: list[ParameterSpec], sigma: np.ndarray | None) -> tuple[FitResult, dict[str, Any]]:
        """The fit on the chosen surrogate; a model the reduced basis cannot take falls back to the GP."""
        from ._surrogate import describe, surrogate_fit

        p = self.params
        fallback = ""
        if p.surrogate in ("auto", "reduced_basis"):
            from . import _reduced_basis as rb

            try:
                reduced = rb.reduced_basis_fit(model, forward, vector, specs, sigma, n_starts=max(p.n_starts, 8),
                                               seed=p.seed, confidence=p.confidence,
                                               pod_tolerance=p.reduced_basis_tolerance)
                return reduced.result, rb.describe(reduced)
            except rb.ReducedBasisUnavailable as exc:
                fallback = f"{exc}; using the Gaussian-process surrogate instead"
                if p.surrogate == "reduced_basis":
                    import warnings

                    warnings.warn(fallback, stacklevel=3)
        accelerated = surrogate_fit(forward, vector, specs, sigma, p.surrogate_points or 2 * len(specs) + 2,
                                    n_starts=max(p.n_starts, 8), seed=p.seed, confidence=p.confidence)
        extra = describe(accelerated)
        if fallback:
            extra["surrogate_fallback"] = fallback
        return accelerated.result, extra

    def tables(self, result: FitResult, specs: list[ParameterSpec], columns: list[str], times: np.ndarray,
               sigma: np.ndarray | None, forward: CachedForward, units: list[str] | None = None,
               extra_runs: dict[str, float | str] | None = None, n_points: int = 1) -> dict[str, cs.Table]:
        """The method's output tables from a fit result (also used with Python forward models).

        With field snapshots (``n_points`` values per species and time) the residual rows hold node means.
        """
        names = np.array([s.name for s in specs])
        estimates = cs.Table({
            "parameter": names, "estimate": result.estimate, "std_error": result.std_error,
            "ci_low": result.ci_low, "ci_high": result.ci_high, "low": np.array([s.low for s in specs]),
            "high": np.array([s.high for s in specs]), "initial": np.array([s.start() for s in specs]),
            "unit": np.array(units or [""] * len(specs)), "at_bound": result.at_bound.astype(np.int64),
        }, {}, f"estimates with {100 * self.params.confidence:g} % confidence intervals")
        scale = sigma if sigma is not None else np.full(result.residuals.size, result.sigma_hat)
        shape = (len(columns) * len(times), n_points)
        observed, predicted = (result.residuals + result.predicted).reshape(shape), result.predicted.reshape(shape)
        residual = result.residuals.reshape(shape)
        # a mean of n residuals has the standard deviation σ / √n
        standard = np.sqrt((scale.reshape(shape) ** 2).mean(axis=1) / n_points)
        residual_columns = {
            "output": np.repeat(np.array(columns), len(times)), "time_s": np.tile(times, len(columns)),
            "observed": observed.mean(axis=1), "predicted": predicted.mean(axis=1), "residual": residual.mean(axis=1),
            "standardized": residual.mean(axis=1) / standard,
        }
        if n_points > 1:
            residual_columns["rms_residual"] = np.sqrt((residual**2).mean(axis=1))
        residuals = cs.Table(residual_columns, {"time_s": "s"},
                             "fit residuals" + (" (node means of field snapshots)" if n_points > 1 else ""))
        std = np.sqrt(np.diag(result.covariance))
        correlation = result.covariance / np.outer(std, std)
        corr = {"parameter": names}
        corr.update({name: correlation[:, j] for j, name in enumerate(names)})
        extra = {"cost": result.cost, "residual_sd": result.sigma_hat, "degrees_of_freedom": float(result.dof),
                 "starts": float(len(result.starts)), "best_start": float(result.best_start),
                 "failed_starts": float(sum(1 for s in result.starts if s["status"] == -10)), **(extra_runs or {})}
        return {"table": estimates, "residuals": residuals, "correlation": cs.Table(corr, {}, "correlation of estimates"),
                "runs": runs_table(forward, extra)}


def _unit_at(params: dict[str, Any], path: tuple[str, ...]) -> str:
    """The unit written next to the number at ``path`` ("um/s" of ``"2.0 um/s"``), or ""."""
    node: Any = params
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return ""
        node = node[key]
    if isinstance(node, dict):
        return str(node.get("unit", ""))
    if isinstance(node, str):
        parts = node.strip().split(None, 1)
        return parts[1] if len(parts) == 2 else ""
    return "um^2/s" if path[-1] == "D" and "species" in path else ""  # a bare D is in µm²/s
