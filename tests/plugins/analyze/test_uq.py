"""analyze.uq: Sobol indices of the Ishigami function, exact Monte Carlo means, failures, the solver as the model."""

from __future__ import annotations

import math

import numpy as np
import pytest
from meshes import cube_mesh

import cellscape as cs
from cellscape_plugins.analyze._forward import CachedForward, ForwardFailure, parse_parameters
from cellscape_plugins.analyze.uq import monte_carlo, morris_study, morris_trajectories, sobol_study

A, B = 7.0, 0.1


def ishigami(theta: np.ndarray) -> np.ndarray:
    x1, x2, x3 = theta
    return np.array([math.sin(x1) + A * math.sin(x2) ** 2 + B * x3**4 * math.sin(x1)])


def ishigami_indices() -> tuple[np.ndarray, np.ndarray]:
    """Analytic first-order and total indices (Ishigami & Homma 1990; Sobol' & Levitan 1999)."""
    v1 = 0.5 * (1 + B * math.pi**4 / 5) ** 2
    v2 = A**2 / 8
    v13 = 8 * B**2 * math.pi**8 / 225
    variance = v1 + v2 + v13
    return np.array([v1, v2, 0.0]) / variance, np.array([v1 + v13, v2, v13]) / variance


def box(**bounds: tuple[float, float]) -> list:
    return parse_parameters({k: {"bounds": list(v)} for k, v in bounds.items()}, "test", require_bounds=False,
                            distributions=True)


def test_sobol_indices_of_the_ishigami_function_match_the_analytic_values() -> None:
    specs = box(x1=(-math.pi, math.pi), x2=(-math.pi, math.pi), x3=(-math.pi, math.pi))
    forward = CachedForward(ishigami, 1)
    result = sobol_study(forward, specs, 4096, seed=3, n_bootstrap=50)
    first, total = ishigami_indices()
    np.testing.assert_allclose(result["first"][:, 0], first, atol=0.05)
    np.testing.assert_allclose(result["total"][:, 0], total, atol=0.05)
    assert result["n_runs"] == 4096 * 5 and result["n_excluded"] == 0
    assert (result["first_conf"] < 0.05).all() and (result["total_conf"] < 0.05).all()


def test_monte_carlo_mean_of_a_linear_model_is_exact() -> None:
    specs = parse_parameters({"u": {"bounds": [1.0, 5.0]}, "g": {"distribution": "normal", "mean": 10.0, "std": 2.0}},
                             "test", require_bounds=False, distributions=True)
    forward = CachedForward(lambda t: np.array([2 + 3 * t[0] - 0.5 * t[1], t[0] + t[1]]), 2)
    result = monte_carlo(forward, specs, 1000, seed=1)
    np.testing.assert_allclose(result["mean"], [6.0, 13.0], rtol=1e-12)
    # the spread is a sampling estimate: sqrt(9 * 16/12 + 0.25 * 4) = sqrt(13)
    assert result["std"][0] == pytest.approx(math.sqrt(13), rel=0.03)
    assert result["quantiles"][1][0] == pytest.approx(6.0, abs=0.1)  # the median of a symmetric output
    assert result["n_failed"] == 0


def test_sobol_indices_of_a_linear_model_are_its_variance_shares() -> None:
    specs = box(u=(0.0, 1.0), v=(0.0, 2.0))
    forward = CachedForward(lambda t: np.array([t[0] + t[1]]), 1)
    result = sobol_study(forward, specs, 2048, seed=0, n_bootstrap=0)
    np.testing.assert_allclose(result["first"][:, 0], [0.2, 0.8], atol=0.02)  # variances 1/12 and 4/12
    np.testing.assert_allclose(result["total"][:, 0], [0.2, 0.8], atol=0.02)


