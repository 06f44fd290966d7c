"""Reduced-basis (POD–Galerkin) surrogates of a linear solver model, and the fit that uses one.

A linear model discretized by the solver (its :class:`LinearForm`: ``M du/dt + A u = f(t)``, Dirichlet
values ``g(t)``) whose parameters enter affinely — diffusion coefficients scale stiffness blocks,
first-order rate constants scale mass-weighted reaction blocks, constant fluxes and sources scale load
vectors — is written, with θ_mid the centre of the box::

    X(θ) = X(θ_mid) + Σ_i (θ_i − θ_mid,i) X_i        for X in M, A, f(t), u(0)

The pieces X_i come from the solver's own assembly at the two ends of each parameter's range; the
decomposition is verified (the midpoint of each range, and a point off the axes, must match to 1e-8)
before it is used, so a parameter that enters non-affinely (k², D·k, 1/k) is refused by name.
Non-linear models (Michaelis–Menten, Hill, nonlinear fluxes) are refused by the solver's
:meth:`linear_form`, naming the reaction.

From full runs' states at every time step (minus the Dirichlet lifting ĝ(t), so the basis vanishes on
Dirichlet nodes) a POD basis V (orthonormal, energy tolerance on unit-normalized snapshots) is taken, and
the model is projected: ``Mᵣ = Vᵀ M V``, ``Aᵣ = Vᵀ A V``, ``fᵣ(t) = Vᵀ (f(t) − A ĝ) …``. The reduced system
(r × r) is time-stepped by the solver's own integrator (same scheme, Δt, saved times), the states are
lifted back (u = ĝ(t) + V a) and observed by the solver's own output operator (region means, amounts,
probes, fields), so the fit runs entirely on the reduced model.

:func:`reduced_basis_fit` is the greedy loop: snapshots at the start → fit on the reduced model → one
full run at the estimate → the reduced model's error there (before those snapshots join: its validation
error) → stop when it is below ``accuracy`` times the residual standard deviation, else add the
snapshots and refit. Every full run is counted (and cached in the forward model).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs
import numpy as np

import cellscape as cs

from ._forward import CachedForward, ForwardFailure, ParameterSpec, SolverForward

__all__ = ["AffineModel", "ReducedBasisFit", "ReducedBasisUnavailable", "ReducedModel", "pod_basis",
           "reduced_basis_fit"]

AFFINE_TOLERANCE = 1e-8


class ReducedBasisUnavailable(cs.InputError):
    """The model is not linear in its species or not affine in the parameters (the message says which term)."""


@attrs.frozen
class _Step:
    newton_iterations: int
    linear_iterations: int
    residual_norm: float


def _norm(x: Any) -> float:
    if hasattr(x, "tocsr"):
        return float(np.sqrt((x.multiply(x)).sum()))
    return float(np.linalg.norm(np.asarray(x, float)))


class AffineModel:
    """The solver's linear form of a model at any θ, from the affine decomposition over the parameter box.

    Parameters
    ----------
    model : SolverForward
        The solver, its parameters, mesh, observed times and columns.
    specs : list of ParameterSpec
        The parameters (bounded).

    Attributes
    ----------
    assemblies : int
        Linear forms assembled (no time stepping; not solver runs).

    Raises
    ------
    ReducedBasisUnavailable
        The solver has no ``linear_form``, the model is not linear (naming the reaction), or a parameter
        enters some operator non-affinely (naming the parameter and the operator).
    """

    def __init__(self, model: SolverForward, specs: list[ParameterSpec]):
        self.model, self.specs = model, specs
        self.assemblies = 0
        self.low = np.array([s.low for s in specs])
        self.high = np.array([s.high for s in specs])
        self.mid = 0.5 * (self.low + self.high)
        self.mid_form = self.form(self.mid)
        self.times_checked = np.unique([0.0, float(self.mid_form.output_times_s[-1])])
        mid = self._pieces(self.mid_form)
        self.components: list[dict[str, Any]] = []
        self.axis_forms: list[tuple[Any, Any]] = []
        for i, spec in enumerate(specs):
            forms = []
            for value in (self.low[i], self.high[i]):
                theta = self.mid.copy()
                theta[i] = value
                forms.append(self.form(theta))
            self.axis_forms.append((forms[0], forms[1]))
            ends = [self._pieces(f) for f in forms]
            width = self.high[i] - self.low[i]
            component = {key: (ends[1][key] - ends[0][key]) / width for key in mid}
            for key in mid:
                if key.startswith("Dirichlet") and _norm(component[key]) > 0:
                    raise ReducedBasisUnavailable(f"{model.where}: no reduced basis: parameter '{spec.name}' changes "
                                                  f"the {key}; fitted parameters must not set Dirichlet values")
                # the midpoint of an affine dependence is the mean of the ends
                self._check(mid[key], 0.5 * (ends[0][key] + ends[1][key]), key, f"parameter '{spec.name}'")
            self.components.append(component)
        golden = (np.arange(1, len(specs) + 1) * 0.6180339887498949) % 1.0
        probe = self.low + (0.15 + 0.7 * golden) * (self.high - self.low)
        actual = self._pieces(self.form(probe))
        for key in mid:
            names = ", ".join(f"'{s.name}'" for s in specs)
            self._check(actual[key], self._combine(mid[key], key, probe), key, f"parameters {names} together (a product?)")
        self.mid_pieces = mid
        self.dirichlet_dofs = self.mid_form.dirichlet_dofs

    def form(self, theta: np.ndarray) -> Any:
        """The solver's linear form at θ (assembled now).

        A solver offers one through a ``linear_form(mesh)`` method (see ``solve.reaction_diffusion``) and
        signals a model without one by raising an InputError subclass named ``NonlinearModelError``.
        """
        method = cs.method(self.model.solver, **self.model.params_at(np.asarray(theta, float)))
        if not hasattr(method, "linear_form"):
            raise ReducedBasisUnavailable(f"{self.model.where}: solver '{self.model.solver}' offers no linear form "
                                          "(a linear_form(mesh) method); the reduced basis needs one")
        try:
            form = method.linear_form(self.model.mesh)
        except cs.InputError as exc:
            if type(exc).__name__ == "NonlinearModelError":
                raise ReducedBasisUnavailable(f"{self.model.where}: no reduced basis: {exc}") from exc
            raise
        self.assemblies += 1
        return form

    def _pieces(self, form: Any) -> dict[str, Any]:
        pieces = {"mass matrix": form.mass, "diffusion and reaction matrix (K − ∂F/∂u)": form.operator,
                  "initial state": form.initial}
        for t in self.times_checked:
            pieces[f"source at t = {t:g} s"] = form.source(float(t))
            pieces[f"Dirichlet values at t = {t:g} s"] = form.dirichlet_values(float(t))
        return pieces

    def _combine(self, base: Any, key: str, theta: np.ndarray) -> Any:
        result = base
        for component, delta in zip(self.components, theta - self.mid, strict=True):
            result = result + delta * component[key]
        return result

    def _check(self, actual: Any, predicted: Any, key: str, who: str) -> None:
        if actual.shape != predicted.shape:
            raise ReducedBasisUnavailable(f"{self.model.where}: {who} change(s) the size of the {key}")
        error = _norm(actual - predicted)
        scale = max(_norm(actual), _norm(predicted), 1e-300)
        if error > AFFINE_TOLERANCE * scale and error > 1e-300:
            raise ReducedBasisUnavailable(f"{self.model.where}: no reduced basis: {who} enter(s) the {key} "
                                          f"non-affinely (relative deviation {error / scale:.2e} from the affine "
                                          "decomposition); only linear dependence (D·K, k·M, constant fluxes) reduces")


def pod_basis(snapshots: np.ndarray, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal POD basis of snapshot columns (n, N), each normalized to unit length first.

    Rows that are zero in every snapshot (Dirichlet unknowns) are zero in the basis. Keeps the fewest
    modes r whose discarded singular values hold at most ``tolerance``² of the energy
    (Σ_{j≥r} σ_j² ≤ tolerance² Σ σ_j²). Returns the basis (n, r) and all singular values.
    """
    norms = np.linalg.norm(snapshots, axis=0)
    keep = norms > 1e-300
    if not keep.any():
        raise cs.InputError("every snapshot is zero; there is nothing to reduce")
    active = np.any(snapshots[:, keep] != 0.0, axis=1)  # rows zero in every snapshot (Dirichlet) stay exactly zero
    left, singular, _ = np.linalg.svd(snapshots[active][:, keep] / norms[keep], full_matrices=False)
    energy = np.cumsum(singular[::-1] ** 2)[::-1]  # energy[j] = Σ_{i>=j} σ_i²
    tail = np.append(energy[1:], 0.0)
    r = int(np.argmax(tail <= tolerance**2 * energy[0])) + 1
    basis = np.zeros((len(snapshots), r))
    basis[active] = left[:, :r]
    return basis, singular


