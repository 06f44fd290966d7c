"""The PETSc backend on 2 MPI ranks (``mpiexec -n 2``) gives the serial solution to the solver tolerance.

Each rank builds the same backward-Euler matrices as test_linear.py (P1 on a
cube of 1331 nodes, symmetric and non-symmetric); the solver distributes the
rows over the ranks and returns the whole solution on every rank. Rank 0
saves what it got, every rank saves which rows it owned, and this process
compares with SciPy's direct solve.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import needed_modules, needed_tool
from scipy.sparse import linalg

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

TESTS = Path(__file__).resolve().parents[2]
SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    sys.path[:0] = [{here!r}, {tests!r}]
    from petsc4py import PETSc
    from test_linear import MATRICES, RHS
    from cellscape_plugins.solve._linear import make_solver

    rank, size = PETSc.COMM_WORLD.getRank(), PETSc.COMM_WORLD.getSize()
    results = {{}}
    for name, kind, options in (("cg+gamg", "symmetric", dict(method="cg", preconditioner="amg")),
                                ("cg+bjacobi-icc", "symmetric", dict(method="cg", preconditioner="ilu")),
                                ("direct", "symmetric", dict(method="direct")),
                                ("gmres+bjacobi-ilu", "nonsymmetric", dict(method="gmres", preconditioner="ilu")),
                                ("options", "nonsymmetric", dict(petsc_options="-ksp_type bcgs -pc_type jacobi"))):
        solver = make_solver(MATRICES[kind], backend="petsc", rtol=1e-11, **options)
        x = solver.solve(RHS)
        again = solver.solve(2 * RHS)            # the set-up solver is reused
        solver.update(MATRICES[kind] * 3.0)      # a new matrix of the same pattern, re-distributed
        third = solver.solve(RHS)
        np.save({out!r} + f"/{{name}}-{{rank}}.npy", np.stack([x, again, third]))
        results[name] = dict(kind=kind, ranks=solver.ranks, owned=solver.matrix.shape[0] if size == 1 else
                             solver._rows[1] - solver._rows[0], iterations=solver.stats.iterations,
                             pc=solver.ksp.getPC().getType())
    with open({out!r} + f"/report-{{rank}}.json", "w") as f:  # one file per rank: their stdout lines interleave
        json.dump(dict(rank=rank, size=size, results=results), f)
""")


def _run(tmp_path: Path, ranks: int) -> list[dict]:
    mpiexec = needed_tool("mpiexec")
    needed_modules("petsc4py")
    script = tmp_path / "solve.py"
    script.write_text(SCRIPT.format(here=str(Path(__file__).parent), tests=str(TESTS), out=str(tmp_path)))
    done = subprocess.run([mpiexec, "-n", str(ranks), sys.executable, str(script)], capture_output=True, text=True,
                          timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads((tmp_path / f"report-{rank}.json").read_text()) for rank in range(ranks)]


def test_two_ranks_solve_like_one(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from test_linear import MATRICES, RHS

    reports = _run(tmp_path, 2)
    assert [r["size"] for r in reports] == [2, 2]
    for name, info in reports[0]["results"].items():
        matrix = MATRICES[info["kind"]]
        n = matrix.shape[0]
        assert info["ranks"] == 2
        # the rows are split between the ranks, about half each
        owned = [r["results"][name]["owned"] for r in reports]
        assert sum(owned) == n and min(owned) >= n // 2 - 1
        reference = linalg.spsolve(matrix.tocsc(), RHS)
        for rank in (0, 1):  # every rank holds the whole solution
            x, again, third = np.load(tmp_path / f"{name}-{rank}.npy")
            assert np.linalg.norm(x - reference) <= 1e-8 * np.linalg.norm(reference), (name, rank)
            assert np.linalg.norm(again - 2 * reference) <= 2e-8 * np.linalg.norm(reference), (name, rank)
            assert np.linalg.norm(third - reference / 3) <= 1e-8 * np.linalg.norm(reference), (name, rank)
    pcs = {name: info["pc"] for name, info in reports[0]["results"].items()}
    assert pcs["cg+gamg"] == "gamg" and pcs["cg+bjacobi-icc"] == "bjacobi" and pcs["direct"] == "redundant"
    assert pcs["options"] == "jacobi"


PIPELINE = """\
version: 1
name: mpi-diffusion
steps:
  - id: cell
    use: generate.phantom_cell
    with: {shape: 32, voxel_size_nm: 30.0, n_mitochondria: 0, seed: 2}
  - id: surface
    use: mesh.marching_cubes
    inputs: {labels: cell.labels}
    with: {labels: [1], sigma_voxels: 1.0}
  - id: volume_mesh
    use: mesh.tetrahedralize
    inputs: {surface: surface}
  - id: diffusion
    use: solve.diffusion
    inputs: {mesh: volume_mesh}
    with: {diffusion_um2_per_s: 0.5, t_end_s: 0.2, dt_s: 0.01, n_outputs: 5, initial: ball, initial_uM: 10.0,
           source_radius_nm: 150.0, backend: petsc, petsc_options: "-ksp_type cg -pc_type gamg -ksp_rtol 1e-12"}
    save: diffusion.npz
"""


def test_a_spec_under_mpiexec_solves_on_both_ranks_and_matches_the_serial_run(tmp_path: Path) -> None:
    import cellscape as cs

    mpiexec = needed_tool("mpiexec")
    needed_modules("petsc4py", "mpi4py")
    spec = tmp_path / "spec.yaml"
    spec.write_text(PIPELINE)
    serial = cs.run(spec, run_dir=tmp_path / "serial", quiet=True, report=False)
    done = subprocess.run([mpiexec, "-n", "2", sys.executable, "-m", "cellscape.cli", "run", str(spec), "--run-dir",
                           str(tmp_path / "mpi"), "--quiet", "--no-report"], capture_output=True, text=True,
                          timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    provenance = json.loads((tmp_path / "mpi" / "provenance.json").read_text())
    ranks = {record["id"]: record.get("ranks") for record in provenance["steps"]}
    assert ranks == {"cell": 1, "surface": 1, "volume_mesh": 1, "diffusion": 2}
    # the upstream steps ran once, on rank 0, and produced the serial run's artefacts exactly
    hashes = {r["id"]: r["outputs"] for r in json.loads((tmp_path / "serial" / "provenance.json").read_text())["steps"]}
    assert all(hashes[r["id"]] == r["outputs"] for r in provenance["steps"] if r["id"] != "diffusion")
    a = serial.artefact("diffusion")
    b = cs.read(tmp_path / "mpi" / "diffusion.npz")
    for name, values in a.values.items():
        scale = np.abs(values).max()
        assert np.abs(np.asarray(b.values[name]) - values).max() <= 1e-8 * scale
