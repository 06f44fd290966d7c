"""solve.diffusion against exact integrals, conservation and the analytic decay of a cosine mode."""

from __future__ import annotations

import numpy as np
import pytest
from meshes import cube_mesh

import cellscape as cs
from cellscape_plugins.solve._p1 import assemble_p1
from cellscape_plugins.solve.diffusion import total_amount


def test_assembly_integrates_exactly() -> None:
    mesh = cube_mesh(4, 2.0)
    stiffness, mass = assemble_p1(mesh.points, mesh.tetrahedra)
    ones = np.ones(len(mesh.points))
    assert ones @ mass @ ones == pytest.approx(8.0, rel=1e-12)
    np.testing.assert_allclose(stiffness @ ones, 0.0, atol=1e-12)
    x = mesh.points[:, 0]
    assert x @ stiffness @ x == pytest.approx(8.0, rel=1e-12)  # ∫|∇x|² = volume
    assert x @ mass @ ones == pytest.approx(8.0, rel=1e-12)  # ∫x = 1 * volume
    _, lumped = assemble_p1(mesh.points, mesh.tetrahedra, lumped=True)
    assert lumped.diagonal().sum() == pytest.approx(8.0, rel=1e-12)


def decay_error(n: int, dt: float) -> float:
    side_nm = 1000.0  # 1 µm
    mesh = cube_mesh(n, side_nm)
    x_um = mesh.points[:, 0] / 1000.0
    u0 = np.cos(np.pi * x_um)
    solver = cs.method("solve.diffusion", diffusion_um2_per_s=0.1, t_end_s=0.5, dt_s=dt, n_outputs=2, initial="constant")
    # start from the cosine mode: solve with the solver's machinery on a custom initial state
    stiffness, mass = assemble_p1(mesh.points / 1000.0, mesh.tetrahedra)
    from scipy.sparse.linalg import splu

    steps = round(0.5 / dt)
    factor = splu((mass + dt * 0.1 * stiffness).tocsc())
    u = u0.copy()
    for _ in range(steps):
        u = factor.solve(mass @ u)
    exact = np.exp(-0.1 * np.pi**2 * 0.5) * u0
    assert solver.params.dt_s == dt
    return float(np.sqrt(((u - exact) ** 2).mean()))


def test_cosine_mode_decays_at_the_analytic_rate_and_converges() -> None:
    coarse = decay_error(4, 0.05)
    fine = decay_error(8, 0.0125)
    assert fine < 0.01
    # h halves and dt quarters: the error must shrink by about 4 (O(h²) + O(dt))
    assert coarse / fine > 3.0


def test_closed_system_conserves_mass_and_reaches_uniform_mean() -> None:
    mesh = cube_mesh(6, 600.0)
    fields = cs.method("solve.diffusion", diffusion_um2_per_s=1.0, t_end_s=2.0, dt_s=0.05, source_radius_nm=150.0,
                       initial_uM=10.0)(mesh)
    values = fields.values["c"]
    amounts = total_amount(mesh.points, mesh.tetrahedra, values)
    np.testing.assert_allclose(amounts, amounts[0], rtol=1e-10)
    volume_um3 = 0.6**3
    assert values[-1].max() - values[-1].min() < 1e-3 * values[0].max()
    assert values[-1].mean() == pytest.approx(amounts[0] / volume_um3, rel=1e-6)
    assert fields.times_s[0] == 0.0 and fields.times_s[-1] == pytest.approx(2.0)
    assert len(fields.times_s) == 21 and fields.units == {"c": "uM"}


def test_units_nm_mesh_with_um2_per_s() -> None:
    """The same physical problem on a mesh twice as large needs a 4x longer time for the same profile."""
    small = cube_mesh(4, 500.0)
    large = cube_mesh(4, 1000.0)
    kwargs = {"initial": "region", "diffusion_um2_per_s": 2.0, "n_outputs": 2, "mass": "lumped"}
    a = cs.method("solve.diffusion", t_end_s=0.01, dt_s=0.001, region_values_uM={2: 1.0}, **kwargs)(
        cube_mesh(4, 500.0, regions_split=True))
    b = cs.method("solve.diffusion", t_end_s=0.04, dt_s=0.004, region_values_uM={2: 1.0}, **kwargs)(
        cube_mesh(4, 1000.0, regions_split=True))
    np.testing.assert_allclose(a.values["c"], b.values["c"], atol=1e-12)
    assert len(small.points) == len(large.points)


def test_cg_with_amg_matches_direct() -> None:
    mesh = cube_mesh(6, 800.0)
    direct = cs.method("solve.diffusion", t_end_s=0.1, dt_s=0.01)(mesh).values["c"]
    iterative = cs.method("solve.diffusion", t_end_s=0.1, dt_s=0.01, solver="cg")(mesh).values["c"]
    np.testing.assert_allclose(iterative, direct, atol=1e-8)


def test_region_restriction() -> None:
    mesh = cube_mesh(4, 800.0, regions_split=True)
    fields = cs.method("solve.diffusion", initial="constant", regions=[2], t_end_s=0.1, dt_s=0.05)(mesh)
    in_region_2 = np.zeros(len(mesh.points), bool)
    in_region_2[np.unique(mesh.tetrahedra[mesh.region_markers == 2])] = True
    assert (fields.values["c"][:, ~in_region_2] == 0).all()
    np.testing.assert_allclose(fields.values["c"][:, in_region_2], 1.0, atol=1e-12)


def test_bad_input() -> None:
    mesh = cube_mesh(2, 100.0)
    with pytest.raises(cs.InputError, match="diffusion_um2_per_s': -1 is out of range"):
        cs.method("solve.diffusion", diffusion_um2_per_s=-1.0)
    with pytest.raises(cs.InputError, match="dt_s \\(2.0 s\\) is longer than t_end_s"):
        cs.method("solve.diffusion", dt_s=2.0, t_end_s=1.0)(mesh)
    with pytest.raises(cs.InputError, match="region\\(s\\) \\[7\\] are not in the mesh"):
        cs.method("solve.diffusion", regions=[7])(mesh)
    flat = cs.TetMesh(np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0.0]]), [[0, 1, 2, 3]])
    with pytest.raises(cs.InputError, match="1 degenerate \\(zero-volume\\) tetrahedra, the first is #0"):
        cs.method("solve.diffusion")(flat)
    with pytest.raises(cs.InputError, match="source ball .* contains no mesh node"):
        cs.method("solve.diffusion", source_center_nm=(1e6, 0.0, 0.0), source_radius_nm=1.0)(mesh)
    with pytest.raises(cs.InputError, match="needs region_values_uM"):
        cs.method("solve.diffusion", initial="region")(mesh)
