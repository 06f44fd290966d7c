"""Beyond one process: a 64-member sweep on 1 and 2 workers, chunked random-forest prediction on Dask, Poisson on MPI ranks.

Peers (same input, same run):
- the sweep on one worker (its own serial run), then a rerun of the same sweep (the cache);
- chunked random-forest prediction of a 512³ volume on one Dask worker vs two, and under a memory cap of
  half the volume;
- a Poisson solve of ≥ 1e6 unknowns (PETSc CG + GAMG) on one MPI rank vs two, with the solutions compared.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "spec" / "examples" / "demo.yaml"
# the size is 512³; CELLSCAPE_BENCH_FOREST_EDGE sets a smaller one when time is short (the table says which)
FOREST_EDGE = int(os.environ.get("CELLSCAPE_BENCH_FOREST_EDGE", "512"))
# CELLSCAPE_BENCH_SCALE_PARTS=forest (comma-separated: sweep, forest, mpi) measures only those parts; the other
# parts' rows are carried over from the committed results table, marked as such
PARTS = [p.strip() for p in os.environ.get("CELLSCAPE_BENCH_SCALE_PARTS", "sweep,forest,mpi").split(",") if p.strip()]
RESULTS = ROOT / "benchmarks" / "results" / "scale.md"
# CELLSCAPE_BENCH_FOREST_CASES=dask1,dask2 measures only those forest rows (threads, capped are the others); the
# rest of the forest rows are carried over from the committed table too
FOREST_CASES = os.environ.get("CELLSCAPE_BENCH_FOREST_CASES", "dask1,dask2,threads,capped").split(",")

SWEEP = """
sweep:
  mode: grid
  values:
    diffusion.diffusion_um2_per_s: [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0]
    diffusion.source_radius_nm: [100.0, 125.0, 150.0, 175.0, 200.0, 250.0, 300.0, 400.0]
"""


def _sweep_spec(folder: Path) -> Path:
    text = DEMO.read_text().replace("\nsteps:\n", SWEEP + "steps:\n", 1)
    # the sweep varies the solve only: its upstream steps (phantom → mesh) are shared by all 64 members
    path = folder / "demo_sweep.yaml"
    path.write_text(text)
    return path


def _timed_run(spec: Path, run_dir: Path, **options) -> tuple[float, int, int]:
    code = textwrap.dedent(f"""
        import json, time, cellscape as cs
        start = time.perf_counter()
        result = cs.run({str(spec)!r}, run_dir={str(run_dir)!r}, report=False, **{options!r})
        print(json.dumps([time.perf_counter() - start, len(result.computed), len(result.cached)]))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    seconds, computed, cached = json.loads(done.stdout.strip().splitlines()[-1])
    return seconds, computed, cached


def sweep_rows(folder: Path) -> list[dict]:
    folder.mkdir(parents=True, exist_ok=True)
    spec = _sweep_spec(folder)
    # the shared upstream part is computed once into a store every configuration starts from
    warm = folder / "warm"
    _timed_run(DEMO, warm)  # the demo's own steps: the members' shared upstream part
    dask_spec = spec.with_name("demo_sweep_dask.yaml")
    dask_spec.write_text(spec.read_text().replace("\nsteps:\n", "\nexecutor: {type: dask, workers: 2}\nsteps:\n", 1))
    rows = []
    serial = None
    for label, which, options in (("local, 1 worker", spec, {"workers": 1}), ("local, 2 threads", spec, {"workers": 2}),
                                  ("Dask LocalCluster, 2 workers", dask_spec, {})):
        run_dir = folder / label.replace(" ", "_").replace(",", "")
        shutil.copytree(warm / "store", run_dir / "store")
        seconds, computed, cached = _timed_run(which, run_dir, **options)
        serial = serial or seconds
        rows.append({"case": f"64-member sweep, {label}", "wall time [s]": seconds,
                     "speed-up vs 1 worker": serial / seconds, "detail": f"{computed} computed, {cached} cached"})
    seconds, computed, cached = _timed_run(spec, folder / "local_2_threads", workers=2)
    rows.append({"case": "the same sweep again (fully cached)", "wall time [s]": seconds,
                 "speed-up vs 1 worker": serial / seconds, "detail": f"{computed} computed, {cached} cached"})
    return rows


