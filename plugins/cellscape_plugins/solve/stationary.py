"""``solve.stationary``: the steady state of a reaction–diffusion model, by Newton's method.

The same model and discretization as ``solve.reaction_diffusion`` (see
:mod:`.reaction_diffusion`), without the time derivative::

    K u − F(u, t) = 0        (t = ``time_s`` in time-dependent expressions)

Two ways to get there:

``pseudo_transient`` (default)
    Pseudo-transient continuation: Newton steps on
    ``M (u − uᵏ)/δ + K u − F(u) = 0`` with the pseudo step δ growing as the
    residual falls (switched evolution relaxation, ``δₖ₊₁ = δₖ ‖rₖ₋₁‖/‖rₖ‖``, at least doubling
    and at most ×10; a step that makes the residual non-finite or 1000× larger is retried with δ/4)
    until it is effectively Newton's method. Every step conserves what the
    reactions conserve, so a closed system (no Dirichlet or Robin
    condition, reactions that only convert species) reaches the steady state
    holding the amounts of the initial condition — where plain Newton would
    face a singular Jacobian.
``newton``
    Newton's method with a line search on ``K u − F(u)`` from the initial
    condition: one linear solve for a linear model; needs a unique steady
    state (e.g. a Dirichlet or Robin condition, or decay for every species).

``adaptive`` (linear single-species models only) runs the solve–estimate–
mark–refine loop of :mod:`._adaptive` (residual estimator, Dörfler marking,
``mesh.refine``) and returns the fields on the refined mesh.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import numpy as np

import cellscape as cs

from ._linear import BACKENDS, METHODS, PRECONDITIONERS
from ._model import parse_model
from .reaction_diffusion import DiscreteSystem, ModelSolver, NewtonFailure, SolverDivergedError

__all__ = ["REJECT_GROWTH", "Stationary", "StationaryParams", "pseudo_transient"]

REJECT_GROWTH = 1e3
"""A pseudo step whose steady residual grows by more than this factor is rejected and δ quartered."""


@attrs.frozen
class StationaryParams:
    model: dict[str, Any] = cs.param(
        help="species, parameters, reactions and boundary_conditions, as for solve.reaction_diffusion")
    method: str = cs.param("pseudo_transient", choices=("pseudo_transient", "newton"),
                           help="continuation in pseudo time (keeps conserved amounts) or plain Newton")
    time_s: float = cs.param(0.0, ge=0, unit="s", help="time at which time-dependent expressions are evaluated")
    pseudo_dt_s: float = cs.param(0.01, gt=0, unit="s", help="first pseudo time step of pseudo_transient")
    rtol: float = cs.param(1e-10, gt=0, help="stop when the steady residual falls below rtol times its initial norm")
    max_iterations: int = cs.param(200, ge=1, help="nonlinear iterations before giving up")
    mass: str = cs.param("consistent", choices=("consistent", "lumped"), help="mass matrix (reactions, pseudo time)")
    backend: str = cs.param("scipy", choices=BACKENDS, help="linear solver library")
    linear_method: str = cs.param("auto", choices=METHODS, help="linear solver (auto: direct when small, else Krylov)")
    preconditioner: str = cs.param("auto", choices=PRECONDITIONERS, help="preconditioner of iterative linear solvers")
    linear_rtol: float = cs.param(1e-10, gt=0, help="relative residual tolerance of iterative linear solves")
    petsc_options: dict[str, Any] | str | None = cs.param(
        None, help="PETSc options passed straight through (backend petsc), e.g. '-ksp_type cg -pc_type gamg'")
    probes_nm: list[tuple[float, float, float]] = cs.param([], unit="nm", help="points whose values are reported")
    adaptive: dict[str, Any] | None = cs.param(
        None, help="adaptive refinement (linear one-species models): {tolerance, max_unknowns, theta, max_rounds}")

    def __attrs_post_init__(self) -> None:
        parse_model(self.model)
        if self.petsc_options is not None and self.backend != "petsc":
            raise cs.InputError("parameter 'petsc_options' is given but backend is 'scipy'; set backend: petsc")


@attrs.frozen
class SteadyResult:
    """The steady state and how it was reached (one entry per nonlinear iteration in ``history``)."""

    state: np.ndarray
    history: dict[str, np.ndarray]
    failure: str | None


def pseudo_transient(system: DiscreteSystem, initial: np.ndarray, t: float, pseudo_dt: float, rtol: float = 1e-10,
                     max_iterations: int = 200, newton: bool = False) -> SteadyResult:
    """Steady state of ``K u = F(u, t)`` by pseudo-transient continuation or (``newton=True``) Newton's method.

    Parameters
    ----------
    system : DiscreteSystem
    initial : ndarray, shape (n,)
        Starting state (species units); pseudo-transient continuation keeps its conserved amounts.
    t : float
        Time of time-dependent expressions (s).
    pseudo_dt : float
        First pseudo step δ (s).
    rtol : float
        Converged when ``‖K u − F(u)‖ <= rtol ‖K u₀ − F(u₀)‖``, or when the state stops changing
        (relative 1e-13) once δ exceeds 1e12 s. Newton: its update criterion with this rtol.
    max_iterations : int
        Iterations before giving up.
    newton : bool
        Plain Newton's method with a line search instead.

    Returns
    -------
    SteadyResult
        ``failure`` is None or says why the iteration stopped (the state is then the last good iterate).
    """
    u = system.impose(initial, t)
    zero = np.zeros_like(u)
    history: dict[str, list[float]] = {"iteration": [], "pseudo_dt_s": [], "residual_norm": [],
                                       "newton_iterations": [], "linear_iterations": []}

    def finish(state: np.ndarray, failure: str | None) -> SteadyResult:
        return SteadyResult(state, {k: np.asarray(v, float) for k, v in history.items()}, failure)

    def record(iteration: int, delta: float, norm: float, newton_iterations: int, linear: int) -> None:
        for key, value in zip(history, (iteration, delta, norm, newton_iterations, linear), strict=True):
            history[key].append(value)

    if newton:
        try:
            u_new, step = system.solve_implicit(u, t, 0.0, 1.0, zero, rtol=rtol, max_iterations=max_iterations)
        except NewtonFailure as exc:
            return finish(u, f"Newton's method failed: {exc}")
        record(1, math.inf, step.residual_norm, step.newton_iterations, step.linear_iterations)
        return finish(u_new, None)
    norm0 = norm = float(np.linalg.norm(system.residual(u, t, 0.0, 1.0, zero)))
    if norm0 == 0.0:
        return finish(u, None)
    delta = pseudo_dt
    for iteration in range(1, max_iterations + 1):
        try:
            # one Newton step of M (u − uᵏ) + δ (K u − F(u)) = 0 from uᵏ
            u_new, step = system.solve_implicit(u, t, 1.0, delta, u, single_step=True)
            new_norm = float(np.linalg.norm(system.residual(u_new, t, 0.0, 1.0, zero)))
            if not math.isfinite(new_norm) or new_norm > REJECT_GROWTH * norm:
                raise NewtonFailure(f"the steady residual grew from {norm:.3e} to {new_norm:.3e}")
        except NewtonFailure as exc:
            delta *= 0.25
            if delta < 1e-14 * pseudo_dt:
                return finish(u, f"iteration {iteration}: {exc}")
            continue
        change = float(np.abs(u_new - u).max()) / max(float(np.abs(u_new).max()), 1e-300)
        u = u_new
        record(iteration, delta, new_norm, 1, step.linear_iterations)
        if new_norm <= rtol * norm0 or (delta > 1e12 and change <= 1e-13):
            return finish(u, None)
        # switched evolution relaxation, at least doubling: the residual of a transient need not fall monotonically
        delta *= min(10.0, max(2.0, norm / new_norm))
        norm = new_norm
    return finish(u, f"no steady state after {max_iterations} iterations: residual norm {norm:.3e}, "
                     f"{norm / norm0:.3e} of the initial one")


class Stationary(ModelSolver):
    """Steady state of a reaction–diffusion model (volume and membrane species): P1 FEM, Newton, SciPy or PETSc.

    Same model and outputs as ``solve.reaction_diffusion``: ``fields`` (one
    time point, ``time_s``), ``probes`` and ``steps`` (one row per nonlinear
    iteration: pseudo step, steady residual norm, linear iterations).
    """

    name = "solve.stationary"
    version = "1"
    Params = StationaryParams

    def _results(self, mesh: cs.TetMesh) -> dict[str, cs.Artefact]:
        return self.steady_state(mesh)

    def steady_state(self, mesh: cs.TetMesh) -> dict[str, cs.Artefact]:
        """Solve; return ``{"fields", "probes", "steps"}``.

        Raises
        ------
        SolverDivergedError
            When the iteration fails; ``.partial`` holds the outputs of the last iterate.
        """
        from ._output import make_outputs

        p = self.params
        if p.adaptive is not None:
            return self._adaptive(mesh)
        system = self.system(mesh)
        initial = system.initial_state()
        result = pseudo_transient(system, initial, p.time_s, p.pseudo_dt_s, p.rtol, p.max_iterations,
                                  newton=p.method == "newton")
        units = {"iteration": "", "pseudo_dt_s": "s", "residual_norm": "", "newton_iterations": "",
                 "linear_iterations": ""}
        steps = cs.Table(result.history, units, title=f"{p.method} iterations towards the steady state")
        outputs = make_outputs(system, np.array([p.time_s]), result.state[None], steps, p.probes_nm)
        if result.failure is not None:
            raise SolverDivergedError(f"{self.name}: {result.failure}; lower pseudo_dt_s, raise max_iterations, "
                                      "or check the rate laws and boundary conditions", outputs)
        return outputs

    def _adaptive(self, mesh: cs.TetMesh) -> dict[str, cs.Artefact]:
        """The solve–estimate–mark–refine loop of :mod:`._adaptive` on the model's linear problem."""
        from ._adaptive import adapt
        from ._output import make_outputs

        p = self.params
        options = dict(p.adaptive or {})
        unknown = sorted(set(options) - {"tolerance", "max_unknowns", "theta", "max_rounds"})
        if unknown:
            raise cs.InputError(f"{self.name}: parameter 'adaptive': unknown key(s) {unknown}; "
                                "allowed: tolerance, max_unknowns, theta, max_rounds")
        system = self.system(mesh)
        problem = linear_problem(system, p.time_s, self.name)
        try:
            result = adapt(mesh, problem, backend=p.backend, method=p.linear_method, preconditioner=p.preconditioner,
                           rtol=p.linear_rtol, petsc_options=p.petsc_options,
                           progress=lambda rounds, total: self.progress(rounds, total=total,
                                                                        description="adaptive refinement"),
                           **options)
        except cs.InputError as exc:
            raise type(exc)(f"{self.name}: adaptive: {exc}") from exc
        refined = self.system(result.mesh)
        (name,) = refined.species_dofs
        state = np.zeros(refined.size)
        state[refined.species_dofs[name]] = result.solution[refined.bound.placements[name].nodes]
        return make_outputs(refined, np.array([p.time_s]), state[None], result.history, p.probes_nm)


