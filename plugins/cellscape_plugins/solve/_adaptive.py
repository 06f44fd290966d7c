"""Adaptive P1 finite elements for a stationary scalar problem: solve, estimate, mark, refine, repeat.

The problem, on the tetrahedra of a :class:`cellscape.TetMesh` (coordinates in nm, divided by 1000
so that everything below is in µm)::

    −∇·(D ∇u) + σ u = f          in Ω
    u = u_D                      on Dirichlet boundary triangles
    D ∂u/∂n = g                  on Neumann ones        (n the outward normal: g > 0 is an influx)
    D ∂u/∂n + α u = g            on Robin ones
    D ∂u/∂n = 0                  on every other boundary face (unmarked, or its marker not listed)

Units: x, y, z in µm; D in µm²/s; σ in 1/s; f in µM/s; u and u_D in µM; g in µM·µm/s; α in µm/s.
D and σ are constant on each tetrahedron: one value for the whole mesh, one per region marker
(``{marker: value}``), or (for a single solve, not the adaptive loop) one per tetrahedron.

Error measure and estimator
---------------------------
Errors are measured in the energy norm ``|||v|||² = ∫ D |∇v|² + σ v² dV`` (unit µM²·µm³/s). The
estimator is the residual one, with the weights that keep it robust when reaction dominates
(Verfürth 1998): with ``a_T = min(h_T / √D_T, 1 / √σ_T)`` (``h_T`` the longest edge),
``η_T² = a_T² ‖f − σ u_h‖²_T + ½ Σ_interior faces a_F / √D_F ‖[D ∂u_h/∂n]‖²_F
+ Σ_Neumann/Robin/free faces a_F / √D_F ‖g − α u_h − D ∂u_h/∂n‖²_F``,
where ``[·]`` is the jump of the normal flux across a face, ``a_F`` uses the face's longest edge and
the larger D and σ of the tetrahedra beside it, and ``η² = Σ_T η_T²``. ``η`` bounds the true error
from above (up to a constant of the mesh shape) and, for smooth data, from below: the ratio
``η / |||u − u_h|||`` (the effectivity) stays within a bounded band as the mesh is refined, which
tests/plugins/solve/test_adaptive.py checks. Element integrals use a 27-point collapsed Gauss rule
(exact for cubics), face integrals a 9-point one. Everything is vectorized over tetrahedra and faces.

The loop (:func:`adapt`)
------------------------
solve (P1 via :mod:`._p1` and the linear-solver layer :mod:`._linear`) → estimate → stop when
``η ≤ tolerance`` or the next mesh would exceed ``max_unknowns`` nodes → mark the smallest set of
tetrahedra holding a fraction ``θ`` of ``η²`` (Dörfler) → refine them with closure
(``mesh.refine``, conforming longest-edge bisection; markers kept) → solve again, starting the
iterative solver from the previous solution interpolated onto the new mesh.

Public API::

    problem = StationaryProblem(diffusion_um2_per_s={1: 1.0, 2: 0.1}, reaction_per_s=0.0,
                                source_uM_per_s=lambda x, y, z: ...,
                                boundary={1: BoundaryCondition.dirichlet(0.0),
                                          2: BoundaryCondition.robin(1.5, 0.0)})
    u, stats = solve_stationary(mesh, problem)               # one P1 solve, nodal µM
    eta_T = estimate(mesh, problem, u)                       # per tetrahedron
    marked = dorfler_mark(eta_T, theta=0.5)
    result = adapt(mesh, problem, tolerance=1e-3, max_unknowns=200_000)
    result.mesh, result.solution, result.history             # history: a cellscape.Table, one row per round
    energy_error(mesh, problem, u, ExactSolution(value, gradient))
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

import cellscape as cs

from .._tetmesh import TET_EDGES, TET_FACES, TRIANGLE_EDGES, row_keys
from ._p1 import assemble_p1, element_geometry

if TYPE_CHECKING:
    from scipy import sparse

    from ._linear import SolveStats

__all__ = [
    "BOUNDARY_KINDS",
    "ENERGY_UNIT",
    "NM_PER_UM",
    "AdaptiveResult",
    "BoundaryCondition",
    "ExactSolution",
    "StationaryProblem",
    "adapt",
    "dorfler_mark",
    "energy_error",
    "estimate",
    "interpolate_p1",
    "solve_stationary",
]

NM_PER_UM = 1000.0
BOUNDARY_KINDS = ("dirichlet", "neumann", "robin")
ENERGY_UNIT = "uM*um^1.5/s^0.5"
"""Unit of the energy norm and of the estimator: √(µM² · µm³ / s)."""

#: a scalar for the whole mesh, ``{region marker: value}``, or one value per tetrahedron
Coefficient = float | Mapping[int, float] | np.ndarray
#: a constant, a vectorized callable ``f(x, y, z)`` of coordinates in µm, or nodal values (n,)
Data = float | Callable[..., Any] | np.ndarray


# ------------------------------------------------------------------------------------------ problem data


def _check_kind(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if value not in BOUNDARY_KINDS:
        raise cs.InputError(f"boundary condition kind {value!r} is unknown; choose one of {', '.join(BOUNDARY_KINDS)}")


@attrs.frozen
class BoundaryCondition:
    """Data on the boundary triangles of one marker.

    Parameters
    ----------
    kind : {"dirichlet", "neumann", "robin"}
        ``u = value``; ``D ∂u/∂n = value``; ``D ∂u/∂n + coefficient_um_per_s · u = value``.
    value : float, callable or ndarray
        u_D in µM (Dirichlet) or g in µM·µm/s (Neumann, Robin; > 0 flows in): a constant, a
        vectorized ``value(x, y, z)`` of µm coordinates, or nodal values of shape (n,).
    coefficient_um_per_s : float
        Robin transfer coefficient α (µm/s, ≥ 0); must be 0 for the other kinds.
    """

    kind: str = attrs.field(validator=_check_kind)
    value: Data = 0.0
    coefficient_um_per_s: float = 0.0

    def __attrs_post_init__(self) -> None:
        if not (self.coefficient_um_per_s >= 0 and math.isfinite(self.coefficient_um_per_s)):
            raise cs.InputError(f"Robin coefficient must be finite and >= 0 µm/s, got {self.coefficient_um_per_s!r}")
        if self.kind != "robin" and self.coefficient_um_per_s != 0:
            raise cs.InputError(f"a {self.kind} condition takes no coefficient; use BoundaryCondition.robin")

    @classmethod
    def dirichlet(cls, value_uM: Data) -> BoundaryCondition:
        """``u = value_uM`` (µM)."""
        return cls("dirichlet", value_uM)

    @classmethod
    def neumann(cls, flux_uM_um_per_s: Data) -> BoundaryCondition:
        """``D ∂u/∂n = flux`` (µM·µm/s, > 0 flows in)."""
        return cls("neumann", flux_uM_um_per_s)

    @classmethod
    def robin(cls, coefficient_um_per_s: float, flux_uM_um_per_s: Data = 0.0) -> BoundaryCondition:
        """``D ∂u/∂n + α u = flux``: e.g. exchange with an outside at ``u_out`` is ``α = k``, ``flux = k u_out``."""
        return cls("robin", flux_uM_um_per_s, float(coefficient_um_per_s))


@attrs.frozen
class StationaryProblem:
    """``−∇·(D ∇u) + σ u = f`` with boundary data, in µm, s and µM (see the module docstring).

    Parameters
    ----------
    diffusion_um2_per_s : float, dict[int, float] or ndarray (k,)
        D > 0 for the whole mesh, per region marker (every region of the mesh must be listed), or
        per tetrahedron (single solves only).
    reaction_per_s : float, dict[int, float] or ndarray (k,)
        σ ≥ 0 (first-order loss rate); regions not listed in a dict get 0.
    source_uM_per_s : float, callable or ndarray (n,)
        f: a constant, ``f(x, y, z)`` of µm coordinates (arrays of any shape), or nodal values.
    boundary : dict[int, BoundaryCondition]
        Condition per boundary marker of the mesh; other boundary faces are zero-flux.
    """

    diffusion_um2_per_s: Coefficient = 1.0
    reaction_per_s: Coefficient = 0.0
    source_uM_per_s: Data = 0.0
    boundary: Mapping[int, BoundaryCondition] = attrs.field(factory=dict)


@attrs.frozen
class ExactSolution:
    """A known solution, to measure the true error.

    Parameters
    ----------
    value : callable
        ``u(x, y, z)`` in µM, coordinates in µm, vectorized over arrays of any shape.
    gradient : callable
        ``∇u(x, y, z)`` in µM/µm: returns a sequence (or array) of the three components, each shaped like x.
    """

    value: Callable[..., Any]
    gradient: Callable[..., Any]


@attrs.frozen(eq=False)
class AdaptiveResult:
    """What :func:`adapt` returns.

    Attributes
    ----------
    mesh : cellscape.TetMesh
        The last mesh solved on (nm).
    solution : ndarray, shape (n,)
        Nodal values of u on it (µM).
    indicators : ndarray, shape (k,)
        η_T of each of its tetrahedra (:data:`ENERGY_UNIT`).
    history : cellscape.Table
        One row per solve: ``round``, ``unknowns`` (nodes), ``tetrahedra``, ``estimated_error`` (η),
        ``marked``, ``linear_iterations``, ``seconds``, and, when an exact solution was given,
        ``true_error`` (|||u − u_h|||) and ``effectivity`` (η / true error).
    converged : bool
        Whether ``η ≤ tolerance`` was reached (False when the budget or round limit stopped the loop).
    """

    mesh: cs.TetMesh
    solution: np.ndarray
    indicators: np.ndarray
    history: cs.Table
    converged: bool


# --------------------------------------------------------------------------------------------- geometry


def _points_um(mesh: cs.TetMesh) -> np.ndarray:
    return np.asarray(mesh.points, np.float64) / NM_PER_UM


@attrs.frozen(eq=False)
class _Topology:
    """Faces of the tetrahedra: local face ``4 e + i`` is face i (opposite corner i) of tetrahedron e."""

    interior_a: np.ndarray  # (m,) local faces of the interior faces, each paired with
    interior_b: np.ndarray  # (m,) the same face seen from the other tetrahedron
    boundary: np.ndarray  # (b,) local faces on the boundary of the domain
    boundary_marker: np.ndarray  # (b,) their marker from mesh.boundary_markers, -1 when unmarked
    interface_markers: np.ndarray  # markers of boundary triangles that lie on interior faces


def _topology(mesh: cs.TetMesh, tets: np.ndarray) -> _Topology:
    n = len(mesh.points)
    faces = tets[:, TET_FACES].reshape(-1, 3)
    keys = row_keys(faces, n)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    same = sorted_keys[1:] == sorted_keys[:-1]
    if (same[1:] & same[:-1]).any():
        face = np.sort(faces[order[int(np.flatnonzero(same[1:] & same[:-1])[0])]]).tolist()
        raise cs.InputError(f"the mesh is not a valid tetrahedral mesh: face {face} is shared by more than two "
                            "tetrahedra; repair or re-mesh it")
    pair = np.flatnonzero(same)
    paired = np.zeros(len(faces), bool)
    paired[order[pair]] = True
    paired[order[pair + 1]] = True
    boundary = np.flatnonzero(~paired)
    marker = np.full(len(boundary), -1, np.int64)
    interface_markers = np.zeros(0, np.int64)
    triangles = np.asarray(mesh.boundary_triangles, np.int64)
    if len(triangles) and len(boundary):
        triangle_keys = row_keys(triangles, n)
        boundary_keys = keys[boundary]
        boundary_order = np.argsort(boundary_keys)
        where = np.clip(np.searchsorted(boundary_keys[boundary_order], triangle_keys), 0, len(boundary) - 1)
        found = boundary_keys[boundary_order][where] == triangle_keys
        marker[boundary_order[where[found]]] = np.asarray(mesh.boundary_markers)[found]
        interface_markers = np.unique(np.asarray(mesh.boundary_markers)[~found]).astype(np.int64)
    return _Topology(order[pair], order[pair + 1], boundary, marker, interface_markers)


def _tet_rule(n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Collapsed (Duffy) Gauss rule on a tetrahedron: barycentric points (n³, 4), weights summing to 1.

    Exact for polynomials of degree ``2 n − 3`` (cubics for n = 3); all weights positive.
    """
    t, w = np.polynomial.legendre.leggauss(n)
    t, w = (t + 1) / 2, w / 2
    a, b, c = np.meshgrid(t, t, t, indexing="ij")
    wa, wb, wc = np.meshgrid(w, w, w, indexing="ij")
    x, y, z = a, b * (1 - a), c * (1 - a) * (1 - b)
    weights = 6.0 * wa * wb * wc * (1 - a) ** 2 * (1 - b)
    bary = np.stack([1 - x - y - z, x, y, z], axis=-1).reshape(-1, 4)
    return bary, weights.ravel()