def test_morris_effects_of_a_linear_model_are_exact_and_an_interaction_shows_in_sigma() -> None:
    specs = box(u=(0.0, 2.0), v=(-1.0, 1.0), w=(5.0, 6.0))
    linear = morris_study(CachedForward(lambda t: np.array([3 * t[0] - 2 * t[1]]), 1), specs, 10, seed=0)
    np.testing.assert_allclose(linear["mu_star"][:, 0], [6.0, 4.0, 0.0], atol=1e-12)  # |a| × range
    np.testing.assert_allclose(linear["mu"][:, 0], [6.0, -4.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(linear["sigma"][:, 0], 0.0, atol=1e-12)
    assert linear["n_runs"] == 40 and (linear["n_effects"] == 10).all()
    product = morris_study(CachedForward(lambda t: np.array([t[0] * t[1]]), 1), specs, 30, seed=1)
    assert (product["sigma"][:2, 0] > 0.3).all() and product["mu_star"][2, 0] == 0.0
    points, moved, steps = morris_trajectories(5, 3, seed=2)
    assert np.isin(points, [0.125, 0.375, 0.625, 0.875]).all() and (np.abs(steps) == 0.5).all()
    assert all(sorted(row) == [0, 1, 2] for row in moved)  # each parameter moves once per trajectory


def test_failed_runs_are_recorded_and_excluded_not_dropped() -> None:
    specs = box(u=(0.0, 1.0), v=(0.0, 1.0))

    def fragile(theta: np.ndarray) -> np.ndarray:
        if theta[0] > 0.9:
            raise ArithmeticError("diverged")
        return np.array([theta[0] + theta[1]])

    forward = CachedForward(fragile, 1)
    result = monte_carlo(forward, specs, 200, seed=0)
    expected_failures = int((result["theta"][:, 0] > 0.9).sum())
    assert expected_failures > 0 and result["n_failed"] == expected_failures
    assert int(result["ok"].sum()) == 200 - expected_failures
    assert len(forward.failures) == expected_failures and "ArithmeticError: diverged" in forward.failures[0][1]
    sobol = sobol_study(CachedForward(fragile, 1), specs, 64, seed=0, n_bootstrap=0)
    assert sobol["n_excluded"] > 0 and sobol["n_rows"] + sobol["n_excluded"] == 64


def test_a_model_failing_everywhere_is_an_error_with_its_message() -> None:
    def broken(theta: np.ndarray) -> np.ndarray:
        raise cs.InputError("no such column")

    with pytest.raises(ForwardFailure, match="every one of the 8 forward runs failed; first error: InputError: no such"):
        monte_carlo(CachedForward(broken, 1), box(u=(0.0, 1.0)), 8, seed=0)


# ---------------------------------------------------------------- the method, with the solver as the model

DECAY = {"parameters": {"k": "0.5 1/s"}, "species": {"A": {"in": 1, "D": 1.0, "initial": 1.0}},
         "reactions": {"decay": {"equation": "A ->", "rate": "k*A"}}}
SOLVER = {"model": DECAY, "t_end_s": 2.0, "dt_s": 0.01}


@pytest.mark.slow
def test_uq_of_a_decay_rate_through_the_solver(tmp_path) -> None:
    mesh = cube_mesh(2, 1000.0)
    uq = cs.method("analyze.uq", solver_params=SOLVER, outputs=["mean_A_cube"], times_s=[1.0, 2.0],
                   parameters={"k": {"bounds": [0.2, 1.0]}, "D": {"bounds": [0.5, 2.0], "path": "model.species.A.D"}},
                   n_samples=32, n_sobol=32, n_bootstrap=20, cache_dir=str(tmp_path / "cache"),
                   analyses=["monte_carlo", "sobol", "morris"], n_trajectories=4)
    out = uq(mesh)
    screening = {(r["time_s"], r["parameter"]): r for r in out["screening"].rows()}
    assert screening[(2.0, "D")]["mu_star"] < 1e-6 < screening[(2.0, "k")]["mu_star"]
    mc = {r["time_s"]: r for r in out["table"].rows()}
    for t in (1.0, 2.0):  # E[exp(-k t)] for k ~ U(0.2, 1)
        exact = (math.exp(-0.2 * t) - math.exp(-1.0 * t)) / (0.8 * t)
        assert mc[t]["mean"] == pytest.approx(exact, rel=2e-3)
        assert mc[t]["n_failed"] == 0 and mc[t]["n_samples"] == 32
    sens = {(r["time_s"], r["parameter"]): r for r in out["sensitivity"].rows()}
    # a uniform initial state never diffuses: D explains nothing, k everything
    assert sens[(2.0, "k")]["S1"] == pytest.approx(1.0, abs=0.05) and sens[(2.0, "k")]["ST"] == pytest.approx(1.0, abs=0.05)
    assert abs(sens[(2.0, "D")]["ST"]) < 1e-6
    runs = {r["quantity"]: r["value"] for r in out["runs"].rows()}
    assert runs["forward_runs"] + runs["memory_cache_hits"] == 32 + 32 * 4 + 4 * 3 and runs["failed_runs"] == 0
    computed = runs["forward_runs"]
    again = uq(mesh)  # a second study reuses every simulation from the disk cache
    runs = {r["quantity"]: r["value"] for r in again["runs"].rows()}
    assert runs["forward_runs"] == 0 and runs["disk_cache_hits"] == computed
    np.testing.assert_array_equal(again["table"].columns["mean"], out["table"].columns["mean"])


def test_uq_bad_inputs_have_clear_messages() -> None:
    mesh = cube_mesh(1, 1000.0)
    base = {"solver_params": SOLVER, "outputs": ["mean_A_cube"], "times_s": [1.0]}
    with pytest.raises(cs.InputError, match="parameter 'k' has no bounds; give bounds"):
        cs.method("analyze.uq", parameters={"k": {"initial": 1.0}}, **base)
    with pytest.raises(cs.InputError, match="distribution 'gamma' is not one of uniform, normal, lognormal"):
        cs.method("analyze.uq", parameters={"k": {"distribution": "gamma"}}, **base)
    with pytest.raises(cs.InputError, match="'analyses' must list monte_carlo, sobol and/or morris, got \\['fast'\\]"):
        cs.method("analyze.uq", parameters={"k": {"bounds": [0.1, 1]}}, analyses=["fast"], **base)
    with pytest.raises(cs.InputError, match=r"'model.parameters.kk' does not exist: model.parameters has no 'kk' "
                                            r"\(it holds: k\)"):
        cs.method("analyze.uq", parameters={"kk": {"bounds": [0.1, 1]}}, **base)(mesh)
    with pytest.raises(cs.InputError, match=r"observed times reach 5 s but the solver's t_end_s is 2 s"):
        cs.method("analyze.uq", parameters={"k": {"bounds": [0.1, 1]}}, solver_params=SOLVER,
                  outputs=["mean_A_cube"], times_s=[5.0])(mesh)
    with pytest.raises(ForwardFailure, match=r"observed column\(s\) \['mean_B_cube'\] are not outputs of "
                                             r"solve.reaction_diffusion; its 'probes' output has: mean_A_cube, amount_A"):
        cs.method("analyze.uq", parameters={"k": {"bounds": [0.1, 1]}}, solver_params=SOLVER,
                  outputs=["mean_B_cube"], times_s=[1.0], n_samples=2, analyses=["monte_carlo"])(mesh)


def test_uq_on_a_gaussian_process_surrogate_of_the_solver() -> None:
    mesh = cube_mesh(2, 1000.0)
    out = cs.method("analyze.uq", solver_params=SOLVER, outputs=["mean_A_cube"], times_s=[1.0, 2.0],
                    parameters={"k": {"bounds": [0.2, 1.0]}, "D": {"bounds": [0.5, 2.0], "path": "model.species.A.D"}},
                    n_samples=256, n_sobol=256, n_bootstrap=20, surrogate="gp", surrogate_points=12,
                    validation_points=6)(mesh)
    mc = {r["time_s"]: r for r in out["table"].rows()}
    for t in (1.0, 2.0):
        exact = (math.exp(-0.2 * t) - math.exp(-1.0 * t)) / (0.8 * t)
        assert mc[t]["mean"] == pytest.approx(exact, rel=2e-3)
    sens = {(r["time_s"], r["parameter"]): r for r in out["sensitivity"].rows()}
    assert sens[(2.0, "k")]["S1"] == pytest.approx(1.0, abs=0.05) and abs(sens[(2.0, "D")]["ST"]) < 0.01
    runs = {r["quantity"]: r["value"] for r in out["runs"].rows()}
    assert runs["forward_runs"] == 18 and runs["surrogate_training_runs"] == 12  # not 256 + 256 * 4
    assert runs["surrogate_validation_runs"] == 6 and runs["surrogate_validation_error"] < 0.01


def test_lognormal_and_normal_parameters_propagate_with_their_moments() -> None:
    specs = parse_parameters({"k": {"distribution": "lognormal", "median": 2.0, "sigma": 0.3},
                              "g": {"distribution": "normal", "mean": -1.0, "std": 0.5}}, "test",
                             require_bounds=False, distributions=True)
    result = monte_carlo(CachedForward(lambda t: np.array(t), 2), specs, 4096, seed=0)
    assert result["mean"][0] == pytest.approx(2.0 * math.exp(0.3**2 / 2), rel=0.005)
    assert result["quantiles"][1][0] == pytest.approx(2.0, rel=0.01)  # the median
    assert result["mean"][1] == pytest.approx(-1.0, abs=1e-12) and result["std"][1] == pytest.approx(0.5, rel=0.02)


@pytest.mark.parametrize(("entry", "message"), [
    ({}, "parameter 'parameters' is empty"),
    ({"k": 3.0}, "parameter 'k' must be a mapping such as"),
    ({"k": {"bounds": [1, 2], "step": 1}}, r"parameter 'k': unknown key\(s\) \['step'\]"),
    ({"k": {"bounds": [2, 1]}}, r"bounds \[2, 1\] must have low < high"),
    ({"k": {"bounds": [1]}}, r"bounds must be \[low, high\], got \[1\]"),
    ({"k": {"bounds": [0, 1], "log": True}}, r"log: true needs bounds > 0, got \[0, 1\]"),
    ({"k": {"distribution": "normal", "mean": 1.0, "std": 0.0}}, "the spread .* must be > 0, got 0"),
    ({"k": {"distribution": "lognormal", "median": -1.0, "sigma": 0.1}}, "median of a lognormal distribution must be > 0"),
    ({"k": {"distribution": "normal", "std": 1.0}}, "parameter 'k': mean must be a finite number, got None"),
])
def test_parameter_declarations_are_checked(entry: dict, message: str) -> None:
    with pytest.raises(cs.InputError, match=message):
        parse_parameters(entry, "analyze.uq", require_bounds=False, distributions=True)
