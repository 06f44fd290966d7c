"""Meshing: labels → improved surface → tetrahedra, against the chain written the obvious way.

Inputs: the synthetic cell's labels (256³, cytosol + nucleus + mitochondria, 10 nm voxels) and a
thin, curved, high-genus shape: a spherical shell 3 voxels thick pierced by 12 holes (genus 11),
128³. Ours: `mesh.marching_cubes` → `mesh.improve` → `mesh.tetrahedralize`. Obvious chain:
scikit-image marching cubes on each label's mask → pymeshlab's default Laplacian smoothing and
quadric decimation to half the faces → TetGen with its default quality switches. Quality: triangle
angles, volume change against the labels' voxel volume, Hausdorff distance to the raw
marching-cubes surface (in voxels), non-manifold edges, tetrahedra's minimum dihedral angle and
radius ratio; time of each chain. Each chain runs in its own process.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import _harness as harness

VOXEL_NM = 10.0
# Parameters of our chain per shape: (mesh.marching_cubes, mesh.improve). For the cell, a coarser surface than
# the defaults (which keep the marching-cubes edge length, ~0.7 voxel): contouring every second voxel and
# remeshing to 2-voxel edges (5 rounds, not 10) gives a 5x smaller surface, still within 1 voxel of the labels. The 3-voxel-thin
# shell keeps the defaults: 2-voxel edges would not resolve its rims.
OURS_PARAMETERS: dict[str, tuple[dict, dict]] = {
    "cell": ({"step_size": 2}, {"target_edge_nm": 2 * VOXEL_NM, "remesh_iterations": 5}),
    "shell": ({}, {}),
}
TETGEN_TIMEOUT_S = 600.0
SHELL_SEEDS = (1, 2, 3, 4)  # more hole patterns of the thin shell: sliver removal must not hang on one lucky mesh


def cell_labels(n: int = 256) -> np.ndarray:
    import cellscape as cs

    return cs.method("generate.phantom_cell", shape=n, voxel_size_nm=VOXEL_NM, seed=5)()["labels"].data


def pierced_shell(n: int = 128, holes: int = 12, seed: int = 0) -> np.ndarray:
    """A spherical shell (radius 0.4 n, 3 voxels thick) with ``holes`` round holes: genus holes - 1."""
    z, y, x = np.mgrid[:n, :n, :n].astype(np.float32) - (n - 1) / 2
    r = np.sqrt(z**2 + y**2 + x**2)
    shell = (r > 0.4 * n - 1.5) & (r < 0.4 * n + 1.5)
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(holes, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    for d in directions:
        cosine = (z * d[0] + y * d[1] + x * d[2]) / np.maximum(r, 1e-6)
        shell &= cosine < np.cos(np.radians(9.0))
    return shell.astype(np.uint8)


# ----------------------------------------------------------------------------------------------- chains

def ours(labels: np.ndarray, shape: str) -> tuple:
    import time

    import cellscape as cs

    contour, improve = OURS_PARAMETERS[shape]
    start = time.perf_counter()
    surface = cs.method("mesh.marching_cubes", **contour)(cs.Labels(labels, {}, VOXEL_NM))
    improved = cs.method("mesh.improve", **improve)(surface)
    surfaced = time.perf_counter()
    mesh = cs.method("mesh.tetrahedralize")(improved)
    stages = np.array([surfaced - start, time.perf_counter() - surfaced])
    return (improved.vertices, improved.triangles, mesh.points, mesh.tetrahedra, stages, "ok", surface.vertices,
            surface.triangles)


def obvious(labels: np.ndarray, shape: str) -> tuple:
    import time

    import pymeshlab

    from cellscape_plugins._isolated import ChildDied, isolated
    from cellscape_plugins.mesh.tetrahedralize import run_tetgen

    start = time.perf_counter()
    vertices, triangles, offset = [], [], 0
    for value in [v for v in np.unique(labels) if v != 0]:
        verts, faces = mask_contour(labels == value)
        meshset = pymeshlab.MeshSet()
        meshset.add_mesh(pymeshlab.Mesh(verts, faces))
        meshset.apply_coord_laplacian_smoothing()
        meshset.meshing_decimation_quadric_edge_collapse(targetperc=0.5)
        current = meshset.current_mesh()
        vertices.append(current.vertex_matrix())
        triangles.append(current.face_matrix() + offset)
        offset += len(vertices[-1])
    v, t = np.concatenate(vertices), np.concatenate(triangles)
    surfaced = time.perf_counter()
    try:  # in a child process: TetGen may abort on self-intersecting input
        points, tets = isolated(run_tetgen, (v, t.astype(np.int32), {}), TETGEN_TIMEOUT_S)
        outcome = "ok"
    except (RuntimeError, ValueError, ChildDied) as exc:
        points, tets = np.zeros((0, 3)), np.zeros((0, 4), np.int64)
        outcome = f"failed: {str(exc)[:80]}"
    stages = np.array([surfaced - start, time.perf_counter() - surfaced])
    return v, t, np.asarray(points), np.asarray(tets), stages, outcome, None, None


def mask_contour(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """scikit-image marching cubes of a binary mask at 0.5: vertices (x, y, z) in nm in the labels' frame, triangles.

    The mask is padded by one voxel (so a label touching the border is closed); the vertices are shifted back.
    """
    from skimage import measure

    verts, faces, _, _ = measure.marching_cubes(np.pad(mask, 1).astype(np.float32), 0.5, spacing=(VOXEL_NM,) * 3)
    return verts[:, ::-1] - VOXEL_NM, faces[:, ::-1]


CHAINS = {"cellscape (marching_cubes → improve → tetrahedralize)": ours,
          "obvious (skimage → pymeshlab defaults → tetgen defaults)": obvious}


def child(job: dict) -> dict:
    import pymeshlab  # noqa: F401
    import tetgen  # noqa: F401

    import cellscape as cs  # libraries loaded before the measurement

    cs.methods()
    folder = Path(job["folder"])
    labels = np.load(folder / "labels.npy")
    parts: dict = {}

    def call() -> np.ndarray:
        v, t, p, k, stages, outcome, contour_v, contour_t = CHAINS[job["name"]](labels, job["shape"])
        parts.update(v=v, t=t, p=p, k=k, stages=stages, outcome=np.array(outcome))
        if contour_v is not None:
            parts.update(contour_v=contour_v, contour_t=contour_t)
        return np.zeros(1)

    stats = harness.measure(call, folder)
    np.savez(folder / "mesh.npz", **parts)
    return stats


# ----------------------------------------------------------------------------------------------- metrics

def run() -> dict:
    from scipy import ndimage

    from cellscape_plugins.mesh import quality as q

    rows = []
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as folder:
        shapes = [("cell", "cell phantom 256³", cell_labels),
                  ("shell", "pierced shell 128³ (genus 11)", pierced_shell)]
        shapes += [("shell", f"pierced shell 128³, holes of seed {seed}", functools.partial(pierced_shell, seed=seed))
                   for seed in SHELL_SEEDS]
        for shape, shape_name, make in shapes:
            labels = make()
            np.save(Path(folder) / "labels.npy", labels)
            values = [v for v in np.unique(labels) if v != 0]
            voxel = VOXEL_NM**3
            # what each chain's surfaces enclose when exact: ours fills each label's holes (nested surfaces), the
            # obvious chain's inner surfaces face inwards, so its signed volume is the labelled voxels'
            reference = {"cellscape": voxel * sum(float(ndimage.binary_fill_holes(labels == v).sum()) for v in values),
                         "obvious": voxel * float((labels > 0).sum())}
            raw = [mask_contour(labels == v) for v in values]
            raw_v = np.concatenate([r[0] for r in raw])
            raw_t = np.concatenate([r[1] + sum(len(x[0]) for x in raw[:i]) for i, r in enumerate(raw)])
            for name in CHAINS:
                _, stats = harness.run_child(__file__, {"name": name, "shape": shape}, folder)
                mesh = np.load(Path(folder) / "mesh.npz")
                v, t, p, k, stages = mesh["v"], mesh["t"], mesh["p"], mesh["k"], mesh["stages"]
                outcome = str(mesh["outcome"])
                # the surface mesh.improve started from (ours: mesh.marching_cubes'; the obvious chain's: the raw one)
                contour_v, contour_t = (mesh["contour_v"], mesh["contour_t"]) if "contour_v" in mesh else (raw_v, raw_t)
                angles = q.triangle_angles(v, t)
                dihedral = q.dihedral_angles(p, k) if len(k) else np.array([np.nan])
                ratio = q.radius_ratios(p, k) if len(k) else np.array([np.nan])
                expected = reference["cellscape" if name.startswith("cellscape") else "obvious"]
                rows.append({
                    "shape": shape_name, "chain": name, "time [s]": stats["seconds"],
                    "surface [s]": float(stages[0]), "tetrahedra [s]": float(stages[1]), "triangles": len(t),
                    "min angle [deg]": float(angles.min()), "max angle [deg]": float(angles.max()),
                    "angles < 15° [%]": 100 * float((angles < 15).mean()),
                    "volume change [%]": 100 * (abs(q.enclosed_volume(v, t)) / expected - 1),
                    "Hausdorff to contour [voxels]": q.hausdorff_distance(v, t, contour_v, contour_t,
                                                                          samples=20000) / VOXEL_NM,
                    "Hausdorff to mask [voxels]": q.hausdorff_distance(v, t, raw_v, raw_t, samples=20000) / VOXEL_NM,
                    "non-manifold edges": int(q.manifold_report(t)["non_manifold_edges"]),
                    "Euler characteristic": q.euler_characteristic(v, t),
                    "tets": len(k), "min dihedral [deg]": float(np.nanmin(dihedral)),
                    "min radius ratio": float(np.nanmin(ratio)), "peak memory [MB]": stats["peak_mb"],
                    "TetGen": outcome,
                })
            ours_row, obvious_row = rows[-2], rows[-1]
            for row in (ours_row, obvious_row):
                row["time / obvious"] = row["time [s]"] / obvious_row["time [s]"]
            loads.append(os.getloadavg()[0])
    ours = [r for r in rows if r["chain"].startswith("cellscape")]
    misses = [f"{r['shape']}: {what}" for r in ours for what, ok in (
        ("angles", r["min angle [deg]"] >= 15 and r["max angle [deg]"] <= 150),
        ("volume", abs(r["volume change [%]"]) <= 1), ("Hausdorff", r["Hausdorff to contour [voxels]"] <= 1),
        ("non-manifold", r["non-manifold edges"] == 0),
        ("tet quality", r["min dihedral [deg]"] >= 8 and r["min radius ratio"] >= 0.1),
        ("time", not r["shape"].startswith("cell") or r["time [s]"] <= 60)) if not ok]
    return {
        "title": "Meshing: labels → surface → tetrahedra, cellscape vs the obvious chain",
        "setup": (f"cellscape's parameters (mesh.marching_cubes, mesh.improve; mesh.tetrahedralize defaults): "
                  f"{OURS_PARAMETERS}. Time: labels to tetrahedra in one fresh process (surface [s]: labels to the "
                  "final surface; tetrahedra [s]: TetGen and its checks); peak memory leaves out TetGen's own child "
                  "process. Volume change: signed volume enclosed by all surfaces against the voxel volume they stand for "
                  "(each label's filled mask for cellscape, whose nested surfaces all face outwards; the labelled voxels "
                  "for the obvious chain, whose hole surfaces face inwards; its surfaces come out inside-out, so the "
                  "magnitude of their signed volume is compared). Hausdorff (sampled, symmetric, in voxels) to contour: "
                  "against the surface the chain's smoothing started from (ours: mesh.marching_cubes' output, after its "
                  "Gaussian pre-smoothing of the mask; the obvious chain's: the raw one), the quantity of the ≤ 1 voxel "
                  "target; to mask: against the raw marching-cubes surfaces of every label's binary mask."),
        "rows": rows,
        "notes": ("Targets of issue #5: after mesh.improve no angle < 15° or > 150°, volume change ≤ 1%, Hausdorff "
                  "≤ 1 voxel, no non-manifold element; after mesh.tetrahedralize min dihedral ≥ 8° and radius ratio "
                  "≥ 0.1 for every tet; 256³ labels → tets ≤ 60 s on 2 cores: "
                  + ("all met by cellscape on every shape" if not misses else "missed: " + "; ".join(misses))
                  + f". Load average of the 2-core machine over the run: {min(loads):.1f}-{max(loads):.1f} (both "
                  "chains ran under the same load). Five hole patterns of the thin shell: before mesh.tetrahedralize "
                  "flipped slivers (2-3 / 3-2 flips inside a region), two of them kept slivers that moving vertices "
                  "could not lift (min dihedral 7.8° and 5.6°, radius ratio 0.098 and 0.070). The first shell's "
                  "Hausdorff distance to the raw mask (about 3 voxels) "
                  "is at its hole rims: mesh.marching_cubes' Gaussian pre-smoothing (sigma 1 voxel) pulls the rims of "
                  "a 3-voxel-thick sheet back, and closes two of the mask's eleven handles (Euler characteristic -16, "
                  "genus 9, where the raw mask's marching cubes gives -20) where holes nearly touch; its volume is "
                  "restored by match_volume (a common normal offset of a "
                  "fraction of a voxel), not the rims' shape. Lower sigma_voxels keeps thin rims."),
    }


if __name__ == "__main__":
    harness.child_main(child)
