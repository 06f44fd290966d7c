"""Spherical harmonics: reconstruction error vs degree and fit time, cellscape `generate.spharm` vs aicsshparam.

Objects (10 nm voxels, each in its own crop with a 4-voxel margin): two ellipsoids (one turned off the grid
axes), a peanut (a Cassini oval of revolution, waist 0.46 of its half-length), a cube turned off the grid axes
and the mitochondria of a 128³ `generate.phantom_cell`. Both methods get the same binary crop at degrees
2, 4, 8, 16 and 32:

- cellscape: the crop as `cs.Labels` → the object's surface (σ = 0.5 voxel smoothing, flying-edges marching
  cubes) → centroid and principal axes → rays along a Gauss–Legendre grid cast onto the surface → r²-weighted
  least squares (quadrature projection + conjugate gradients) onto real spherical harmonics; rebuilt on a level-5
  icosphere (10 242 vertices).
- aicsshparam 0.1.x: `shparam.get_shcoeffs(crop, L, alignment_2d=False)` (its defaults otherwise: largest
  component, no smoothing, VTK contour of the voxels, nearest-vertex radius on a 128 × 256 grid, pyshtools
  Driscoll–Healy expansion); rebuilt with `shtools.get_reconstruction_from_coeffs` from the coefficients padded
  with zeros to degree 64 (a 130 × 260 grid mesh at every degree; unpadded, its grid would have only 2L + 2
  rows) and moved back to its centroid. `alignment_2d=False` keeps both reconstructions in the crop's
  frame; its 2D alignment would rotate the image before fitting.

Error: symmetric Hausdorff and area-weighted RMS surface distance (exact point-to-triangle distances, in nm)
between each reconstruction and the true surface: the analytic surface for the analytic shapes (a 40 962-vertex
mesh of it); for the mitochondria, which the phantom draws as the voxels within a radius of a segment without
exposing it, the capsule fitted to the voxels' boundary by least squares. Errors against the voxels' own
staircase surface (unsmoothed marching cubes of the mask, what aicsshparam fits) are reported too.
Time: CPU seconds per shape from the crop to the coefficients, the best of 5 runs, single-threaded (OMP,
OpenBLAS, VTK sequential), each method in its own process with its libraries loaded and compiled before timing.

aicsshparam comes with the `bench` extra (`make bench`, or `pip install -e ".[bench]"`). Without it the
benchmark still runs cellscape's side, marks every aicsshparam column "not installed" and says in its notes
that the comparison targets were not measured.

Generative fidelity of the shape space: a known parametric population of 216 ellipsoids (lognormal semi-axes,
medians and log-standard deviations in POPULATION, random orientations, 10 nm voxels, one label each) trains
`generate.spharm` (degree 8, defaults otherwise); 200 samples are compared with the training shapes (two-sample
Kolmogorov–Smirnov statistic and p-value, 1-Wasserstein distance over the training standard deviation, for
volume, area, sphericity and the three semi-axes), and the population's parameters are estimated back from
2000 samples of the model (median = exp(mean log), log-sd = sd of log) and compared with the true ones and with
the training set's own estimates (what a perfect model of these 216 shapes would give).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import _harness as harness

VOXEL_NM = 10.0
DEGREES = (2, 4, 8, 16, 32)
MARGIN = 4
REPEATS = 5

#: the known population of the fidelity experiment: semi-axis medians (nm) and log-standard deviations
POPULATION = {"median_nm": (160.0, 105.0, 65.0), "log_sd": (0.10, 0.10, 0.10)}
POPULATION_GRID = 6  # objects per side: 216 training shapes
POPULATION_CELL = 44  # voxels per object's cell
FIDELITY_SAMPLES = 200
RECOVERY_SAMPLES = 2000
FIDELITY_DEGREE = 8


def aicsshparam_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("aicsshparam") is not None


# ----------------------------------------------------------------------------------------------- objects

def rotation(angles_deg: tuple[float, float, float]) -> np.ndarray:
    """Rotation matrix about x, then y, then z (degrees)."""
    ax, ay, az = np.radians(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def ellipsoid_radius(semi: tuple[float, float, float], turn: np.ndarray):
    semi_axes = np.asarray(semi, float)
    return lambda d: 1.0 / np.sqrt((((d @ turn) / semi_axes) ** 2).sum(axis=1))


def peanut_radius(a: float, b: float, turn: np.ndarray):
    """Cassini oval of revolution about the body x axis: r² = a² cos 2ψ + sqrt(b⁴ - a⁴ sin² 2ψ)."""
    def radius(d: np.ndarray) -> np.ndarray:
        cos_psi = np.clip((d @ turn)[:, 0], -1.0, 1.0)
        cos2 = 2 * cos_psi**2 - 1
        sin2_sq = 1 - cos2**2
        return np.sqrt(a**2 * cos2 + np.sqrt(b**4 - a**4 * sin2_sq))
    return radius


def cube_radius(half: float, turn: np.ndarray):
    return lambda d: half / np.abs(d @ turn).max(axis=1)


def analytic_objects() -> list[dict]:
    """Star-shaped analytic solids: name, radius function of body-frame directions, bounding radius."""
    return [
        {"name": "ellipsoid 30×20×12 (axis-aligned)", "radius": ellipsoid_radius((30, 20, 12), np.eye(3)), "extent": 30},
        {"name": "ellipsoid 26×18×14 (turned)", "radius": ellipsoid_radius((26, 18, 14), rotation((25, 35, 50))),
         "extent": 26},
        {"name": "peanut (Cassini, half-length 24)", "radius": peanut_radius(16.0, 17.6, rotation((10, 20, 30))),
         "extent": 24},
        {"name": "cube 28 (turned)", "radius": cube_radius(14.0, rotation((20, 10, 35))), "extent": 14 * np.sqrt(3)},
    ]


def voxelize(radius, extent: float, offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Binary crop of a star-shaped solid centred at ``offset`` (voxels) past the crop's centre; returns (mask, centre)."""
    n = int(np.ceil(2 * extent)) + 2 * MARGIN + 2
    centre = np.full(3, (n - 1) / 2) + offset  # (x, y, z) voxel coordinates
    z, y, x = np.mgrid[:n, :n, :n].astype(float)
    rel = np.stack([x - centre[0], y - centre[1], z - centre[2]], axis=-1).reshape(-1, 3)
    dist = np.linalg.norm(rel, axis=1)
    direction = rel / np.maximum(dist, 1e-12)[:, None]
    inside = dist <= radius(direction)
    return inside.reshape(n, n, n).astype(np.uint8), centre