def linear_problem(system: DiscreteSystem, t: float, who: str) -> Any:
    """The model as ``−∇·(D∇u) + σ u = f`` with boundary data, for :func:`._adaptive.adapt`.

    Raises
    ------
    cellscape.InputError
        If the model has more than one species, a surface species, a species not in every region,
        a rate that is not affine in the species with a constant slope, or σ < 0.
    """
    from ._adaptive import BoundaryCondition, StationaryProblem
    from ._model import _resolve

    bound, model = system.bound, system.bound.model
    mesh = bound.mesh

    def refuse(reason: str) -> cs.InputError:
        return cs.InputError(f"{who}: adaptive refinement needs a linear model of one volume species in every "
                             f"region; {reason}")

    if len(model.species) != 1:
        raise refuse(f"this one has species {list(model.species)}")
    (species,) = model.species.values()
    name = species.name
    if species.kind != "volume" or len(bound.placements[name].nodes) != len(np.unique(mesh.tetrahedra)):
        raise refuse(f"'{name}' is a surface species or lives in some regions only")
    placement = bound.placements[name]
    diffusion = {int(m): float(placement.diffusion[placement.markers == m][0]) for m in np.unique(placement.markers)}
    reaction_per_s = 0.0
    sources = []
    surface: dict[int, list[tuple[float, Any]]] = {}
    for reaction in model.reactions:
        nu = reaction.stoichiometry.get(name, 0.0) / species.unit.scale
        slope_expression = reaction.rate.derivative(name)
        if not slope_expression.is_constant:
            raise refuse(f"the rate of '{reaction.name}' is not affine in '{name}' with a constant slope")
        slope = float(slope_expression.evaluate({}))
        offset = reaction.rate.substitute({name: 0.0, "t": t})
        if nu == 0:
            continue
        if reaction.surface is None:
            reaction_per_s -= nu * slope
            sources.append((nu, offset))
            continue
        for marker in _resolve(reaction.surface, mesh.boundary_markers, mesh.boundary_names, "boundary", reaction.name):
            surface.setdefault(marker, []).append((-nu * slope, (nu, offset)))
    if reaction_per_s < 0:
        raise refuse(f"the reactions produce '{name}' in proportion to itself (σ = {reaction_per_s:g} 1/s < 0)")

    def data(terms: list[tuple[float, Any]]) -> Any:
        compiled = [(factor, expression.compile()) for factor, expression in terms]

        def value(x: Any, y: Any, z: Any) -> Any:
            env = {"x": x, "y": y, "z": z, "t": t}
            return sum(factor * np.broadcast_to(np.asarray(f(env), float), np.shape(x)) for factor, f in compiled)

        return value

    boundary: dict[int, Any] = {}
    for marker, terms in surface.items():
        alpha = sum(a for a, _ in terms)
        flux = data([term for _, term in terms])
        boundary[marker] = BoundaryCondition.robin(alpha, flux) if alpha > 0 else BoundaryCondition.neumann(flux)
    for condition in model.dirichlet:
        for marker in _resolve(condition.surface, mesh.boundary_markers, mesh.boundary_names, "boundary",
                               condition.name):
            boundary[marker] = BoundaryCondition.dirichlet(data([(1.0 / species.unit.scale, condition.value)]))
    return StationaryProblem(diffusion, reaction_per_s, data(sources) if sources else 0.0, boundary)
