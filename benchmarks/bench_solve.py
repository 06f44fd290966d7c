"""Simulation: P1 assembly against scikit-fem; a Poisson solve and reaction–diffusion steps with SciPy and PETSc.

Meshes: the cube [0, 10 µm]³ cut into n³ hexahedra of 6 tetrahedra each (built here), from ~1e4
to ~1e6 unknowns. Problems:

- Poisson: −Δu = f with u = 0 on the boundary, f = 3 (π/L)² sin(πx/L) sin(πy/L) sin(πz/L), so
  u = sin sin sin; the unknowns are the interior nodes. One solve: assembly, the system, solver
  set-up (AMG hierarchy, PETSc matrix) and CG + multigrid to a relative residual of 1e-8 through
  cellscape's linear-solver layer (pyamg smoothed aggregation; PETSc GAMG).
- 3-species reaction–diffusion: ``solve.reaction_diffusion`` itself on the cube, A + B ⇌ C by mass
  action (nonlinear), D = (10, 5, 1) µm²/s, zero-flux boundaries, 3 backward-Euler steps of 0.05 s,
  Newton's method with GMRES + multigrid (pyamg / PETSc GAMG) to 1e-8. Time per step = the method's
  whole CPU time (model, assembly, Newton, linear solves, outputs) / 3; the linear part (solver
  set-up and solves) is timed separately by wrapping the linear-solver layer.

Measured in a fresh process each (peak memory its own, of the first call). Times are CPU seconds
of that process (``time.process_time``, every library single-threaded), so the other jobs sharing
the machine do not inflate them; assembly times are the best of 3 calls (scikit-fem: of 2). Our
assembly of K and M (sparsity pattern included, and again on a known pattern) is compared with
scikit-fem's (``Basis`` + ``asm(laplace)`` + ``asm(mass)``, with and without the ``Basis``).
Scaling exponents are least-squares slopes of log(time) against log(unknowns). Without petsc4py
the PETSc columns stay empty.

    python benchmarks/run.py solve                    # writes benchmarks/results/solve.md
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import _harness as harness

SIDE_UM = 10.0
RTOL = 1e-8
DT_S = 0.05
RD_STEPS = 3
RD_MODEL = {
    "parameters": {"kf": "0.5 1/(uM*s)", "kb": "1 1/s", "L": "10 um", "c0": "1 uM"},
    "species": {"A": {"D": 10.0, "initial": "c0*(1 + x/L)"}, "B": {"D": 5.0, "initial": "c0*(1 + y/L)"},
                "C": {"D": 1.0, "initial": 0.0}},
    "reactions": {"binding": {"equation": "A + B -> C", "rate": "kf*A*B"},
                  "unbinding": {"equation": "C -> A + B", "rate": "kb*C"}},
}
POISSON_CELLS = (21, 31, 46, 67, 99)  # (n + 1)³ nodes: 1.1e4 ... 1.0e6
REACTION_CELLS = (14, 21, 31, 46, 68)  # 3 (n + 1)³ unknowns: 1.0e4 ... 9.7e5
SKFEM_CELLS = POISSON_CELLS
LARGE_UNKNOWNS = 9e4  # a second exponent is fitted from here up
# the Kuhn cut of a hexahedron into 6 tetrahedra around its main diagonal, corners in (x, y, z) bit order
KUHN = np.array([[0, 1, 3, 7], [0, 1, 5, 7], [0, 2, 3, 7], [0, 2, 6, 7], [0, 4, 5, 7], [0, 4, 6, 7]])


def cube(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Points (µm) and tetrahedra of [0, SIDE_UM]³ cut into n³ hexahedra of 6 tetrahedra."""
    ticks = np.linspace(0.0, SIDE_UM, n + 1)
    points = np.stack(np.meshgrid(ticks, ticks, ticks, indexing="ij"), axis=-1).reshape(-1, 3)
    index = np.arange((n + 1) ** 3).reshape(n + 1, n + 1, n + 1)
    i, j, k = np.meshgrid(np.arange(n), np.arange(n), np.arange(n), indexing="ij")
    corners = np.stack([index[i + (c & 1), j + (c >> 1 & 1), k + (c >> 2 & 1)].ravel() for c in range(8)], axis=1)
    return points, corners[:, KUHN].reshape(-1, 4)


# ------------------------------------------------------------------------------------------------ children


