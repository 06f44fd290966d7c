"""``solve.reaction_diffusion``: species in volumes and on membranes, reactions, fluxes, implicit time stepping.

The model (see :mod:`._model`) is discretized with P1 finite elements: volume
species on the tetrahedra of their regions, surface species on their marked
boundary triangles. With all unknowns in one vector ``u`` (each species in
its own unit: µM, molecules/µm²...) the semi-discrete system is::

    M du/dt + K u = F(u, t)

- ``M`` block-diagonal mass (µm³ for volume, µm² for surface species),
  consistent or lumped; ``K`` block-diagonal stiffness with the diffusion
  coefficient per cell (µm³/s, µm²/s);
- ``F`` the reactions with nodal quadrature: a reaction with rate ``r``
  (amount/µm³/s in a volume, amount/µm²/s on a surface) adds
  ``ν_q / s_q · W r(u_nodes)`` to species ``q`` (stoichiometry ν, unit
  scale ``s_q``, ``W`` the volume or surface mass of the reaction's domain).
  A surface reaction that changes a volume species is that species' boundary
  flux (Neumann and Robin conditions are such reactions);
- Dirichlet values are imposed on their nodes.

Time stepping is backward Euler (order 1) or variable-step BDF2 (order 2,
started with one backward-Euler step)::

    M (a₀ u − h) + Δt (K u − F(u, tⁿ⁺¹)) = 0,    a₀ = (1 + 2ω)/(1 + ω),
    h = (1 + ω) uⁿ − ω²/(1 + ω) uⁿ⁻¹,           ω = Δtₙ / Δtₙ₋₁   (BE: a₀ = 1, h = uⁿ)

solved by Newton's method with a backtracking line search on the residual
norm; the Jacobian ``a₀ M + Δt (K − ∂F/∂u)`` comes from symbolic derivatives
of the rate laws. Linear models take one Newton step and reuse the
factorization while Δt is unchanged; nonlinear ones keep a factorized
Jacobian across iterations and steps (a₀, Δt within 20 %) while it shrinks
successive updates at least fivefold without damping, and rebuild it otherwise. With ``adaptive: true`` the local error
is estimated from the difference between the implicit solution and an
explicit extrapolation of the previous steps (Milne's device, scaled by the
ratio of the two methods' error constants), steps with a weighted RMS error
above 1 are rejected and the step size follows ``0.9 · err^(−1/(p+1))``.

Every reaction that conserves molecules (all amounts converted through the
species' units) conserves the total amount Σ_s s_s 1ᵀ M_s u_s to the Newton
tolerance, for either mass matrix.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

import cellscape as cs

from ._linear import (
    BACKENDS,
    METHODS,
    PRECONDITIONERS,
    ConvergenceError,
    LinearSolver,
    PetscCollective,
    make_solver,
)
from ._model import BoundModel, bind_model, parse_model

if TYPE_CHECKING:
    from scipy import sparse

__all__ = [
    "DiscreteSystem",
    "LinearForm",
    "NewtonFailure",
    "NonlinearModelError",
    "ReactionDiffusion",
    "ReactionDiffusionParams",
    "SolverDivergedError",
    "StepResult",
    "integrate",
]


class SolverDivergedError(cs.InputError):
    """Newton's method or the linear solver failed even at the smallest step.

    Attributes
    ----------
    partial : dict[str, cellscape.Artefact]
        The outputs up to the last good state (``fields``, ``probes``, ``steps``),
        the last good state included as the last time point.
    """

    def __init__(self, message: str, partial: dict[str, cs.Artefact] | None = None):
        super().__init__(message)
        self.partial = partial or {}


class NonlinearModelError(cs.InputError):
    """The model has no linear form (a rate nonlinear in the species, a time-dependent coefficient, adaptive steps)."""


class NewtonFailure(ArithmeticError):
    """One implicit solve failed (the step is then rejected or reported)."""


@attrs.frozen
class StepResult:
    """What one implicit solve did."""

    newton_iterations: int
    linear_iterations: int
    residual_norm: float


# ---------------------------------------------------------------- the discrete system


@attrs.frozen
class _Term:
    """One reaction on its domain: nodes, mass matrix, compiled rate and derivatives, targets."""

    name: str
    coordinates: dict[str, np.ndarray]
    mass: Any
    rate: Callable[[Mapping[str, Any]], Any]
    inputs: dict[str, np.ndarray]  # species in the rate → their dofs at the domain nodes
    derivatives: dict[str, tuple[Callable[[Mapping[str, Any]], Any], bool]]  # species → (∂r/∂u, constant?)
    targets: list[tuple[np.ndarray, float]]  # (dofs of the species, ν / scale)
    size: int


class DiscreteSystem:
    """P1 discretization of a bound model: ``M du/dt + K u = F(u, t)`` with Dirichlet nodes.

    Parameters
    ----------
    bound : BoundModel
        The model on its mesh (:func:`._model.bind_model`).
    lumped : bool
        Lumped (diagonal) mass matrices for the time derivative and the reactions.
    backend, method, preconditioner, linear_rtol, petsc_options
        Passed to :func:`._linear.make_solver`.

    Attributes
    ----------
    mass, stiffness : scipy.sparse.csr_matrix, shape (n, n)
        Block-diagonal global matrices (µm³ or µm², and µm³/s or µm²/s).
    weights : ndarray, shape (n,)
        Lumped mass of every unknown (µm³ or µm²): ``weights @ u`` sums amounts in species units.
    scales : ndarray, shape (n,)
        Base units (molecules per µm³ or µm²) in one unit of each unknown's species.
    dirichlet_dofs : ndarray of int
        Unknowns fixed by Dirichlet conditions.
    linear : bool
        The reactions are affine in the species with time-independent derivatives (one Newton step is exact).
    """

    def __init__(self, bound: BoundModel, lumped: bool = False, backend: str = "scipy", method: str = "auto",
                 preconditioner: str = "auto", linear_rtol: float = 1e-10,
                 petsc_options: Mapping[str, Any] | str | None = None):
        from scipy import sparse

        from ._p1 import assemble_p1
        from ._surface import assemble_surface_p1

        self.bound, self.lumped = bound, lumped
        self.solver_options = {"backend": backend, "method": method, "preconditioner": preconditioner,
                               "rtol": linear_rtol, "petsc_options": petsc_options}
        model, points = bound.model, bound.points_um
        n = bound.size
        self.size = n
        rows, cols, k_values, m_values = [], [], [], []
        self.local_mass: dict[str, sparse.csr_matrix] = {}
        self.weights = np.zeros(n)
        self.scales = np.zeros(n)
        self.species_dofs: dict[str, np.ndarray] = {}
        for name, placement in bound.placements.items():
            species = model.species[name]
            local_cells = placement.local(placement.cells)
            local_points = points[placement.nodes]
            m = len(placement.nodes)
            stiffness = sparse.csr_matrix((m, m))
            if species.kind == "volume":
                mass = None
                for value in np.unique(placement.diffusion):
                    chosen = placement.diffusion == value
                    k_part, m_part = assemble_p1(local_points, local_cells[chosen], lumped=lumped)
                    stiffness = stiffness + value * k_part
                    mass = m_part if mass is None else mass + m_part
            else:
                stiffness, mass = assemble_surface_p1(local_points, local_cells, lumped=lumped,
                                                      coefficient=placement.diffusion)
            dofs = placement.offset + np.arange(m)
            self.species_dofs[name] = dofs
            self.local_mass[name] = mass.tocsr()
            self.weights[dofs] = np.asarray(mass.sum(axis=1)).ravel()
            self.scales[dofs] = species.unit.scale
            for matrix, values in ((stiffness.tocoo(), k_values), (mass.tocoo(), m_values)):
                values.append((dofs[matrix.row], dofs[matrix.col], matrix.data))
        del rows, cols
        # multigrid per species: one AMG of the coupled matrix mixes species on its coarse levels and its Krylov
        # iterations grow with the mesh (90 -> 210 from 1e4 to 1e5 unknowns for A + B <-> C; per species 105 -> 125)
        self.solver_options["blocks"] = list(self.species_dofs.values())
        self.stiffness = _sum_coo(k_values, n)
        self.mass = _sum_coo(m_values, n)
        self.terms = [self._term(reaction) for reaction in model.reactions]
        self.linear = all(constant and not (name == "t") for term in self.terms
                          for name, (_, constant) in term.derivatives.items())
        self._constant_jacobian = self._reaction_jacobian(None, 0.0, constant_part=True)
        self._dirichlet = []
        dirichlet_dofs = []
        for condition in model.dirichlet:
            placement = bound.placements[condition.species]
            nodes = np.unique(bound.dirichlet_triangles[condition.name])
            dofs = placement.offset + placement.local(nodes)
            coordinates = _coordinates(points[nodes])
            scale = model.species[condition.species].unit.scale
            self._dirichlet.append((dofs, condition.value.compile(), coordinates, scale))
            dirichlet_dofs.append(dofs)
        self.dirichlet_dofs = np.unique(np.concatenate(dirichlet_dofs)) if dirichlet_dofs else np.zeros(0, int)
        self.free = np.ones(n, bool)
        self.free[self.dirichlet_dofs] = False
        self._solver: LinearSolver | None = None
        self._solver_key: tuple[float, float] | None = None
        self._jacobian_good = False
        self.linear_iterations = 0

    # -- reactions ------------------------------------------------------------
    def _term(self, reaction: Any) -> _Term:
        from ._surface import assemble_surface_p1

        bound, model = self.bound, self.bound.model
        involved = sorted(set(reaction.stoichiometry) | (reaction.rate.symbols & set(model.species)))
        if reaction.surface is None:
            placement = bound.placements[involved[0]]
            nodes, mass = placement.nodes, self.local_mass[involved[0]]
        else:
            triangles = bound.reaction_triangles[reaction.name]
            nodes = np.unique(triangles)
            _, mass = assemble_surface_p1(bound.points_um[nodes], np.searchsorted(nodes, triangles), lumped=self.lumped)
        dofs = {name: bound.placements[name].offset + bound.placements[name].local(nodes) for name in involved}
        rate_species = sorted(reaction.rate.symbols & set(model.species))
        derivatives = {}
        for name in rate_species:
            derivative = reaction.rate.derivative(name)
            constant = not (derivative.symbols & (set(model.species) | {"t"}))
            derivatives[name] = (derivative.compile(), constant)
        if "t" in reaction.rate.symbols and rate_species:
            derivatives.setdefault("t", (lambda env: 0.0, False))
        targets = [(dofs[name], nu / model.species[name].unit.scale) for name, nu in reaction.stoichiometry.items()]
        return _Term(reaction.name, _coordinates(bound.points_um[nodes]), mass.tocsr(), reaction.rate.compile(),
                     {name: dofs[name] for name in rate_species}, derivatives, targets, len(nodes))

    def _environment(self, term: _Term, u: np.ndarray | None, t: float) -> dict[str, Any]:
        env: dict[str, Any] = dict(term.coordinates)
        env["t"] = t
        if u is not None:
            env.update({name: u[dofs] for name, dofs in term.inputs.items()})
        return env

    def reactions(self, u: np.ndarray, t: float) -> np.ndarray:
        """``F(u, t)``: reaction and flux terms of every unknown (species unit · µm³/s or · µm²/s)."""
        result = np.zeros(self.size)
        with np.errstate(all="ignore"):
            for term in self.terms:
                rate = np.broadcast_to(np.asarray(term.rate(self._environment(term, u, t)), float), (term.size,))
                weighted = term.mass @ rate
                for dofs, factor in term.targets:
                    result[dofs] += factor * weighted
        return result

    def _reaction_jacobian(self, u: np.ndarray | None, t: float, constant_part: bool) -> sparse.csr_matrix:
        from ._surface import coupling_entries

        entries = []
        with np.errstate(all="ignore"):
            for term in self.terms:
                env = self._environment(term, u, t) if u is not None else dict(term.coordinates, t=t)
                for name, (derivative, constant) in term.derivatives.items():
                    if name == "t" or constant != constant_part:
                        continue
                    values = np.broadcast_to(np.asarray(derivative(env), float), (term.size,))
                    for dofs, factor in term.targets:
                        entries.append(coupling_entries(term.mass, dofs, term.inputs[name], factor * values))
        return _sum_coo(entries, self.size)

    def reaction_jacobian(self, u: np.ndarray, t: float) -> sparse.csr_matrix:
        """``∂F/∂u`` at ``u`` (constant parts are assembled once)."""
        if self.linear:
            return self._constant_jacobian
        return self._constant_jacobian + self._reaction_jacobian(u, t, constant_part=False)

    def nonlinear_reactions(self) -> list[str]:
        """Why the system is not linear: one line per reaction whose rate is nonlinear in the species or has a
        time-dependent coefficient of a species (empty for a linear system)."""
        species = set(self.bound.model.species)
        found = []
        for reaction in self.bound.model.reactions:
            for name in sorted(reaction.rate.symbols & species):
                depends = reaction.rate.derivative(name).symbols
                if depends & species:
                    found.append(f"reaction '{reaction.name}' (rate '{reaction.rate.text}') is nonlinear in "
                                 f"{', '.join(sorted(depends & species))}")
                    break
                if "t" in depends:
                    found.append(f"reaction '{reaction.name}' (rate '{reaction.rate.text}') has a time-dependent "
                                 f"coefficient of {name}")
                    break
            else:
                if "t" in reaction.rate.symbols and reaction.rate.symbols & species:
                    found.append(f"reaction '{reaction.name}' (rate '{reaction.rate.text}') mixes time and species "
                                 "(split it into a species term and a time-dependent source)")
        return found

    # -- Dirichlet ------------------------------------------------------------
    def dirichlet_values(self, t: float) -> np.ndarray:
        """Values (species units) of the Dirichlet unknowns at time t, aligned with :attr:`dirichlet_dofs`."""
        values = np.zeros(self.size)
        for dofs, compiled, coordinates, scale in self._dirichlet:
            with np.errstate(all="ignore"):
                value = compiled(dict(coordinates, t=t))
            values[dofs] = np.broadcast_to(np.asarray(value, float), dofs.shape) / scale
        return values[self.dirichlet_dofs]

    def impose(self, u: np.ndarray, t: float) -> np.ndarray:
        """``u`` with its Dirichlet unknowns set to their values at t."""
        u = u.copy()
        u[self.dirichlet_dofs] = self.dirichlet_values(t)
        return u

    # -- implicit solves ------------------------------------------------------
    def residual(self, u: np.ndarray, t: float, a0: float, tau: float, history: np.ndarray) -> np.ndarray:
        """``M (a₀ u − h) + τ (K u − F(u, t))`` with zeros at the Dirichlet unknowns."""
        result = self.mass @ (a0 * u - history) + tau * (self.stiffness @ u - self.reactions(u, t))
        result[self.dirichlet_dofs] = 0.0
        return result

    def jacobian(self, u: np.ndarray, t: float, a0: float, tau: float) -> sparse.csr_matrix:
        """``a₀ M + τ (K − ∂F/∂u)`` with Dirichlet rows and columns replaced by the identity."""
        from scipy import sparse

        matrix = (a0 * self.mass + tau * (self.stiffness - self.reaction_jacobian(u, t))).tocsr()
        if len(self.dirichlet_dofs):
            keep = sparse.diags(self.free.astype(float))
            matrix = (keep @ matrix @ keep + sparse.diags((~self.free).astype(float))).tocsr()
        return matrix

    def _linear_solver(self, u: np.ndarray, t: float, a0: float, tau: float, rebuild: bool = True) -> LinearSolver:
        key = (a0, tau)
        if not rebuild and self._solver is not None:
            return self._solver
        # steps computed as (t_out − t) / n differ from each other in the last bits: same matrix to 1e-12
        if (self.linear and self._solver is not None and self._solver_key is not None
                and all(math.isclose(a, b, rel_tol=1e-12) for a, b in zip(key, self._solver_key, strict=True))):
            return self._solver
        matrix = self.jacobian(u, t, a0, tau)
        if self._solver is None:
            self._solver = make_solver(matrix, **self.solver_options)
        else:
            self._solver.update(matrix)
        self._solver_key = key
        return self._solver

    def solve_implicit(self, guess: np.ndarray, t: float, a0: float, tau: float, history: np.ndarray,
                       rtol: float = 1e-10, atol: float = 1e-12, max_iterations: int = 25,
                       single_step: bool = False) -> tuple[np.ndarray, StepResult]:
        """Solve ``M (a₀ u − h) + τ (K u − F(u, t)) = 0`` by Newton's method with a backtracking line search.

        Parameters
        ----------
        guess : ndarray, shape (n,)
            Starting iterate; its Dirichlet unknowns are replaced by their values at t.
        t : float
            Time of the new state (s).
        a0, tau : float
            Coefficients of ``M u`` and of ``K u − F``.
        history : ndarray, shape (n,)
            ``h``, the combination of previous states.
        rtol, atol : float
            Converged when every species' update satisfies ``max|δ| <= rtol · max(max|u|, atol / rtol)``.
        max_iterations : int
            Newton iterations before giving up.
        single_step : bool
            Take one full Newton step and return (pseudo-transient continuation).

        Returns
        -------
        u : ndarray, shape (n,)
        StepResult

        Raises
        ------
        NewtonFailure
            On non-finite values, a failed linear solve or no convergence.
        """
        u = self.impose(guess, t)
        linear_before = self._solver.stats.total_iterations if self._solver is not None else 0
        residual = self.residual(u, t, a0, tau, history)
        norm = float(np.linalg.norm(residual))
        # modified Newton: keep the factorized Jacobian of an earlier iterate (or step) while it contracts well
        fresh = not self._reusable(a0, tau)
        previous_step = math.inf
        for iteration in range(1, max_iterations + 1):
            if not math.isfinite(norm):
                raise NewtonFailure(f"the residual is not finite ({self._worst(residual)})")
            try:
                solver = self._linear_solver(u, t, a0, tau, rebuild=fresh)
                step = solver.solve(-residual)
            except (ConvergenceError, cs.InputError) as exc:
                raise NewtonFailure(f"the linear solve failed: {exc}") from exc
            step[self.dirichlet_dofs] = 0.0
            if self.linear or single_step:
                u = u + step
                residual = self.residual(u, t, a0, tau, history)
                if not np.all(np.isfinite(residual)):
                    raise NewtonFailure(f"the new state is not finite ({self._worst(residual)})")
                return u, self._result(iteration, linear_before, residual)
            damping = 1.0
            while True:
                trial = u + damping * step
                trial_residual = self.residual(trial, t, a0, tau, history)
                trial_norm = float(np.linalg.norm(trial_residual))
                if (math.isfinite(trial_norm) and trial_norm <= (1.0 - 1e-4 * damping) * norm) or damping < 1e-3:
                    break
                damping *= 0.5
            step_norm = float(np.abs(step).max())
            if not fresh and (damping < 1.0 or step_norm > 0.2 * previous_step):
                fresh = True  # the old Jacobian no longer gives good steps: rebuild it here and retry
                continue
            u, residual, norm = trial, trial_residual, trial_norm
            if self._small(damping * step, u, rtol, atol) and math.isfinite(norm):
                self._jacobian_good = iteration <= 4
                return u, self._result(iteration, linear_before, residual)
            previous_step, fresh = step_norm, False
        self._jacobian_good = False
        raise NewtonFailure(f"Newton's method did not converge in {max_iterations} iterations "
                            f"(residual norm {norm:.3e}; largest residual: {self._worst(residual)})")

    def _reusable(self, a0: float, tau: float) -> bool:
        """Whether the factorized Jacobian may start this solve: it converged quickly before, with a₀, τ within 20 %."""
        if self._solver is None or self._solver_key is None or not self._jacobian_good:
            return False
        return all(abs(a - b) <= 0.2 * abs(b) for a, b in zip((a0, tau), self._solver_key, strict=True))

    def _result(self, iterations: int, linear_before: int, residual: np.ndarray) -> StepResult:
        total = self._solver.stats.total_iterations if self._solver is not None else 0
        self.linear_iterations = total
        return StepResult(iterations, total - linear_before, float(np.linalg.norm(residual)))

    def _small(self, step: np.ndarray, u: np.ndarray, rtol: float, atol: float) -> bool:
        for dofs in self.species_dofs.values():
            scale = max(float(np.abs(u[dofs]).max()), atol / rtol)
            if float(np.abs(step[dofs]).max()) > rtol * scale:
                return False
        return True

    def _worst(self, residual: np.ndarray) -> str:
        for name, dofs in self.species_dofs.items():
            if not np.all(np.isfinite(residual[dofs])):
                return f"species '{name}' is not finite"
        sizes = {name: float(np.abs(residual[dofs]).max()) for name, dofs in self.species_dofs.items()}
        name = max(sizes, key=sizes.get)  # type: ignore[arg-type]
        return f"species '{name}', {sizes[name]:.3e}"

    # -- initial state and amounts -----------------------------------------------
    def initial_state(self) -> np.ndarray:
        """Initial values of every unknown (species units), Dirichlet values at t = 0 imposed."""
        from ._p1 import element_geometry
        from ._surface import triangle_geometry

        bound, model = self.bound, self.bound.model
        u = np.zeros(self.size)
        for name, placement in bound.placements.items():
            species = model.species[name]
            points = bound.points_um[placement.nodes]
            dofs = self.species_dofs[name]
            if isinstance(species.initial, Mapping):
                values = np.zeros(len(placement.cells))
                markers, names = ((bound.mesh.region_markers, bound.mesh.region_names) if species.kind == "volume"
                                  else (bound.mesh.boundary_markers, bound.mesh.boundary_names))
                from ._model import _resolve

                for token, value in species.initial.items():
                    for marker in _resolve((token,), markers, names, "region" if species.kind == "volume"
                                           else "boundary", f"species '{name}', initial value"):
                        values[placement.markers == marker] = value
                local = placement.local(placement.cells)
                geometry = element_geometry if species.kind == "volume" else triangle_geometry
                sizes = geometry(points, local)[0]
                corners = local.shape[1]
                weight = np.bincount(local.ravel(), np.repeat(sizes, corners), minlength=len(points))
                amount = np.bincount(local.ravel(), np.repeat(sizes * values, corners), minlength=len(points))
                u[dofs] = amount / weight
            else:
                value = species.initial.evaluate(_coordinates(points), size=len(points))
                u[dofs] = value / species.unit.scale
        if not np.all(np.isfinite(u)):
            bad = [n for n, d in self.species_dofs.items() if not np.all(np.isfinite(u[d]))]
            raise cs.InputError(f"model: the initial value of species {bad} is not finite somewhere (e.g. log(0), 1/0)")
        return self.impose(u, 0.0)

    def amounts(self, states: np.ndarray) -> dict[str, np.ndarray]:
        """Total amount of each species (molecules) in each row of ``states``, shape (n_times, n)."""
        return {name: np.asarray(states)[..., dofs] @ (self.weights[dofs] * self.scales[dofs])
                for name, dofs in self.species_dofs.items()}


def _coordinates(points_um: np.ndarray) -> dict[str, np.ndarray]:
    return {"x": points_um[:, 0], "y": points_um[:, 1], "z": points_um[:, 2]}


def _sum_coo(entries: list[tuple[np.ndarray, np.ndarray, np.ndarray]], n: int) -> sparse.csr_matrix:
    from scipy import sparse

    if not entries:
        return sparse.csr_matrix((n, n))
    rows, cols, values = (np.concatenate(part) for part in zip(*entries, strict=True))
    return sparse.coo_matrix((values, (rows, cols)), shape=(n, n)).tocsr()


# ---------------------------------------------------------------- time stepping


@attrs.frozen
class Integration:
    """Saved states and the record of every step of :func:`integrate`."""

    times: np.ndarray
    states: np.ndarray
    steps: dict[str, np.ndarray]
    failure: str | None


def _extrapolate(times: list[float], states: list[np.ndarray], t: float) -> np.ndarray:
    """Lagrange extrapolation through the given points to time t."""
    result = np.zeros_like(states[-1])
    for i, (ti, ui) in enumerate(zip(times, states, strict=True)):
        weight = 1.0
        for j, tj in enumerate(times):
            if j != i:
                weight *= (t - tj) / (ti - tj)
        result += weight * ui
    return result


def integrate(system: DiscreteSystem, initial: np.ndarray, t_end: float, dt: float, output_times: np.ndarray,
              scheme: str = "bdf2", adaptive: bool = False, rtol: float = 1e-3, atol: float = 1e-6,
              dt_min: float = 1e-12, dt_max: float = math.inf, newton_rtol: float = 1e-10,
              newton_atol: float = 1e-12, newton_max_iterations: int = 25,
              progress: Callable[[float], None] | None = None) -> Integration:
    """Integrate the system from t = 0 to ``t_end``, saving the states at ``output_times``.

    Parameters
    ----------
    system : DiscreteSystem
    initial : ndarray, shape (n,)
        State at t = 0.
    t_end : float
        Final time (s).
    dt : float
        The step (fixed stepping; shortened evenly to land on output times) or the first step (adaptive), s.
    output_times : ndarray, shape (m,)
        Increasing times in [0, t_end] (s) at which states are saved; steps land on them exactly.
    scheme : {"backward_euler", "bdf2"}
        Time discretization.
    adaptive : bool
        Control the local error (weighted RMS with ``rtol``, ``atol``) by rejecting steps and choosing Δt.
    dt_min, dt_max : float
        Bounds of adaptive steps (s); a step that fails at ``dt_min`` ends the integration.
    newton_rtol, newton_atol, newton_max_iterations
        See :meth:`DiscreteSystem.solve_implicit`.
    progress : callable, optional
        Called with the time reached after every accepted step.

    Returns
    -------
    Integration
        ``failure`` is None, or the reason the integration stopped early; the states then end
        with the last good state.
    """
    order_max = 2 if scheme == "bdf2" else 1
    times_hist, states_hist, dts = [0.0], [initial.copy()], []
    saved_t, saved_u = [], []
    next_output = 0
    record: dict[str, list[float]] = {key: [] for key in ("time_s", "dt_s", "order", "newton_iterations",
                                                          "linear_iterations", "error_estimate", "rejected")}
    while next_output < len(output_times) and output_times[next_output] <= 0.0:
        saved_t.append(0.0)
        saved_u.append(initial.copy())
        next_output += 1
    t, u = 0.0, initial.copy()
    proposed = dt
    rejected = 0
    failure = None
    while t < t_end * (1 - 1e-12) and next_output < len(output_times):
        target = output_times[next_output]
        remaining = target - t
        if adaptive:
            step = min(proposed, dt_max, remaining)
            if remaining - step < 0.2 * step:  # avoid a sliver step before the output time
                step = remaining if remaining <= 1.2 * step else 0.5 * remaining
        else:
            step = remaining / max(1, math.ceil(remaining / dt * (1 - 1e-12)))
        order = min(order_max, len(dts) + 1)
        if order == 2:
            omega = step / dts[-1]
            a0 = (1 + 2 * omega) / (1 + omega)
            history = (1 + omega) * u - omega**2 / (1 + omega) * states_hist[-2]
        else:
            a0, history = 1.0, u
        t_new = t + step
        predictor_points = order + 1
        can_estimate = adaptive and len(times_hist) >= predictor_points
        guess = _extrapolate(times_hist[-predictor_points:], states_hist[-predictor_points:], t_new) \
            if len(times_hist) >= 2 else u
        try:
            u_new, result = system.solve_implicit(guess, t_new, a0, step, history, newton_rtol, newton_atol,
                                                  newton_max_iterations)
        except NewtonFailure as exc:
            if adaptive and step > dt_min * 1.0001:
                proposed = max(step * 0.25, dt_min)
                rejected += 1
                continue
            failure = (f"at t = {t_new:.6g} s (step {step:.3g} s) {exc}; the output keeps the last good state, "
                       f"t = {t:.6g} s")
            break
        error = math.nan
        if can_estimate:
            predicted = _extrapolate(times_hist[-predictor_points:], states_hist[-predictor_points:], t_new)
            h_prev = [times_hist[-1] - times_hist[-2]] + ([times_hist[-2] - times_hist[-3]] if order == 2 else [])
            ratio = step / (a0 * (step + sum(h_prev)))  # (error of the implicit step) / (error of the extrapolation)
            estimate = ratio / (1 + ratio) * (u_new - predicted)
            weights = atol + rtol * np.maximum(np.abs(u_new), np.abs(u))
            free = system.free
            error = float(np.sqrt(np.mean((estimate[free] / weights[free]) ** 2))) if free.any() else 0.0
            factor = 0.9 * max(error, 1e-10) ** (-1.0 / (order + 1))
            if error > 1.0:
                if step <= dt_min * 1.0001:
                    failure = (f"at t = {t_new:.6g} s the time error estimate is {error:.3g} > 1 at the smallest "
                               f"step dt_min_s = {dt_min:g} s; the output keeps the last good state, t = {t:.6g} s")
                    break
                proposed = max(step * min(0.9, max(0.2, factor)), dt_min)
                rejected += 1
                continue
            proposed = step * min(2.0, max(0.2, factor))
        elif adaptive:
            proposed = step
        t, u = t_new, u_new
        dts.append(step)
        times_hist, states_hist = [*times_hist, t][-3:], [*states_hist, u][-3:]
        for key, value in (("time_s", t), ("dt_s", step), ("order", order), ("newton_iterations", result.newton_iterations),
                           ("linear_iterations", result.linear_iterations), ("error_estimate", error),
                           ("rejected", rejected)):
            record[key].append(value)
        rejected = 0
        if progress is not None:
            progress(t)
        if abs(t - target) <= 1e-12 * max(1.0, t_end):
            t = target
            saved_t.append(t)
            saved_u.append(u.copy())
            next_output += 1
    if failure is not None and (not saved_t or saved_t[-1] < t):
        saved_t.append(t)
        saved_u.append(u.copy())
    steps = {key: np.asarray(values, dtype=float) for key, values in record.items()}
    return Integration(np.asarray(saved_t), np.asarray(saved_u), steps, failure)


# ---------------------------------------------------------------- the method


@attrs.frozen
class LinearForm:
    """A linear model discretized by the solver, for reduced-order models (analyze.fit ``surrogate: reduced_basis``)::

        M du/dt + A u = f(t)   on the free unknowns,    u = g(t)   on the Dirichlet unknowns

    with ``A = K − ∂F/∂u`` (constant: the model is linear) and ``f(t) = F(0, t)``, time-stepped by
    :attr:`integrate` exactly as the solver does (same scheme, Δt and saved times).

    Attributes
    ----------
    mass, operator : scipy.sparse.csr_matrix, shape (n, n)
        ``M`` (µm³ or µm²) and ``A`` (µm³/s or µm²/s).
    initial : ndarray, shape (n,)
        State at t = 0 (species units), Dirichlet values imposed.
    dirichlet_dofs : ndarray of int
    source : callable
        ``source(t) -> (n,)``: ``f(t)`` (species unit · µm³/s or · µm²/s).
    dirichlet_values : callable
        ``dirichlet_values(t) -> (n_dirichlet,)``, aligned with ``dirichlet_dofs``.
    output_times_s : ndarray
        The saved times.
    integrate : callable
        ``integrate(stepper, initial) -> Integration``: the solver's time stepping applied to any object with
        the :meth:`DiscreteSystem.solve_implicit` signature (the discrete system itself, or a reduced one).
    observe : callable
        ``observe(times_s, states) -> {"fields", "probes"}``: the solver's outputs of states (n_times, n); linear in them.
    system : DiscreteSystem
    """

    mass: Any
    operator: Any
    initial: np.ndarray
    dirichlet_dofs: np.ndarray
    source: Callable[[float], np.ndarray]
    dirichlet_values: Callable[[float], np.ndarray]
    output_times_s: np.ndarray
    integrate: Callable[[Any, np.ndarray], Integration]
    observe: Callable[[np.ndarray, np.ndarray], dict[str, cs.Artefact]]
    system: DiscreteSystem


@attrs.frozen
class ReactionDiffusionParams:
    model: dict[str, Any] = cs.param(
        help="species, parameters, reactions and boundary_conditions (see the solve.reaction_diffusion docs)")
    t_end_s: float = cs.param(1.0, gt=0, unit="s", help="simulated time")
    dt_s: float = cs.param(0.01, gt=0, unit="s", help="time step (fixed stepping) or first step (adaptive)")
    scheme: str = cs.param("bdf2", choices=("backward_euler", "bdf2"), help="time discretization (order 1 or 2)")
    adaptive: bool = cs.param(False, help="choose the time step from a local error estimate, rejecting bad steps")
    rtol: float = cs.param(1e-3, gt=0, help="relative local error tolerance of adaptive stepping")
    atol: float = cs.param(1e-6, gt=0, help="absolute local error tolerance of adaptive stepping (species units)")
    dt_min_s: float = cs.param(1e-9, gt=0, unit="s", help="smallest step before the integration is declared diverged")
    dt_max_s: float | None = cs.param(None, gt=0, unit="s", help="largest adaptive step; default t_end_s")
    n_outputs: int = cs.param(21, ge=2, help="number of saved time points, t = 0 and t_end_s included")
    output_times_s: list[float] | None = cs.param(None, ge=0, unit="s",
                                                  help="saved times instead of n_outputs evenly spaced ones")
    mass: str = cs.param("consistent", choices=("consistent", "lumped"), help="mass matrix (time derivative, reactions)")
    newton_rtol: float = cs.param(1e-10, gt=0, help="Newton stops when updates are below this times the species' size")
    newton_atol: float = cs.param(1e-12, gt=0, help="species size below which newton_rtol applies absolutely (species units)")
    newton_max_iterations: int = cs.param(25, ge=1, help="Newton iterations per step before the step fails")
    backend: str = cs.param("scipy", choices=BACKENDS, help="linear solver library")
    linear_method: str = cs.param("auto", choices=METHODS, help="linear solver (auto: direct when small, else Krylov)")
    preconditioner: str = cs.param("auto", choices=PRECONDITIONERS, help="preconditioner of iterative linear solvers")
    linear_rtol: float = cs.param(1e-10, gt=0, help="relative residual tolerance of iterative linear solves")
    petsc_options: dict[str, Any] | str | None = cs.param(
        None, help="PETSc options passed straight through (backend petsc), e.g. '-ksp_type cg -pc_type gamg'")
    probes_nm: list[tuple[float, float, float]] = cs.param([], unit="nm", help="points whose values are reported")
    on_divergence: str = cs.param("error", choices=("error", "stop"),
                                  help="when the solver fails: raise (partial result attached) or return what was done")

    def __attrs_post_init__(self) -> None:
        parse_model(self.model)
        if self.petsc_options is not None and self.backend != "petsc":
            raise cs.InputError("parameter 'petsc_options' is given but backend is 'scipy'; set backend: petsc")


def output_schedule(p: Any) -> np.ndarray:
    """Saved times: ``output_times_s`` (with 0 and t_end_s) or ``n_outputs`` evenly spaced ones."""
    if p.output_times_s:
        times = np.unique(np.clip(np.asarray(p.output_times_s, float), 0.0, p.t_end_s))
        return np.unique(np.concatenate([[0.0], times, [p.t_end_s]]))
    return np.linspace(0.0, p.t_end_s, p.n_outputs)


class ModelSolver(PetscCollective, cs.Solver):
    """What the solvers of a reaction–diffusion model share: their outputs, the stage calls, the discretization.

    A subclass implements ``_results(mesh)``, returning ``{"fields", "probes", "steps"}``; its Params hold
    ``model``, ``mass``, ``backend``, ``linear_method``, ``preconditioner``, ``linear_rtol`` and
    ``petsc_options``.
    """

    outputs = {"fields": cs.Fields, "probes": cs.Table, "steps": cs.Table}

    def run(self, **inputs: cs.Artefact) -> dict[str, cs.Artefact]:
        return self._results(inputs["mesh"])  # type: ignore[arg-type]

    def solve(self, mesh: cs.TetMesh) -> cs.Fields:
        return self._results(mesh)["fields"]  # type: ignore[return-value]

    def _results(self, mesh: cs.TetMesh) -> dict[str, cs.Artefact]:
        raise NotImplementedError

    def system(self, mesh: cs.TetMesh) -> DiscreteSystem:
        """The discretized model on ``mesh``."""
        p = self.params
        try:
            bound = bind_model(parse_model(p.model), mesh)
            return DiscreteSystem(bound, lumped=p.mass == "lumped", backend=p.backend, method=p.linear_method,
                                  preconditioner=p.preconditioner, linear_rtol=p.linear_rtol,
                                  petsc_options=p.petsc_options)
        except cs.InputError as exc:
            raise type(exc)(f"{self.name}: {exc}") from exc


class ReactionDiffusion(ModelSolver):
    """Reaction–diffusion of volume and membrane species: P1 FEM, BE/BDF2, Newton, SciPy or PETSc.

    Species live in regions (µM) or on marked boundaries (molecules/µm²);
    reactions have rate laws written as expressions (mass action,
    Michaelis–Menten, Hill...), membrane fluxes couple volume and surface
    species, boundaries take Dirichlet, Neumann or Robin conditions. Outputs:
    ``fields`` (every species at the mesh nodes at the saved times; zero
    where a species does not live), ``probes`` (per saved time: mean of each
    species per region, total amount in molecules, values at ``probes_nm``)
    and ``steps`` (per accepted step: Δt, order, Newton and linear
    iterations, error estimate, rejected attempts).
    """

    name = "solve.reaction_diffusion"
    version = "1"
    Params = ReactionDiffusionParams

    def _results(self, mesh: cs.TetMesh) -> dict[str, cs.Artefact]:
        return self.simulate(mesh)

    def linear_form(self, mesh: cs.TetMesh) -> LinearForm:
        """The discretized model as a :class:`LinearForm` (assembly only, no time stepping).

        Raises
        ------
        NonlinearModelError
            Naming each reaction that is nonlinear in the species or has a time-dependent coefficient, or
            when ``adaptive: true`` (its steps depend on the solution).
        """
        from ._output import make_outputs, step_table

        p = self.params
        if p.adaptive:
            raise NonlinearModelError(f"{self.name}: adaptive: true chooses the time steps from the solution; a "
                                      "linear form needs fixed steps (adaptive: false)")
        system = self.system(mesh)
        if not system.linear:
            reasons = system.nonlinear_reactions() or ["a rate law depends on the species nonlinearly"]
            raise NonlinearModelError(f"{self.name}: the model is not linear: " + "; ".join(reasons))
        zero = np.zeros(system.size)
        schedule = output_schedule(p)

        def run(stepper: Any, initial: np.ndarray) -> Integration:
            return integrate(stepper, initial, p.t_end_s, p.dt_s, schedule, p.scheme, False,
                             newton_rtol=p.newton_rtol, newton_atol=p.newton_atol,
                             newton_max_iterations=p.newton_max_iterations)

        def observe(times: np.ndarray, states: np.ndarray) -> dict[str, cs.Artefact]:
            return make_outputs(system, np.asarray(times, float), np.asarray(states, float), step_table({}),
                                p.probes_nm)

        return LinearForm(system.mass, (system.stiffness - system.reaction_jacobian(zero, 0.0)).tocsr(),
                          system.initial_state(), system.dirichlet_dofs, lambda t: system.reactions(zero, t),
                          system.dirichlet_values, schedule, run, observe, system)

    def simulate(self, mesh: cs.TetMesh) -> dict[str, cs.Artefact]:
        """Run the simulation; return ``{"fields", "probes", "steps"}``.

        Raises
        ------
        SolverDivergedError
            When a step fails at the smallest step (``on_divergence: error``); ``.partial`` holds the outputs.
        """
        from ._output import make_outputs, step_table

        p = self.params
        system = self.system(mesh)
        if p.dt_s > p.t_end_s:
            raise cs.InputError(f"{self.name}: dt_s ({p.dt_s:g} s) is longer than t_end_s ({p.t_end_s:g} s)")
        initial = system.initial_state()
        bar = iter(self.progress(range(1000), total=1000, description="simulated time (per mille)"))
        shown = [0]

        def advance(t: float) -> None:
            reached = int(1000 * t / p.t_end_s)
            while shown[0] < reached:
                next(bar, None)
                shown[0] += 1

        result = integrate(system, initial, p.t_end_s, p.dt_s, output_schedule(p), p.scheme, p.adaptive, p.rtol,
                           p.atol, p.dt_min_s, p.dt_max_s or p.t_end_s, p.newton_rtol, p.newton_atol,
                           p.newton_max_iterations, progress=advance)
        outputs = make_outputs(system, result.times, result.states, step_table(result.steps), p.probes_nm)
        if result.failure is not None:
            message = (f"{self.name}: the solver diverged {result.failure}. Lower dt_s, use adaptive: true, "
                       "or check the rate laws and parameters")
            if p.on_divergence == "error":
                raise SolverDivergedError(message, outputs)
            outputs["steps"] = cs.Table(outputs["steps"].columns, outputs["steps"].units,
                                        title=f"stopped early: {message}")
        return outputs