def _triangle_rule(n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Collapsed Gauss rule on a triangle: barycentric points (n², 3), weights summing to 1 (degree 2 n − 2)."""
    t, w = np.polynomial.legendre.leggauss(n)
    t, w = (t + 1) / 2, w / 2
    a, b = np.meshgrid(t, t, indexing="ij")
    wa, wb = np.meshgrid(w, w, indexing="ij")
    x, y = a, b * (1 - a)
    weights = 2.0 * wa * wb * (1 - a)
    return np.stack([1 - x - y, x, y], axis=-1).reshape(-1, 3), weights.ravel()


def _chunks(count: int, size: int = 65_536) -> Iterable[slice]:
    """Slices of at most ``size`` cells: bounds the memory of per-quadrature-point arrays, not a loop per cell."""
    return (slice(start, min(start + size, count)) for start in range(0, count, size))


def _values_at(data: Data, points: np.ndarray, cells: np.ndarray, bary: np.ndarray, what: str) -> np.ndarray:
    """Data at the quadrature points ``bary`` (q, m) of ``cells`` (c, m): shape (c, q)."""
    if isinstance(data, np.ndarray) and data.ndim == 1 and len(data) == len(points):
        return data[cells] @ bary.T
    if callable(data):
        xyz = bary @ points[cells]
        values = np.asarray(data(xyz[..., 0], xyz[..., 1], xyz[..., 2]), dtype=np.float64)
        try:
            values = np.broadcast_to(values, xyz.shape[:2])
        except ValueError as exc:
            raise cs.InputError(f"{what}: the callable returned shape {values.shape} for coordinates of shape "
                                f"{xyz.shape[:2]}; it must be vectorized (numpy operations on x, y, z)") from exc
    else:
        values = np.asarray(data, dtype=np.float64)
        if values.ndim != 0:
            raise cs.InputError(f"{what}: give a number, a callable f(x, y, z) or nodal values of shape "
                                f"({len(points)},), got an array of shape {values.shape}")
        values = np.broadcast_to(values, (len(cells), len(bary)))
    if not np.all(np.isfinite(values)):
        raise cs.InputError(f"{what} has NaN or infinite values")
    return values


def _nodal(data: Data, points: np.ndarray, nodes: np.ndarray, what: str) -> np.ndarray:
    """Data at mesh nodes ``nodes`` (m,)."""
    return _values_at(data, points, nodes[:, None], np.ones((1, 1)), what)[:, 0]


def _per_tet(coefficient: Coefficient, markers: np.ndarray, name: str, positive: bool) -> np.ndarray:
    """A coefficient as one value per tetrahedron, checked (``positive``: > 0, else ≥ 0)."""
    bound = "> 0" if positive else ">= 0"
    if isinstance(coefficient, Mapping):
        present = sorted(int(r) for r in np.unique(markers))
        unknown = sorted(int(r) for r in coefficient if int(r) not in present)
        if unknown:
            raise cs.InputError(f"{name}: region(s) {unknown} are not in the mesh; regions present: {present}")
        missing = [r for r in present if r not in {int(k) for k in coefficient}]
        if positive and missing:
            raise cs.InputError(f"{name}: region(s) {missing} have no value; give one for every region {present}")
        values = np.zeros(len(markers))
        for region, value in coefficient.items():
            if not (math.isfinite(value) and (value > 0 if positive else value >= 0)):
                raise cs.InputError(f"{name}: region {int(region)} has {value!r}; it must be finite and {bound}")
            values[markers == int(region)] = float(value)
        return values
    values = np.asarray(coefficient, dtype=np.float64)
    if values.ndim == 0:
        values = np.full(len(markers), float(values))
    elif values.shape != (len(markers),):
        raise cs.InputError(f"{name}: give a number, {{region: value}} or one value per tetrahedron "
                            f"({len(markers)},), got shape {values.shape}")
    bad = ~np.isfinite(values) | ((values <= 0) if positive else (values < 0))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise cs.InputError(f"{name}: tetrahedron #{first} (region {int(markers[first])}) has {values[first]!r}; "
                            f"it must be finite and {bound}")
    return values


@attrs.frozen(eq=False)
class _Discrete:
    """Everything about one mesh that the solve, the estimator and the error share (µm)."""

    points: np.ndarray
    tets: np.ndarray
    volumes: np.ndarray
    gradients: np.ndarray
    diffusion: np.ndarray
    reaction: np.ndarray
    topology: _Topology


def _discretize(mesh: cs.TetMesh, problem: StationaryProblem) -> _Discrete:
    points = _points_um(mesh)
    tets = np.asarray(mesh.tetrahedra, np.int64)
    volumes, gradients = element_geometry(points, tets)
    markers = np.asarray(mesh.region_markers)
    diffusion = _per_tet(problem.diffusion_um2_per_s, markers, "diffusion_um2_per_s", positive=True)
    reaction = _per_tet(problem.reaction_per_s, markers, "reaction_per_s", positive=False)
    topology = _topology(mesh, tets)
    present = {int(m) for m in np.unique(np.asarray(mesh.boundary_markers))}
    for marker, condition in problem.boundary.items():
        if not isinstance(condition, BoundaryCondition):
            raise cs.InputError(f"boundary marker {marker}: expected a BoundaryCondition, got {type(condition).__name__}")
        if int(marker) not in present:
            raise cs.InputError(f"boundary marker {marker} has no triangles in the mesh; markers present: "
                                f"{sorted(present)}")
        if int(marker) in topology.interface_markers:
            raise cs.InputError(f"boundary marker {marker} labels faces inside the domain (an interface between "
                                "regions); a stationary scalar problem takes conditions only on the outer boundary")
    return _Discrete(points, tets, volumes, gradients, diffusion, reaction, topology)


def _face_nodes(d: _Discrete, local_faces: np.ndarray) -> np.ndarray:
    return d.tets[local_faces // 4][np.arange(len(local_faces))[:, None], TET_FACES[local_faces % 4]]


def _face_areas(d: _Discrete, local_faces: np.ndarray) -> np.ndarray:
    """|F| = 3 |T| |∇λ_i| for face i of T."""
    e, i = local_faces // 4, local_faces % 4
    return 3.0 * d.volumes[e] * np.linalg.norm(d.gradients[e, i], axis=1)


def _longest_edge(points: np.ndarray, cells: np.ndarray, edges: np.ndarray) -> np.ndarray:
    lengths = [np.linalg.norm(points[cells[:, a]] - points[cells[:, b]], axis=1) for a, b in edges]
    return np.max(lengths, axis=0)


# ------------------------------------------------------------------------------------------------ solve


def _system(d: _Discrete, problem: StationaryProblem) -> tuple[sparse.csr_matrix, np.ndarray, np.ndarray, np.ndarray]:
    """Matrix, load vector, Dirichlet mask and Dirichlet values (before elimination)."""
    from scipy import sparse

    n = len(d.points)
    stiffness, mass = assemble_p1(d.points, d.tets, stiffness_weights=d.diffusion, mass_weights=d.reaction)
    matrix = stiffness + mass
    load = np.zeros(n)
    bary, weights = _tet_rule()
    for chunk in _chunks(len(d.tets)):
        f = _values_at(problem.source_uM_per_s, d.points, d.tets[chunk], bary, "source_uM_per_s")
        local = (f * weights) @ bary * d.volumes[chunk, None]
        load += np.bincount(d.tets[chunk].ravel(), weights=local.ravel(), minlength=n)
    dirichlet = np.zeros(n, bool)
    dirichlet_values = np.zeros(n)
    tri_bary, tri_weights = _triangle_rule()
    boundary_rows, boundary_cols, boundary_values = [], [], []
    for marker, condition in sorted(problem.boundary.items()):
        faces = d.topology.boundary[d.topology.boundary_marker == int(marker)]
        nodes = _face_nodes(d, faces)
        what = f"boundary marker {marker} ({condition.kind}) value"
        if condition.kind == "dirichlet":
            unique = np.unique(nodes)
            dirichlet[unique] = True
            dirichlet_values[unique] = _nodal(condition.value, d.points, unique, what)
            continue
        areas = _face_areas(d, faces)
        g = _values_at(condition.value, d.points, nodes, tri_bary, what)
        load += np.bincount(nodes.ravel(), weights=((g * tri_weights) @ tri_bary * areas[:, None]).ravel(),
                            minlength=n)
        if condition.coefficient_um_per_s > 0:
            local = condition.coefficient_um_per_s * areas[:, None, None] * (np.ones((3, 3)) + np.eye(3)) / 12.0
            boundary_rows.append(np.repeat(nodes, 3, axis=1).ravel())
            boundary_cols.append(np.tile(nodes, (1, 3)).ravel())
            boundary_values.append(local.ravel())
    if boundary_rows:
        matrix = matrix + sparse.coo_matrix(
            (np.concatenate(boundary_values), (np.concatenate(boundary_rows), np.concatenate(boundary_cols))),
            shape=(n, n)).tocsr()
    return matrix.tocsr(), load, dirichlet, dirichlet_values


def solve_stationary(
    mesh: cs.TetMesh,
    problem: StationaryProblem,
    *,
    backend: str = "scipy",
    method: str = "auto",
    preconditioner: str = "auto",
    rtol: float = 1e-10,
    petsc_options: Mapping[str, object] | str | None = None,
    guess: np.ndarray | None = None,
) -> tuple[np.ndarray, SolveStats]:
    """P1 finite-element solution of the stationary problem on one mesh.

    Parameters
    ----------
    mesh : cellscape.TetMesh
        The domain (coordinates in nm); its boundary markers carry the conditions.
    problem : StationaryProblem
        Coefficients and data (µm, s, µM).
    backend, method, preconditioner, rtol, petsc_options
        Passed to :func:`cellscape_plugins.solve._linear.make_solver` (the matrix is symmetric
        positive definite after eliminating Dirichlet nodes).
    guess : ndarray, shape (n,), optional
        Starting iterate of an iterative solver (µM), e.g. a coarser solution interpolated.

    Returns
    -------
    solution : ndarray, shape (n,)
        Nodal values of u (µM); Dirichlet nodes hold their data exactly. Nodes in no
        tetrahedron are 0.
    stats : SolveStats
        Iterations, residual and method of the linear solve.

    Raises
    ------
    cellscape.InputError
        Bad coefficients or data (naming the region, tetrahedron or marker), a degenerate
        tetrahedron, or a singular problem (zero-flux everywhere and σ = 0).
    """
    return _solve(_discretize(mesh, problem), problem, backend=backend, method=method, preconditioner=preconditioner,
                  rtol=rtol, petsc_options=petsc_options, guess=guess)


def _solve(d: _Discrete, problem: StationaryProblem, *, backend: str, method: str, preconditioner: str, rtol: float,
           petsc_options: Mapping[str, object] | str | None,
           guess: np.ndarray | None) -> tuple[np.ndarray, SolveStats]:
    from ._linear import make_solver

    matrix, load, dirichlet, dirichlet_values = _system(d, problem)
    n = len(d.points)
    used = np.zeros(n, bool)
    used[d.tets.ravel()] = True
    robin = any(c.kind == "robin" and c.coefficient_um_per_s > 0 for c in problem.boundary.values())
    if not dirichlet.any() and not robin and not (d.reaction > 0).any():
        raise cs.InputError("the problem is singular: no Dirichlet or Robin boundary and no reaction (σ = 0), so u is "
                            "fixed only up to a constant; add a Dirichlet or Robin condition or a reaction_per_s > 0")
    free = used & ~dirichlet
    solution = np.where(dirichlet, dirichlet_values, 0.0)
    rhs = (load - matrix @ solution)[free]
    reduced = matrix[free][:, free]
    solver = make_solver(reduced, backend=backend, method=method, preconditioner=preconditioner, rtol=rtol,
                         petsc_options=petsc_options, symmetric=True)
    start = None if guess is None else np.asarray(guess, dtype=np.float64)[free]
    solution[free] = solver.solve(rhs, start)
    return solution, solver.stats


# --------------------------------------------------------------------------------------------- estimate


def estimate(mesh: cs.TetMesh, problem: StationaryProblem, solution: np.ndarray) -> np.ndarray:
    """Residual a-posteriori error indicators η_T of a P1 solution (see the module docstring).

    Parameters
    ----------
    mesh : cellscape.TetMesh
        The mesh ``solution`` lives on (nm).
    problem : StationaryProblem
        The problem it solves.
    solution : ndarray, shape (n,)
        Nodal values (µM), e.g. from :func:`solve_stationary`.

    Returns
    -------
    ndarray, shape (k,), float
        η_T per tetrahedron (:data:`ENERGY_UNIT`); the estimate of the energy error is
        ``sqrt(sum(η_T²))``.
    """
    return np.sqrt(_indicators_squared(_discretize(mesh, problem), problem, np.asarray(solution, np.float64)))


def _weight(h: np.ndarray, diffusion: np.ndarray, reaction: np.ndarray) -> np.ndarray:
    """``min(h / √D, 1 / √σ)`` (µm / √(µm²/s) = √s); σ = 0 gives ``h / √D``."""
    with np.errstate(divide="ignore"):
        return np.minimum(h / np.sqrt(diffusion), 1.0 / np.sqrt(reaction))


def _indicators_squared(d: _Discrete, problem: StationaryProblem, u: np.ndarray) -> np.ndarray:
    k = len(d.tets)
    grad_u = np.einsum("eid,ei->ed", d.gradients, u[d.tets])
    # element residual f − σ u_h (Δu_h = 0 on each tetrahedron)
    weight_t = _weight(_longest_edge(d.points, d.tets, TET_EDGES), d.diffusion, d.reaction)
    squared = np.zeros(k)
    bary, weights = _tet_rule()
    for chunk in _chunks(k):
        f = _values_at(problem.source_uM_per_s, d.points, d.tets[chunk], bary, "source_uM_per_s")
        residual = f - d.reaction[chunk, None] * (u[d.tets[chunk]] @ bary.T)
        squared[chunk] = weight_t[chunk] ** 2 * d.volumes[chunk] * (residual**2 @ weights)
    # outward normal flux D ∇u_h · n of every local face; n = −∇λ_i / |∇λ_i|
    gradient_norms = np.linalg.norm(d.gradients, axis=2)
    flux_out = -d.diffusion[:, None] * np.einsum("eid,ed->ei", d.gradients, grad_u) / gradient_norms
    flux_out, areas = flux_out.ravel(), (3.0 * d.volumes[:, None] * gradient_norms).ravel()
    # interior faces: the jump is the sum of the two outward fluxes
    a, b = d.topology.interior_a, d.topology.interior_b
    jump = flux_out[a] + flux_out[b]
    diffusion_f = np.maximum(d.diffusion[a // 4], d.diffusion[b // 4])
    reaction_f = np.maximum(d.reaction[a // 4], d.reaction[b // 4])
    h_f = _longest_edge(d.points, _face_nodes(d, a), TRIANGLE_EDGES)
    face = _weight(h_f, diffusion_f, reaction_f) / np.sqrt(diffusion_f) * areas[a] * jump**2
    squared += 0.5 * (np.bincount(a // 4, weights=face, minlength=k) + np.bincount(b // 4, weights=face, minlength=k))
    # boundary faces that are not Dirichlet: g − α u_h − D ∂u_h/∂n (g = α = 0 where no condition is given)
    boundary, marker = d.topology.boundary, d.topology.boundary_marker
    dirichlet = [m for m, c in problem.boundary.items() if c.kind == "dirichlet"]
    natural = ~np.isin(marker, dirichlet)
    faces, marker = boundary[natural], marker[natural]
    e = faces // 4
    weight_f = _weight(_longest_edge(d.points, _face_nodes(d, faces), TRIANGLE_EDGES), d.diffusion[e],
                       d.reaction[e]) / np.sqrt(d.diffusion[e])
    integral = areas[faces] * flux_out[faces] ** 2
    tri_bary, tri_weights = _triangle_rule()
    for m, condition in problem.boundary.items():
        if condition.kind == "dirichlet":
            continue
        on = np.flatnonzero(marker == int(m))
        nodes = _face_nodes(d, faces[on])
        g = _values_at(condition.value, d.points, nodes, tri_bary, f"boundary marker {m} ({condition.kind}) value")
        residual = g - condition.coefficient_um_per_s * (u[nodes] @ tri_bary.T) - flux_out[faces[on], None]
        integral[on] = areas[faces[on]] * (residual**2 @ tri_weights)
    squared += np.bincount(e, weights=weight_f * integral, minlength=k)
    return squared


def energy_error(mesh: cs.TetMesh, problem: StationaryProblem, solution: np.ndarray, exact: ExactSolution) -> float:
    """True error ``|||u − u_h||| = (∫ D |∇(u − u_h)|² + σ (u − u_h)² dV)^½`` (:data:`ENERGY_UNIT`).

    Parameters
    ----------
    mesh : cellscape.TetMesh
        The mesh ``solution`` lives on (nm).
    problem : StationaryProblem
        Gives D and σ.
    solution : ndarray, shape (n,)
        Nodal values of u_h (µM).
    exact : ExactSolution
        u and ∇u as callables of µm coordinates.

    Returns
    -------
    float
        The energy-norm error, integrated with a 27-point rule per tetrahedron.
    """
    d = _discretize(mesh, problem)
    u = np.asarray(solution, np.float64)
    grad_u = np.einsum("eid,ei->ed", d.gradients, u[d.tets])
    bary, weights = _tet_rule()
    total = 0.0
    for chunk in _chunks(len(d.tets)):
        xyz = bary @ d.points[d.tets[chunk]]
        x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
        gradient = np.stack([np.broadcast_to(np.asarray(g, np.float64), x.shape) for g in exact.gradient(x, y, z)], -1)
        value_error = np.asarray(exact.value(x, y, z), np.float64) - u[d.tets[chunk]] @ bary.T
        gradient_error = ((gradient - grad_u[chunk, None, :]) ** 2).sum(axis=2)
        density = d.diffusion[chunk, None] * gradient_error + d.reaction[chunk, None] * value_error**2
        total += float(d.volumes[chunk] @ (density @ weights))
    return math.sqrt(total)


# ---------------------------------------------------------------------------------------- mark and refine


def dorfler_mark(indicators: np.ndarray, theta: float = 0.5) -> np.ndarray:
    """Dörfler (bulk) marking: the fewest tetrahedra whose η_T² add up to at least θ Σ η_T².

    Parameters
    ----------
    indicators : ndarray, shape (k,)
        η_T ≥ 0 per tetrahedron.
    theta : float
        Bulk fraction in (0, 1]; 1 marks every tetrahedron with η_T > 0.

    Returns
    -------
    ndarray, shape (m,), int64
        Indices of the marked tetrahedra, ascending (empty when every η_T is 0).
    """
    if not 0 < theta <= 1:
        raise cs.InputError(f"Dörfler fraction theta must be in (0, 1], got {theta!r}")
    squared = np.asarray(indicators, np.float64) ** 2
    total = squared.sum()
    if not total > 0:
        return np.zeros(0, np.int64)
    order = np.argsort(-squared, kind="stable")
    cumulative = np.cumsum(squared[order])
    count = int(np.searchsorted(cumulative, theta * total * (1 - 1e-12))) + 1
    return np.sort(order[: min(count, len(order))]).astype(np.int64)


def interpolate_p1(points: np.ndarray, tets: np.ndarray, values: np.ndarray, query: np.ndarray,
                   candidates: int = 16) -> np.ndarray:
    """Evaluate a P1 field at arbitrary points (e.g. the nodes of a refined mesh).

    Each query point is placed in the tetrahedron, among the ``candidates`` with nearest centroids,
    where its smallest barycentric coordinate is largest; a point outside every candidate is
    extrapolated from the best one.

    Parameters
    ----------
    points : ndarray, shape (n, 3)
        Nodes of the mesh carrying the field (any length unit, the same as ``query``).
    tets : ndarray, shape (k, 4), int
        Its tetrahedra.
    values : ndarray, shape (n,)
        Nodal values.
    query : ndarray, shape (m, 3)
        Points to evaluate at.
    candidates : int
        Tetrahedra tried per point.

    Returns
    -------
    ndarray, shape (m,)
    """
    from scipy.spatial import cKDTree

    gradients = element_geometry(points, tets)[1]
    tree = cKDTree(points[tets].mean(axis=1))
    count = min(candidates, len(tets))
    result = np.empty(len(query))
    for chunk in _chunks(len(query)):
        near = tree.query(query[chunk], k=count)[1].reshape(-1, count)
        # λ_i(x) = 1 + ∇λ_i · (x − p_i)
        offsets = query[chunk, None, None, :] - points[tets[near]]
        bary = 1.0 + np.einsum("mcid,mcid->mci", gradients[near], offsets)
        best = np.argmax(bary.min(axis=2), axis=1)
        rows = np.arange(len(near))
        result[chunk] = np.einsum("mi,mi->m", bary[rows, best], values[tets[near[rows, best]]])
    return result


def _prolongate(coarse: cs.TetMesh, fine: cs.TetMesh, values: np.ndarray) -> np.ndarray:
    """P1 values of ``coarse`` at the nodes of ``fine``; old nodes kept first by mesh.refine are copied."""
    kept = len(coarse.points)
    result = np.empty(len(fine.points))
    if len(fine.points) >= kept and np.array_equal(fine.points[:kept], coarse.points):
        result[:kept] = values
        if len(fine.points) > kept:
            result[kept:] = interpolate_p1(_points_um(coarse), np.asarray(coarse.tetrahedra), values,
                                           _points_um(fine)[kept:])
        return result
    return interpolate_p1(_points_um(coarse), np.asarray(coarse.tetrahedra), values, _points_um(fine))


def _positively_oriented(mesh: cs.TetMesh) -> cs.TetMesh:
    points, tets = mesh.points, np.asarray(mesh.tetrahedra)
    a, b, c, e = (points[tets[:, i]] for i in range(4))
    negative = np.einsum("ij,ij->i", b - a, np.cross(c - a, e - a)) < 0
    if not negative.any():
        return mesh
    tets = tets.copy()
    tets[negative, 2], tets[negative, 3] = tets[negative, 3], tets[negative, 2].copy()
    return attrs.evolve(mesh, tetrahedra=tets)


def _on_new_mesh(problem: StationaryProblem, coarse: cs.TetMesh, fine: cs.TetMesh) -> StationaryProblem:
    """The problem with its nodal data (source, boundary values) interpolated onto ``fine``."""
    def moved(data: Data) -> Data:
        if isinstance(data, np.ndarray) and data.ndim == 1 and len(data) == len(coarse.points):
            return _prolongate(coarse, fine, data)
        return data

    boundary = {m: attrs.evolve(c, value=moved(c.value)) for m, c in problem.boundary.items()}
    return attrs.evolve(problem, source_uM_per_s=moved(problem.source_uM_per_s), boundary=boundary)


# ---------------------------------------------------------------------------------------------- the loop


def adapt(
    mesh: cs.TetMesh,
    problem: StationaryProblem,
    *,
    theta: float = 0.5,
    tolerance: float | None = None,
    max_unknowns: int = 200_000,
    max_rounds: int = 30,
    exact: ExactSolution | None = None,
    backend: str = "scipy",
    method: str = "auto",
    preconditioner: str = "auto",
    rtol: float = 1e-10,
    petsc_options: Mapping[str, object] | str | None = None,
    progress: Callable[[Iterable[int], int], Iterable[int]] | None = None,
) -> AdaptiveResult:
    """The solve → estimate → mark (Dörfler) → refine (with closure) loop.

    Parameters
    ----------
    mesh : cellscape.TetMesh
        Initial mesh (nm); its tetrahedra are re-oriented positively if needed.
    problem : StationaryProblem
        Coefficients as numbers or per region (per-tetrahedron arrays cannot follow refinement);
        nodal data arrays are interpolated onto each refined mesh.
    theta : float
        Dörfler bulk fraction in (0, 1]: larger refines more per round.
    tolerance : float, optional
        Stop once the estimated energy error η ≤ tolerance (:data:`ENERGY_UNIT`).
    max_unknowns : int
        Node budget: the loop stops, keeping the last solved mesh, when refining would exceed it.
    max_rounds : int
        At most this many refinements.
    exact : ExactSolution, optional
        Adds the true error and the effectivity η / error to the history.
    backend, method, preconditioner, rtol, petsc_options
        Linear solver (see :func:`solve_stationary`).
    progress : callable, optional
        ``progress(iterable, total)`` wrapping the rounds (e.g. ``Method.progress``).

    Returns
    -------
    AdaptiveResult
        Final mesh, solution, indicators, the history table, and whether the tolerance was met.

    Raises
    ------
    cellscape.InputError
        Bad parameters or problem data (see :func:`solve_stationary`).
    """
    if tolerance is not None and not tolerance > 0:
        raise cs.InputError(f"tolerance must be > 0, got {tolerance!r}")
    if not (isinstance(max_unknowns, int | np.integer) and max_unknowns > 0):
        raise cs.InputError(f"max_unknowns must be a positive integer, got {max_unknowns!r}")
    if not 0 < theta <= 1:
        raise cs.InputError(f"Dörfler fraction theta must be in (0, 1], got {theta!r}")
    for name in ("diffusion_um2_per_s", "reaction_per_s"):
        if np.ndim(getattr(problem, name)) == 1 and not isinstance(getattr(problem, name), Mapping):
            raise cs.InputError(f"{name}: per-tetrahedron values cannot follow refinement; give a number or "
                                "{region marker: value}")
    if len(mesh.points) > max_unknowns:
        raise cs.InputError(f"the initial mesh has {len(mesh.points)} nodes, more than max_unknowns={max_unknowns}")
    refiner = cs.method("mesh.refine")
    mesh = _positively_oriented(mesh)
    columns: dict[str, list[float]] = {key: [] for key in (
        "round", "unknowns", "tetrahedra", "estimated_error", "marked", "linear_iterations", "seconds")}
    if exact is not None:
        columns.update(true_error=[], effectivity=[])
    guess: np.ndarray | None = None
    converged = False
    rounds: Iterable[int] = range(max_rounds + 1)
    if progress is not None:
        rounds = progress(rounds, max_rounds + 1)
    for round_number in rounds:
        start = time.perf_counter()
        d = _discretize(mesh, problem)
        solution, stats = _solve(d, problem, backend=backend, method=method, preconditioner=preconditioner, rtol=rtol,
                                 petsc_options=petsc_options, guess=guess)
        squared = _indicators_squared(d, problem, solution)
        eta = math.sqrt(squared.sum())
        converged = tolerance is not None and eta <= tolerance
        marked = np.zeros(0, np.int64)
        if not converged and round_number < max_rounds:
            marked = dorfler_mark(np.sqrt(squared), theta)
        columns["round"].append(round_number)
        columns["unknowns"].append(len(mesh.points))
        columns["tetrahedra"].append(len(mesh.tetrahedra))
        columns["estimated_error"].append(eta)
        columns["marked"].append(len(marked))
        columns["linear_iterations"].append(stats.iterations)
        columns["seconds"].append(time.perf_counter() - start)
        if exact is not None:
            error = energy_error(mesh, problem, solution, exact)
            columns["true_error"].append(error)
            columns["effectivity"].append(eta / error if error > 0 else math.inf)
        if not len(marked):
            break
        refined = refiner(mesh, marked=cs.Table({"tet": marked}))
        if len(refined.points) > max_unknowns:
            break
        guess = _prolongate(mesh, refined, solution)
        problem = _on_new_mesh(problem, mesh, refined)
        mesh = refined
    units = {"round": "", "unknowns": "", "tetrahedra": "", "estimated_error": ENERGY_UNIT, "marked": "",
             "linear_iterations": "", "seconds": "s", "true_error": ENERGY_UNIT, "effectivity": ""}
    history = cs.Table({k: np.asarray(v) for k, v in columns.items()}, {k: units[k] for k in columns},
                       title="adaptive refinement")
    return AdaptiveResult(mesh, solution, np.sqrt(squared), history, bool(converged))
