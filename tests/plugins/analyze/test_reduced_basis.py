"""Reduced-basis (POD–Galerkin) surrogates: accuracy against the full solver, a fit with few full runs, refusals."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from meshes import cube_mesh
from test_fit import PARAMETERS, SOLVER, TIMES, noisy

import cellscape as cs
from cellscape_plugins.analyze._forward import CachedForward, SolverForward, parse_parameters
from cellscape_plugins.analyze._reduced_basis import (
    AffineModel,
    ReducedBasisUnavailable,
    ReducedModel,
    full_run,
    pod_basis,
    reduced_basis_fit,
)

COLUMNS = ["mean_A_left", "mean_A_right"]
# two regions with their own D (two stiffness blocks), a decay, a source decaying in time, and time-dependent
# Dirichlet values on the cube's faces
PATCHY = {"model": {"parameters": {"k": "0.5 1/s", "s": "0.2 uM/s", "L": "1 um", "tau": "1 s", "c0": "0.3 uM"},
                    "species": {"A": {"D": {"left": 0.1, "right": 0.4}, "initial": {"left": 1.0, "right": 0.0}}},
                    "reactions": {"decay": {"equation": "A ->", "rate": "k*A"},
                                  "make": {"equation": "-> A", "rate": "s*x/L*exp(-t/tau)"}},
                    "boundary_conditions": [{"species": "A", "surface": 1, "type": "dirichlet",
                                             "value": "c0*x/L*(1 - exp(-2*t/tau))"}]},
          "t_end_s": 1.0, "dt_s": 0.05, "scheme": "bdf2"}
PATCHY_PARAMETERS = {"k": {"bounds": [0.1, 3.0]}, "s": {"bounds": [0.0, 1.0]},
                     "D_left": {"bounds": [0.02, 0.5], "path": "model.species.A.D.left"}}


@pytest.fixture(scope="module")
def mesh() -> cs.TetMesh:
    return cube_mesh(3, 1000.0, regions_split=True)


def test_reduced_model_reproduces_the_solver_away_from_its_snapshots() -> None:
    """Snapshots at four θ; the reduced model at two others matches the full solve's fields to < 1e-4.

    (D of one region changes the shape of the modes: snapshots at a single θ give errors of 0.4-3 %.)
    """
    mesh = cube_mesh(6, 1000.0, regions_split=True)  # 125 interior nodes; the faces are Dirichlet nodes
    specs = parse_parameters(PATCHY_PARAMETERS, "test")
    model = SolverForward("test", "solve.reaction_diffusion", PATCHY, specs, mesh, np.array([0.2, 0.5, 1.0]),
                          ["A"], output="fields")
    affine = AffineModel(model, specs)
    assert affine.assemblies == 2 * len(specs) + 2  # the midpoint, two ends per parameter, one check point
    snapshots = np.column_stack([full_run(affine, np.array(theta))[1] for theta in
                                 ([1.0, 0.5, 0.02], [1.0, 0.5, 0.5], [0.2, 0.2, 0.1], [3.0, 0.8, 0.06])])
    basis, _ = pod_basis(snapshots, 1e-8)
    assert basis.shape[1] < 125
    assert not basis[affine.dirichlet_dofs].any()
    np.testing.assert_allclose(basis.T @ basis, np.eye(basis.shape[1]), atol=1e-10)
    reduced = ReducedModel(affine, basis)
    for theta in ([0.3, 0.9, 0.05], [2.5, 0.1, 0.4]):
        full = model(np.array(theta))
        approximate = reduced.outputs(np.array(theta))
        error = np.linalg.norm(approximate - full) / np.linalg.norm(full)
        assert error < 1e-4, (theta, error)
    # the Dirichlet face keeps its value in the reduced model's lifted states
    times, states = reduced.states(np.array([0.3, 0.9, 0.05]))
    # the observation applied once to the basis equals the solver's observation of the lifted states
    observed = model.extract(affine.mid_form.observe(times, states)[model.output])
    np.testing.assert_allclose(reduced.outputs(np.array([0.3, 0.9, 0.05])), observed, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(states[-1, affine.dirichlet_dofs],
                               affine.mid_form.dirichlet_values(float(times[-1])), atol=1e-14)


def test_pod_basis_keeps_the_modes_of_its_tolerance() -> None:
    rng = np.random.default_rng(0)
    modes = np.linalg.qr(rng.standard_normal((50, 3)))[0]
    snapshots = modes @ (rng.standard_normal((3, 20)) * np.array([[1.0], [0.1], [1e-6]]))
    assert pod_basis(snapshots, 1e-8)[0].shape[1] == 3
    assert pod_basis(snapshots, 1e-3)[0].shape[1] == 2  # the 1e-6 mode is below the tolerance
    with pytest.raises(cs.InputError, match="every snapshot is zero"):
        pod_basis(np.zeros((5, 3)), 1e-8)


def test_reduced_basis_fit_matches_the_direct_fit_with_few_full_runs(mesh: cs.TetMesh) -> None:
    clean = cs.method("solve.reaction_diffusion", output_times_s=TIMES, **SOLVER)(mesh)["probes"]
    observed = noisy(clean, 5)
    specs = parse_parameters(PARAMETERS, "test")
    vector = np.concatenate([observed.columns[c] for c in COLUMNS])
    model = SolverForward("test", "solve.reaction_diffusion", SOLVER, specs, mesh, np.array(TIMES), COLUMNS)
    from cellscape_plugins.analyze.fit import fit_least_squares

    direct_forward = CachedForward(model, model.n_outputs)
    direct = fit_least_squares(direct_forward, vector, specs)
    forward = CachedForward(model, model.n_outputs)
    fast = reduced_basis_fit(model, forward, vector, specs)
    shift = np.abs(fast.result.estimate - direct.estimate) / direct.std_error
    assert (shift < 0.1).all(), shift
    np.testing.assert_allclose(fast.result.std_error, direct.std_error, rtol=0.05)
    assert fast.solver_runs == forward.runs <= 3  # the start, and one or two validations at the estimate
    assert direct_forward.runs >= 5 * fast.solver_runs
    assert fast.validation_errors[-1] < 1e-6
    np.testing.assert_allclose(fast.result.predicted, model(fast.result.estimate), rtol=1e-12)


def test_the_greedy_loop_adds_snapshots_until_the_reduced_model_is_validated() -> None:
    """D of one region moves the modes: the start's basis is off at the first estimate (validation error
    > 1e-4), its snapshots join, and the refit lands on the direct fit's estimate."""
    from cellscape_plugins.analyze.fit import fit_least_squares

    mesh = cube_mesh(5, 1000.0, regions_split=True)
    specs = parse_parameters({"k": {"bounds": [0.1, 3.0], "initial": 2.0},
                              "D_left": {"bounds": [0.02, 0.5], "initial": 0.3, "path": "model.species.A.D.left"}},
                             "test")
    model = SolverForward("test", "solve.reaction_diffusion", PATCHY, specs, mesh,
                          np.array([0.1, 0.2, 0.3, 0.5, 0.7, 1.0]), COLUMNS)
    truth = model(np.array([0.5, 0.08]))
    observed = truth + 0.005 * np.random.default_rng(0).standard_normal(truth.size)
    direct_forward = CachedForward(model, model.n_outputs)
    direct = fit_least_squares(direct_forward, observed, specs)
    forward = CachedForward(model, model.n_outputs)
    fast = reduced_basis_fit(model, forward, observed, specs)
    assert fast.validated and fast.rounds >= 2 and fast.validation_errors[0] > 1e-4 and fast.validation_errors[-1] < 1e-6
    assert fast.basis_sizes[-1] > fast.basis_sizes[0]
    assert fast.solver_runs == forward.runs == fast.rounds + 1 <= 4
    assert direct_forward.runs >= 5 * fast.solver_runs
    assert (np.abs(fast.result.estimate - direct.estimate) / direct.std_error < 0.1).all()


