"""solve.diffusion against exact integrals, conservation, the analytic decay of a cosine mode and unit scaling."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from meshes import cube_mesh

import cellscape as cs
from cellscape_plugins.solve._p1 import assemble_p1, element_geometry, integrate, lumped_mass
from cellscape_plugins.solve.diffusion import CG_RTOL, backward_euler, release_site, time_grid, total_amount


def jittered_cube(n: int, side: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Points and tetrahedra of cube_mesh with interior nodes moved randomly (up to 15 % of a cell)."""
    mesh = cube_mesh(n, side)
    points = mesh.points.copy()
    interior = np.all((points > 1e-9 * side) & (points < side * (1 - 1e-9)), axis=1)
    rng = np.random.default_rng(seed)
    points[interior] += rng.uniform(-0.15, 0.15, (int(interior.sum()), 3)) * side / n
    return points, np.asarray(mesh.tetrahedra)


# ---------------------------------------------------------------- (a) assembly


def test_element_gradients_reproduce_linear_functions() -> None:
    points, tets = jittered_cube(3, 2.0)
    volumes, gradients = element_geometry(points, tets)
    assert volumes.sum() == pytest.approx(8.0, rel=1e-12)
    np.testing.assert_allclose(gradients.sum(axis=1), 0.0, atol=1e-12)
    # Σ_i p_i ⊗ ∇λ_i = I: the P1 interpolant of x ↦ x has gradient I on every element
    identity = np.einsum("eid,eif->edf", points[tets], gradients)
    np.testing.assert_allclose(identity, np.broadcast_to(np.eye(3), identity.shape), atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_assembly_integrates_exactly(seed: int) -> None:
    side = 2.0
    points, tets = jittered_cube(4, side, seed)
    stiffness, mass = assemble_p1(points, tets)
    ones = np.ones(len(points))
    x = points[:, 0]
    assert mass.sum() == pytest.approx(side**3, rel=1e-12)  # ∫1 = volume
    assert x @ mass @ x == pytest.approx(side**5 / 3, rel=1e-12)  # ∫x², exact for P1 products
    np.testing.assert_allclose(stiffness @ ones, 0.0, atol=1e-12)
    assert abs(stiffness - stiffness.T).max() < 1e-13
    assert x @ stiffness @ x == pytest.approx(side**3, rel=1e-12)  # ∫|∇x|² = volume
    # K x is the boundary flux ∫ ∂x/∂n φ_i: zero inside, +area on the face x = side, −area on x = 0
    residual = stiffness @ x
    on_boundary = np.any((points < 1e-9) | (points > side - 1e-9), axis=1)
    np.testing.assert_allclose(residual[~on_boundary], 0.0, atol=1e-12)
    assert residual[np.isclose(x, side)].sum() == pytest.approx(side**2, rel=1e-12)
    assert residual[np.isclose(x, 0.0)].sum() == pytest.approx(-(side**2), rel=1e-12)
    _, lumped = assemble_p1(points, tets, lumped=True)
    assert lumped.nnz == len(points)
    np.testing.assert_allclose(lumped.diagonal(), np.asarray(mass.sum(axis=1)).ravel(), rtol=1e-12)
    np.testing.assert_allclose(lumped_mass(points, tets), lumped.diagonal(), rtol=1e-14)
    assert integrate(points, tets, x) == pytest.approx(side**4 / 2, rel=1e-12)


def test_assembly_scales_with_the_length_unit() -> None:
    points, tets = jittered_cube(2, 1000.0)
    k_nm, m_nm = assemble_p1(points, tets)
    k_um, m_um = assemble_p1(points / 1000.0, tets)
    np.testing.assert_allclose(k_nm.toarray(), 1000.0 * k_um.toarray(), rtol=1e-10, atol=1e-12)  # K ~ length
    np.testing.assert_allclose(m_nm.toarray(), 1e9 * m_um.toarray(), rtol=1e-12)  # M ~ length³


# ---------------------------------------------------------------- (b) conservation, (d) steady state


@pytest.mark.parametrize("mass", ["consistent", "lumped"])
def test_closed_system_conserves_mass_and_reaches_the_uniform_mean(mass: str) -> None:
    side_nm = 600.0
    mesh = cube_mesh(6, side_nm)
    fields = cs.method("solve.diffusion", diffusion_um2_per_s=1.0, t_end_s=2.0, dt_s=0.05, source_radius_nm=150.0,
                       initial_uM=10.0, mass=mass)(mesh)
    values = fields.values["c"]
    amounts = total_amount(mesh.points, mesh.tetrahedra, values)
    assert amounts[0] > 0
    np.testing.assert_allclose(amounts, amounts[0], rtol=1e-10)
    # after 2 s ≫ L²/(π² D) = 0.036 s the field is flat at amount / volume
    mean = amounts[0] / (side_nm / 1000.0) ** 3
    np.testing.assert_allclose(values[-1], mean, rtol=1e-9)
    assert values[0].max() == 10.0 and values[0].min() == 0.0
    assert fields.times_s[0] == 0.0 and fields.times_s[-1] == pytest.approx(2.0, rel=1e-14)
    assert len(fields.times_s) == 21 and fields.units == {"c": "uM"}


def test_default_ball_sits_at_the_minus_x_end() -> None:
    side_nm = 800.0
    mesh = cube_mesh(8, side_nm)
    np.testing.assert_allclose(release_site(mesh.points, mesh.tetrahedra), [0.0, side_nm / 2, side_nm / 2])
    start = cs.method("solve.diffusion", t_end_s=0.01, dt_s=0.01, initial_uM=3.0, source_radius_nm=150.0)(mesh).values["c"][0]
    distance = np.linalg.norm(mesh.points - [0.0, side_nm / 2, side_nm / 2], axis=1)
    np.testing.assert_array_equal(start, np.where(distance <= 150.0, 3.0, 0.0))
    # a box three times longer along x: the site is still in the middle of its −x face
    stretched = mesh.points * [3.0, 1.0, 1.0] + [-500.0, 0.0, 0.0]
    np.testing.assert_allclose(release_site(stretched, mesh.tetrahedra), [-500.0, side_nm / 2, side_nm / 2])


# ---------------------------------------------------------------- (c) analytic decay and convergence


def cosine_mode_error(n: int, dt: float, mass: str = "consistent") -> float:
    """Relative error of the amplitude of u0 = cos(π x / L) after t = 0.1 s, against exp(−D π² t / L²)."""
    side_um, diffusion, t_end = 1.0, 1.0, 0.1
    mesh = cube_mesh(n, side_um * 1000.0)
    points_um = mesh.points / 1000.0
    stiffness, mass_matrix = assemble_p1(points_um, mesh.tetrahedra, lumped=mass == "lumped")
    mode = np.cos(np.pi * points_um[:, 0] / side_um)
    n_steps, step, saved = time_grid(t_end, dt, 2)
    u = backward_euler(stiffness, mass_matrix, mode, diffusion, step, n_steps, saved)[-1]
    _, exact_mass = assemble_p1(points_um, mesh.tetrahedra)
    amplitude = (mode @ exact_mass @ u) / (mode @ exact_mass @ mode)
    exact = np.exp(-diffusion * np.pi**2 * t_end / side_um**2)
    return abs(amplitude - exact) / exact


def test_cosine_mode_decays_at_the_analytic_rate_and_converges() -> None:
    # h halves and dt quarters at each level: O(h²) + O(dt) shrinks about 4×
    errors = [cosine_mode_error(4, 0.02), cosine_mode_error(8, 0.005), cosine_mode_error(16, 0.00125)]
    assert errors[-1] < 5e-3
    assert errors[0] / errors[1] > 3.0 and errors[1] / errors[2] > 3.0
    assert cosine_mode_error(8, 0.005, "lumped") < 0.05


def test_time_grid_ends_at_t_end() -> None:
    n_steps, dt, saved = time_grid(1.0, 0.3, 21)
    assert n_steps == 4 and dt == pytest.approx(0.25)
    np.testing.assert_array_equal(saved, [0, 1, 2, 3, 4])  # at most one output per step
    n_steps, dt, saved = time_grid(1.0, 0.01, 21)
    assert n_steps == 100 and dt == pytest.approx(0.01)
    np.testing.assert_array_equal(saved, np.arange(0, 101, 5))
    fields = cs.method("solve.diffusion", t_end_s=0.5, dt_s=0.2, initial="constant")(cube_mesh(2, 400.0))
    np.testing.assert_allclose(fields.times_s, [0.0, 1 / 6, 2 / 6, 0.5], rtol=1e-14)


# ---------------------------------------------------------------- (e) units


def test_nm_mesh_matches_the_same_problem_in_um() -> None:
    """The method reads nm; the µm problem with the same D in µm²/s gives identical values."""
    mesh = cube_mesh(5, 1000.0, regions_split=True)
    fields = cs.method("solve.diffusion", diffusion_um2_per_s=0.3, t_end_s=0.2, dt_s=0.01, n_outputs=5,
                       initial="region", region_values_uM={2: 4.0})(mesh)
    points_um = mesh.points / 1000.0
    stiffness, mass = assemble_p1(points_um, mesh.tetrahedra)
    start = fields.values["c"][0]
    expected = backward_euler(stiffness, mass, start, 0.3, 0.01, 20, [0, 5, 10, 15, 20])
    np.testing.assert_allclose(fields.values["c"], expected, rtol=1e-12, atol=1e-12)


def test_step_between_regions_relaxes_at_the_physical_rate() -> None:
    """A 1 µm cube given in nm, u = 1 where x > L/2: the cos(π x/L) amplitude is −(2/π) exp(−D π² t / L²)."""
    mesh = cube_mesh(8, 1000.0, regions_split=True)
    diffusion = 0.1
    fields = cs.method("solve.diffusion", diffusion_um2_per_s=diffusion, t_end_s=1.0, dt_s=0.01, n_outputs=3,
                       initial="region", region_values_uM={2: 1.0})(mesh)
    points_um = mesh.points / 1000.0
    _, mass = assemble_p1(points_um, mesh.tetrahedra)
    mode = np.cos(np.pi * points_um[:, 0])
    amplitudes = fields.values["c"] @ mass @ mode / (mode @ mass @ mode)
    exact = -2 / np.pi * np.exp(-diffusion * np.pi**2 * fields.times_s)
    np.testing.assert_allclose(amplitudes, exact, rtol=0.03)
    # the region initial state holds exactly value × region volume (0.5 µm³)
    assert total_amount(mesh.points, mesh.tetrahedra, fields.values["c"][0]) == pytest.approx(0.5, rel=1e-12)


def test_twice_the_size_needs_four_times_the_time() -> None:
    kwargs = {"initial": "region", "region_values_uM": {2: 1.0}, "diffusion_um2_per_s": 2.0, "n_outputs": 2}
    small = cs.method("solve.diffusion", t_end_s=0.01, dt_s=0.001, **kwargs)(cube_mesh(4, 500.0, regions_split=True))
    large = cs.method("solve.diffusion", t_end_s=0.04, dt_s=0.004, **kwargs)(cube_mesh(4, 1000.0, regions_split=True))
    assert np.ptp(small.values["c"][-1]) > 0.1  # still far from flat: the comparison means something
    np.testing.assert_allclose(small.values["c"], large.values["c"], atol=1e-12)


# ---------------------------------------------------------------- solvers and regions


@pytest.mark.parametrize("preconditioner", ["amg", "jacobi"])
def test_conjugate_gradients_match_the_direct_solver(preconditioner: str) -> None:
    mesh = cube_mesh(6, 800.0)
    direct = cs.method("solve.diffusion", t_end_s=0.1, dt_s=0.01)(mesh).values["c"]
    iterative = cs.method("solve.diffusion", t_end_s=0.1, dt_s=0.01, solver="cg", preconditioner=preconditioner)(mesh)
    np.testing.assert_allclose(iterative.values["c"], direct, atol=1e-8)


def test_the_report_holds_iterations_and_residuals_of_every_step() -> None:
    mesh = cube_mesh(6, 800.0)
    method = cs.method("solve.diffusion", t_end_s=0.1, dt_s=0.01, solver="cg", preconditioner="jacobi")
    method(mesh)
    report = method.report.columns
    np.testing.assert_array_equal(report["step"], np.arange(1, 11))
    np.testing.assert_allclose(report["time_s"], np.arange(1, 11) * 0.01)
    assert np.all((report["iterations"] >= 1) & (report["iterations"] < 100))
    assert np.all(report["relative_residual"] <= CG_RTOL) and np.all(report["residual_norm"] > 0)
    assert method.report.title == "linear solves: scipy cg + jacobi"
    direct = cs.method("solve.diffusion", t_end_s=0.1, dt_s=0.01)
    direct(mesh)
    assert direct.report.title == "linear solves: scipy direct"
    assert np.all(direct.report.columns["iterations"] == 0) and np.all(direct.report.columns["relative_residual"] < 1e-13)


@pytest.mark.requires("petsc4py")
@pytest.mark.parametrize(("petsc_options", "ksp", "pc"), [
    (None, "cg", "gamg"), ("-ksp_type cg -pc_type jacobi", "cg", "jacobi"),
    ({"ksp_type": "bcgs", "pc_type": "gamg"}, "bcgs", "gamg")])
def test_petsc_and_scipy_backends_agree_to_solver_tolerance(petsc_options: str | dict | None, ksp: str, pc: str) -> None:
    mesh = cube_mesh(8, 800.0)
    kwargs = {"t_end_s": 0.05, "dt_s": 0.01, "n_outputs": 6, "source_radius_nm": 200.0, "initial_uM": 5.0}
    reference = cs.method("solve.diffusion", **kwargs)(mesh).values["c"]
    scipy_cg = cs.method("solve.diffusion", solver="cg", **kwargs)(mesh).values["c"]
    method = cs.method("solve.diffusion", solver="cg", backend="petsc", petsc_options=petsc_options, **kwargs)
    petsc = method(mesh).values["c"]
    # ‖b − A x‖ ≤ 1e-10 ‖b‖ with A = M + Δt D K (condition number ~ 10): values agree to ~1e-9 of their scale
    scale = np.abs(reference).max()
    assert np.abs(petsc - reference).max() < 1e-8 * scale
    assert np.abs(scipy_cg - reference).max() < 1e-8 * scale
    assert method.report.title == f"linear solves: petsc {ksp} + {pc}"
    assert np.all(method.report.columns["relative_residual"] <= CG_RTOL)
    assert np.all(method.report.columns["iterations"] >= 1)
    direct = cs.method("solve.diffusion", backend="petsc", **kwargs)(mesh).values["c"]
    np.testing.assert_allclose(direct, reference, rtol=0, atol=1e-12 * scale)


def test_misplaced_petsc_options_and_unknown_backends_are_refused() -> None:
    mesh = cube_mesh(3, 300.0)
    with pytest.raises(cs.InputError, match="petsc_options are given but backend is 'scipy'; set backend: petsc"):
        cs.method("solve.diffusion", petsc_options="-ksp_type cg")(mesh)
    with pytest.raises(cs.InputError, match="'backend': 'cuda' is not one of"):
        cs.method("solve.diffusion", backend="cuda")


def test_simulating_one_region_leaves_the_others_at_zero() -> None:
    mesh = cube_mesh(4, 800.0, regions_split=True)
    fields = cs.method("solve.diffusion", initial="constant", initial_uM=2.0, regions=[2], t_end_s=0.1, dt_s=0.05)(mesh)
    in_region_2 = np.zeros(len(mesh.points), bool)
    in_region_2[np.unique(mesh.tetrahedra[mesh.region_markers == 2])] = True
    assert (fields.values["c"][:, ~in_region_2] == 0).all()
    np.testing.assert_allclose(fields.values["c"][:, in_region_2], 2.0, rtol=1e-12)
    # zero flux across the cut: a step inside region 2 keeps its amount
    region_tets = mesh.tetrahedra[mesh.region_markers == 2]
    ball = cs.method("solve.diffusion", regions=[2], source_center_nm=(800.0, 400.0, 400.0), t_end_s=0.1, dt_s=0.01)(mesh)
    amounts = total_amount(mesh.points, region_tets, ball.values["c"])
    np.testing.assert_allclose(amounts, amounts[0], rtol=1e-10)


# ---------------------------------------------------------------- (f) bad input


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(cs.InputError, match="diffusion_um2_per_s': -1 is out of range: must be > 0"):
        cs.method("solve.diffusion", diffusion_um2_per_s=-1.0)
    with pytest.raises(cs.InputError, match="dt_s': 0 is out of range"):
        cs.method("solve.diffusion", dt_s=0.0)
    with pytest.raises(cs.InputError, match="'mass': 'diagonal' is not one of"):
        cs.method("solve.diffusion", mass="diagonal")


def test_bad_inputs_say_what_to_do() -> None:
    mesh = cube_mesh(2, 100.0, regions_split=True)
    with pytest.raises(cs.InputError, match=r"dt_s \(2 s\) is longer than t_end_s \(1 s\); lower dt_s"):
        cs.method("solve.diffusion", dt_s=2.0, t_end_s=1.0)(mesh)
    with pytest.raises(cs.InputError, match=r"'regions': region\(s\) \[7\] are not in the mesh; regions present: \[1, 2\]"):
        cs.method("solve.diffusion", regions=[7, 1])(mesh)
    with pytest.raises(cs.InputError, match=r"'regions': region\(s\) \[\] \(none\)"):
        cs.method("solve.diffusion", regions=[])(mesh)
    with pytest.raises(cs.InputError, match=r"source ball .* contains no mesh node"):
        cs.method("solve.diffusion", source_center_nm=(1e6, 0.0, 0.0), source_radius_nm=1.0)(mesh)
    with pytest.raises(cs.InputError, match="needs region_values_uM"):
        cs.method("solve.diffusion", initial="region")(mesh)
    with pytest.raises(cs.InputError, match=r"names region\(s\) \[1\], which are not simulated; simulated regions: \[2\]"):
        cs.method("solve.diffusion", initial="region", regions=[2], region_values_uM={1: 1.0})(mesh)
    with pytest.raises(cs.InputError, match="negative concentrations"):
        cs.method("solve.diffusion", initial="region", region_values_uM={1: -1.0})(mesh)
    with pytest.raises(cs.InputError, match="'species' is empty"):
        cs.method("solve.diffusion", species="")(mesh)


def test_degenerate_tetrahedra_are_named() -> None:
    points = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [2, 2, 0], [1, 1, 1e-14]]) * 100.0
    tets = [[0, 1, 2, 3], [0, 1, 2, 4], [1, 2, 3, 4], [0, 4, 5, 6]]  # #1 is flat, #3 is a sliver of relative volume 1e-14
    with pytest.raises(cs.InputError, match=r"the mesh has 2 degenerate \(zero-volume\) tetrahedra, the first is #1"):
        cs.method("solve.diffusion", initial="constant")(cs.TetMesh(points, tets))
    with pytest.raises(cs.InputError, match=r"1 degenerate .* the first is #0 \(nodes \[0, 1, 2, 4\]\)"):
        assemble_p1(points, np.array([[0, 1, 2, 4]]))


def test_missing_pyamg_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyamg", None)
    with pytest.raises(cs.MissingDependencyError, match=r"preconditioner 'amg' .*needs the package .pyamg.*cellscape\[solve\]"):
        cs.method("solve.diffusion", solver="cg", t_end_s=0.1, dt_s=0.1)(cube_mesh(2, 100.0))