def _cpu_seconds(call, repeats: int) -> float:
    """Shortest CPU time of this process over ``repeats`` calls: other jobs on the machine do not count."""
    best = np.inf
    for _ in range(repeats):
        start = time.process_time()
        call()
        best = min(best, time.process_time() - start)
    return float(best)


def _assemble_ours(points: np.ndarray, tets: np.ndarray, timings: dict) -> np.ndarray:
    from cellscape_plugins.solve._p1 import P1Pattern, assemble_p1

    stiffness, mass = assemble_p1(points, tets)
    timings["assembly_s"] = _cpu_seconds(lambda: assemble_p1(points, tets), 3)
    pattern = P1Pattern.from_tets(tets, len(points))
    timings["reassembly_s"] = _cpu_seconds(lambda: assemble_p1(points, tets, pattern=pattern), 3)
    return _fingerprint(stiffness, mass)


def _fingerprint(stiffness, mass) -> np.ndarray:
    """K x and M x for a fixed x: equal fingerprints mean equal matrices (up to round-off)."""
    x = np.sin(np.arange(stiffness.shape[0]))
    return np.concatenate([stiffness @ x, mass @ x])


def _assemble_skfem(points: np.ndarray, tets: np.ndarray, timings: dict) -> np.ndarray:
    import skfem
    from skfem.models.poisson import laplace, mass

    def make_basis() -> skfem.CellBasis:
        return skfem.Basis(skfem.MeshTet(points.T.copy(), tets.T.copy()), skfem.ElementTetP1())

    basis = make_basis()
    stiffness, mass_matrix = skfem.asm(laplace, basis), skfem.asm(mass, basis)
    timings["basis_s"] = _cpu_seconds(make_basis, 2)
    timings["asm_s"] = _cpu_seconds(lambda: (skfem.asm(laplace, basis), skfem.asm(mass, basis)), 2)
    return _fingerprint(stiffness, mass_matrix)


def _poisson(backend: str, points: np.ndarray, tets: np.ndarray, timings: dict) -> np.ndarray:
    from cellscape_plugins.solve._linear import make_solver
    from cellscape_plugins.solve._p1 import P1Pattern, assemble_p1

    clock = time.process_time()
    pattern = P1Pattern.from_tets(tets, len(points))
    stiffness, mass = assemble_p1(points, tets, pattern=pattern)
    timings["assembly_s"] = time.process_time() - clock
    clock = time.process_time()
    wave = np.pi / SIDE_UM
    shape = np.sin(wave * points).prod(axis=1)
    interior = np.all((points > 1e-9) & (points < SIDE_UM - 1e-9), axis=1)
    matrix = stiffness[interior][:, interior]
    rhs = (mass @ (3 * wave**2 * shape))[interior]
    timings["system_s"] = time.process_time() - clock
    clock = time.process_time()
    solver = make_solver(matrix, backend=backend, method="cg", preconditioner="amg", rtol=RTOL, symmetric=True)
    timings["setup_s"] = time.process_time() - clock
    clock = time.process_time()
    solution = solver.solve(rhs)
    timings["solve_s"] = time.process_time() - clock
    timings["linear_s"] = timings["setup_s"] + timings["solve_s"]
    timings["total_s"] = timings["assembly_s"] + timings["system_s"] + timings["linear_s"]
    timings["iterations"] = solver.stats.iterations
    timings["relative_residual"] = solver.stats.relative_residual
    timings["max_error"] = float(np.abs(solution - shape[interior]).max())
    return solution


def _reaction_diffusion(backend: str, points: np.ndarray, tets: np.ndarray, timings: dict) -> np.ndarray:
    """RD_STEPS backward-Euler steps of RD_MODEL by solve.reaction_diffusion; the linear layer's share timed apart."""
    import cellscape as cs
    from cellscape_plugins.solve import _linear, reaction_diffusion

    linear_seconds = [0.0]

    def timed(function):
        def call(*args, **kwargs):
            clock = time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                linear_seconds[0] += time.process_time() - clock
        return call

    # benchmark instrumentation only: solver construction (set-up), re-set-up and solves
    reaction_diffusion.make_solver = timed(_linear.make_solver)
    _linear.LinearSolver.solve = timed(_linear.LinearSolver.solve)
    _linear.LinearSolver.update = timed(_linear.LinearSolver.update)
    mesh = cs.TetMesh(points * 1000.0, tets, None, np.zeros((0, 3), np.int64), None)
    method = cs.method("solve.reaction_diffusion", model=RD_MODEL, scheme="backward_euler", t_end_s=RD_STEPS * DT_S,
                       dt_s=DT_S, n_outputs=2, linear_method="gmres", preconditioner="amg", linear_rtol=RTOL,
                       backend=backend)
    clock = time.process_time()
    out = method(mesh)
    timings["total_s"] = (time.process_time() - clock) / RD_STEPS
    timings["linear_s"] = linear_seconds[0] / RD_STEPS
    steps = out["steps"].columns
    timings["newton"] = int(steps["newton_iterations"].sum())
    timings["iterations"] = int(steps["linear_iterations"].sum())
    return np.concatenate([out["fields"].values[name][-1] for name in ("A", "B", "C")])