def test_analyze_fit_reduced_basis_records_what_it_did(mesh: cs.TetMesh) -> None:
    clean = cs.method("solve.reaction_diffusion", output_times_s=TIMES, **SOLVER)(mesh)["probes"]
    observed = noisy(clean, 7)
    out = cs.method("analyze.fit", solver_params=SOLVER, parameters=PARAMETERS, surrogate="auto")(mesh, observed)
    rows = {r["quantity"]: r for r in out["runs"].rows()}
    assert rows["surrogate"]["note"] == "reduced_basis"
    assert rows["forward_runs"]["value"] == rows["surrogate_solver_runs"]["value"] <= 3
    assert 1 <= rows["reduced_basis_size"]["value"] < len(mesh.points)
    assert rows["surrogate_validation_error"]["value"] < 1e-6 and rows["reduced_basis_validated"]["value"] == 1
    estimates = dict(zip(out["table"].columns["parameter"], out["table"].columns["estimate"], strict=True))
    assert estimates["k"] == pytest.approx(0.5, rel=0.2) and estimates["D"] == pytest.approx(0.1, rel=0.3)


def test_a_nonlinear_model_is_refused_by_name_and_falls_back_to_the_gp(mesh: cs.TetMesh) -> None:
    solver = {"model": {"parameters": {"V": "1.0 uM/s", "K": "0.5 uM"},
                        "species": {"A": {"D": 0.1, "initial": {"left": 1.0, "right": 0.2}}},
                        "reactions": {"uptake": {"equation": "A ->", "rate": "V*A/(K + A)"}}},
              "t_end_s": 1.0, "dt_s": 0.1}
    parameters = {"V": {"bounds": [0.2, 3.0], "initial": 1.5}}
    times = [0.2, 0.5, 1.0]
    specs = parse_parameters(parameters, "analyze.fit")
    model = SolverForward("analyze.fit", "solve.reaction_diffusion", solver, specs, mesh, np.array(times), COLUMNS)
    message = "no reduced basis: .*reaction 'uptake' \\(rate 'V\\*A/\\(K \\+ A\\)'\\) is nonlinear in A"
    with pytest.raises(ReducedBasisUnavailable, match=message):
        AffineModel(model, specs)
    clean = cs.method("solve.reaction_diffusion", output_times_s=times, **solver)(mesh)["probes"]
    rows = np.searchsorted(clean.columns["time_s"], times)
    observed = cs.Table({"time_s": np.array(times), **{c: clean.columns[c][rows] for c in COLUMNS}}, {"time_s": "s"})
    fit = cs.method("analyze.fit", solver_params=solver, parameters=parameters, surrogate="reduced_basis")
    with pytest.warns(UserWarning, match=message + ".*using the Gaussian-process surrogate instead"):
        out = fit(mesh, observed)
    runs = {r["quantity"]: r for r in out["runs"].rows()}
    assert runs["surrogate"]["note"] == "gp" and "is nonlinear in A" in runs["surrogate_fallback"]["note"]
    assert out["table"].columns["estimate"][0] == pytest.approx(1.0, rel=1e-3)  # noise-free data
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # auto falls back quietly (the runs table still says why)
        auto = cs.method("analyze.fit", solver_params=solver, parameters=parameters, surrogate="auto")(mesh, observed)
    assert "surrogate_fallback" in set(auto["runs"].columns["quantity"])


