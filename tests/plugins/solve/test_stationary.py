"""solve.stationary: manufactured solutions on cube and ball, the Meyers–Craig–Odde gradient, scikit-fem, PETSc.

Every number asserted here comes from a closed form: convergence slopes of the
L2 and H1 errors (fitted over a family of meshes), the steady phosphorylation
gradient in a spherical cell at several radii, and an independent assembly
by scikit-fem of the same linear problem on the same mesh.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import needed_modules
from meshes import ball_mesh, cube_mesh

import cellscape as cs
from cellscape_plugins.solve._p1 import element_geometry
from cellscape_plugins.solve.stationary import pseudo_transient

NM_PER_UM = 1000.0

# ---------------------------------------------------------------- meshes and error norms


# 4-point rule, exact for quadratics on a tetrahedron (barycentric coordinates, equal weights)
_A, _B = 0.5854101966249685, 0.1381966011250105
QUADRATURE = np.full((4, 4), _B) + np.eye(4) * (_A - _B)


def error_norms(mesh: cs.TetMesh, u_h: np.ndarray, exact, gradient) -> tuple[float, float]:
    """L2 and H1-seminorm errors ∫(u_h − u)², ∫|∇u_h − ∇u|² (square roots) of a nodal P1 field (µm units)."""
    points = np.asarray(mesh.points) / NM_PER_UM
    tets = np.asarray(mesh.tetrahedra)
    volumes, gradients = element_geometry(points, tets)
    grad_h = np.einsum("ei,eid->ed", u_h[tets], gradients)
    l2 = h1 = 0.0
    for weights in QUADRATURE:
        x = np.einsum("i,eid->ed", weights, points[tets])
        l2 += volumes @ (u_h[tets] @ weights - exact(*x.T)) ** 2 / 4
        h1 += volumes @ ((grad_h - gradient(*x.T)) ** 2).sum(axis=1) / 4
    return float(np.sqrt(l2)), float(np.sqrt(h1))


def fitted_slope(h: list[float], errors: list[float]) -> float:
    return float(np.polyfit(np.log(h), np.log(errors), 1)[0])


def mean_edge_um(mesh: cs.TetMesh) -> float:
    points, tets = np.asarray(mesh.points) / NM_PER_UM, np.asarray(mesh.tetrahedra)
    pairs = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    return float(np.mean([np.linalg.norm(points[tets[:, i]] - points[tets[:, j]], axis=1) for i, j in pairs]))


# ---------------------------------------------------------------- manufactured solutions

# u = c0 cos(a x) cos(a y) cos(a z) solves −D Δu + k u = f with f = c0 (3 a² D + k) cos cos cos
MMS_PARAMETERS = {"D0": "1.5 um^2/s", "k": "2 1/s", "c0": "1 uM"}
PRODUCT = "cos(a*x)*cos(a*y)*cos(a*z)"


def mms_model(a_per_um: float, dirichlet: bool) -> dict:
    model = {
        "parameters": {**MMS_PARAMETERS, "a": f"{a_per_um} 1/um"},
        "species": {"u": {"in": 1, "D": 1.5, "initial": 0.0}},
        "reactions": {
            "source": {"equation": "-> u", "rate": f"c0*(3*a**2*D0 + k)*{PRODUCT}"},
            "decay": {"equation": "u ->", "rate": "k*u"},
        },
    }
    if dirichlet:
        model["boundary_conditions"] = [{"species": "u", "surface": "membrane", "type": "dirichlet", "value": f"c0*{PRODUCT}"}]
    return model


def mms_exact(a: float):
    def value(x, y, z):
        return np.cos(a * x) * np.cos(a * y) * np.cos(a * z)

    def gradient(x, y, z):
        cx, cy, cz = np.cos(a * x), np.cos(a * y), np.cos(a * z)
        sx, sy, sz = np.sin(a * x), np.sin(a * y), np.sin(a * z)
        return -a * np.stack([sx * cy * cz, cx * sy * cz, cx * cy * sz], axis=1)

    return value, gradient


def test_manufactured_solution_on_the_unit_cube_converges_at_order_2_in_l2_and_1_in_h1() -> None:
    # on [0, 1]³ µm, a = π makes ∂u/∂n = 0 on every face: the natural (no-flux) condition
    value, gradient = mms_exact(np.pi)
    hs, l2, h1 = [], [], []
    for n in (4, 8, 16):
        mesh = cube_mesh(n, NM_PER_UM)
        fields = cs.method("solve.stationary", model=mms_model(np.pi, dirichlet=False), method="newton")(mesh)["fields"]
        errors = error_norms(mesh, fields.values["u"][0], value, gradient)
        hs.append(1.0 / n)
        l2.append(errors[0])
        h1.append(errors[1])
    assert fitted_slope(hs, l2) == pytest.approx(2.0, abs=0.2)
    assert fitted_slope(hs, h1) == pytest.approx(1.0, abs=0.1)
    assert l2[-1] < 0.012  # 3 % of ‖u‖ = (1/2)^(3/2) ≈ 0.35 at 16³ cells


def test_manufactured_solution_on_a_ball_with_dirichlet_data_converges_at_order_2_in_l2_and_1_in_h1() -> None:
    a = 1.0  # 1/µm on the unit ball
    value, gradient = mms_exact(a)
    hs, l2, h1 = [], [], []
    for h in (0.5, 0.35, 0.25, 0.18):
        mesh = ball_mesh(NM_PER_UM, h)
        fields = cs.method("solve.stationary", model=mms_model(a, dirichlet=True), method="newton")(mesh)["fields"]
        errors = error_norms(mesh, fields.values["u"][0], value, gradient)
        hs.append(len(mesh.points) ** (-1 / 3))  # unstructured meshes: the mesh size from the node count
        l2.append(errors[0])
        h1.append(errors[1])
    assert fitted_slope(hs, l2) == pytest.approx(2.0, abs=0.15)
    assert fitted_slope(hs, h1) == pytest.approx(1.0, abs=0.1)
    assert l2[-1] < 0.01  # ‖u‖ ≈ 1.2 on the unit ball


# ---------------------------------------------------------------- Meyers, Craig & Odde (2006)
#
# A kinase on the membrane phosphorylates A into Ap (flux k_kin·A, amount per area and time), a
# phosphatase in the cytosol dephosphorylates Ap (k_p·Ap). With equal diffusion coefficients
# A + Ap = c_total everywhere at steady state, so Ap solves
#     D ΔAp = k_p Ap  in the ball,    D ∂Ap/∂r = k_kin (c_total − Ap)  at r = R,
# whose solution is Ap(r) = C sinh(r/L)/r with L = √(D/k_p) and C from the boundary condition:
#     C = k_kin c_total / (D g'(R) + k_kin g(R)),   g(r) = sinh(r/L)/r.

D_UM2_S, K_P, K_KIN, C_TOTAL = 4.0, 1.0, 0.5, 1.0  # µm²/s, 1/s, µm/s, µM: L = 2 µm
LENGTH_UM = (D_UM2_S / K_P) ** 0.5


def meyers_profile(radius_um: float, r_um: np.ndarray) -> np.ndarray:
    def g(r):
        return np.where(r > 1e-9, np.sinh(r / LENGTH_UM) / np.maximum(r, 1e-300), 1.0 / LENGTH_UM)

    dg = np.cosh(radius_um / LENGTH_UM) / (LENGTH_UM * radius_um) - np.sinh(radius_um / LENGTH_UM) / radius_um**2
    return K_KIN * C_TOTAL / (D_UM2_S * dg + K_KIN * g(radius_um)) * g(r_um)


MEYERS_PARAMETERS = {"k_p": f"{K_P} 1/s", "k_kin": f"{K_KIN} um/s"}
MEYERS_TWO_SPECIES = {
    "parameters": MEYERS_PARAMETERS,
    "species": {"A": {"in": "cytosol", "D": D_UM2_S, "initial": C_TOTAL},
                "Ap": {"in": "cytosol", "D": D_UM2_S, "initial": 0.0}},
    "reactions": {"dephosphorylation": {"equation": "Ap -> A", "rate": "k_p * Ap"},
                  "phosphorylation": {"equation": "A -> Ap", "rate": "k_kin * A", "surface": "membrane"}},
}
MEYERS_ONE_SPECIES = {
    "parameters": {**MEYERS_PARAMETERS, "c_total": f"{C_TOTAL} uM"},
    "species": {"Ap": {"in": "cytosol", "D": D_UM2_S, "initial": 0.0}},
    "reactions": {"dephosphorylation": {"equation": "Ap ->", "rate": "k_p * Ap"}},
    "boundary_conditions": [{"species": "Ap", "surface": "membrane", "type": "robin", "coefficient": "k_kin",
                             "reference": "c_total"}],
}


def test_meyers_phosphorylation_gradient_within_one_percent_over_cell_radii() -> None:
    ratios = []
    for radius_um in (0.5, 1.0, 2.0, 4.0):
        mesh = ball_mesh(radius_um * NM_PER_UM, 0.2)
        fields = cs.method("solve.stationary", model=MEYERS_ONE_SPECIES, method="newton")(mesh)["fields"]
        exact = meyers_profile(radius_um, np.linalg.norm(mesh.points, axis=1) / NM_PER_UM)
        assert np.abs(fields.values["Ap"][0] - exact).max() < 0.01 * exact.max(), radius_um
        ratios.append(exact.min() / exact.max())
    # the radii span weak to strong gradients (centre/membrane from 0.99 to 0.55)
    assert ratios[0] > 0.98 and ratios[-1] < 0.6


def test_meyers_with_membrane_kinase_flux_and_conservation_matches_the_closed_form() -> None:
    mesh = ball_mesh(2.0 * NM_PER_UM, 0.25)
    out = cs.method("solve.stationary", model=MEYERS_TWO_SPECIES, pseudo_dt_s=0.1)(mesh)
    a, ap = out["fields"].values["A"][0], out["fields"].values["Ap"][0]
    exact = meyers_profile(2.0, np.linalg.norm(mesh.points, axis=1) / NM_PER_UM)
    assert np.abs(ap - exact).max() < 0.01 * exact.max()
    np.testing.assert_allclose(a + ap, C_TOTAL, rtol=1e-9)  # the closed system kept its amount
    single = cs.method("solve.stationary", model=MEYERS_ONE_SPECIES, method="newton")(mesh)["fields"]
    np.testing.assert_allclose(ap, single.values["Ap"][0], rtol=1e-8, atol=1e-12)


# ---------------------------------------------------------------- other solvers on the same problem


def robin_model() -> dict:
    """−∇·(D∇u) + k u = f in the ball, −D ∂u/∂n = h (u − u_ref) on its surface, f given at the nodes."""
    return {
        "parameters": {"k": "0.7 1/s", "h": "1.3 um/s", "u_ref": "2 uM", "s0": "1 uM/s", "L": "1 um"},
        "species": {"u": {"in": "cytosol", "D": 2.5, "initial": 0.0}},
        "reactions": {"source": {"equation": "-> u", "rate": "s0 * (1 + x/L + exp(-(y**2 + z**2)/L**2))"},
                      "decay": {"equation": "u ->", "rate": "k * u"}},
        "boundary_conditions": [{"species": "u", "surface": "membrane", "type": "robin", "coefficient": "h",
                                 "reference": "u_ref"}],
    }


def test_same_answer_as_scikit_fem_on_the_same_mesh() -> None:
    skfem = needed_modules("skfem")
    from scipy.sparse import linalg
    from skfem.models.poisson import laplace, mass

    mesh = ball_mesh(1.5 * NM_PER_UM, 0.3)
    ours = cs.method("solve.stationary", model=robin_model(), method="newton")(mesh)["fields"].values["u"][0]

    points = np.asarray(mesh.points) / NM_PER_UM
    sk_mesh = skfem.MeshTet(points.T.copy(), np.asarray(mesh.tetrahedra).T.copy())
    basis = skfem.Basis(sk_mesh, skfem.ElementTetP1())
    facets = skfem.FacetBasis(sk_mesh, skfem.ElementTetP1(), facets=sk_mesh.boundary_facets())
    stiffness, volume_mass, surface_mass = skfem.asm(laplace, basis), skfem.asm(mass, basis), skfem.asm(mass, facets)
    x, y, z = points.T
    source = 1.0 * (1 + x + np.exp(-(y**2 + z**2)))
    system = 2.5 * stiffness + 0.7 * volume_mass + 1.3 * surface_mass
    rhs = volume_mass @ source + 1.3 * surface_mass @ np.full(len(points), 2.0)
    reference = linalg.spsolve(system.tocsc(), rhs)
    assert np.abs(ours - reference).max() < 1e-8 * np.abs(reference).max()


@pytest.mark.requires("petsc4py")
def test_scipy_and_petsc_backends_agree_to_the_solver_tolerance() -> None:
    mesh = ball_mesh(1.5 * NM_PER_UM, 0.3)
    scipy_u = cs.method("solve.stationary", model=robin_model(), method="newton")(mesh)
    petsc = cs.method("solve.stationary", model=robin_model(), method="newton", backend="petsc",
                      linear_rtol=1e-12, petsc_options="-ksp_type cg -pc_type gamg")(mesh)
    u_scipy, u_petsc = scipy_u["fields"].values["u"][0], petsc["fields"].values["u"][0]
    assert np.abs(u_petsc - u_scipy).max() < 1e-9 * np.abs(u_scipy).max()
    assert petsc["steps"].columns["linear_iterations"][0] > 0  # the Krylov solver really ran


def test_newton_and_pseudo_transient_agree_on_a_nonlinear_model() -> None:
    model = {
        "parameters": {"vmax": "3 uM/s", "km": "0.5 uM", "s0": "2 uM/s"},
        "species": {"u": {"in": "cytosol", "D": 1.0, "initial": 0.1}},
        "reactions": {"source": {"equation": "-> u", "rate": "s0"},
                      "uptake": {"equation": "u ->", "rate": "michaelis_menten(u, vmax, km)"}},
        "boundary_conditions": [{"species": "u", "surface": "membrane", "type": "dirichlet", "value": 0.2}],
    }
    mesh = ball_mesh(1.0 * NM_PER_UM, 0.4)
    newton = cs.method("solve.stationary", model=model, method="newton")(mesh)
    continuation = cs.method("solve.stationary", model=model)(mesh)
    u = newton["fields"].values["u"][0]
    np.testing.assert_allclose(continuation["fields"].values["u"][0], u, rtol=1e-8)
    # nonlinear: several steps (Jacobians are reused while they contract the update at least fivefold)
    assert 2 <= newton["steps"].columns["newton_iterations"][0] <= 15
    # far from the membrane the source and the saturated uptake balance: s0 = vmax u/(km + u) → u = 0.5·2/(3−2) = 1
    centre = np.argmin(np.linalg.norm(mesh.points, axis=1))
    assert 0.2 < u[centre] < 1.0


def test_pseudo_transient_reports_iterations() -> None:
    mesh = ball_mesh(1.0 * NM_PER_UM, 0.5)
    system = cs.method("solve.stationary", model=MEYERS_TWO_SPECIES).system(mesh)
    result = pseudo_transient(system, system.initial_state(), 0.0, 0.05, rtol=1e-10)
    assert result.failure is None
    assert 5 <= len(result.history["iteration"]) <= 40
    residuals = result.history["residual_norm"]
    assert residuals[-1] <= 1e-10 * np.linalg.norm(system.residual(system.initial_state(), 0.0, 0.0, 1.0, 0.0))
    # steady: diffusion and reactions balance to 1e-8 of the diffusive term
    assert residuals[-1] < 1e-8 * np.linalg.norm(system.stiffness @ result.state)
    np.testing.assert_allclose(sum(system.amounts(result.state[None]).values()),
                               sum(system.amounts(system.initial_state()[None]).values()), rtol=1e-10)


# ---------------------------------------------------------------- adaptive refinement


BOUNDARY_LAYER = {  # −D Δu + k u = 0 with u = exp(−x/L) on the cube's faces: u = exp(−x/L), a layer at x = 0
    "parameters": {"L": "0.15 um", "k": "44.444444444444444 1/s", "c0": "1 uM"},  # k = D / L²
    "species": {"u": {"D": 1.0, "initial": 0.0}},
    "reactions": {"decay": {"equation": "u ->", "rate": "k*u"}},
    "boundary_conditions": [{"species": "u", "surface": "surface", "type": "dirichlet", "value": "c0*exp(-x/L)"}],
}


def test_adaptive_option_refines_into_a_boundary_layer() -> None:
    mesh = cube_mesh(4, NM_PER_UM)
    coarse = cs.method("solve.stationary", model=BOUNDARY_LAYER, method="newton")(mesh)["fields"]
    out = cs.method("solve.stationary", model=BOUNDARY_LAYER,
                    adaptive={"theta": 0.5, "max_rounds": 6, "max_unknowns": 20_000})(mesh)
    fields, history = out["fields"], out["steps"].columns
    assert list(history["round"]) == list(range(7))
    assert history["estimated_error"][-1] < 0.8 * history["estimated_error"][0]
    new_points = fields.mesh.points[len(mesh.points):] / NM_PER_UM
    assert len(new_points) > 100 and np.mean(new_points[:, 0] < 0.3) > 0.7  # refined where the layer is
    error = {}
    for name, result in (("coarse", coarse), ("adapted", fields)):
        x = result.mesh.points[:, 0] / NM_PER_UM
        error[name] = np.abs(result.values["u"][0] - np.exp(-x / 0.15)).max()
    assert error["adapted"] < 0.5 * error["coarse"]


def test_adaptive_option_refuses_nonlinear_or_multi_species_models() -> None:
    mesh = ball_mesh(1.0 * NM_PER_UM, 0.6)
    with pytest.raises(cs.InputError, match=r"adaptive refinement needs a linear model of one volume species in "
                                            r"every region; this one has species \['A', 'Ap'\]"):
        cs.method("solve.stationary", model=MEYERS_TWO_SPECIES, adaptive={})(mesh)
    nonlinear = {**MEYERS_ONE_SPECIES, "reactions": {"dephosphorylation": {"equation": "Ap ->", "rate": "k_p*Ap**2/c_total"}}}
    with pytest.raises(cs.InputError, match="the rate of 'dephosphorylation' is not affine in 'Ap'"):
        cs.method("solve.stationary", model=nonlinear, adaptive={})(mesh)
    with pytest.raises(cs.InputError, match=r"unknown key\(s\) \['tol'\]"):
        cs.method("solve.stationary", model=MEYERS_ONE_SPECIES, adaptive={"tol": 1e-3})(mesh)