def child(job: dict) -> dict:
    points, tets = cube(job["cells"])
    timings: dict = {}
    # libraries load before the measurement: their import is not the method's time or memory
    import scipy.sparse  # noqa: F401

    import cellscape_plugins.solve._linear
    import cellscape_plugins.solve._p1

    if job["kind"] == "skfem":
        import skfem  # noqa: F401

        call = lambda: _assemble_skfem(points, tets, timings)
    elif job["kind"] == "assemble":
        call = lambda: _assemble_ours(points, tets, timings)
    else:
        import pyamg  # noqa: F401

        import cellscape_plugins.solve.reaction_diffusion  # noqa: F401

        if job["backend"] == "petsc":
            from cellscape_plugins.solve._linear import _petsc

            _petsc()
        work = _poisson if job["kind"] == "poisson" else _reaction_diffusion
        call = lambda: work(job["backend"], points, tets, timings)
    stats = harness.measure(call, job["folder"])
    return {**stats, **timings, "nodes": len(points), "tets": len(tets)}


# -------------------------------------------------------------------------------------------------- parent


def _slope(x: list[float], y: list[float]) -> float:
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def _petsc_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("petsc4py") is not None


def run() -> dict:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    backends = ("scipy", "petsc") if _petsc_available() else ("scipy",)
    rows, fits = [], {}
    with tempfile.TemporaryDirectory() as folder:

        def measure(job: dict) -> tuple[np.ndarray, dict]:
            print(f"  {job}", flush=True)
            return harness.run_child(__file__, job, folder)

        for problem, cells_list in (("poisson", POISSON_CELLS), ("reaction", REACTION_CELLS)):
            series: dict[str, list[float]] = {"unknowns": [], "assembly": []}
            for backend in backends:
                series[backend], series[f"{backend}_linear"] = [], []
            for cells in cells_list:
                ours_result, ours = measure({"kind": "assemble", "cells": cells})
                peer: dict = {}
                if problem == "poisson" and cells in SKFEM_CELLS:
                    peer_result, peer = measure({"kind": "skfem", "cells": cells})
                    scale = np.abs(peer_result).max()
                    assert np.abs(peer_result - ours_result).max() <= 1e-12 * scale, "assembly differs from skfem"
                steps = {backend: measure({"kind": problem, "backend": backend, "cells": cells}) for backend in backends}
                solutions = {backend: result for backend, (result, _) in steps.items()}
                timing = {backend: measured for backend, (_, measured) in steps.items()}
                agreement = ""
                if "petsc" in solutions:
                    scale = np.abs(solutions["scipy"]).max()
                    agreement = float(np.abs(solutions["scipy"] - solutions["petsc"]).max() / scale)
                unknowns = len(solutions["scipy"])

                def of(backend: str, key: str, timing: dict = timing) -> float | str:
                    return timing[backend][key] if backend in timing else ""

                rows.append({
                    "problem": "Poisson solve" if problem == "poisson" else f"3-species RD ({RD_STEPS} BE steps)",
                    "unknowns": unknowns, "tetrahedra": ours["tets"],
                    "assembly K+M [s]": ours["assembly_s"], "re-assembly [s]": ours["reassembly_s"],
                    "skfem asm [s]": peer.get("asm_s", ""),
                    "skfem Basis+asm [s]": peer["basis_s"] + peer["asm_s"] if peer else "",
                    "speed-up vs skfem asm": peer["asm_s"] / ours["assembly_s"] if peer else "",
                    "speed-up vs skfem Basis+asm": (peer["basis_s"] + peer["asm_s"]) / ours["assembly_s"] if peer else "",
                    "scipy linear [s]": of("scipy", "linear_s"), "scipy Krylov its": of("scipy", "iterations"),
                    "petsc linear [s]": of("petsc", "linear_s"), "petsc Krylov its": of("petsc", "iterations"),
                    "Newton its": timing["scipy"].get("newton", ""),
                    "scipy total [s]": of("scipy", "total_s"), "petsc total [s]": of("petsc", "total_s"),
                    "scipy/petsc rel. diff": agreement,
                    "peak MB assembly (ours)": ours["peak_mb"], "peak MB assembly (skfem)": peer.get("peak_mb", ""),
                    "peak MB scipy": of("scipy", "peak_mb"), "peak MB petsc": of("petsc", "peak_mb"),
                })
                series["unknowns"].append(unknowns)
                series["assembly"].append(ours["assembly_s"])
                for backend in backends:
                    series[backend].append(timing[backend]["total_s"])
                    series[f"{backend}_linear"].append(timing[backend]["linear_s"])
            large = np.asarray(series["unknowns"]) >= LARGE_UNKNOWNS
            fits[problem] = {key: _slope(series["unknowns"], values) for key, values in series.items()
                             if key != "unknowns"}
            fits[problem].update({f"{key}_large": _slope(np.asarray(series["unknowns"])[large], np.asarray(values)[large])
                                  for key, values in series.items() if key != "unknowns"})

    def exponents(problem: str) -> str:
        f = fits[problem]
        parts = [f"{backend} total {f[backend]:.2f} ({f[backend + '_large']:.2f}), linear {f[backend + '_linear']:.2f} "
                 f"({f[backend + '_linear_large']:.2f})" for backend in backends]
        return "; ".join([*parts, f"assembly {f['assembly']:.2f} ({f['assembly_large']:.2f})"])

    speedups = [r["speed-up vs skfem asm"] for r in rows if r["speed-up vs skfem asm"] != ""]
    full_speedups = [r["speed-up vs skfem Basis+asm"] for r in rows if r["speed-up vs skfem Basis+asm"] != ""]
    missing = "" if "petsc" in backends else " petsc4py was not installed: the PETSc columns are empty."
    return {
        "title": "Simulation: P1 assembly vs scikit-fem; Poisson and 3-species reaction–diffusion with SciPy and PETSc",
        "setup": (f"Cube of {SIDE_UM:g} µm cut into n³ hexahedra × 6 tetrahedra. Poisson: u = 0 on the boundary, "
                  f"interior nodes unknown, CG to relative residual {RTOL:g} with pyamg smoothed aggregation (SciPy) "
                  "or GAMG (PETSc), both with default settings through cellscape's linear-solver layer; total = "
                  "assembly + system + solver set-up + solve. RD: solve.reaction_diffusion, A + B ⇌ C (mass action, "
                  f"kf = 0.5 /(µM s), kb = 1 /s), D = (10, 5, 1) µm²/s, {RD_STEPS} backward-Euler steps of {DT_S} s, "
                  f"Newton + GMRES with multigrid to {RTOL:g}; total and linear are per step (the method's whole CPU "
                  "time / steps; linear = solver set-up + solves). Krylov and Newton iterations are totals. "
                  "Assembly: K and M from points and tetrahedra, sparsity pattern included (re-assembly: on a known "
                  "pattern); scikit-fem: asm(laplace) + asm(mass) on its Basis (Basis+asm includes building the "
                  f"Basis). Measured on a shared {os.cpu_count()}-core machine (other jobs running), CPU time of one "
                  "thread per process; every measurement in its own process."),
        "rows": rows,
        "notes": (f"Fitted scaling exponents of CPU time against unknowns, all sizes (and from ~1e5 up): "
                  f"Poisson: {exponents('poisson')}. RD per step: {exponents('reaction')}. "
                  f"Assembly speed-up vs scikit-fem asm on its prebuilt Basis: {min(speedups):.1f}–{max(speedups):.1f}x; "
                  f"vs Basis+asm: {min(full_speedups):.1f}–{max(full_speedups):.1f}x (K x and M x agree to 1e-12 "
                  "relative). Targets of issue #6: assembly ≥ 3x faster than scikit-fem; exponent of the total time "
                  "per step ≤ 1.2 with multigrid. At a fixed Δt the RD system moves from mass-dominated on coarse "
                  "meshes to diffusion-dominated on fine ones, so its Krylov iterations grow with the mesh even under "
                  "multigrid; Poisson has no such drift. Peak memory: the process's high-water mark minus its resident "
                  f"size just before the call (mesh arrays excluded).{missing}"),
    }


if __name__ == "__main__":
    harness.child_main(child)
