"""solve.reaction_diffusion: time-convergence orders, conservation, a series solution, scikit-fem, PETSc, outputs.

The time-order tests use solutions that are linear in space (or uniform), which
P1 elements represent exactly, so the measured error is the time
discretization's alone: backward Euler must show slope 1, BDF2 slope 2.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import needed_modules
from meshes import ball_mesh, cube_mesh

import cellscape as cs
from cellscape_plugins.solve.reaction_diffusion import SolverDivergedError

NM_PER_UM = 1000.0


def fitted_slope(steps: list[float], errors: list[float]) -> float:
    """Slope of log(error) against log(step): the observed order of convergence."""
    return float(np.polyfit(np.log(steps), np.log(errors), 1)[0])


def simulate(mesh: cs.TetMesh, model: dict, **params) -> dict:
    return cs.method("solve.reaction_diffusion", model=model, **params)(mesh)


# ---------------------------------------------------------------- orders in time

# u = c0 (1 + x/L + 2 y/L) (1 + sin(w t)) has Δu = 0: the source is ∂u/∂t + k u
LINEAR_IN_SPACE = "c0*(1 + x/L + 2*y/L)"
TIME_MODEL = {
    "parameters": {"c0": "1 uM", "L": "1 um", "w": "3 1/s", "k": "0.5 1/s"},
    "species": {"u": {"in": 1, "D": 0.8, "initial": LINEAR_IN_SPACE}},
    "reactions": {"source": {"equation": "-> u", "rate": f"{LINEAR_IN_SPACE}*(w*cos(w*t) + k*(1 + sin(w*t)))"},
                  "decay": {"equation": "u ->", "rate": "k*u"}},
    "boundary_conditions": [{"species": "u", "surface": 1, "type": "dirichlet", "value": f"{LINEAR_IN_SPACE}*(1 + sin(w*t))"}],
}


def _time_errors(scheme: str, model: dict, exact, mesh: cs.TetMesh, steps: tuple[int, ...], t_end: float) -> list[float]:
    errors = []
    for n in steps:
        fields = simulate(mesh, model, scheme=scheme, t_end_s=t_end, dt_s=t_end / n, n_outputs=2)["fields"]
        errors.append(float(np.abs(fields.values["u"][-1] - exact(mesh.points / NM_PER_UM, t_end)).max()))
    return errors


def _linear_exact(points: np.ndarray, t: float) -> np.ndarray:
    return (1 + points[:, 0] + 2 * points[:, 1]) * (1 + np.sin(3 * t))


@pytest.mark.parametrize(("scheme", "order"), [("backward_euler", 1.0), ("bdf2", 2.0)])
def test_time_discretization_converges_at_its_order(scheme: str, order: float) -> None:
    mesh = cube_mesh(3, NM_PER_UM)
    steps = (40, 80, 160, 320)
    errors = _time_errors(scheme, TIME_MODEL, _linear_exact, mesh, steps, 1.0)
    assert fitted_slope([1 / n for n in steps], errors) == pytest.approx(order, abs=0.1)
    assert errors[-1] < (1e-3 if order == 1 else 3e-5)  # the solution is O(1) µM


LOGISTIC = {  # u' = r u (1 − u/K): Newton's method at every step
    "parameters": {"r": "2 1/s", "K": "5 uM"},
    "species": {"u": {"in": 1, "D": 1.0, "initial": 0.2}},
    "reactions": {"growth": {"equation": "-> u", "rate": "r*u*(1 - u/K)"}},
}


def _logistic(points: np.ndarray, t: float) -> np.ndarray:
    return np.full(len(points), 5.0 / (1 + (5.0 / 0.2 - 1) * np.exp(-2 * t)))


@pytest.mark.parametrize(("scheme", "order"), [("backward_euler", 1.0), ("bdf2", 2.0)])
def test_newton_time_stepping_of_a_nonlinear_law_converges_at_its_order(scheme: str, order: float) -> None:
    mesh = cube_mesh(2, NM_PER_UM)
    steps = (20, 40, 80)
    errors = _time_errors(scheme, LOGISTIC, _logistic, mesh, steps, 2.0)
    assert fitted_slope([1 / n for n in steps], errors) == pytest.approx(order, abs=0.1)
    out = simulate(mesh, LOGISTIC, scheme=scheme, t_end_s=2.0, dt_s=0.05)
    newton = out["steps"].columns["newton_iterations"]
    assert newton.min() >= 2 and newton.max() <= 6  # several quadratically converging iterations per step


def test_adaptive_local_error_control_tracks_the_tolerance() -> None:
    model = {"parameters": {"k": "1 1/s"}, "species": {"u": {"in": 1, "D": 1.0, "initial": 1.0}},
             "reactions": {"decay": {"equation": "u ->", "rate": "k*u"}}}
    mesh = cube_mesh(1, NM_PER_UM)
    errors, counts = [], []
    for rtol in (1e-3, 1e-4, 1e-5):
        out = simulate(mesh, model, t_end_s=1.0, dt_s=1e-3, adaptive=True, rtol=rtol, atol=1e-12, n_outputs=2)
        errors.append(abs(out["fields"].values["u"][-1][0] / np.exp(-1.0) - 1))
        counts.append(len(out["steps"].columns["dt_s"]))
    # BDF2: local errors ~ rtol, steps ~ rtol^(−1/3), global error ~ rtol^(2/3)
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-3
    assert np.log10(errors[0] / errors[2]) / 2 == pytest.approx(2 / 3, abs=0.15)
    assert counts[0] < counts[1] < counts[2] < 60


def test_adaptive_steps_shrink_and_reject_at_a_sudden_switch_then_grow() -> None:
    model = {  # a source switched on within ~0.01 s at t = 1 s
        "parameters": {"s": "4 uM/s", "k": "1 1/s", "tau": "0.01 s", "t_on": "1 s"},
        "species": {"u": {"in": 1, "D": 1.0, "initial": 0.0}},
        "reactions": {"source": {"equation": "-> u", "rate": "s*(1 + tanh((t - t_on)/tau))/2"},
                      "decay": {"equation": "u ->", "rate": "k*u"}},
    }
    mesh = cube_mesh(1, NM_PER_UM)
    out = simulate(mesh, model, t_end_s=3.0, dt_s=1e-3, adaptive=True, rtol=1e-5, atol=1e-8, n_outputs=2)
    steps = out["steps"].columns
    exact_end = 4.0 * (1 - np.exp(-2.0))  # after the switch u' = s − k u from u(1 s) = 0
    assert abs(out["fields"].values["u"][-1].max() - exact_end) < 1e-3
    assert steps["rejected"].sum() >= 1
    at_switch = np.abs(steps["time_s"] - 1.0) < 0.02
    assert steps["dt_s"][at_switch].max() < 0.1 * steps["dt_s"].max()
    assert steps["dt_s"].max() > 50 * steps["dt_s"][at_switch].min()


# ---------------------------------------------------------------- conservation with volume–surface exchange

EXCHANGE_MODEL = {
    "parameters": {"kon": "0.2 1/(uM*s)", "koff": "0.5 1/s", "vmax": "2 uM/s", "km": "0.3 uM", "kb": "0.4 1/s"},
    "species": {
        "A": {"in": 1, "D": 5.0, "initial": "2 uM"},
        "B": {"in": 1, "D": 1.0, "initial": 0.0},
        "R": {"surface": 1, "D": 0.1, "initial": "500 molecules/um^2"},
        "AR": {"surface": 1, "D": 0.05, "initial": 0.0},
    },
    "reactions": {
        "binding": {"equation": "A + R -> AR", "rate": "kon*A*R"},          # membrane flux: molecules/µm²/s
        "unbinding": {"equation": "AR -> A + R", "rate": "koff*AR"},
        "conversion": {"equation": "A -> B", "rate": "michaelis_menten(A, vmax, km)"},
        "back": {"equation": "B -> A", "rate": "kb*B"},
    },
}


@pytest.mark.parametrize("mass", ["consistent", "lumped"])
def test_closed_volume_surface_system_conserves_molecules(mass: str) -> None:
    mesh = ball_mesh(1.0 * NM_PER_UM, 0.5)
    out = simulate(mesh, EXCHANGE_MODEL, t_end_s=2.0, dt_s=0.01, adaptive=True, rtol=1e-4, mass=mass, n_outputs=6)
    columns = out["probes"].columns
    volume_side = columns["amount_A"] + columns["amount_B"] + columns["amount_AR"]
    receptors = columns["amount_R"] + columns["amount_AR"]
    np.testing.assert_allclose(volume_side, volume_side[0], rtol=1e-10)
    np.testing.assert_allclose(receptors, receptors[0], rtol=1e-10)
    assert columns["amount_AR"][-1] > 0.05 * receptors[0]  # real exchange happened
    assert out["probes"].units["amount_A"] == "molecules"


# ---------------------------------------------------------------- a series solution in the ball


def _ball_series(r: np.ndarray, t: float, radius: float, diffusion: float, terms: int = 200) -> np.ndarray:
    """u(r, t) in a ball at 0 initially with u = 1 held on its surface (Crank, The Mathematics of Diffusion, 6.18)."""
    n = np.arange(1, terms + 1)[:, None]
    decay = np.exp(-diffusion * n**2 * np.pi**2 * t / radius**2)
    r = np.maximum(r, 1e-9)[None]
    series = ((-1.0) ** n / n * np.sin(n * np.pi * r / radius) * decay).sum(axis=0)
    return 1 + 2 * radius / (np.pi * r[0]) * series


def test_transient_diffusion_in_a_ball_follows_the_series_solution() -> None:
    radius, diffusion = 1.0, 2.0
    mesh = ball_mesh(radius * NM_PER_UM, 0.25)
    model = {"species": {"u": {"in": "cytosol", "D": diffusion, "initial": 0.0}},
             "boundary_conditions": [{"species": "u", "surface": "membrane", "type": "dirichlet", "value": 1.0}]}
    # lumped mass keeps the discrete maximum principle with the jump between the initial and boundary values
    out = simulate(mesh, model, t_end_s=0.2, dt_s=1e-3, output_times_s=[0.05, 0.1], mass="lumped")
    r = np.linalg.norm(mesh.points, axis=1) / NM_PER_UM
    for index, (t, tolerance) in enumerate(zip((0.05, 0.1, 0.2), (0.025, 0.006, 0.003), strict=True), start=1):
        assert out["fields"].times_s[index] == pytest.approx(t)
        exact = _ball_series(r, t, radius, diffusion)
        assert np.abs(out["fields"].values["u"][index] - exact).max() < tolerance, t
    centre = _ball_series(np.array([0.0]), 0.1, radius, diffusion)[0]
    assert 0.5 < centre < 0.9  # the comparison is made while the profile is far from flat


# ---------------------------------------------------------------- other solvers on the same problem


def _robin_transient() -> dict:
    return {
        "parameters": {"k": "0.7 1/s", "h": "1.3 um/s", "u_ref": "2 uM", "s0": "1 uM/s", "L": "1 um"},
        "species": {"u": {"in": "cytosol", "D": 2.5, "initial": "exp(-x/L)"}},
        "reactions": {"source": {"equation": "-> u", "rate": "s0 * (1 + y/L)"},
                      "decay": {"equation": "u ->", "rate": "k * u"}},
        "boundary_conditions": [{"species": "u", "surface": "membrane", "type": "robin", "coefficient": "h",
                                 "reference": "u_ref"}],
    }


def test_backward_euler_matches_scikit_fem_on_the_same_mesh() -> None:
    skfem = needed_modules("skfem")
    from scipy.sparse import linalg
    from skfem.models.poisson import laplace, mass

    mesh = ball_mesh(1.5 * NM_PER_UM, 0.35)
    dt, n_steps = 0.05, 6
    ours = simulate(mesh, _robin_transient(), scheme="backward_euler", t_end_s=dt * n_steps, dt_s=dt,
                    n_outputs=n_steps + 1)["fields"].values["u"]
    points = np.asarray(mesh.points) / NM_PER_UM
    sk_mesh = skfem.MeshTet(points.T.copy(), np.asarray(mesh.tetrahedra).T.copy())
    basis = skfem.Basis(sk_mesh, skfem.ElementTetP1())
    facets = skfem.FacetBasis(sk_mesh, skfem.ElementTetP1(), facets=sk_mesh.boundary_facets())
    stiffness, volume_mass, surface_mass = skfem.asm(laplace, basis), skfem.asm(mass, basis), skfem.asm(mass, facets)
    load = volume_mass @ (1.0 + points[:, 1]) + 1.3 * surface_mass @ np.full(len(points), 2.0)
    system = (volume_mass + dt * (2.5 * stiffness + 0.7 * volume_mass + 1.3 * surface_mass)).tocsc()
    u = np.exp(-points[:, 0])
    for step in range(1, n_steps + 1):
        u = linalg.spsolve(system, volume_mass @ u + dt * load)
        assert np.abs(ours[step] - u).max() < 1e-8 * np.abs(u).max()


@pytest.mark.requires("petsc4py")
def test_scipy_and_petsc_backends_agree_on_a_nonlinear_coupled_simulation() -> None:
    mesh = ball_mesh(1.0 * NM_PER_UM, 0.5)
    common = {"t_end_s": 0.5, "dt_s": 0.05, "n_outputs": 3}
    reference = simulate(mesh, EXCHANGE_MODEL, **common)
    petsc = simulate(mesh, EXCHANGE_MODEL, backend="petsc", linear_rtol=1e-12,
                     petsc_options={"ksp_type": "gmres", "pc_type": "ilu"}, **common)
    for name, values in reference["fields"].values.items():
        np.testing.assert_allclose(petsc["fields"].values[name], values, rtol=1e-8, atol=1e-10 * np.abs(values).max())
    assert petsc["steps"].columns["linear_iterations"].sum() > 0


# ---------------------------------------------------------------- outputs


def test_probes_report_region_means_point_values_and_amounts() -> None:
    mesh = cube_mesh(4, 2 * NM_PER_UM, regions_split=True)  # regions 'left' (x < 1 µm) and 'right'
    model = {"parameters": {"c0": "1 uM", "L": "1 um"},
             "species": {"u": {"D": 0.0, "initial": "c0*(1 + x/L + y/L)"}}}
    probes = [(500.0, 500.0, 500.0), (1500.0, 250.0, 1750.0), (5000.0, 0.0, 0.0)]
    out = simulate(mesh, model, t_end_s=0.1, dt_s=0.05, n_outputs=2, probes_nm=probes)
    columns = out["probes"].columns
    # D = 0 and no reaction: nothing changes; a linear field's mean is its value at the centroid
    np.testing.assert_allclose(columns["mean_u_left"], 1 + 0.5 + 1.0, rtol=1e-12)
    np.testing.assert_allclose(columns["mean_u_right"], 1 + 1.5 + 1.0, rtol=1e-12)
    np.testing.assert_allclose(columns["u_at_0"], 2.0, rtol=1e-12)
    np.testing.assert_allclose(columns["u_at_1"], 2.75, rtol=1e-12)
    assert np.isnan(columns["u_at_2"]).all()  # outside the cell
    molecules_per_um3_per_uM = 602.214076
    np.testing.assert_allclose(columns["amount_u"], 3.0 * 8.0 * molecules_per_um3_per_uM, rtol=1e-12)
    assert out["probes"].units["u_at_0"] == "uM" and out["fields"].units["u"] == "uM"


def _written_fields() -> cs.Fields:
    model = {"parameters": {"L": "1 um"}, "species": {"u": {"D": 1.0, "initial": "exp(-x/L)"}}}
    return simulate(cube_mesh(2, NM_PER_UM), model, t_end_s=0.2, dt_s=0.05, n_outputs=3)["fields"]


def test_fields_are_written_as_a_paraview_vtu_collection(tmp_path) -> None:
    import xml.etree.ElementTree as ElementTree

    import meshio

    fields = _written_fields()
    collection = cs.write(fields, tmp_path / "u.pvd")
    entries = ElementTree.parse(collection).getroot().findall("./Collection/DataSet")
    assert [float(e.get("timestep")) for e in entries] == pytest.approx(fields.times_s)
    assert [e.get("file") for e in entries] == ["u_00000.vtu", "u_00001.vtu", "u_00002.vtu"]
    last = meshio.read(tmp_path / "u_00002.vtu")
    np.testing.assert_allclose(last.points, fields.mesh.points)
    np.testing.assert_allclose(last.point_data["u"], fields.values["u"][2], rtol=1e-14)
    assert not np.allclose(fields.values["u"][0], fields.values["u"][2])  # the saved times differ


def test_fields_are_written_as_an_xdmf_time_series(tmp_path) -> None:
    import xml.etree.ElementTree as ElementTree

    h5py = needed_modules("h5py")
    fields = _written_fields()
    written = cs.write(fields, tmp_path / "u.xmf")
    grids = ElementTree.parse(written).getroot().findall("./Domain/Grid/Grid")
    assert [float(g.find("Time").get("Value")) for g in grids] == pytest.approx(fields.times_s)
    with h5py.File(tmp_path / "u.h5") as h5:
        np.testing.assert_allclose(h5["mesh/points"][()], fields.mesh.points)
        for index, grid in enumerate(grids):
            attribute = grid.find("./Attribute[@Name='u [uM]']/DataItem").text
            file_name, dataset = attribute.split(":")
            assert file_name == "u.h5"
            np.testing.assert_allclose(h5[dataset][()], fields.values["u"][index], rtol=1e-14)


def test_xdmf_without_h5py_names_the_missing_package(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(cs.MissingDependencyError, match=r"XDMF time series .*needs the package 'h5py'.*pip install h5py"):
        cs.write(_written_fields(), tmp_path / "u.xmf")


# ---------------------------------------------------------------- divergence


BLOW_UP = {  # u' = k u² blows up at t = 1/(k u0) = 0.5 s
    "parameters": {"k": "1 1/(uM*s)"},
    "species": {"u": {"in": 1, "D": 1.0, "initial": 2.0}},
    "reactions": {"explosion": {"equation": "-> u", "rate": "k*u**2"}},
}


def test_a_diverging_solver_is_reported_and_keeps_the_last_good_state() -> None:
    mesh = cube_mesh(1, NM_PER_UM)
    with pytest.raises(SolverDivergedError, match=r"diverged at t = 0\.\d+ s.*last good state") as caught:
        simulate(mesh, BLOW_UP, t_end_s=1.0, dt_s=1e-3, adaptive=True, dt_min_s=1e-5, n_outputs=5)
    message = str(caught.value)
    assert "solve.reaction_diffusion" in message and "dt_s" in message
    fields = caught.value.partial["fields"]
    last_time = fields.times_s[-1]
    assert 0.45 < last_time < 0.5  # the blow-up time
    assert np.isfinite(fields.values["u"][-1]).all() and fields.values["u"][-1].min() > 100.0
    # the saved states before the blow-up follow u = u0 / (1 − k u0 t)
    np.testing.assert_allclose(fields.values["u"][1], 2.0 / (1 - 2.0 * 0.25), rtol=0.02)
    kept = simulate(mesh, BLOW_UP, t_end_s=1.0, dt_s=1e-3, adaptive=True, dt_min_s=1e-5, n_outputs=5,
                    on_divergence="stop")
    assert kept["fields"].times_s[-1] == pytest.approx(last_time)
    assert "diverged" in kept["steps"].title