FOREST_SPEC = """\
version: 1
name: chunked-forest
{executor}
steps:
  - id: forest
    use: segment.random_forest
    inputs: {{volume: {{file: {volume}}}, model: {{file: {model}}}}}
    with: {{scales: [1.0, 1.6, 3.5], n_jobs: {n_jobs}, chunk_voxels: {inner}}}   # the model's scales set the halo (21 voxels)
    chunks: {chunks}
"""

CAPPED = textwrap.dedent("""
    import hashlib, json, resource, sys, time
    import numpy as np
    import cellscape as cs

    spec, small_spec, run_dir, cap = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    cs.run(small_spec, run_dir=run_dir + "-warm", quiet=True, report=False)   # imports, compiled kernels, pools
    data_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmData"))
    limit = data_kb * 1024 + cap                     # the cap on top of what the warmed-up process holds
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    start = time.perf_counter()
    try:
        result = cs.run(spec, run_dir=run_dir, quiet=True, report=False)
    except (MemoryError, cs.StepError) as exc:
        if "MemoryError" not in repr(exc) and not isinstance(exc, MemoryError):
            raise
        print(json.dumps({"completed": False}))
        sys.exit(0)
    seconds = time.perf_counter() - start
    resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))  # the check below reads the whole labels back
    labels = np.ascontiguousarray(result.artefact("forest", "labels").data)
    print(json.dumps({"completed": True, "seconds": seconds, "labels": hashlib.sha256(labels.data).hexdigest()}))
""")