def test_a_parameter_entering_non_affinely_is_refused_by_name(mesh: cs.TetMesh) -> None:
    solver = {"model": {"parameters": {"k": "0.5 1/s", "tau": "1 s"},
                        "species": {"A": {"D": 0.1, "initial": {"left": 1.0, "right": 0.0}}},
                        "reactions": {"decay": {"equation": "A ->", "rate": "k*k*tau*A"}}},
              "t_end_s": 1.0, "dt_s": 0.1}
    specs = parse_parameters({"k": {"bounds": [0.1, 2.0]}}, "analyze.fit")
    model = SolverForward("analyze.fit", "solve.reaction_diffusion", solver, specs, mesh, np.array([0.5, 1.0]), COLUMNS)
    with pytest.raises(ReducedBasisUnavailable, match="parameter 'k' enter\\(s\\) the diffusion and reaction matrix "
                                                      "\\(K − ∂F/∂u\\) non-affinely"):
        AffineModel(model, specs)
    adaptive = {**solver, "adaptive": True}
    adaptive["model"] = {**solver["model"], "reactions": {"decay": {"equation": "A ->", "rate": "k*A"}}}
    model = SolverForward("analyze.fit", "solve.reaction_diffusion", adaptive, specs, mesh, np.array([0.5, 1.0]),
                          COLUMNS)
    with pytest.raises(ReducedBasisUnavailable, match="adaptive: true chooses the time steps"):
        AffineModel(model, specs)
