"""analyze.fit: parameters recovered within their confidence intervals, multi-start, cached refits, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from meshes import cube_mesh

import cellscape as cs
from cellscape_plugins.analyze._forward import CachedForward, ForwardFailure, parse_parameters
from cellscape_plugins.analyze.fit import fit_least_squares

TRUTH = {"k": 0.5, "D": 0.1}
TIMES = [0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.5, 2.0]
MODEL = {"parameters": {"k": "0.5 1/s"},
         "species": {"A": {"D": 0.1, "initial": {"left": 1.0, "right": 0.0}}},
         "reactions": {"decay": {"equation": "A ->", "rate": "k*A"}}}
SOLVER = {"model": MODEL, "t_end_s": 2.0, "dt_s": 0.05}
PARAMETERS = {"k": {"bounds": [0.05, 5.0], "initial": 1.5, "log": True},
              "D": {"bounds": [0.01, 1.0], "initial": 0.3, "log": True, "path": "model.species.A.D"}}
NOISE = 0.01


@pytest.fixture(scope="module")
def mesh() -> cs.TetMesh:
    return cube_mesh(3, 1000.0, regions_split=True)


@pytest.fixture(scope="module")
def clean(mesh: cs.TetMesh) -> cs.Table:
    return cs.method("solve.reaction_diffusion", output_times_s=TIMES, **SOLVER)(mesh)["probes"]


def noisy(clean: cs.Table, seed: int) -> cs.Table:
    rng = np.random.default_rng(seed)
    rows = np.searchsorted(clean.columns["time_s"], TIMES)
    return cs.Table({"time_s": np.array(TIMES),
                     **{c: clean.columns[c][rows] + NOISE * rng.standard_normal(len(TIMES))
                        for c in ("mean_A_left", "mean_A_right")}}, {"time_s": "s"})


@pytest.mark.slow
def test_fit_through_the_solver_recovers_parameters_within_the_interval(mesh: cs.TetMesh, clean: cs.Table) -> None:
    """20 seeded noisy data sets made by the solver itself; each fit starts far from the truth."""
    fit = cs.method("analyze.fit", solver_params=SOLVER, parameters=PARAMETERS)
    covered = {"k": 0, "D": 0}
    for seed in range(20):
        out = fit(mesh, noisy(clean, seed))
        for row in out["table"].rows():
            covered[row["parameter"]] += row["ci_low"] <= TRUTH[row["parameter"]] <= row["ci_high"]
            assert row["estimate"] == pytest.approx(TRUTH[row["parameter"]], rel=0.2)
        runs = {r["quantity"]: r["value"] for r in out["runs"].rows()}
        assert runs["residual_sd"] == pytest.approx(NOISE, rel=0.6) and runs["degrees_of_freedom"] == 14
    assert covered["k"] >= 18 and covered["D"] >= 18, covered


def test_fit_tables_and_a_cached_refit(mesh: cs.TetMesh, clean: cs.Table, tmp_path) -> None:
    fit = cs.method("analyze.fit", solver_params=SOLVER, parameters=PARAMETERS, cache_dir=str(tmp_path))
    observed = noisy(clean, 100)
    out = fit(mesh, observed)
    estimates = {r["parameter"]: r for r in out["table"].rows()}
    assert estimates["k"]["unit"] == "1/s" and estimates["D"]["unit"] == "um^2/s" and estimates["k"]["at_bound"] == 0
    residuals = out["residuals"].columns
    assert len(residuals["residual"]) == 16
    np.testing.assert_allclose(residuals["observed"][:8], observed.columns["mean_A_left"])
    np.testing.assert_allclose(residuals["observed"] - residuals["predicted"], residuals["residual"])
    corr = out["correlation"].columns
    assert corr["k"][0] == pytest.approx(1.0) and -1 < corr["D"][0] < 1
    computed = {r["quantity"]: r["value"] for r in out["runs"].rows()}["forward_runs"]
    assert computed > 5
    threaded = cs.method("analyze.fit", solver_params=SOLVER, parameters=PARAMETERS, workers=2)(mesh, observed)
    np.testing.assert_allclose(threaded["table"].columns["estimate"], out["table"].columns["estimate"], rtol=1e-10)
    again = fit(mesh, observed)  # a refit reruns no simulation
    runs = {r["quantity"]: r["value"] for r in again["runs"].rows()}
    assert runs["forward_runs"] == 0 and runs["disk_cache_hits"] > 0
    np.testing.assert_array_equal(again["table"].columns["estimate"], out["table"].columns["estimate"])


# ---------------------------------------------------------------- the same fitting code on an analytic model


def decay(theta: np.ndarray, t: np.ndarray) -> np.ndarray:
    return theta[0] * np.exp(-theta[1] * t)


def test_interval_coverage_on_an_analytic_model_with_known_sigma() -> None:
    """200 trials through fit_least_squares with σ given: coverage of a 95 % interval is near 95 %."""
    t = np.linspace(0.0, 3.0, 12)
    specs = parse_parameters({"a": {"bounds": [0.1, 10.0], "initial": 1.0}, "k": {"bounds": [0.01, 10], "initial": 3.0,
                                                                                 "log": True}}, "test")
    truth = np.array([2.0, 0.8])
    sigma = np.full(t.size, 0.05)
    rng = np.random.default_rng(7)
    hits = np.zeros(2)
    for _ in range(200):
        observed = decay(truth, t) + sigma * rng.standard_normal(t.size)
        result = fit_least_squares(CachedForward(lambda th: decay(th, t), t.size), observed, specs, sigma=sigma)
        hits += (result.ci_low <= truth) & (truth <= result.ci_high)
    assert ((hits / 200 >= 0.9) & (hits / 200 <= 0.99)).all(), hits


def test_multi_start_escapes_a_local_minimum() -> None:
    t = np.linspace(0.0, 4.0, 60)
    observed = np.sin(7.0 * t)
    specs = parse_parameters({"w": {"bounds": [0.5, 10.0], "initial": 1.0}}, "test")
    single = fit_least_squares(CachedForward(lambda th: np.sin(th[0] * t), t.size), observed, specs)
    assert abs(single.estimate[0] - 7.0) > 0.5  # stuck near the start
    multi = fit_least_squares(CachedForward(lambda th: np.sin(th[0] * t), t.size), observed, specs, n_starts=16)
    assert multi.estimate[0] == pytest.approx(7.0, abs=1e-6) and multi.cost < 1e-12
    assert len(multi.starts) == 16 and multi.starts[multi.best_start]["cost"] == pytest.approx(multi.cost)


def test_starts_where_the_model_fails_are_recorded_and_skipped() -> None:
    t = np.linspace(0.0, 3.0, 12)

    def fragile(theta: np.ndarray) -> np.ndarray:
        if theta[0] > 3.0:
            raise ArithmeticError("Newton diverged")
        return theta[0] * np.exp(-theta[1] * t)

    specs = parse_parameters({"a": {"bounds": [0.1, 10.0], "initial": 2.9}, "k": {"bounds": [0.05, 5.0], "initial": 0.1}},
                             "test")
    observed = fragile(np.array([2.0, 0.8])) + 0.01 * np.random.default_rng(0).standard_normal(t.size)
    forward = CachedForward(fragile, t.size)
    result = fit_least_squares(forward, observed, specs, n_starts=4)
    failed = [s for s in result.starts if s["status"] == -10]
    assert len(failed) == len(forward.failures) == 3  # the three Sobol starts have a > 3
    assert all("fails at the starting point" in s["error"] and s["start"][0] > 3 for s in failed)
    assert result.estimate == pytest.approx([2.0, 0.8], rel=0.02) and result.best_start == 0


def test_a_failed_run_at_the_start_is_an_error() -> None:
    def broken(theta: np.ndarray) -> np.ndarray:
        raise ArithmeticError("Newton diverged")

    specs = parse_parameters({"a": {"bounds": [0.0, 1.0]}}, "test")
    with pytest.raises(ForwardFailure, match=r"fails at the starting point θ = \[0.5\]: ArithmeticError: Newton diverged"):
        fit_least_squares(CachedForward(broken, 3), np.zeros(3), specs)
    with pytest.raises(cs.InputError, match="2 observations cannot determine 3 parameters"):
        fit_least_squares(CachedForward(lambda th: th[:2], 2), np.zeros(2),
                          parse_parameters({n: {"bounds": [0, 1]} for n in "abc"}, "test"))


def test_fit_bad_inputs_have_clear_messages(mesh: cs.TetMesh, clean: cs.Table) -> None:
    observed = noisy(clean, 0)
    with pytest.raises(cs.InputError, match="analyze.fit: parameter 'k' has no bounds; give bounds"):
        cs.method("analyze.fit", solver_params=SOLVER, parameters={"k": {"initial": 1.0}})
    with pytest.raises(cs.InputError, match=r"initial value 9 lies outside its bounds \[0.1, 1\]"):
        cs.method("analyze.fit", solver_params=SOLVER, parameters={"k": {"bounds": [0.1, 1], "initial": 9}})
    with pytest.raises(cs.InputError, match=r"'distribution' is for analyze.uq"):
        cs.method("analyze.fit", solver_params=SOLVER, parameters={"k": {"bounds": [0.1, 1], "distribution": "normal"}})
    fit = cs.method("analyze.fit", solver_params=SOLVER, parameters={"k": {"bounds": [0.1, 1.0]}})
    with pytest.raises(cs.InputError, match="the observed table has no 'time_s' column; columns: mean_A_left"):
        fit(mesh, cs.Table({"mean_A_left": np.ones(3)}))
    with pytest.raises(ForwardFailure, match=r"observed column\(s\) \['mean_A_cytosol'\] are not outputs of "
                                             r"solve.reaction_diffusion; its 'probes' output has: mean_A_left, "
                                             r"mean_A_right, amount_A"):
        fit(mesh, cs.Table({"time_s": np.array([0.5, 1.0]), "mean_A_cytosol": np.ones(2)}))
    with pytest.raises(cs.InputError, match=r"the observed times reach 3 s but the solver's t_end_s is 2 s"):
        fit(mesh, cs.Table({"time_s": np.array([1.0, 3.0]), "mean_A_left": np.ones(2)}))
    with pytest.raises(cs.InputError, match=r"columns \['mean_A_right'\] have no '_sd' column while others do"):
        fit(mesh, cs.Table({**observed.columns, "mean_A_left_sd": np.full(8, 0.01)}))
    with pytest.raises(cs.InputError, match=r"holds 1 NaN or infinite value\(s\)"):
        fit(mesh, cs.Table({"time_s": np.array([0.5, 1.0]), "mean_A_left": np.array([1.0, math.nan])}))
    with pytest.raises(cs.InputError, match=r"'model.species.B.D' does not exist: model.species has no 'B' \(it holds: A\)"):
        cs.method("analyze.fit", solver_params=SOLVER,
                  parameters={"D": {"bounds": [0.1, 1.0], "path": "model.species.B.D"}})(mesh, observed)
    with pytest.raises(cs.InputError, match="solver 'solve.magic' is not a registered solve method"):
        cs.method("analyze.fit", solver="solve.magic", solver_params=SOLVER,
                  parameters={"k": {"bounds": [0.1, 1.0]}})(mesh, observed)


def test_fit_as_a_pipeline_step(mesh: cs.TetMesh, clean: cs.Table, tmp_path) -> None:
    """A spec fits the data of a CSV file on a mesh file; the run caches the step and reports the estimates."""
    import yaml

    cs.write(mesh, tmp_path / "mesh.npz")
    cs.write(noisy(clean, 5), tmp_path / "observed.csv")
    spec = {"version": 1, "steps": [{
        "id": "fit", "use": "analyze.fit", "inputs": {"mesh": {"file": "mesh.npz"}, "observed": {"file": "observed.csv"}},
        "with": {"solver_params": SOLVER, "parameters": PARAMETERS, "cache_dir": str(tmp_path / "forward_cache")}}]}
    (tmp_path / "fit.yaml").write_text(yaml.safe_dump(spec))
    run = cs.run(tmp_path / "fit.yaml", run_dir=tmp_path / "run", report=False)
    estimates = {r["parameter"]: r for r in run.artefact("fit", "table").rows()}
    for name, value in TRUTH.items():
        assert estimates[name]["ci_low"] <= value <= estimates[name]["ci_high"]
    assert len(list((tmp_path / "forward_cache").glob("*.npz"))) > 5


def test_fit_to_field_snapshots(mesh: cs.TetMesh) -> None:
    """Every node's value at 4 times (made by the solver, plus noise) determines k and D."""
    times = [0.2, 0.5, 1.0, 2.0]
    clean = cs.method("solve.reaction_diffusion", output_times_s=times, **SOLVER)(mesh)["fields"]
    rows = np.searchsorted(clean.times_s, times)
    fit = cs.method("analyze.fit", solver_params=SOLVER, parameters=PARAMETERS)
    for seed in range(3):
        noise = 0.02 * np.random.default_rng(seed).standard_normal((len(times), len(mesh.points)))
        observed = cs.Fields(mesh, times, {"A": clean.values["A"][rows] + noise})
        out = fit(mesh, observed_fields=observed)
        for row in out["table"].rows():
            assert row["ci_low"] <= TRUTH[row["parameter"]] <= row["ci_high"]
        runs = {r["quantity"]: r["value"] for r in out["runs"].rows()}
        assert runs["residual_sd"] == pytest.approx(0.02, rel=0.15)
        assert runs["degrees_of_freedom"] == len(times) * len(mesh.points) - 2
    residuals = out["residuals"].columns
    assert list(residuals["time_s"]) == times and residuals["rms_residual"] == pytest.approx(0.02, rel=0.3)


