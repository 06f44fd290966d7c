"""Gaussian-process surrogates: accuracy on smooth functions, and a surrogate fit that lands on the direct fit."""

from __future__ import annotations

import numpy as np
import pytest
from meshes import cube_mesh
from test_fit import PARAMETERS, SOLVER, TIMES, noisy

import cellscape as cs
from cellscape_plugins.analyze._forward import CachedForward, ForwardFailure, parse_parameters
from cellscape_plugins.analyze._surrogate import GaussianProcess, surrogate_fit
from cellscape_plugins.analyze.fit import fit_least_squares
from cellscape_plugins.analyze.uq import unit_sobol


def smooth(z: np.ndarray) -> np.ndarray:
    return np.column_stack([np.sin(3 * z[:, 0]) + z[:, 1] ** 2, np.exp(-z[:, 0] * z[:, 1])])


def test_gaussian_process_learns_a_smooth_function() -> None:
    train = unit_sobol(32, 2, seed=0)
    gp = GaussianProcess().fit(train, smooth(train))
    test = np.random.default_rng(1).random((200, 2))
    error = np.sqrt(np.mean((gp.predict(test) - smooth(test)) ** 2, axis=0)) / smooth(test).std(axis=0)
    assert (error < 0.01).all(), error
    np.testing.assert_allclose(gp.predict(train), smooth(train), atol=1e-4)  # it interpolates its data
    far = gp.predict_std(np.array([[1.6, -0.6]]))  # outside the box: the posterior knows it knows little
    assert (gp.predict_std(train[:1]) < 0.05 * far).all()
    assert gp.predict(train[0]).shape == (2,)


def test_gaussian_process_bad_inputs() -> None:
    with pytest.raises(cs.InputError, match="needs at least 2 training points, got 1"):
        GaussianProcess().fit(np.zeros((1, 2)), np.zeros((1, 1)))
    with pytest.raises(cs.InputError, match="not trained; call fit first"):
        GaussianProcess().predict(np.zeros(2))


def test_surrogate_fit_of_an_analytic_model_matches_the_direct_fit_with_fewer_runs() -> None:
    t = np.linspace(0.0, 3.0, 15)
    specs = parse_parameters({"a": {"bounds": [0.5, 5.0], "initial": 4.0}, "k": {"bounds": [0.05, 5.0], "initial": 3.0,
                                                                                 "log": True}}, "test")
    truth = np.array([2.0, 0.8])

    def model(theta: np.ndarray) -> np.ndarray:
        return theta[0] * np.exp(-theta[1] * t)

    observed = model(truth) + 0.02 * np.random.default_rng(0).standard_normal(t.size)
    direct_forward = CachedForward(model, t.size)
    direct = fit_least_squares(direct_forward, observed, specs)
    accelerated = surrogate_fit(CachedForward(model, t.size), observed, specs, n_initial=6)
    shift = np.abs(accelerated.result.estimate - direct.estimate) / direct.std_error
    assert (shift < 0.05).all(), shift
    assert accelerated.solver_runs < direct_forward.runs
    np.testing.assert_allclose(accelerated.result.std_error, direct.std_error, rtol=0.05)
    assert accelerated.validation_errors[-1] < 0.01


def test_a_surrogate_whose_design_fails_is_an_error() -> None:
    def broken(theta: np.ndarray) -> np.ndarray:
        raise ArithmeticError("Newton diverged")

    specs = parse_parameters({"a": {"bounds": [0.0, 1.0]}}, "test")
    with pytest.raises(ForwardFailure, match="only 0 of 5 design runs of the surrogate succeeded; first error: "
                                             "ArithmeticError: Newton diverged"):
        surrogate_fit(CachedForward(broken, 3), np.zeros(3), specs, n_initial=4)


def test_analyze_fit_with_a_surrogate_through_the_solver() -> None:
    mesh = cube_mesh(3, 1000.0, regions_split=True)
    clean = cs.method("solve.reaction_diffusion", output_times_s=TIMES, **SOLVER)(mesh)["probes"]
    observed = noisy(clean, 3)
    direct = cs.method("analyze.fit", solver_params=SOLVER, parameters=PARAMETERS)(mesh, observed)
    fast = cs.method("analyze.fit", solver_params=SOLVER, parameters=PARAMETERS, surrogate="gp")(mesh, observed)
    d, f = direct["table"].columns, fast["table"].columns
    assert (np.abs(f["estimate"] - d["estimate"]) / d["std_error"] < 0.1).all()
    np.testing.assert_allclose(f["std_error"], d["std_error"], rtol=0.1)
    direct_runs = {r["quantity"]: r["value"] for r in direct["runs"].rows()}
    fast_runs = {r["quantity"]: r["value"] for r in fast["runs"].rows()}
    assert fast_runs["forward_runs"] == fast_runs["surrogate_solver_runs"] < direct_runs["forward_runs"]
    assert fast_runs["surrogate_validation_error"] < 0.01