def _forest_inputs(folder: Path, edge: int) -> tuple[Path, Path, Path, int]:
    """A forest trained by spec/examples/train_segmenter.yaml, and an edge³ tomogram tiled from its training volume."""
    import cellscape as cs

    trained = cs.run(ROOT / "spec" / "examples" / "train_segmenter.yaml", run_dir=folder / "train", quiet=True,
                     report=False)
    model = folder / "train" / "forest.npz"
    tomogram = trained.artefact("smoothed")
    reps = [-(-edge // n) for n in tomogram.shape]
    rng = np.random.default_rng(0)
    big = np.tile(np.asarray(tomogram.data, dtype=np.float32), reps)[:edge, :edge, :edge]
    big += rng.normal(0.0, 0.05 * float(big.std()), big.shape).astype(np.float32)  # no two tiles alike
    path = folder / f"tomogram{edge}.ome.zarr"
    cs.write(cs.Volume(big, tomogram.voxel_size_nm), path)
    small = folder / "tomogram_small.ome.zarr"
    cs.write(cs.Volume(big[:96, :96, :96].copy(), tomogram.voxel_size_nm), small)
    return path, small, model, big.nbytes


def forest_rows(folder: Path, edge: int = 512, chunks: int = 128, cap_bytes: int | None = None) -> list[dict]:
    folder.mkdir(parents=True, exist_ok=True)
    volume, small, model, nbytes = _forest_inputs(folder, edge)
    cases = (("dask1", "executor: {type: dask, workers: 1}", 1, "Dask LocalCluster, 1 worker"),
             ("dask2", "executor: {type: dask, workers: 2}", 1, "Dask LocalCluster, 2 workers"),
             ("threads", "executor: {type: local, workers: 1}", 2, "this process, the method's own 2 threads"))
    specs = {}
    for name, executor, n_jobs, _ in cases:
        specs[name] = folder / f"forest_{name}.yaml"
        specs[name].write_text(FOREST_SPEC.format(executor=executor, volume=volume, model=model, chunks=chunks,
                                                  n_jobs=n_jobs, inner=64))
    small_spec = folder / "forest_small.yaml"
    small_spec.write_text(FOREST_SPEC.format(executor="", volume=small, model=model, chunks=48, n_jobs=1, inner=32))
    rows, serial, counts = [], None, {}
    for name, _, _, label in cases:
        if name != "dask1" and name not in FOREST_CASES:  # the 1-worker run is every row's peer
            continue
        seconds, _, _ = _timed_run(specs[name], folder / f"run_{name}")
        step = json.loads((folder / f"run_{name}" / "provenance.json").read_text())["steps"][0]["time_s"]
        serial = serial or seconds
        counts[name] = _label_digest(specs[name], folder / f"run_{name}")
        print(f"  {name}: {seconds:.1f} s", file=sys.stderr, flush=True)
        same = "labels equal the 1-worker run's" if counts[name] == counts["dask1"] else "LABELS DIFFER from 1 worker"
        rows.append({"case": f"random-forest prediction, {edge}³ float32 in {chunks}³ chunks, {label}",
                     "wall time [s]": seconds, "speed-up vs 1 worker": serial / seconds,
                     "detail": (f"includes starting the cluster (the step itself {step:.1f} s); "
                                if name.startswith("dask") else f"the step itself {step:.1f} s; ") + same})
    if "capped" not in FOREST_CASES:
        return rows
    capped_spec = folder / "forest_capped.yaml"  # in this process, the method on one thread per chunk
    # what must fit under the cap, per chunk being computed (two threads): the (128 + 2 x 21)³ float32 block (20 MB),
    # the method's labels and confidence for it (25 MB) and its working set for one (48 + 2 x 21)³ inner block
    # (tracemalloc: 48 MiB in all for a 170³ block, 78 MiB with 64³ inner blocks), then the trimmed outputs (10 MB
    # per finished chunk until written); the result files are memory-mapped and do not count: about 200 MiB
    capped_spec.write_text(FOREST_SPEC.format(executor="", volume=volume, model=model, chunks=chunks, n_jobs=1,
                                              inner=48))
    script = folder / "capped.py"
    script.write_text(CAPPED)
    cap = nbytes // 2 if cap_bytes is None else cap_bytes
    done = subprocess.run([sys.executable, str(script), str(capped_spec), str(small_spec),
                           str(folder / "run_capped"), str(cap)], capture_output=True, text=True, check=False,
                          env={**os.environ, "MALLOC_ARENA_MAX": "2"})
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    capped = json.loads(done.stdout.strip().splitlines()[-1])
    same = capped.get("labels") == counts["dask1"]
    rows.append({"case": f"the same in this process (2 threads, the method on 1 each, 48³ inner blocks), data memory "
                         f"capped at {cap / 2**20:.0f} MiB ({cap / nbytes:.0%} of the volume)",
                 "wall time [s]": capped.get("seconds", float("nan")),
                 "speed-up vs 1 worker": serial / capped["seconds"] if capped["completed"] else float("nan"),
                 "detail": ("completed; " + ("labels equal the 1-worker run's" if same else "LABELS DIFFER"))
                 if capped["completed"] else "ran out of memory"})
    return rows


def _label_digest(spec: Path, run_dir: Path) -> str:
    """SHA-256 of a finished forest run's labels (its rerun is fully cached): equal digests, equal labels."""
    import hashlib

    import cellscape as cs

    labels = cs.run(spec, run_dir=run_dir, quiet=True, report=False).artefact("forest", "labels")
    return hashlib.sha256(np.ascontiguousarray(labels.data).data).hexdigest()


POISSON = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    from petsc4py import PETSc
    sys.path.insert(0, {tests!r})
    from meshes import cube_mesh
    from cellscape_plugins.solve._p1 import assemble_p1
    from cellscape_plugins.solve._linear import make_solver

    n = {cells}
    mesh = cube_mesh(n, 1000.0)                      # (n + 1)³ nodes, lengths in nm → µm below
    points = mesh.points / 1000.0
    stiffness, mass = assemble_p1(points, np.asarray(mesh.tetrahedra))
    matrix = (stiffness + mass).tocsr()             # -Δu + u = f, natural boundary: symmetric positive definite
    x, y, z = points.T
    rhs = mass @ (np.cos(np.pi * x) * np.cos(np.pi * y) * np.cos(np.pi * z))
    PETSc.COMM_WORLD.barrier()
    start = time.perf_counter()
    solver = make_solver(matrix, backend="petsc", method="cg", preconditioner="amg", rtol=1e-8)
    u = solver.solve(rhs)
    seconds = time.perf_counter() - start
    if PETSc.COMM_WORLD.getRank() == 0:
        np.save({out!r}, u)
        print(json.dumps({{"seconds": seconds, "unknowns": int(matrix.shape[0]), "iterations": solver.stats.iterations,
                          "ranks": PETSc.COMM_WORLD.getSize()}}))
""")


def mpi_rows(folder: Path, cells: int = 99) -> list[dict]:
    mpiexec = shutil.which("mpiexec")
    if mpiexec is None:
        return [{"case": "Poisson on MPI ranks", "wall time [s]": float("nan"), "speed-up vs 1 worker": float("nan"),
                 "detail": "not measured: no mpiexec (make test installs MPICH)"}]
    rows, reference = [], None
    for ranks in (1, 2):
        out = folder / f"u{ranks}.npy"
        script = folder / f"poisson{ranks}.py"
        script.write_text(POISSON.format(tests=str(ROOT / "tests"), cells=cells, out=str(out)))
        done = subprocess.run([mpiexec, "-n", str(ranks), sys.executable, str(script)], capture_output=True, text=True,
                              check=False, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-3000:])
        measured = json.loads(done.stdout.strip().splitlines()[-1])
        u = np.load(out)
        reference = u if reference is None else reference
        rows.append({"case": f"Poisson, {measured['unknowns']:.3g} unknowns, CG + GAMG, {ranks} MPI rank(s)",
                     "wall time [s]": measured["seconds"],
                     "speed-up vs 1 worker": rows[0]["wall time [s]"] / measured["seconds"] if rows else 1.0,
                     "detail": f"{measured['iterations']} iterations; max |u - u(1 rank)| / max |u| = "
                               f"{float(np.abs(u - reference).max() / np.abs(reference).max()):.1e}"})
    return rows


def _part_of(case: str) -> str:
    return "sweep" if "sweep" in case else "mpi" if case.startswith("Poisson") else "forest"


def _committed_rows(parts: set[str]) -> list[dict]:
    """The committed table's rows of ``parts`` (a run measuring only some parts keeps the others' last figures)."""
    if not RESULTS.exists():
        return []
    rows = []
    for line in RESULTS.read_text().splitlines():
        cells = line.strip().strip("|").split("|")
        cells = [c.strip() for c in cells[:3]] + ["|".join(cells[3:]).strip()]  # a detail may hold "|u|"
        if not line.startswith("| ") or line.count("|") < 5 or cells[0] == "case" or _part_of(cells[0]) not in parts:
            continue
        detail = cells[3]
        if "carried over" not in detail:  # a row carried over twice says so once
            detail = ((detail + "; " if detail else "")
                      + "carried over from the previous run (speed-up against its own 1-worker row)")
        rows.append({"case": cells[0], "wall time [s]": float(cells[1]), "speed-up vs 1 worker": float(cells[2]),
                     "detail": detail})
    return rows


def run() -> dict:
    rows: list[dict] = []
    load = os.getloadavg()[0]
    measured = {"sweep": lambda folder: sweep_rows(folder / "sweep"),
                "forest": lambda folder: forest_rows(folder / "forest", edge=FOREST_EDGE),
                "mpi": lambda folder: mpi_rows(folder)}
    carried = _committed_rows(set(measured) - set(PARTS))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        for name, part in measured.items():
            if name not in PARTS:
                rows += [row for row in carried if _part_of(row["case"]) == name]
                continue
            try:
                new = part(folder)
                cases = {row["case"] for row in new}
                rows += new + [row for row in _committed_rows({name}) if row["case"] not in cases]
            except Exception as exc:  # one part failing must not lose the others' measurements
                rows.append({"case": "a part of this benchmark failed", "wall time [s]": float("nan"),
                             "speed-up vs 1 worker": float("nan"), "detail": f"{type(exc).__name__}: {exc}"[:300]})
            print(json.dumps(rows, default=str), file=sys.stderr, flush=True)
        total = time.perf_counter() - start
    load = max(load, os.getloadavg()[0])
    return {
        "title": "Scale-out: sweeps on local and Dask workers, PETSc on MPI ranks",
        "setup": (f"Sweep: the demo pipeline ({DEMO.name}) with an 8 × 8 grid over the diffusion coefficient and the "
                  "release radius; its shared upstream steps are computed once beforehand, so the rows compare the 64 "
                  "solves and the scheduling. Random forest: the forest of spec/examples/train_segmenter.yaml applied to a "
                  "tomogram tiled from its training volume (with fresh noise), read from OME-Zarr, the chunks' halo "
                  "set by the feature bank; the capped run limits the data segment (RLIMIT_DATA) beyond what the "
                  "warmed-up process holds. Poisson: P1 on a structured cube tet mesh, PETSc built with MPICH. "
                  f"Measured parts: {', '.join(PARTS)}, in {total:.0f} s on {os.cpu_count()} cores shared with other "
                  f"work (1-minute load average up to {load:.1f})."),
        "rows": rows,
        "notes": ("Targets: a speed-up ≥ 1.7× on 2 cores where the work parallelizes, a cached rerun that computes "
                  "nothing, MPI results equal to the serial run to the solver tolerance (rtol 1e-8)."),
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=1, default=str))