class ReducedModel:
    """The Galerkin projection of an :class:`AffineModel` on a basis V, time-stepped and observed like the solver.

    Parameters
    ----------
    affine : AffineModel
    basis : ndarray, shape (n, r)
        Orthonormal, zero on the Dirichlet unknowns.
    """

    def __init__(self, affine: AffineModel, basis: np.ndarray):
        self.affine, self.basis = affine, basis
        mid = affine.mid_form
        dofs = affine.dirichlet_dofs
        vt = basis.T

        def project(matrix: Any) -> tuple[np.ndarray, np.ndarray]:
            left = np.asarray((matrix.T @ basis).T)  # Vᵀ X, shape (r, n)
            return left @ basis, left[:, dofs]

        self.mass = [project(mid.mass)] + [project(c["mass matrix"]) for c in affine.components]
        key = "diffusion and reaction matrix (K − ∂F/∂u)"
        self.operator = [project(mid.operator)] + [project(c[key]) for c in affine.components]
        self.initial = [vt @ mid.initial] + [vt @ c["initial state"] for c in affine.components]
        self._lift: dict[float, np.ndarray] = {}
        self._sources: dict[float, list[np.ndarray]] = {}
        self._observed: tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]] | None = None
        self.evaluations = 0

    def projected_source(self, t: float) -> list[np.ndarray]:
        """``Vᵀ f(θ_mid, t)`` and ``Vᵀ f_i(t)`` (kept: every run steps through the same times)."""
        if t not in self._sources:
            affine, vt = self.affine, self.basis.T
            pieces = [vt @ affine.mid_form.source(t)]
            for (low, high), width in zip(affine.axis_forms, affine.high - affine.low, strict=True):
                pieces.append(vt @ ((high.source(t) - low.source(t)) / width))
            self._sources[t] = pieces
        return self._sources[t]

    def lifting(self, t: float) -> np.ndarray:
        """Dirichlet values at t (n_dirichlet,); they do not depend on the parameters."""
        if t not in self._lift:
            self._lift[t] = self.affine.mid_form.dirichlet_values(t)
        return self._lift[t]

    def reduced_states(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Saved times and the reduced states a (n_times, r) at θ."""
        theta = np.asarray(theta, float)
        weights = np.r_[1.0, theta - self.affine.mid]
        mass = sum(w * m[0] for w, m in zip(weights, self.mass, strict=True))
        mass_d = sum(w * m[1] for w, m in zip(weights, self.mass, strict=True))
        operator = sum(w * a[0] for w, a in zip(weights, self.operator, strict=True))
        operator_d = sum(w * a[1] for w, a in zip(weights, self.operator, strict=True))
        initial = sum(w * a for w, a in zip(weights, self.initial, strict=True))

        def source(t: float) -> np.ndarray:
            return sum(w * f for w, f in zip(weights, self.projected_source(t), strict=True))

        stepper = _ReducedStepper(self, mass, mass_d, operator, operator_d, source)
        result = self.affine.mid_form.integrate(stepper, initial)  # Vᵀ u(0): V vanishes on the Dirichlet nodes
        if result.failure is not None:
            raise ArithmeticError(f"the reduced model failed: {result.failure}")
        self.evaluations += 1
        return result.times, result.states

    def _lifted(self, times: np.ndarray) -> np.ndarray:
        full = np.zeros((len(times), self.basis.shape[0]))
        for row, t in enumerate(times):
            full[row, self.affine.dirichlet_dofs] = self.lifting(float(t))
        return full

    def states(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Saved times and the lifted full states u = ĝ(t) + V a (n_times, n) of the reduced model at θ."""
        times, reduced = self.reduced_states(theta)
        return times, self._lifted(times) + reduced @ self.basis.T

    def _observation(self, times: np.ndarray) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
        """The solver's observation operator on the basis: rows of the observed times, and per observed column
        its values on each basis vector (r, q) and on the lifting at those rows (n_rows, q)."""
        model, observe = self.affine.model, self.affine.mid_form.observe
        on_lifting = observe(times, self._lifted(times))[model.output]
        rows = model.check_output(on_lifting)
        on_basis = observe(np.arange(self.basis.shape[1], dtype=float), self.basis.T)[model.output]
        pieces = []
        for column in model.columns:
            if isinstance(on_basis, cs.Fields):
                pieces.append((np.asarray(on_basis.values[column], float),
                               np.asarray(on_lifting.values[column], float)[rows]))
            else:
                pieces.append((np.asarray(on_basis.columns[column], float)[:, None],
                               np.asarray(on_lifting.columns[column], float)[rows][:, None]))
        return rows, pieces

    def outputs(self, theta: np.ndarray) -> np.ndarray:
        """The forward model's output vector at θ from the reduced model (the solver's observation operator,
        which is linear in the state, applied to the basis once)."""
        times, reduced = self.reduced_states(theta)
        if self._observed is None or not np.array_equal(self._observed[0], times):
            self._observed = (times, *self._observation(times))
        _, rows, pieces = self._observed
        return np.concatenate([(reduced[rows] @ on_basis + on_lifting).ravel() for on_basis, on_lifting in pieces])


class _ReducedStepper:
    """``solve_implicit`` of the reduced system, for the solver's integrator."""

    def __init__(self, reduced: ReducedModel, mass: np.ndarray, mass_d: np.ndarray, operator: np.ndarray,
                 operator_d: np.ndarray, source: Callable[[float], np.ndarray]):
        self.reduced, self.mass, self.mass_d = reduced, mass, mass_d
        self.operator, self.operator_d, self.source = operator, operator_d, source
        self.basis_t = reduced.basis.T
        self.has_dirichlet = len(reduced.affine.dirichlet_dofs) > 0
        self._factor: tuple[tuple[float, float], Any] | None = None
        self.free = np.ones(reduced.basis.shape[1], bool)

    def solve_implicit(self, guess: np.ndarray, t: float, a0: float, tau: float, history: np.ndarray,
                       *args: Any, **kwargs: Any) -> tuple[np.ndarray, _Step]:
        key = (a0, tau)
        if self._factor is None or not all(math.isclose(a, b, rel_tol=1e-12) for a, b in zip(key, self._factor[0],
                                                                                             strict=True)):
            # r is small: an explicit inverse makes each step one matrix-vector product
            self._factor = (key, np.linalg.inv(a0 * self.mass + tau * self.operator))
        rhs = self.mass @ history + tau * self.source(t)
        if self.has_dirichlet:
            g_new = self.reduced.lifting(t)
            # the history of the lifting: h = (1 + ω) g(tⁿ) − ω²/(1 + ω) g(tⁿ⁻¹), ω from a₀ = (1 + 2ω)/(1 + ω)
            omega = (a0 - 1.0) / (2.0 - a0)
            t_n = t - tau
            g_hist = self.reduced.lifting(t_n) if omega == 0.0 else (
                (1 + omega) * self.reduced.lifting(t_n) - omega**2 / (1 + omega) * self.reduced.lifting(t_n - tau / omega))
            rhs = rhs - self.mass_d @ (a0 * g_new - g_hist) - tau * (self.operator_d @ g_new)
        return self._factor[1] @ rhs, _Step(1, 0, 0.0)


@attrs.frozen
class ReducedBasisFit:
    """A reduced-basis-accelerated fit.

    Attributes
    ----------
    result : FitResult
        The estimate on the last reduced model, with residuals and s from the full model there; the confidence
        intervals use the reduced model's Jacobian scaled to the full model's s.
    solver_runs : int
        Full solver runs (snapshot runs and validations; each estimate's validation run is also a snapshot run).
    rounds : int
        Fits on a reduced model.
    validation_errors : list of float
        Per round: relative L2 error of the reduced model's outputs at its estimate, before that point's
        snapshots joined the basis.
    basis_sizes : list of int
        Basis size r of each round.
    assemblies : int
        Linear forms assembled for the affine decomposition (no time stepping).
    reduced_evaluations : int
        Reduced-model runs (the fit's forward evaluations).
    design : ndarray, shape (n, p)
        Every θ the full model was run at.
    validated : bool
        The last reduced model met ``accuracy`` at its estimate (False: ``max_rounds`` ran out first).
    """

    result: Any
    solver_runs: int
    rounds: int
    validation_errors: list[float]
    basis_sizes: list[int]
    assemblies: int
    reduced_evaluations: int
    design: np.ndarray
    validated: bool


def full_run(affine: AffineModel, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One full solver run at θ (assembly and time stepping by the solver): outputs and the snapshots (n, steps + 1).

    The snapshots are the initial state and the state after every time step, minus the Dirichlet values.
    """
    form = affine.form(theta)
    recorded: list[np.ndarray] = [form.initial]
    system = form.system

    class Recorder:
        free = system.free

        @staticmethod
        def solve_implicit(*args: Any, **kwargs: Any) -> tuple[np.ndarray, Any]:
            u, step = system.solve_implicit(*args, **kwargs)
            recorded.append(u)
            return u, step

    result = form.integrate(Recorder(), form.initial)
    if result.failure is not None:
        raise ArithmeticError(f"the solver diverged {result.failure}")
    model = affine.model
    outputs = model.extract(form.observe(result.times, result.states)[model.output])
    snapshots = np.array(recorded).T
    for state in affine.components:  # the parameters' share of the initial state must be representable
        if np.any(state["initial state"]):
            snapshots = np.column_stack([snapshots, state["initial state"]])
    snapshots[form.dirichlet_dofs] = 0.0
    return outputs, snapshots


def reduced_basis_fit(model: SolverForward, forward: CachedForward, observed: np.ndarray, specs: list[ParameterSpec],
                      sigma: np.ndarray | None = None, n_starts: int = 8, seed: int = 0, confidence: float = 0.95,
                      pod_tolerance: float = 1e-8, accuracy: float = 0.01, max_rounds: int = 8) -> ReducedBasisFit:
    """Fit on a reduced-basis model refined greedily at its estimates (see the module docstring).

    Parameters
    ----------
    model : SolverForward
        The solver as a forward model (its parameters, mesh, times, columns).
    forward : CachedForward
        Its cached evaluation: every full run is stored there and counted in ``forward.runs``.
    observed, sigma, confidence
        As in :func:`.fit.fit_least_squares`.
    n_starts : int
        Multi-start of each fit on the reduced model (no full runs).
    pod_tolerance : float
        Relative RMS of the discarded snapshot energy (unit-normalized snapshots).
    accuracy : float
        Stop when the reduced model's output error at its estimate (weighted RMS over the outputs) is below
        ``accuracy`` times the full model's residual standard deviation there: the estimate then moves by
        about that fraction of a standard error at most.
    max_rounds : int
        Greedy rounds (one full run each) at most.

    Raises
    ------
    ReducedBasisUnavailable
        Non-linear or non-affine model (see :class:`AffineModel`).
    ForwardFailure
        The full model fails at the start or at an estimate.
    """
    from ._surrogate import with_real_residuals
    from .fit import fit_least_squares

    runs_before = forward.runs
    affine = AffineModel(model, specs)
    weight = 1.0 / np.asarray(sigma, float) if sigma is not None else np.ones(observed.size)
    p = len(specs)

    def run_full(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        try:
            outputs, snapshots = full_run(affine, theta)
        except (ArithmeticError, cs.InputError) as exc:
            forward.record_failure(theta, exc)
            raise ForwardFailure(f"the full model failed at θ = {np.asarray(theta).tolist()}: {exc}") from exc
        forward.record(theta, outputs)
        return outputs, snapshots

    theta = np.array([s.start() for s in specs], float)
    _, snapshots = run_full(theta)
    design = [theta]
    errors: list[float] = []
    sizes: list[int] = []
    evaluations = 0
    rounds = 0
    validated = False
    for rounds in range(1, max_rounds + 1):
        basis, _ = pod_basis(snapshots, pod_tolerance)
        reduced = ReducedModel(affine, basis)
        sizes.append(basis.shape[1])
        cheap = CachedForward(reduced.outputs, observed.size)
        begun = [attrs.evolve(s, initial=float(v)) for s, v in zip(specs, theta, strict=True)]
        on_reduced = fit_least_squares(cheap, observed, begun, sigma, n_starts=n_starts, seed=seed + rounds,
                                       confidence=confidence)
        evaluations += cheap.runs
        if cheap.failures:
            raise ForwardFailure(f"the reduced model failed: {cheap.failures[0][1]}")
        theta = on_reduced.estimate
        predicted = on_reduced.predicted
        if any(np.array_equal(theta, d) for d in design):
            validated = True  # the full model already ran here and the reduced model reproduces its snapshots
            break
        real, new = run_full(theta)
        design.append(theta)
        errors.append(float(np.linalg.norm(predicted - real) / max(np.linalg.norm(real), 1e-300)))
        r = (real - observed) * weight
        spread = math.sqrt(float(r @ r) / max(observed.size - p, 1)) if sigma is None else 1.0
        miss = math.sqrt(float(np.mean(((predicted - real) * weight) ** 2)))
        if miss <= accuracy * spread:
            validated = True
            break
        snapshots = np.column_stack([snapshots, new])
    final = with_real_residuals(on_reduced, forward(theta), observed, specs, sigma)  # a cache hit: run above
    return ReducedBasisFit(final, forward.runs - runs_before, rounds, errors, sizes, affine.assemblies,
                           evaluations, np.array(design), validated)


def describe(fit: ReducedBasisFit) -> dict[str, Any]:
    """Numbers for the runs table."""
    errors = fit.validation_errors
    return {"surrogate": "reduced_basis", "surrogate_solver_runs": float(fit.solver_runs),
            "surrogate_rounds": float(fit.rounds),
            "surrogate_validation_error": float(errors[-1]) if errors else math.nan,
            "surrogate_validation_error_max": float(max(errors)) if errors else math.nan,
            "reduced_basis_size": float(fit.basis_sizes[-1]), "reduced_basis_assemblies": float(fit.assemblies),
            "reduced_model_runs": float(fit.reduced_evaluations), "reduced_basis_validated": float(fit.validated)}