def reference_mesh(radius, centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from cellscape_plugins.generate._harmonics import icosphere

    directions, triangles = icosphere(6)
    return (centre + directions * radius(directions)[:, None]) * VOXEL_NM, np.array(triangles)


def boundary_midpoints(mask: np.ndarray) -> np.ndarray:
    """Midpoints between face-adjacent inside and outside voxels, (x, y, z) voxel coordinates."""
    points = []
    for axis in range(3):
        index = np.argwhere(np.diff(mask.astype(np.int8), axis=axis) != 0).astype(float)
        index[:, axis] += 0.5
        points.append(index[:, ::-1])
    return np.concatenate(points)


def capsule_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip((points - a) @ ab / (ab @ ab), 0.0, 1.0)
    return np.linalg.norm(points - a - t[:, None] * ab, axis=1)


def fitted_capsule(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """The capsule (segment a-b, radius R, voxels) the mask was drawn from, by least squares on its boundary.

    Returns a, b, R and the RMS distance (voxels) of the boundary midpoints from the fitted surface.
    """
    from scipy import optimize

    inside = np.argwhere(mask)[:, ::-1].astype(float)
    midpoints = boundary_midpoints(mask)
    centre = inside.mean(axis=0)
    variances, vectors = np.linalg.eigh(np.cov(inside.T))
    radius = 2.0 * np.sqrt(variances[0])  # a cylinder of radius R has R²/4 across its axis
    half = float(((inside - centre) @ vectors[:, -1]).max()) - radius
    start = np.concatenate([centre - half * vectors[:, -1], centre + half * vectors[:, -1], [radius]])
    fit = optimize.least_squares(lambda p: capsule_distance(midpoints, p[:3], p[3:6]) - p[6], start)
    return fit.x[:3], fit.x[3:6], float(fit.x[6]), float(np.sqrt(np.mean(fit.fun**2)))


def capsule_mesh(a: np.ndarray, b: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """A 40 962-vertex mesh of the capsule, in nm: rays from its centre, each crossing found by bisection."""
    from cellscape_plugins.generate._harmonics import icosphere

    directions, triangles = icosphere(6)
    centre = 0.5 * (a + b)
    lo, hi = np.zeros(len(directions)), np.full(len(directions), np.linalg.norm(b - a) / 2 + radius + 1.0)
    for _ in range(60):
        middle = 0.5 * (lo + hi)
        inside = capsule_distance(centre + middle[:, None] * directions, a, b) <= radius
        lo, hi = np.where(inside, middle, lo), np.where(inside, hi, middle)
    return (centre + lo[:, None] * directions) * VOXEL_NM, np.array(triangles)


def mitochondria() -> list[dict]:
    """The mitochondria of a phantom cell, each in a crop.

    The phantom draws each as the voxels within a radius of a segment (a capsule) but does not expose the
    capsule, so the reference is the capsule fitted to the voxels' boundary; the voxels' own surface
    (unsmoothed marching cubes of the mask) is kept as a second reference.
    """
    from scipy import ndimage
    from skimage import measure

    import cellscape as cs

    labels = cs.method("generate.phantom_cell", shape=128, voxel_size_nm=VOXEL_NM, n_mitochondria=6, seed=3)()["labels"]
    pieces, _ = ndimage.label(labels.data == 3, np.ones((3, 3, 3)))
    objects = []
    for index, box in enumerate(ndimage.find_objects(pieces), start=1):
        crop = np.pad((pieces[box] == index).astype(np.uint8), MARGIN)
        a, b, radius, residual = fitted_capsule(crop)
        verts, faces, _, _ = measure.marching_cubes(crop.astype(np.float32), 0.5)
        objects.append({"name": f"mitochondrion {index}", "mask": crop, "reference": capsule_mesh(a, b, radius),
                        "capsule": (float(np.linalg.norm(b - a)), radius, residual),
                        "voxel_surface": (verts[:, ::-1] * VOXEL_NM, faces[:, ::-1].astype(np.int64))})
    return objects


# ----------------------------------------------------------------------------------------------- the fits

def fit_ours(mask: np.ndarray, degree: int) -> Any:
    import warnings

    import cellscape as cs
    from cellscape_plugins.generate import _shapes, spharm

    labels = cs.Labels(mask, {}, VOXEL_NM)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the degree-vs-resolution warning at 32 on small mitochondria
        fit = spharm.fit_shape(_shapes.shapes_from_labels(labels, who="bench")[0], degree)
    return fit


def mesh_ours(fit: Any) -> tuple[np.ndarray, np.ndarray]:
    from cellscape_plugins.generate import spharm

    vertices, triangles = spharm.reconstruct(fit.coefficients, 5)
    return fit.normalization.invert(vertices), triangles


def fit_aics(mask: np.ndarray, degree: int) -> Any:
    import warnings

    from aicsshparam import shparam

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (coeffs, _), (_, _, _, transform) = shparam.get_shcoeffs(mask, degree, alignment_2d=False)
    return coeffs, transform


def mesh_aics(fit: Any) -> tuple[np.ndarray, np.ndarray]:
    from aicsshparam import shtools
    from vtk.util import numpy_support

    coeffs, transform = fit
    degree = round(np.sqrt(len(coeffs) / 2)) - 1
    # its reconstruction grid is as fine as the coefficient matrix is large (2L + 2 rows for degree L): padded
    # with zeros to degree 64, every degree is rebuilt on the same 130 × 260 grid, as ours on one icosphere
    matrix = np.zeros((2, 65, 65))
    matrix[:, : degree + 1, : degree + 1] = np.array(list(coeffs.values())).reshape(2, degree + 1, degree + 1)
    mesh, _ = shtools.get_reconstruction_from_coeffs(matrix)
    vertices = numpy_support.vtk_to_numpy(mesh.GetPoints().GetData()).astype(float) + np.asarray(transform[:3])
    polys = numpy_support.vtk_to_numpy(mesh.GetPolys().GetData()).reshape(-1, 4)[:, 1:]
    return vertices * VOXEL_NM, polys.astype(np.int64)


FITTERS = {"cellscape": (fit_ours, mesh_ours), "aicsshparam": (fit_aics, mesh_aics)}


def child(job: dict) -> dict:
    import time

    folder = Path(job["folder"])
    fit, mesh = FITTERS[job["name"]]
    masks = np.load(folder / "masks.npz")
    names = json.loads((folder / "names.json").read_text())
    fit(masks["object0"], DEGREES[0])  # libraries loaded, kernels compiled
    seconds, meshes = {}, {}
    for index in range(len(names)):
        for degree in DEGREES:
            times = []
            for _ in range(REPEATS):
                start = time.process_time()
                result = fit(masks[f"object{index}"], degree)
                times.append(time.process_time() - start)
            seconds[f"{index}/{degree}"] = min(times)
            vertices, triangles = mesh(result)
            meshes[f"{index}/{degree}/v"], meshes[f"{index}/{degree}/t"] = vertices, triangles
    np.savez(folder / f"meshes_{job['name']}.npz", **meshes)
    np.save(folder / "result.npy", np.zeros(1))
    return {"seconds": seconds}


# ----------------------------------------------------------------------------------------- generative fidelity

def population_labels(seed: int = 0) -> tuple[Any, np.ndarray]:
    """The known population: one randomly turned ellipsoid per cell of a grid, lognormal semi-axes.

    Returns the Labels (10 nm voxels, values 1..216) and the drawn semi-axes (n, 3) in nm.
    """
    import cellscape as cs

    rng = np.random.default_rng(seed)
    n_objects = POPULATION_GRID**3
    semi = np.exp(rng.normal(np.log(POPULATION["median_nm"]), POPULATION["log_sd"], (n_objects, 3)))
    size = POPULATION_GRID * POPULATION_CELL
    data = np.zeros((size,) * 3, np.uint8)
    local = np.mgrid[:POPULATION_CELL, :POPULATION_CELL, :POPULATION_CELL].reshape(3, -1).T[:, ::-1].astype(float)
    for index in range(n_objects):
        q, r = np.linalg.qr(rng.standard_normal((3, 3)))
        turn = q * np.sign(np.diag(r))
        centre = (POPULATION_CELL - 1) / 2 + rng.uniform(-0.5, 0.5, 3)
        body = (local - centre) @ turn / (semi[index] / VOXEL_NM)  # (x, y, z) in the body frame, in semi-axes
        inside = (body**2).sum(axis=1) <= 1.0
        cz, cy, cx = np.unravel_index(index, (POPULATION_GRID,) * 3)
        cell = data[cz * POPULATION_CELL:(cz + 1) * POPULATION_CELL, cy * POPULATION_CELL:(cy + 1) * POPULATION_CELL,
                    cx * POPULATION_CELL:(cx + 1) * POPULATION_CELL]
        cell[inside.reshape((POPULATION_CELL,) * 3)] = index + 1
    return cs.Labels(data, {}, VOXEL_NM), semi


def mesh_descriptors(meshes: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """Volume (nm³), area (nm²), sphericity and equivalent-ellipsoid semi-axes (nm, longest first) of each mesh."""
    from cellscape_plugins._trimesh import triangle_areas
    from cellscape_plugins.generate._shapes import solid_moments

    out: dict[str, list[float]] = {k: [] for k in ("volume", "area", "sphericity", "semi_axis_1", "semi_axis_2",
                                                   "semi_axis_3")}
    for vertices, triangles in meshes:
        volume, _, covariance = solid_moments(vertices, triangles)
        area = float(triangle_areas(vertices, triangles).sum())
        semi = np.sqrt(5.0 * np.clip(np.linalg.eigvalsh(covariance)[::-1], 0.0, None))
        for key, value in (("volume", volume), ("area", area), ("sphericity", np.pi ** (1 / 3) * (6 * volume) ** (2 / 3)
                                                                 / area), ("semi_axis_1", semi[0]),
                           ("semi_axis_2", semi[1]), ("semi_axis_3", semi[2])):
            out[key].append(float(value))
    return {k: np.asarray(v) for k, v in out.items()}


def ellipsoid_area(a: float, b: float, c: float) -> float:
    """Exact area of an ellipsoid with semi-axes a ≥ b ≥ c (Legendre's incomplete elliptic integrals)."""
    from scipy import special

    if a - c < 1e-12 * a:
        return 4 * np.pi * a * a
    phi = np.arccos(c / a)
    m = a**2 * (b**2 - c**2) / (b**2 * (a**2 - c**2))
    return float(2 * np.pi * c**2 + 2 * np.pi * a * b / np.sin(phi) * (
        special.ellipeinc(phi, m) * np.sin(phi) ** 2 + special.ellipkinc(phi, m) * np.cos(phi) ** 2))


def fidelity() -> tuple[list[str], list[str], float]:
    """Train generate.spharm on the known population; compare samples; recover the parameters.

    Returns the distribution-comparison table, the parameter-recovery table (markdown lines) and the worst
    relative error of a recovered parameter against the truth.
    """
    import time
    import warnings

    from scipy import stats

    import cellscape as cs
    from cellscape_plugins.generate import _shapes, spharm

    labels, semi = population_labels()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = cs.method("generate.spharm", degree=FIDELITY_DEGREE, n_samples=FIDELITY_SAMPLES, seed=1)(labels)
    seconds = time.perf_counter() - start
    training_shapes = _shapes.shapes_from_labels(labels, who="bench")
    train = mesh_descriptors([(s.vertices, s.triangles) for s in training_shapes])
    sampled = mesh_descriptors([(v, t) for v, t in (
        (out["samples"].vertices, out["samples"].triangles[out["samples"].markers == m])
        for m in np.unique(out["samples"].markers))])
    drawn = np.sort(semi, axis=1)[:, ::-1]
    exact = {"volume": 4 / 3 * np.pi * drawn.prod(axis=1),
             "area": np.array([ellipsoid_area(*abc) for abc in drawn])}
    exact["sphericity"] = np.pi ** (1 / 3) * (6 * exact["volume"]) ** (2 / 3) / exact["area"]
    exact.update({f"semi_axis_{i + 1}": drawn[:, i] for i in range(3)})
    table = [f"Fidelity: {len(training_shapes)} training ellipsoids vs {FIDELITY_SAMPLES} samples of "
             f"generate.spharm (degree {FIDELITY_DEGREE}; fit + errors table + sampling {seconds:.1f} s wall). "
             "'training' = the surfaces the model was fitted to (σ = 0.5 voxel flying-edges surfaces of the voxels), "
             "'exact' = the analytic ellipsoids the voxels were drawn from:", "",
             "| descriptor | exact mean | training mean | samples mean | KS D vs training | KS p | Wasserstein / sd "
             "vs training | KS D vs exact | KS p |", "|---|---|---|---|---|---|---|---|---|"]
    for key in train:
        ks = stats.ks_2samp(train[key], sampled[key])
        ks_exact = stats.ks_2samp(exact[key], sampled[key])
        w = stats.wasserstein_distance(train[key], sampled[key]) / float(np.std(train[key], ddof=1))
        table.append(f"| {key} | {exact[key].mean():.4g} | {train[key].mean():.4g} | {sampled[key].mean():.4g} "
                     f"| {ks.statistic:.3f} | {ks.pvalue:.3g} | {w:.3f} | {ks_exact.statistic:.3f} | {ks_exact.pvalue:.3g} |")
    # the parameters back from many samples of the stored model
    space = spharm.shape_space_from_model(out["model"])
    many = mesh_descriptors([spharm.reconstruct(c, 3) for c in space.sample(RECOVERY_SAMPLES, seed=2)])
    recovery = [f"Parameter recovery from {RECOVERY_SAMPLES} samples of the model (the training column is the same "
                "estimate on the training shapes' surfaces; 'drawn' on the semi-axes the population was drawn with):",
                "", "| parameter | true | drawn (216) | training surfaces | model samples | error vs true |",
                "|---|---|---|---|---|---|"]
    worst = 0.0
    for axis in range(3):
        key = f"semi_axis_{axis + 1}"
        for name, truth, estimate in (("median", POPULATION["median_nm"][axis], lambda x: float(np.exp(np.log(x).mean()))),
                                      ("log-sd", POPULATION["log_sd"][axis], lambda x: float(np.log(x).std(ddof=1)))):
            value = estimate(many[key])
            error = value / truth - 1.0
            worst = max(worst, abs(error))
            recovery.append(f"| {key} {name} | {truth:.4g} | {estimate(drawn[:, axis]):.4g} | {estimate(train[key]):.4g} "
                            f"| {value:.4g} | {100 * error:+.1f} % |")
    return table, recovery, worst


# ----------------------------------------------------------------------------------------------- the table

def run() -> dict:
    from cellscape_plugins.generate._descriptors import surface_distance

    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = "1"
    os.environ["VTK_SMP_BACKEND_IN_USE"] = "Sequential"
    peer = aicsshparam_available()
    methods = list(FITTERS) if peer else ["cellscape"]
    rng = np.random.default_rng(0)
    objects = []
    for spec in analytic_objects():
        mask, centre = voxelize(spec["radius"], spec["extent"], rng.uniform(-0.5, 0.5, 3))
        objects.append({"name": spec["name"], "mask": mask, "reference": reference_mesh(spec["radius"], centre)})
    objects += mitochondria()
    names = [o["name"] for o in objects]
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as folder:
        np.savez(Path(folder) / "masks.npz", **{f"object{i}": o["mask"] for i, o in enumerate(objects)})
        (Path(folder) / "names.json").write_text(json.dumps(names))
        for method in methods:
            _, stats = harness.run_child(__file__, {"name": method}, folder)
            meshes = np.load(Path(folder) / f"meshes_{method}.npz")
            results[method] = {"seconds": stats["seconds"], "meshes": {k: meshes[k] for k in meshes.files}}

    missing = "not installed"
    rows, per_object, staircase = [], [], []
    for degree in DEGREES:
        summary: dict[str, list[float]] = {f"{m} {q}": [] for m in methods for q in ("hausdorff", "rms", "seconds")}
        voxel_rms: dict[str, list[float]] = {m: [] for m in methods}
        for index, obj in enumerate(objects):
            record: dict = {"object": obj["name"], "degree": degree}
            for method in methods:
                key = f"{index}/{degree}"
                vertices, triangles = results[method]["meshes"][f"{key}/v"], results[method]["meshes"][f"{key}/t"]
                hausdorff, rms = surface_distance(vertices, triangles, *obj["reference"])
                seconds = results[method]["seconds"][key]
                record.update({f"{method} Hausdorff [nm]": hausdorff, f"{method} RMS [nm]": rms,
                               f"{method} ms/shape": 1e3 * seconds})
                summary[f"{method} hausdorff"].append(hausdorff)
                summary[f"{method} rms"].append(rms)
                summary[f"{method} seconds"].append(seconds)
                if "voxel_surface" in obj:
                    voxel_rms[method].append(surface_distance(vertices, triangles, *obj["voxel_surface"])[1])
            if peer:
                record["fit speed-up"] = record["aicsshparam ms/shape"] / record["cellscape ms/shape"]
            per_object.append(record)
        staircase.append((degree, *(float(np.mean(voxel_rms[m])) for m in methods)))
        ours_rms, ours_h = np.array(summary["cellscape rms"]), np.array(summary["cellscape hausdorff"])
        row: dict[str, Any] = {"degree": degree, "cellscape RMS [nm] (mean)": float(ours_rms.mean())}
        if peer:
            aics_rms, aics_h = np.array(summary["aicsshparam rms"]), np.array(summary["aicsshparam hausdorff"])
            row.update({
                "aicsshparam RMS [nm] (mean)": float(aics_rms.mean()),
                "cellscape Hausdorff [nm] (mean)": float(ours_h.mean()),
                "aicsshparam Hausdorff [nm] (mean)": float(aics_h.mean()),
                "objects with ours RMS ≤ theirs": f"{int((ours_rms <= aics_rms).sum())}/{len(objects)}",
                "objects with ours Hausdorff ≤ theirs": f"{int((ours_h <= aics_h).sum())}/{len(objects)}",
                "cellscape ms/shape (median)": 1e3 * float(np.median(summary["cellscape seconds"])),
                "aicsshparam ms/shape (median)": 1e3 * float(np.median(summary["aicsshparam seconds"])),
                "fit speed-up (median)": float(np.median(np.array(summary["aicsshparam seconds"])
                                                         / np.array(summary["cellscape seconds"]))),
            })
        else:
            row.update({
                "aicsshparam RMS [nm] (mean)": missing,
                "cellscape Hausdorff [nm] (mean)": float(ours_h.mean()),
                "aicsshparam Hausdorff [nm] (mean)": missing,
                "cellscape ms/shape (median)": 1e3 * float(np.median(summary["cellscape seconds"])),
                "aicsshparam ms/shape (median)": missing,
            })
        rows.append(row)
    header = ["object", "degree"] + [f"{m} {q}" for q in ("RMS", "Hausdorff", "ms") for m in methods]
    header += ["speed-up"] if peer else []
    detail = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in per_object:
        cells = [r["object"], str(r["degree"])]
        for quantity in ("RMS [nm]", "Hausdorff [nm]", "ms/shape"):
            cells += [f"{r[f'{m} {quantity}']:.3g}" for m in methods]
        cells += [f"{r['fit speed-up']:.2f}"] if peer else []
        detail.append("| " + " | ".join(cells) + " |")
    capsules = [o["capsule"] for o in objects if "capsule" in o]
    voxel_note = "; ".join(f"degree {d}: " + ", ".join(f"{m} {v:.3g}" for m, v in zip(methods, values, strict=True))
                           for d, *values in staircase)
    fidelity_table, recovery_table, worst = fidelity()
    if peer:
        status = ("Targets of issue #7: error ≤ aicsshparam's at every degree, fit ≥ 2× faster. cellscape runs with its "
                  "defaults (sigma_voxels 0.5, principal-axis alignment), aicsshparam with its defaults except "
                  "alignment_2d=False (so that both reconstructions stay in the crop's frame).")
    else:
        status = ("**aicsshparam is not installed in this environment, so the comparison targets of issue #7 (error ≤ "
                  "aicsshparam's at every degree, fit ≥ 2× faster) were NOT measured**; only cellscape's own errors "
                  "and times are reported. Install the bench extra (`make bench`, or `pip install -e \".[bench]\"`) "
                  "and run `python benchmarks/run.py generate` again for the side-by-side table.")
    return {
        "title": "Spherical harmonics: reconstruction error vs degree, cellscape generate.spharm vs aicsshparam",
        "setup": (f"{len(objects)} objects ({', '.join(names[:4])}, {len(objects) - 4} phantom mitochondria), "
                  f"{VOXEL_NM:g} nm voxels. Errors in nm against the true surface: analytic for the analytic shapes, "
                  "the capsule fitted to the voxels for the mitochondria. Time = CPU ms per shape from the binary crop "
                  f"to the coefficients, best of {REPEATS}, single-threaded, measured on a shared 2-core machine "
                  "(other jobs running). Details in benchmarks/bench_generate.py."),
        "rows": rows,
        "notes": (
            status + "\n\n"
            f"Mitochondria capsules (length between cap centres, radius, RMS distance of the boundary midpoints from "
            f"the fitted surface, voxels): {', '.join(f'({c[0]:.1f}, {c[1]:.2f}, {c[2]:.2f})' for c in capsules)}. "
            "Against the voxels' own staircase surface instead (unsmoothed marching cubes of the mask; mean RMS over "
            f"the mitochondria, nm): {voxel_note}. Past degree 8-16 the error against the true surface stops "
            "falling (about 0.1 voxel RMS is left): that is the voxelization, which higher degrees begin to follow, "
            "as the falling error against the staircase surface shows.\n\n"
            + "\n".join(fidelity_table) + "\n\n" + "\n".join(recovery_table) + "\n\n"
            f"Largest parameter error of the model against the true population: {100 * worst:.1f} % (target ≤ 10 %)."
            "\n\nPer object:\n\n" + "\n".join(detail)),
    }


if __name__ == "__main__":
    harness.child_main(child)