def test_fit_to_fields_bad_inputs(mesh: cs.TetMesh, clean: cs.Table) -> None:
    fit = cs.method("analyze.fit", solver_params=SOLVER, parameters={"k": {"bounds": [0.1, 1.0]}})
    other = cube_mesh(2, 1000.0, regions_split=True)
    snapshots = cs.Fields(other, [1.0], {"A": np.ones((1, len(other.points)))})
    with pytest.raises(cs.InputError, match="needs exactly one of 'observed'.*got neither"):
        fit(mesh)
    with pytest.raises(cs.InputError, match="got both"):
        fit(mesh, noisy(clean, 0), snapshots)
    with pytest.raises(cs.InputError, match="the observed fields live on a mesh of 27 nodes that is not the "
                                            r"solver's mesh \(64 nodes\)"):
        fit(mesh, observed_fields=snapshots)
    with pytest.raises(cs.InputError, match=r"species \['B'\] are not in the observed fields; they hold: A"):
        cs.method("analyze.fit", solver_params=SOLVER, parameters={"k": {"bounds": [0.1, 1.0]}}, species=["B"])(
            mesh, observed_fields=cs.Fields(mesh, [1.0], {"A": np.ones((1, len(mesh.points)))}))


def test_profile_intervals_equal_the_jacobian_ones_for_a_linear_model() -> None:
    from cellscape_plugins.analyze.fit import profile_intervals

    t = np.linspace(0.0, 2.0, 9)
    specs = parse_parameters({"a": {"bounds": [-10.0, 10.0]}, "b": {"bounds": [-10.0, 10.0]}}, "test")
    observed = 1.0 + 0.5 * t + 0.1 * np.random.default_rng(3).standard_normal(t.size)
    forward = CachedForward(lambda th: th[0] + th[1] * t, t.size)
    result = fit_least_squares(forward, observed, specs)
    profiled = profile_intervals(forward, observed, specs, result)
    np.testing.assert_allclose(profiled.ci_low, result.ci_low, rtol=1e-4)
    np.testing.assert_allclose(profiled.ci_high, result.ci_high, rtol=1e-4)


@pytest.mark.slow
def test_profile_intervals_through_the_solver(mesh: cs.TetMesh, clean: cs.Table) -> None:
    observed = noisy(clean, 11)
    jacobian = cs.method("analyze.fit", solver_params=SOLVER, parameters=PARAMETERS)(mesh, observed)["table"]
    profile = cs.method("analyze.fit", solver_params=SOLVER, parameters=PARAMETERS, intervals="profile")(mesh, observed)
    rows = {r["parameter"]: r for r in profile["table"].rows()}
    for j, row in enumerate(jacobian.rows()):
        name = row["parameter"]
        assert rows[name]["ci_low"] <= TRUTH[name] <= rows[name]["ci_high"]
        assert rows[name]["estimate"] == pytest.approx(row["estimate"], rel=1e-6)
        width = row["ci_high"] - row["ci_low"]  # nearly linear at this noise: the two intervals nearly agree
        assert rows[name]["ci_low"] == pytest.approx(row["ci_low"], abs=0.1 * width), j
        assert rows[name]["ci_high"] == pytest.approx(row["ci_high"], abs=0.1 * width), j
