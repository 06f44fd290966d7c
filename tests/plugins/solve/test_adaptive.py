"""Adaptive P1 FEM: estimator effectivity, exactness, Dörfler marking, and adaptive against uniform refinement.

The meshes are boxes (or an L-shaped prism) of hexahedra cut into 6 tetrahedra each, built here,
with coordinates in nm (the solver works in µm: 1000 nm = 1 µm).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

import cellscape as cs
from cellscape_plugins.solve._adaptive import (
    BoundaryCondition,
    ExactSolution,
    StationaryProblem,
    adapt,
    dorfler_mark,
    energy_error,
    estimate,
    interpolate_p1,
    solve_stationary,
)

# the six tetrahedra of a hexahedron sharing its main diagonal, corners in (x, y, z) bit order
KUHN = np.array([[0, 1, 3, 7], [0, 1, 5, 7], [0, 2, 3, 7], [0, 2, 6, 7], [0, 4, 5, 7], [0, 4, 6, 7]])


def box_mesh(lower: tuple[float, float, float], upper: tuple[float, float, float], cells: tuple[int, int, int],
             keep: Callable[[np.ndarray], np.ndarray] | None = None,
             face_marker: Callable[[np.ndarray], np.ndarray] | None = None,
             region: Callable[[np.ndarray], np.ndarray] | None = None) -> cs.TetMesh:
    """Tetrahedra of the hexahedra (corners in µm) whose centre ``keep`` accepts; coordinates in nm.

    ``face_marker(centroids_um) -> markers`` labels the boundary triangles (default 1),
    ``region(centroids_um) -> markers`` the tetrahedra (default 1).
    """
    ticks = [np.linspace(lower[a], upper[a], cells[a] + 1) for a in range(3)]
    grid = np.stack(np.meshgrid(*ticks, indexing="ij"), axis=-1).reshape(-1, 3)
    index = np.arange(len(grid)).reshape(*(c + 1 for c in cells))
    i, j, k = np.meshgrid(*(np.arange(c) for c in cells), indexing="ij")
    corners = np.stack([index[i + (c & 1), j + (c >> 1 & 1), k + (c >> 2 & 1)].ravel() for c in range(8)], axis=1)
    if keep is not None:
        corners = corners[keep((grid[corners[:, 0]] + grid[corners[:, 7]]) / 2)]
    tets = corners[:, KUHN].reshape(-1, 4)
    used = np.unique(tets)
    renumber = np.zeros(len(grid), np.int64)
    renumber[used] = np.arange(len(used))
    points, tets = grid[used], renumber[tets]
    faces = np.sort(np.concatenate([tets[:, [1, 2, 3]], tets[:, [0, 2, 3]], tets[:, [0, 1, 3]], tets[:, [0, 1, 2]]]),
                    axis=1)
    unique, counts = np.unique(faces, axis=0, return_counts=True)
    boundary = unique[counts == 1]
    face_markers = np.ones(len(boundary), np.int32) if face_marker is None else face_marker(points[boundary].mean(1))
    regions = np.ones(len(tets), np.int32) if region is None else region(points[tets].mean(1))
    return cs.TetMesh(points * 1000.0, tets, regions, boundary, face_markers)


def unit_cube(n: int, **kwargs: Callable[[np.ndarray], np.ndarray]) -> cs.TetMesh:
    return box_mesh((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (n, n, n), **kwargs)


def energy_rate(errors: list[float], cells_per_um: list[int]) -> float:
    """Slope of log(error) against log(1/h): 1 for P1 in the energy norm on smooth solutions."""
    return -np.polyfit(np.log(cells_per_um), np.log(errors), 1)[0]


# ------------------------------------------------------------------ a smooth problem with every kind of condition

D, SIGMA, ALPHA = 2.0, 3.0, 1.5  # µm²/s, 1/s, µm/s


def smooth_u(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    return np.exp(x) * np.sin(np.pi * y) * np.cos(z)


def smooth_gradient(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, ...]:
    return (smooth_u(x, y, z), np.pi * np.exp(x) * np.cos(np.pi * y) * np.cos(z),
            -np.exp(x) * np.sin(np.pi * y) * np.sin(z))


def face_markers(centroids: np.ndarray) -> np.ndarray:
    """1: x = 0 (Dirichlet), 2: x = 1 (Neumann), 3: y = 1 (Robin), 4: y = 0, z = 0, z = 1 (Dirichlet)."""
    x, y = centroids[:, 0], centroids[:, 1]
    return np.select([x < 1e-9, x > 1 - 1e-9, y > 1 - 1e-9], [1, 2, 3], 4).astype(np.int32)


def smooth_problem() -> StationaryProblem:
    # Δu = (1 − π² − 1) u, so f = −D Δu + σ u = (D π² + σ) u
    return StationaryProblem(
        diffusion_um2_per_s=D, reaction_per_s=SIGMA,
        source_uM_per_s=lambda x, y, z: (D * np.pi**2 + SIGMA) * smooth_u(x, y, z),
        boundary={
            1: BoundaryCondition.dirichlet(smooth_u),
            2: BoundaryCondition.neumann(lambda x, y, z: D * smooth_u(x, y, z)),  # D ∂u/∂x on x = 1
            3: BoundaryCondition.robin(ALPHA, lambda x, y, z: -D * np.pi * np.exp(x) * np.cos(z)),  # u = 0 on y = 1
            4: BoundaryCondition.dirichlet(smooth_u),
        })


def test_estimator_effectivity_is_bounded_on_a_smooth_problem() -> None:
    problem, exact = smooth_problem(), ExactSolution(smooth_u, smooth_gradient)
    errors, estimates = [], []
    for n in (3, 6, 12):
        mesh = unit_cube(n, face_marker=face_markers)
        u, _ = solve_stationary(mesh, problem)
        errors.append(energy_error(mesh, problem, u, exact))
        estimates.append(float(np.sqrt((estimate(mesh, problem, u) ** 2).sum())))
    effectivity = np.array(estimates) / np.array(errors)
    # the energy error is O(h): halving h halves it, and the estimator follows with a steady ratio
    assert energy_rate(errors, [3, 6, 12]) == pytest.approx(1.0, abs=0.1), errors
    assert np.all((effectivity > 1.5) & (effectivity < 10.0)), effectivity
    assert effectivity.max() / effectivity.min() < 1.25, effectivity


def test_estimator_effectivity_stays_bounded_through_adaptive_rounds() -> None:
    problem, exact = smooth_problem(), ExactSolution(smooth_u, smooth_gradient)
    result = adapt(unit_cube(3, face_marker=face_markers), problem, theta=0.5, max_rounds=6, exact=exact,
                   method="cg")
    history = result.history.columns
    assert len(history["round"]) == 7
    assert history["unknowns"][-1] > 3 * history["unknowns"][0]
    assert history["true_error"][-1] < 0.5 * history["true_error"][0]
    assert np.all((history["effectivity"] > 1.5) & (history["effectivity"] < 10.0)), history["effectivity"]
    assert history["effectivity"].max() / history["effectivity"].min() < 1.5
    assert result.history.units["estimated_error"] == "uM*um^1.5/s^0.5"
    # the result is the solve on the last mesh: its error is the last row's
    assert energy_error(result.mesh, problem, result.solution, exact) == pytest.approx(history["true_error"][-1])


def test_piecewise_linear_solution_across_a_diffusion_jump_is_exact_and_estimated_zero() -> None:
    """D = 1 for x < ½ and 4 beyond; flux D u' = 1 everywhere: u = x, then ½ + (x − ½)/4, which P1 reproduces."""
    def exact(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        return np.where(x < 0.5, x, 0.5 + (x - 0.5) / 4)

    mesh = unit_cube(4, region=lambda c: np.where(c[:, 0] > 0.5, 2, 1).astype(np.int32),
                     face_marker=lambda c: np.select([c[:, 0] < 1e-9, c[:, 0] > 1 - 1e-9], [1, 2], 3).astype(np.int32))
    problem = StationaryProblem({1: 1.0, 2: 4.0}, 0.0, 0.0,
                                {1: BoundaryCondition.dirichlet(0.0), 2: BoundaryCondition.neumann(1.0)})
    u, stats = solve_stationary(mesh, problem)
    points_um = mesh.points / 1000.0
    np.testing.assert_allclose(u, exact(*points_um.T), atol=1e-12)
    assert stats.method == "direct"
    eta = estimate(mesh, problem, u)
    assert eta.shape == (len(mesh.tetrahedra),) and eta.max() < 1e-10
    # the wrong flux (Neumann 2 instead of 1) is seen on the x = 1 face and across the jump
    wrong = StationaryProblem({1: 1.0, 2: 1.0}, 0.0, 0.0,
                              {1: BoundaryCondition.dirichlet(0.0), 2: BoundaryCondition.neumann(1.0)})
    assert np.sqrt((estimate(mesh, wrong, u) ** 2).sum()) > 0.1


# ------------------------------------------------------------------ marking, interpolation


def test_dorfler_marks_the_fewest_elements_holding_theta_of_the_squared_estimate() -> None:
    indicators = np.sqrt([1.0, 9.0, 4.0, 0.5, 5.5])  # squares sum to 20
    np.testing.assert_array_equal(dorfler_mark(indicators, 0.45), [1])  # 9 ≥ 9
    np.testing.assert_array_equal(dorfler_mark(indicators, 0.5), [1, 4])  # 9 + 5.5 ≥ 10
    np.testing.assert_array_equal(dorfler_mark(indicators, 0.9), [1, 2, 4])  # 9 + 5.5 + 4 ≥ 18
    np.testing.assert_array_equal(dorfler_mark(indicators, 0.95), [0, 1, 2, 4])  # 9 + 5.5 + 4 + 1 ≥ 19
    assert len(dorfler_mark(indicators, 1.0)) == 5
    assert len(dorfler_mark(np.zeros(4), 0.5)) == 0
    with pytest.raises(cs.InputError, match=r"theta must be in \(0, 1\], got 0"):
        dorfler_mark(indicators, 0.0)


def test_interpolation_reproduces_linear_fields_and_follows_refinement() -> None:
    mesh = unit_cube(3)
    points_um = mesh.points / 1000.0
    linear = 2.0 + points_um @ [1.0, -3.0, 0.5]
    query = np.random.default_rng(0).uniform(0, 1, (200, 3))
    np.testing.assert_allclose(interpolate_p1(points_um, mesh.tetrahedra, linear, query),
                               2.0 + query @ [1.0, -3.0, 0.5], atol=1e-12)
    # a nodal source given on the first mesh is carried onto the refined ones: the same as the callable
    exact_source = StationaryProblem(1.0, 0.0, lambda x, y, z: 2.0 + x - 3.0 * y + 0.5 * z,
                                     {1: BoundaryCondition.dirichlet(0.0)})
    nodal_source = StationaryProblem(1.0, 0.0, linear, {1: BoundaryCondition.dirichlet(0.0)})
    by_callable = adapt(mesh, exact_source, max_rounds=2)
    by_nodes = adapt(mesh, nodal_source, max_rounds=2)
    assert len(by_nodes.mesh.points) > len(mesh.points)
    np.testing.assert_array_equal(by_nodes.mesh.tetrahedra, by_callable.mesh.tetrahedra)
    np.testing.assert_allclose(by_nodes.solution, by_callable.solution, atol=1e-12)


# ------------------------------------------------------------------ adaptive against uniform refinement

WAVE_CENTRE, WAVE_RADIUS, WAVE_STEEPNESS = np.array([-0.05, -0.05, -0.05]), 0.7, 50.0


def _wave_radius(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    return np.sqrt((x - WAVE_CENTRE[0]) ** 2 + (y - WAVE_CENTRE[1]) ** 2 + (z - WAVE_CENTRE[2]) ** 2)


def wave_u(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    return np.arctan(WAVE_STEEPNESS * (_wave_radius(x, y, z) - WAVE_RADIUS))


def wave_gradient(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, ...]:
    r = _wave_radius(x, y, z)
    scale = WAVE_STEEPNESS / (1 + (WAVE_STEEPNESS * (r - WAVE_RADIUS)) ** 2) / r
    return scale * (x - WAVE_CENTRE[0]), scale * (y - WAVE_CENTRE[1]), scale * (z - WAVE_CENTRE[2])


def wave_source(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """−Δu of the radial u = atan(a (r − r0)): −(u'' + 2 u' / r)."""
    r = _wave_radius(x, y, z)
    s = WAVE_STEEPNESS * (r - WAVE_RADIUS)
    first = WAVE_STEEPNESS / (1 + s**2)
    second = -2 * WAVE_STEEPNESS**2 * s / (1 + s**2) ** 2
    return -(second + 2 * first / r)


def test_adaptive_beats_uniform_refinement_on_a_sharp_interior_layer() -> None:
    """A spherical front of width ~1/50 µm (Mitchell's 'wave front'): same error with ≥ 5× fewer unknowns."""
    problem = StationaryProblem(1.0, 0.0, wave_source, {1: BoundaryCondition.dirichlet(wave_u)})
    exact = ExactSolution(wave_u, wave_gradient)
    uniform = unit_cube(16)
    target = energy_error(uniform, problem, solve_stationary(uniform, problem, method="cg")[0], exact)
    result = adapt(unit_cube(4), problem, theta=0.5, max_unknowns=4000, exact=exact, method="cg")
    history = result.history.columns
    reached = np.flatnonzero(history["true_error"] <= target)
    assert len(reached), (target, history["true_error"])
    needed = int(history["unknowns"][reached[0]])
    assert len(uniform.points) / needed > 5.0, (needed, len(uniform.points))
    # the estimator drives it: effectivity settles once the front is resolved
    settled = history["effectivity"][history["unknowns"] > 1000]
    assert np.all((settled > 4.0) & (settled < 10.0)), settled
    # stopping on the estimate: the loop ends as soon as η ≤ tolerance, within the budget
    tolerance = float(history["estimated_error"][reached[0]]) * (1 + 1e-9)  # round-off of threaded BLAS aside
    stopped = adapt(unit_cube(4), problem, theta=0.5, tolerance=tolerance, max_unknowns=4000, method="cg")
    assert stopped.converged and stopped.history.columns["estimated_error"][-1] <= tolerance
    assert stopped.history.columns["estimated_error"][-2] > tolerance
    assert len(stopped.mesh.points) == needed
    # a budget too small to reach it stops without exceeding the budget
    short = adapt(unit_cube(4), problem, theta=0.5, tolerance=tolerance, max_unknowns=needed // 2, method="cg")
    assert not short.converged and needed // 4 < len(short.mesh.points) <= needed // 2


def l_shape_u(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    r, angle = np.hypot(x, y), np.mod(np.arctan2(y, x), 2 * np.pi)
    return r ** (2 / 3) * np.sin(2 * angle / 3)


def l_shape_gradient(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, ...]:
    r, angle = np.maximum(np.hypot(x, y), 1e-300), np.mod(np.arctan2(y, x), 2 * np.pi)
    radial, tangential = (2 / 3) * r ** (-1 / 3) * np.sin(2 * angle / 3), (2 / 3) * r ** (-1 / 3) * np.cos(2 * angle / 3)
    return (radial * np.cos(angle) - tangential * np.sin(angle), radial * np.sin(angle) + tangential * np.cos(angle),
            np.zeros_like(x))


def l_shaped_prism(n: int) -> cs.TetMesh:
    """((−1, 1)² without the quadrant x > 0, y < 0) × (0, 1) µm, n hexahedra per µm."""
    return box_mesh((-1.0, -1.0, 0.0), (1.0, 1.0, 1.0), (2 * n, 2 * n, n),
                    keep=lambda c: ~((c[:, 0] > 0) & (c[:, 1] < 0)))


def test_adaptive_beats_uniform_refinement_at_the_re_entrant_edge_of_an_l_shaped_prism() -> None:
    """u = r^(2/3) sin(2θ/3) (harmonic, singular gradient along the edge): same error with ≥ 2.5× fewer unknowns."""
    problem = StationaryProblem(1.0, 0.0, 0.0, {1: BoundaryCondition.dirichlet(l_shape_u)})
    exact = ExactSolution(l_shape_u, l_shape_gradient)
    uniform_errors, uniform_unknowns = [], []
    for n in (2, 4, 8):
        mesh = l_shaped_prism(n)
        u, _ = solve_stationary(mesh, problem, method="cg")
        uniform_errors.append(energy_error(mesh, problem, u, exact))
        uniform_unknowns.append(len(mesh.points))
    # uniform refinement is slowed by the singularity: error ~ h^(2/3), not h
    assert energy_rate(uniform_errors, [2, 4, 8]) == pytest.approx(2 / 3, abs=0.1), uniform_errors
    result = adapt(l_shaped_prism(2), problem, theta=0.5, max_unknowns=2500, exact=exact, method="cg")
    history = result.history.columns
    reached = np.flatnonzero(history["true_error"] <= uniform_errors[-1])
    assert len(reached), (uniform_errors[-1], history["true_error"])
    assert uniform_unknowns[-1] / history["unknowns"][reached[0]] > 2.5
    assert np.all((history["effectivity"] > 2.5) & (history["effectivity"] < 6.0)), history["effectivity"]
    # refinement went to the edge (the z axis): tetrahedra touching it are the smallest, far smaller than the rest
    corners = (result.mesh.points / 1000.0)[result.mesh.tetrahedra]
    volumes = np.abs(np.linalg.det(corners[:, 1:] - corners[:, :1])) / 6
    on_edge = np.hypot(corners[..., 0], corners[..., 1]).min(axis=1) < 1e-9
    far = np.hypot(corners[..., 0], corners[..., 1]).min(axis=1) > 0.5
    assert volumes[on_edge].min() == volumes.min()
    assert np.median(volumes[on_edge]) < np.median(volumes[far]) / 30


def test_reaction_dominated_boundary_layer_is_refined_robustly() -> None:
    """−ε u'' + u = 1 on x ∈ (0, 1), u = 0 at both ends: layers of width √ε at x = 0 and 1."""
    epsilon = 1e-3
    width = math.sqrt(epsilon)

    def u(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        return 1 - (np.exp(-x / width) + np.exp((x - 1) / width)) / (1 + math.exp(-1 / width))

    def gradient(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, ...]:
        derivative = (np.exp(-x / width) - np.exp((x - 1) / width)) / (width * (1 + math.exp(-1 / width)))
        return derivative, np.zeros_like(y), np.zeros_like(z)

    mesh = box_mesh((0.0, 0.0, 0.0), (1.0, 0.25, 0.25), (4, 1, 1),
                    face_marker=lambda c: np.where((c[:, 0] < 1e-9) | (c[:, 0] > 1 - 1e-9), 1, 2).astype(np.int32))
    problem = StationaryProblem(epsilon, 1.0, 1.0, {1: BoundaryCondition.dirichlet(0.0)})
    result = adapt(mesh, problem, theta=0.5, max_unknowns=3000, exact=ExactSolution(u, gradient), method="cg")
    effectivity = result.history.columns["effectivity"]
    errors = result.history.columns["true_error"]
    assert errors[-1] < 0.2 * errors[0]
    # robust weights min(h/√ε, 1): the ratio stays bounded while h/√ε goes from 8 to below 1
    assert np.all((effectivity > 1.0) & (effectivity < 10.0)), effectivity
    centroids = (result.mesh.points / 1000.0)[result.mesh.tetrahedra].mean(axis=1)[:, 0]
    in_layers = (centroids < 3 * width) | (centroids > 1 - 3 * width)
    assert in_layers.mean() > 0.5  # most tetrahedra sit in the 2 × 3√ε ≈ 19 % of the length holding the layers


# ------------------------------------------------------------------ bad input


def test_bad_problems_are_refused_with_the_item_named() -> None:
    mesh = unit_cube(2, region=lambda c: np.where(c[:, 0] > 0.5, 2, 1).astype(np.int32))
    dirichlet = {1: BoundaryCondition.dirichlet(0.0)}
    with pytest.raises(cs.InputError, match=r"singular: no Dirichlet or Robin boundary and no reaction"):
        solve_stationary(mesh, StationaryProblem(1.0, 0.0, 1.0, {1: BoundaryCondition.neumann(0.0)}))
    with pytest.raises(cs.InputError, match=r"diffusion_um2_per_s: region 2 has -1.0; it must be finite and > 0"):
        solve_stationary(mesh, StationaryProblem({1: 1.0, 2: -1.0}, 0.0, 1.0, dirichlet))
    with pytest.raises(cs.InputError, match=r"diffusion_um2_per_s: region\(s\) \[2\] have no value"):
        solve_stationary(mesh, StationaryProblem({1: 1.0}, 0.0, 1.0, dirichlet))
    with pytest.raises(cs.InputError, match=r"reaction_per_s: region\(s\) \[7\] are not in the mesh; regions present: \[1, 2\]"):
        solve_stationary(mesh, StationaryProblem(1.0, {7: 1.0}, 1.0, dirichlet))
    with pytest.raises(cs.InputError, match=r"boundary marker 5 has no triangles in the mesh; markers present: \[1\]"):
        solve_stationary(mesh, StationaryProblem(1.0, 0.0, 1.0, {5: BoundaryCondition.dirichlet(0.0)}))
    with pytest.raises(cs.InputError, match=r"source_uM_per_s: the callable returned shape \(3,\)"):
        solve_stationary(mesh, StationaryProblem(1.0, 0.0, lambda x, y, z: np.ones(3), dirichlet))
    with pytest.raises(cs.InputError, match="boundary condition kind 'periodic' is unknown"):
        BoundaryCondition("periodic")
    with pytest.raises(cs.InputError, match="Robin coefficient must be finite and >= 0"):
        BoundaryCondition.robin(-1.0)
    # a marker on the interface between the two regions is not an outer boundary
    interface = cs.TetMesh(mesh.points, mesh.tetrahedra, mesh.region_markers,
                           np.concatenate([mesh.boundary_triangles, [_interface_face(mesh)]]),
                           np.concatenate([mesh.boundary_markers, [9]]))
    with pytest.raises(cs.InputError, match="boundary marker 9 labels faces inside the domain"):
        solve_stationary(interface, StationaryProblem(1.0, 0.0, 1.0, {**dirichlet, 9: BoundaryCondition.neumann(1.0)}))
    with pytest.raises(cs.InputError, match="per-tetrahedron values cannot follow refinement"):
        adapt(mesh, StationaryProblem(np.ones(len(mesh.tetrahedra)), 0.0, 1.0, dirichlet))
    with pytest.raises(cs.InputError, match="initial mesh has 27 nodes, more than max_unknowns=10"):
        adapt(mesh, StationaryProblem(1.0, 0.0, 1.0, dirichlet), max_unknowns=10)


def _interface_face(mesh: cs.TetMesh) -> list[int]:
    """A face shared by a tetrahedron of region 1 and one of region 2."""
    faces = {}
    for tet, region in zip(mesh.tetrahedra.tolist(), mesh.region_markers.tolist(), strict=True):
        for corner in range(4):
            face = tuple(sorted(tet[:corner] + tet[corner + 1:]))
            if faces.setdefault(face, region) != region:
                return list(face)
    raise AssertionError("no interface face")
