"""Analysis benchmark: solver runs of surrogate-accelerated fits vs the direct fit, on the same noisy data.

The forward model is solve.reaction_diffusion on a split cube (left/right
regions); the data are its own mean concentrations per region at 8 times
plus Gaussian noise. The peer is the direct fit (scipy.optimize.least_squares,
trust-region reflective, forward-difference Jacobians through the solver),
once from the given start and once with 8 starts (the start plus 7 Sobol
points of the box), the latter being what one runs when the start is not
trusted. Two surrogate fits: the Gaussian process (analyze.fit surrogate: gp)
trains on 2p + 2 solver runs and is refined at its optimum; the reduced basis
(surrogate: reduced_basis) projects the solver's own operators on a POD basis
of one full run's states and is refined greedily (one full run per estimate,
validating the reduced model there). Both search 8-start on the surrogate.
Counts are solver runs actually computed (no cache hits; the reduced basis's
operator assemblies, with no time stepping, are counted apart), times are wall
clock on a shared 2-core machine.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

TIMES = [0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.5, 2.0]
NOISE = 0.01
PROBLEMS = {
    "decay + diffusion (k, D)": {
        "solver": {"model": {"parameters": {"k": "0.5 1/s"},
                             "species": {"A": {"D": 0.1, "initial": {"left": 1.0, "right": 0.0}}},
                             "reactions": {"decay": {"equation": "A ->", "rate": "k*A"}}},
                   "t_end_s": 2.0, "dt_s": 0.05},
        "parameters": {"k": {"bounds": [0.05, 5.0], "initial": 1.5, "log": True},
                       "D": {"bounds": [0.01, 1.0], "initial": 0.3, "log": True, "path": "model.species.A.D"}},
        "columns": ["mean_A_left", "mean_A_right"],
    },
    "conversion A -> B -> (k1, k2, D_A)": {
        "solver": {"model": {"parameters": {"k1": "0.8 1/s", "k2": "0.3 1/s"},
                             "species": {"A": {"D": 0.1, "initial": {"left": 1.0, "right": 0.0}},
                                         "B": {"D": 0.05, "initial": 0.0}},
                             "reactions": {"convert": {"equation": "A -> B", "rate": "k1*A"},
                                           "decay": {"equation": "B ->", "rate": "k2*B"}}},
                   "t_end_s": 2.0, "dt_s": 0.05},
        "parameters": {"k1": {"bounds": [0.05, 5.0], "initial": 2.5, "log": True},
                       "k2": {"bounds": [0.05, 5.0], "initial": 0.1, "log": True},
                       "D_A": {"bounds": [0.01, 1.0], "initial": 0.5, "log": True, "path": "model.species.A.D"}},
        "columns": ["mean_A_left", "mean_A_right", "mean_B_left", "mean_B_right"],
    },
    "decay + diffusion, D per region (k, D_left)": {
        "solver": {"model": {"parameters": {"k": "0.5 1/s"},
                             "species": {"A": {"D": {"left": 0.05, "right": 0.4},
                                               "initial": {"left": 1.0, "right": 0.0}}},
                             "reactions": {"decay": {"equation": "A ->", "rate": "k*A"}}},
                   "t_end_s": 2.0, "dt_s": 0.05},
        "parameters": {"k": {"bounds": [0.05, 5.0], "initial": 1.5, "log": True},
                       "D_left": {"bounds": [0.01, 1.0], "initial": 0.5, "log": True,
                                  "path": "model.species.A.D.left"}},
        "columns": ["mean_A_left", "mean_A_right"],
    },
}
SEEDS = (0, 1, 2)


def _measure(model: object, label: str, observed: np.ndarray, specs: list) -> tuple[object, int, float]:
    """One fit of ``observed`` on a fresh cache: its result, the solver runs it computed, its wall time (s)."""
    from cellscape_plugins.analyze._forward import CachedForward
    from cellscape_plugins.analyze._reduced_basis import reduced_basis_fit
    from cellscape_plugins.analyze._surrogate import surrogate_fit
    from cellscape_plugins.analyze.fit import fit_least_squares

    forward = CachedForward(model, model.n_outputs, model.key)  # type: ignore[attr-defined]
    start = time.perf_counter()
    if label == "direct":
        result = fit_least_squares(forward, observed, specs)
    elif label == "direct 8 starts":
        result = fit_least_squares(forward, observed, specs, n_starts=8)
    elif label == "reduced basis":
        result = reduced_basis_fit(model, forward, observed, specs, n_starts=8)  # type: ignore[arg-type]
    else:
        result = surrogate_fit(forward, observed, specs, n_initial=2 * len(specs) + 2, n_starts=8)
    return result, forward.runs, time.perf_counter() - start


def run() -> dict:
    from meshes import cube_mesh

    import cellscape as cs
    from cellscape_plugins.analyze._forward import SolverForward, parse_parameters

    mesh = cube_mesh(4, 1000.0, regions_split=True)
    rows = []
    for name, problem in PROBLEMS.items():
        specs = parse_parameters(problem["parameters"], "bench")
        columns = problem["columns"]
        model = SolverForward("bench", "solve.reaction_diffusion", problem["solver"], specs, mesh, np.array(TIMES),
                              columns)
        truth_table = cs.method("solve.reaction_diffusion", output_times_s=TIMES, **problem["solver"])(mesh)["probes"]
        rows_at = np.searchsorted(truth_table.columns["time_s"], TIMES)
        clean = np.concatenate([truth_table.columns[c][rows_at] for c in columns])
        for seed in SEEDS:
            observed = clean + NOISE * np.random.default_rng(seed).standard_normal(clean.size)
            measured = {label: _measure(model, label, observed, specs)
                        for label in ("direct", "direct 8 starts", "surrogate", "reduced basis")}
            direct, direct_runs, direct_s = measured["direct"]
            multi, multi_runs, multi_s = measured["direct 8 starts"]
            for surrogate, label in (("gp", "surrogate"), ("reduced basis", "reduced basis")):
                fast, fast_runs, fast_s = measured[label]
                shift = np.abs(fast.result.estimate - multi.estimate) / multi.std_error
                rows.append({
                    "problem": name, "seed": seed, "surrogate": surrogate, "parameters": len(specs),
                    "observations": clean.size, "direct runs": direct_runs, "direct 8-start runs": multi_runs,
                    "surrogate runs": fast_runs, "runs ratio (1 start)": direct_runs / fast_runs,
                    "runs ratio (8 starts)": multi_runs / fast_runs, "max |surrogate - direct| / SE": float(shift.max()),
                    "same estimate direct 1 vs 8 starts": bool(np.allclose(direct.estimate, multi.estimate, rtol=1e-4)),
                    "validation error": fast.validation_errors[-1] if fast.validation_errors else float("nan"),
                    "basis size": fast.basis_sizes[-1] if surrogate == "reduced basis" else "",
                    "direct [s]": direct_s, "direct 8-start [s]": multi_s, "surrogate [s]": fast_s,
                })
    load = os.getloadavg()

    def summary(kind: str) -> str:
        chosen = [r for r in rows if r["surrogate"] == kind]
        ratios1 = [r["runs ratio (1 start)"] for r in chosen]
        ratios8 = [r["runs ratio (8 starts)"] for r in chosen]
        shift = max(r["max |surrogate - direct| / SE"] for r in chosen)
        return (f"{kind}: {min(r['surrogate runs'] for r in chosen)}-{max(r['surrogate runs'] for r in chosen)} "
                f"solver runs, {min(ratios1):.1f}–{max(ratios1):.1f}x fewer than a single-start direct fit, "
                f"{min(ratios8):.1f}–{max(ratios8):.1f}x fewer than an 8-start direct fit, estimate within "
                f"{shift:.3g} standard errors of the direct one")

    def timing(kind: str) -> str:
        chosen = [r for r in rows if r["surrogate"] == kind]
        faster = sum(r["surrogate [s]"] < r["direct [s]"] for r in chosen)
        return (f"{kind} {min(r['surrogate [s]'] for r in chosen):.1f}-{max(r['surrogate [s]'] for r in chosen):.1f} s "
                f"(faster than the single-start direct fit in {faster} of {len(chosen)} cases)")

    notes = (f"Solver runs — {summary('reduced basis')}; {summary('gp')}. "
             "In the first two problems each species has one D, which scales its whole stiffness block: the modes do "
             "not depend on θ and the start run's snapshots already span the solutions everywhere (one greedy round). "
             "With D per region (third problem) the modes move with D_left and the greedy loop adds the snapshots of "
             "its first estimate (see the basis size) before the reduced model validates. "
             "Issue #8's target (same estimate with >= 5x fewer solver calls) is met by the reduced basis against the "
             "single-start direct fit too; the GP meets it only against the multi-start direct fit (a single-start "
             "direct fit needs only ~(p + 1) runs per iteration for 7-8 iterations, and a GP on the box needs ~2p + 2 "
             "design runs plus refinements). The reduced basis needs the start run (its snapshots) and one full run per "
             "estimate to validate the reduced model there; all three problems are linear in the species with parameters "
             "entering affinely (D scales stiffness blocks, k mass-weighted reaction blocks), verified from the solver's "
             "assembly at 2p + 2 parameter points (assemblies only, not counted as runs). Validation error, at the "
             "surrogate's last estimate/refinement point before that point joined its snapshots/training set: reduced "
             "basis, relative L2 error of the fitted outputs; GP, RMS error over the spread of the design outputs. "
             "Wall time: one solver run takes only ~20-40 ms on this 4³-cube mesh, so the surrogates' own work "
             "(reduced-model runs of ~1-5 ms through the solver's integrator and observation operator, multi-start "
             "fits on them; GP training) outweighs the runs saved: "
             f"{timing('reduced basis')}; {timing('gp')}. A surrogate pays in wall time when a solver run costs "
             f"more. Shared 2-core machine with other agents' jobs (load average {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} "
             "at the end of the run).")
    return {"title": "Analysis: surrogate-accelerated fits (reduced basis, GP) vs direct fit (solver runs)",
            "setup": (f"solve.reaction_diffusion on a 1 µm cube, 4³ hexahedra × 6 tetrahedra, left/right regions, BDF2 "
                      f"dt 0.05 s to 2 s; data: region means at {len(TIMES)} times + N(0, {NOISE}²) noise, seeds "
                      f"{SEEDS}; log-scaled parameters, starts far from the truth."),
            "rows": rows, "notes": notes}
