"""``mesh.marching_cubes``: closed surfaces of labels, in nm, one marker per label.

Each chosen label is turned into a binary mask, its enclosed holes filled (so
a cytosol label that surrounds a nucleus gives the outer cell surface, and
the nucleus its own surface nested inside), padded so that an object
touching the volume border still gets a closed surface, smoothed with a
Gaussian (which removes the voxel staircase) and contoured at 0.5.
Triangles are oriented counter-clockwise seen from outside.
"""

from __future__ import annotations

import math
import warnings

import attrs
import numpy as np

import cellscape as cs


def signed_volume(vertices: np.ndarray, triangles: np.ndarray) -> float:
    """Volume enclosed by a closed, consistently oriented surface (divergence theorem)."""
    a, b, c = (vertices[triangles[:, i]] for i in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def drop_degenerate(vertices: np.ndarray, triangles: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Remove zero-area triangles and unreferenced vertices; returns (vertices, triangles, kept-triangle mask)."""
    a, b, c = (vertices[triangles[:, i]] for i in range(3))
    area2 = np.linalg.norm(np.cross(b - a, c - a), axis=1)
    scale = float(np.ptp(vertices, axis=0).max()) or 1.0
    keep = (area2 > 1e-12 * scale**2) & (triangles[:, 0] != triangles[:, 1]) & (triangles[:, 1] != triangles[:, 2]) \
        & (triangles[:, 0] != triangles[:, 2])
    triangles = triangles[keep]
    used = np.unique(triangles)
    remap = np.full(len(vertices), -1, np.int64)
    remap[used] = np.arange(len(used))
    return vertices[used], remap[triangles], keep


def surface_of_mask(mask: np.ndarray, voxel_size_nm: tuple[float, float, float], origin_nm: tuple[float, float, float],
                    sigma_voxels: float, step_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Closed, outward-oriented iso-surface (vertices (x, y, z) in nm, triangles) of a boolean mask [z, y, x]."""
    from scipy import ndimage
    from skimage import measure

    pad = 2 + math.ceil(3 * sigma_voxels)
    field = np.pad(mask.astype(np.float32), pad)
    if sigma_voxels > 0:
        field = ndimage.gaussian_filter(field, sigma_voxels)
    if field.max() <= 0.5:
        raise cs.InputError("mesh.marching_cubes: an object vanished after smoothing; lower sigma_voxels")
    verts, faces, _, _ = measure.marching_cubes(field, 0.5, spacing=voxel_size_nm, step_size=step_size,
                                                allow_degenerate=False)
    verts = verts - np.asarray(voxel_size_nm) * pad + np.asarray(origin_nm)
    vertices = verts[:, ::-1].copy()  # (z, y, x) -> (x, y, z)
    triangles = faces[:, ::-1].astype(np.int64)  # reversing the axes mirrors: flip the winding back
    vertices, triangles, _ = drop_degenerate(vertices, triangles)
    if signed_volume(vertices, triangles) < 0:
        triangles = triangles[:, ::-1].copy()
    return vertices, triangles


@attrs.frozen
class MarchingCubesParams:
    labels: list[int] | None = cs.param(None, help="label values to mesh; default: every non-zero label")
    mode: str = cs.param("separate", choices=("separate", "union"),
                         help="'separate': one surface per label (marker = label); 'union': one surface, marker 1")
    sigma_voxels: float = cs.param(1.0, ge=0, le=10, unit="voxel", help="Gaussian smoothing of each mask before contouring")
    step_size: int = cs.param(1, ge=1, le=8, unit="voxel", help="marching-cubes step (larger = coarser)")


class MarchingCubes(cs.Mesher):
    """Closed surfaces of labels by smoothed marching cubes, in nm, with one marker per label."""

    name = "mesh.marching_cubes"
    Params = MarchingCubesParams

    def mesh(self, labels: cs.Labels) -> cs.SurfaceMesh:
        from scipy import ndimage

        p = self.params
        present = labels.label_values()
        chosen = present if p.labels is None else [v for v in p.labels if v in present]
        if not chosen:
            wanted = "any non-zero label" if p.labels is None else f"labels {p.labels}"
            raise cs.InputError(f"mesh.marching_cubes: no voxel has {wanted}; labels present: {present or 'none'}")
        groups = [(1, chosen)] if p.mode == "union" else [(v, [v]) for v in chosen]
        all_vertices, all_triangles, markers = [], [], []
        offset = 0
        for marker, values in self.progress(groups, description="contouring"):
            mask = ndimage.binary_fill_holes(np.isin(labels.data, values))
            border = np.concatenate([mask[[0, -1]].ravel(), mask[:, [0, -1]].ravel(), mask[:, :, [0, -1]].ravel()])
            if border.any():
                warnings.warn(f"mesh.marching_cubes: label(s) {values} touch the volume border; the surface was closed "
                              "at the border", stacklevel=2)
            vertices, triangles = surface_of_mask(mask, labels.voxel_size_nm, labels.origin_nm, p.sigma_voxels,
                                                  p.step_size)
            all_vertices.append(vertices)
            all_triangles.append(triangles + offset)
            markers.append(np.full(len(triangles), marker, np.int32))
            offset += len(vertices)
        names = {1: "union"} if p.mode == "union" else {v: labels.class_names.get(v, f"label_{v}") for v in chosen}
        return cs.SurfaceMesh(np.concatenate(all_vertices), np.concatenate(all_triangles), np.concatenate(markers), names)
