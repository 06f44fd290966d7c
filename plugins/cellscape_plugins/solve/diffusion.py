"""``solve.diffusion``: one species diffusing in a closed cell (P1 finite elements, backward Euler).

The weak form of ∂u/∂t = D Δu with zero flux through every boundary,
discretized with P1 elements in space and backward Euler in time::

    M (uⁿ⁺¹ − uⁿ) / Δt + D K uⁿ⁺¹ = 0    ⇔    (M + Δt D K) uⁿ⁺¹ = M uⁿ

Units: mesh coordinates are in nm and are divided by 1000 before assembly,
so K is in µm and M in µm³; with D in µm²/s and Δt in s every term of the
equation is in µm³ · (unit of u), and u is a concentration in µM. The same
physical problem therefore gives the same values whatever the mesh scale, as
long as it is given in nm.

Because K 1 = 0 and K is symmetric, 1ᵀ M uⁿ⁺¹ = 1ᵀ M uⁿ: the total amount
∫u dV is conserved to round-off with either mass matrix. Backward Euler is
unconditionally stable; its error is O(Δt) + O(h²). The system matrix is
constant, so it is prepared once through the shared linear-solver layer
(:mod:`._linear`): factorized (SuperLU, or PETSc's LU), or solved by conjugate
gradients with an algebraic-multigrid (pyamg / PETSc GAMG) or Jacobi
preconditioner, each step starting from the previous state. The iterations and
residual of every step are kept in ``Diffusion.report`` (a :class:`cellscape.Table`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

import attrs
import numpy as np

import cellscape as cs

from ._linear import PetscCollective
from ._p1 import assemble_p1, element_geometry, lumped_mass

if TYPE_CHECKING:
    from scipy import sparse

    from ._linear import SolveStats

__all__ = ["Diffusion", "DiffusionParams", "backward_euler", "release_site", "solve_table", "time_grid", "total_amount"]

NM_PER_UM = 1000.0
CG_RTOL = 1e-10


@attrs.frozen
class DiffusionParams:
    species: str = cs.param("c", help="name of the species in the output fields")
    diffusion_um2_per_s: float = cs.param(1.0, gt=0, unit="um^2/s", help="diffusion coefficient")
    t_end_s: float = cs.param(1.0, gt=0, unit="s", help="simulated time")
    dt_s: float = cs.param(
        0.01, gt=0, unit="s", help="time step; shortened slightly when it does not divide t_end_s, so the last step ends there")
    n_outputs: int = cs.param(21, ge=2, help="number of saved time points, t = 0 and t_end_s included (at most one per step)")
    initial: str = cs.param(
        "ball", choices=("ball", "constant", "region"),
        help="initial state: initial_uM in a ball, initial_uM everywhere, or one value per region (region_values_uM)")
    initial_uM: float = cs.param(1.0, ge=0, unit="uM", help="concentration in the ball ('ball') or everywhere ('constant')")
    source_center_nm: tuple[float, float, float] | None = cs.param(
        None, unit="nm",
        help="centre (x, y, z) of the source ball; default: the node at the cell's -x end nearest its long axis")
    source_radius_nm: float = cs.param(200.0, gt=0, unit="nm", help="radius of the source ball")
    region_values_uM: dict[int, float] = cs.param(
        {}, unit="uM", help="initial concentration per region marker for initial 'region'; unlisted regions start at 0")
    regions: list[int] | None = cs.param(
        None, help="region markers to simulate in (nodes outside stay at 0); default: the whole mesh")
    mass: str = cs.param("consistent", choices=("consistent", "lumped"), help="mass matrix")
    solver: str = cs.param("direct", choices=("direct", "cg"), help="sparse LU factorized once, or conjugate gradients")
    preconditioner: str = cs.param(
        "amg", choices=("amg", "jacobi"),
        help="preconditioner of solver 'cg': algebraic multigrid (pyamg, or PETSc GAMG) or the diagonal")
    backend: str = cs.param("scipy", choices=("scipy", "petsc"), help="linear-solver library (petsc needs petsc4py)")
    petsc_options: dict[str, str | float | int | bool] | str | None = cs.param(
        None, help="options passed to PETSc (backend petsc), e.g. '-ksp_type cg -pc_type gamg'; they override "
                   "solver and preconditioner")


def time_grid(t_end_s: float, dt_s: float, n_outputs: int) -> tuple[int, float, np.ndarray]:
    """Constant time steps reaching ``t_end_s`` exactly, and the steps after which to save.

    Parameters
    ----------
    t_end_s : float
        Simulated time (s), > 0.
    dt_s : float
        Largest allowed time step (s), at most ``t_end_s``.
    n_outputs : int
        Wanted number of saved time points including t = 0 and t_end_s (>= 2).

    Returns
    -------
    n_steps : int
        Number of steps, ``ceil(t_end_s / dt_s)`` (up to round-off).
    dt : float
        The step used, ``t_end_s / n_steps`` (<= ``dt_s``).
    save_steps : ndarray, shape (m,), int
        Step numbers to save, 0 and ``n_steps`` included, evenly spread;
        ``m = min(n_outputs, n_steps + 1)``.
    """
    n_steps = max(1, math.ceil(t_end_s / dt_s * (1 - 1e-12)))
    save_steps = np.unique(np.round(np.linspace(0, n_steps, min(n_outputs, n_steps + 1))).astype(np.int64))
    return n_steps, t_end_s / n_steps, save_steps


def backward_euler(
    stiffness: sparse.spmatrix,
    mass: sparse.spmatrix,
    initial: np.ndarray,
    diffusion: float,
    dt: float,
    n_steps: int,
    save_steps: Iterable[int],
    solver: str = "direct",
    preconditioner: str = "amg",
    progress: Callable[[Iterable[int], int], Iterable[int]] | None = None,
    *,
    backend: str = "scipy",
    petsc_options: Mapping[str, object] | str | None = None,
    linear_stats: list[SolveStats] | None = None,
) -> np.ndarray:
    """Integrate ``M du/dt + D K u = 0`` with backward Euler at a constant step.

    Units must agree: with K in µm, M in µm³, ``diffusion`` in µm²/s and
    ``dt`` in s (as :class:`Diffusion` does), u keeps the unit of ``initial``.

    Parameters
    ----------
    stiffness, mass : scipy sparse matrices, shape (n, n)
        P1 stiffness and mass (consistent or lumped), e.g. from :func:`assemble_p1`.
    initial : ndarray, shape (n,)
        Nodal values at t = 0.
    diffusion : float
        Diffusion coefficient D (> 0).
    dt : float
        Time step (> 0).
    n_steps : int
        Number of steps.
    save_steps : iterable of int
        Step numbers (0..n_steps) whose state is returned, in increasing order.
    solver : {"direct", "cg"}
        Sparse LU factorized once, or conjugate gradients to a relative residual of
        :data:`CG_RTOL` at every step (started from the previous state).
    preconditioner : {"amg", "jacobi"}
        Preconditioner of "cg": smoothed-aggregation multigrid (pyamg; GAMG with PETSc) or the diagonal.
    progress : callable, optional
        ``progress(iterable, total)`` wrapping the step loop (e.g. ``Method.progress``).
    backend : {"scipy", "petsc"}
        Linear-solver library, see :func:`cellscape_plugins.solve._linear.make_solver`.
    petsc_options : dict or str, optional
        PETSc options (backend "petsc" only); they override ``solver`` and ``preconditioner``.
    linear_stats : list, optional
        Receives the :class:`~cellscape_plugins.solve._linear.SolveStats` of every step, in order.

    Returns
    -------
    ndarray, shape (len(save_steps), n)
        The saved states. Nodes in no element (an empty mass row) are held at 0.

    Raises
    ------
    cellscape_plugins.solve._linear.ConvergenceError
        If conjugate gradients stop before the tolerance (the message says what to try).
    cellscape.MissingDependencyError
        If pyamg (preconditioner "amg", backend "scipy") or petsc4py (backend "petsc") is missing.
    """
    from scipy import sparse

    from ._linear import make_solver

    free = mass.diagonal() > 0
    # nodes outside every element get the equation u = 0, which keeps the system non-singular
    system = mass + (dt * diffusion) * stiffness + sparse.diags((~free).astype(float))
    linear = make_solver(system, backend=backend, method=solver, preconditioner=preconditioner, rtol=CG_RTOL,
                         petsc_options=petsc_options, symmetric=True)
    wanted = {int(s) for s in save_steps}
    u = np.where(free, np.asarray(initial, dtype=float), 0.0)
    saved = [u.copy()] if 0 in wanted else []
    steps: Iterable[int] = range(1, n_steps + 1)
    if progress is not None:
        steps = progress(steps, n_steps)
    for step in steps:
        u = linear.solve(mass @ u, u)
        if linear_stats is not None:
            linear_stats.append(linear.stats)
        u[~free] = 0.0
        if step in wanted:
            saved.append(u.copy())
    return np.array(saved)


def solve_table(stats: list[SolveStats], dt: float) -> cs.Table:
    """One row per time step: the linear solve's iterations and residuals.

    Parameters
    ----------
    stats : list of SolveStats
        One per step, in order (from :func:`backward_euler`'s ``linear_stats``).
    dt : float
        The time step (s).

    Returns
    -------
    cellscape.Table
        Columns ``step``, ``time_s`` (s, end of the step), ``iterations`` (0 for a direct solve),
        ``residual_norm`` (‖b − A x‖₂, µM·µm³) and ``relative_residual`` (‖b − A x‖₂ / ‖b‖₂); the
        title names the backend, method and preconditioner.
    """
    steps = np.arange(1, len(stats) + 1)
    first = stats[0] if stats else None
    title = "linear solves" if first is None else (
        f"linear solves: {first.backend} {first.method}" + ("" if first.method in ("direct", "preonly")
                                                            else f" + {first.preconditioner}"))
    return cs.Table(
        {"step": steps, "time_s": steps * dt, "iterations": np.array([s.iterations for s in stats], np.int64),
         "residual_norm": np.array([s.residual_norm for s in stats], np.float64),
         "relative_residual": np.array([s.relative_residual for s in stats], np.float64)},
        {"step": "", "time_s": "s", "iterations": "", "residual_norm": "uM*um^3", "relative_residual": ""},
        title=title)


def release_site(points: np.ndarray, tets: np.ndarray) -> np.ndarray:
    """Default source centre: the cell's extreme point along −x, nearest to its long axis.

    Among the nodes of ``tets`` whose x lies within 1e-6 of the domain's
    extent from the smallest x, the one closest (in y, z) to the domain's
    volume centroid: the tip of a rod-shaped cell, the middle of the −x face
    of a box. It is a mesh node, so a ball around it always holds a node.

    Parameters
    ----------
    points : ndarray, shape (n, 3), float
        Node coordinates (x, y, z).
    tets : ndarray, shape (k, 4), int
        Tetrahedra of the simulated domain.

    Returns
    -------
    ndarray, shape (3,)
        The chosen node's coordinates, in the unit of ``points``.
    """
    nodes = np.unique(tets)
    volumes, _ = element_geometry(points, tets)
    centroid = (volumes[:, None] * points[tets].mean(axis=1)).sum(axis=0) / volumes.sum()
    x = points[nodes, 0]
    extent = np.ptp(points[nodes], axis=0).max()
    candidates = nodes[x <= x.min() + 1e-6 * extent]
    off_axis = np.linalg.norm(points[candidates, 1:] - centroid[1:], axis=1)
    return points[candidates[np.argmin(off_axis)]].copy()


def total_amount(points_nm: np.ndarray, tets: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Amount ∫u dV of each row of ``values``, in µM·µm³ (points in nm, values in µM).

    Parameters
    ----------
    points_nm : ndarray, shape (n, 3)
        Node coordinates in nm.
    tets : ndarray, shape (k, 4), int
        Tetrahedra to integrate over.
    values : ndarray, shape (n,) or (n_times, n)
        Concentrations (µM) at the nodes.
    """
    return np.asarray(values) @ lumped_mass(np.asarray(points_nm) / NM_PER_UM, tets)


class Diffusion(PetscCollective, cs.Solver):
    """Diffusion of one species in a closed cell: P1 finite elements, backward Euler, SciPy or PETSc solvers.

    Zero flux through every boundary (the total amount is conserved). Mesh
    coordinates are converted from nm to µm before assembly (see the module
    docstring). Initial states:

    - ``ball``: ``initial_uM`` at the nodes within ``source_radius_nm`` of
      ``source_center_nm`` (default :func:`release_site`), 0 elsewhere;
    - ``constant``: ``initial_uM`` at every node of the simulated regions;
    - ``region``: each node gets the volume-weighted mean of
      ``region_values_uM`` over its tetrahedra, so the initial amount equals
      Σ value × region volume exactly (lumped quadrature).

    With ``regions`` set, only those tetrahedra are simulated (zero flux on the
    cut too); nodes outside them are reported as 0 µM.

    After a solve, ``self.report`` is a :class:`cellscape.Table` with the linear
    iterations and residuals of every time step (see :func:`solve_table`).
    """

    name = "solve.diffusion"
    version = "2"
    Params = DiffusionParams

    def __init__(self, params: DiffusionParams | None = None, **values: object):
        super().__init__(params, **values)
        self.report: cs.Table | None = None

    def _domain(self, mesh: cs.TetMesh) -> tuple[np.ndarray, np.ndarray]:
        """Tetrahedra and their region markers of the simulated domain."""
        regions = self.params.regions
        if regions is None:
            return mesh.tetrahedra, mesh.region_markers
        present = sorted(int(r) for r in np.unique(mesh.region_markers))
        missing = sorted({r for r in regions if r not in present})
        if not regions or missing:
            raise cs.InputError(
                f"solve.diffusion: parameter 'regions': region(s) {missing or '[] (none)'} are not in the mesh; "
                f"regions present: {present}"
            )
        chosen = np.isin(mesh.region_markers, regions)
        return mesh.tetrahedra[chosen], mesh.region_markers[chosen]

    def _initial(self, points_um: np.ndarray, tets: np.ndarray, markers: np.ndarray) -> np.ndarray:
        p = self.params
        n = len(points_um)
        active = np.zeros(n, bool)
        active[tets.ravel()] = True
        if p.initial == "constant":
            return np.where(active, p.initial_uM, 0.0)
        if p.initial == "region":
            return self._initial_by_region(points_um, tets, markers)
        if p.source_center_nm is None:
            centre = release_site(points_um, tets)
        else:
            centre = np.asarray(p.source_center_nm, dtype=float) / NM_PER_UM
        inside = active & (np.linalg.norm(points_um - centre, axis=1) <= p.source_radius_nm / NM_PER_UM)
        if not inside.any():
            raise cs.InputError(
                f"solve.diffusion: the source ball (centre {tuple(centre * NM_PER_UM)} nm, radius {p.source_radius_nm:g} nm) "
                "contains no mesh node of the simulated regions; increase source_radius_nm or move source_center_nm "
                "inside the cell"
            )
        return np.where(inside, p.initial_uM, 0.0)

    def _initial_by_region(self, points_um: np.ndarray, tets: np.ndarray, markers: np.ndarray) -> np.ndarray:
        p = self.params
        if not p.region_values_uM:
            raise cs.InputError("solve.diffusion: initial 'region' needs region_values_uM, e.g. {1: 0.0, 2: 5.0}")
        simulated = sorted(int(r) for r in np.unique(markers))
        unknown = sorted(r for r in p.region_values_uM if r not in simulated)
        if unknown:
            raise cs.InputError(
                f"solve.diffusion: parameter 'region_values_uM' names region(s) {unknown}, which are not simulated; "
                f"simulated regions: {simulated}"
            )
        negative = {r: v for r, v in p.region_values_uM.items() if v < 0}
        if negative:
            raise cs.InputError(f"solve.diffusion: parameter 'region_values_uM' has negative concentrations {negative}")
        tet_values = np.zeros(len(tets))
        for region, value in p.region_values_uM.items():
            tet_values[markers == region] = value
        volumes, _ = element_geometry(points_um, tets)
        nodes = tets.ravel()
        weight = np.bincount(nodes, weights=np.repeat(volumes, 4), minlength=len(points_um))
        amount = np.bincount(nodes, weights=np.repeat(volumes * tet_values, 4), minlength=len(points_um))
        return np.divide(amount, weight, out=np.zeros(len(points_um)), where=weight > 0)

    def solve(self, mesh: cs.TetMesh) -> cs.Fields:
        p = self.params
        if not p.species:
            raise cs.InputError("solve.diffusion: parameter 'species' is empty; give the species a name, e.g. 'calcium'")
        if p.petsc_options is not None and p.backend != "petsc":
            raise cs.InputError(f"solve.diffusion: petsc_options are given but backend is {p.backend!r}; "
                                "set backend: petsc or drop petsc_options")
        if p.dt_s > p.t_end_s:
            raise cs.InputError(
                f"solve.diffusion: dt_s ({p.dt_s:g} s) is longer than t_end_s ({p.t_end_s:g} s); lower dt_s"
            )
        points_um = mesh.points / NM_PER_UM
        tets, markers = self._domain(mesh)
        try:
            stiffness, mass = assemble_p1(points_um, tets, lumped=p.mass == "lumped")
        except cs.InputError as exc:
            raise cs.InputError(f"solve.diffusion: the mesh has {exc}") from exc
        initial = self._initial(points_um, tets, markers)
        n_steps, dt, save_steps = time_grid(p.t_end_s, p.dt_s, p.n_outputs)
        stats: list[SolveStats] = []
        values = backward_euler(
            stiffness, mass, initial, p.diffusion_um2_per_s, dt, n_steps, save_steps, p.solver, p.preconditioner,
            progress=lambda steps, total: self.progress(steps, total=total, description="time steps"),
            backend=p.backend, petsc_options=p.petsc_options, linear_stats=stats,
        )
        self.report = solve_table(stats, dt)
        return cs.Fields(mesh, save_steps * dt, {p.species: values}, {p.species: "uM"})
