"""Descriptors of closed shapes (size, form, curvature, topology) and surface distances for the generative models.

The descriptors are what the generative benchmarks compare between training and sampled populations; the
distances measure how far a rebuilt shape lies from the input surface (Hausdorff and area-weighted RMS).
"""

from __future__ import annotations

import math

import numpy as np

import cellscape as cs

from .._trimesh import mean_curvature, point_to_surface, triangle_areas, vertex_areas
from ._shapes import Shape

# ------------------------------------------------------------------------------------------- descriptors


#: Neighbour averagings of the mean curvature behind the spread and concavity descriptors: they reach about
#: 2 voxels on a marching-cubes surface, past the voxel staircase.
CURVATURE_RINGS = 8

DESCRIPTOR_UNITS = {
    "label": "", "volume_nm3": "nm^3", "area_nm2": "nm^2", "sphericity": "", "semi_axis_1_nm": "nm",
    "semi_axis_2_nm": "nm", "semi_axis_3_nm": "nm", "mean_curvature_mean_per_nm": "1/nm",
    "mean_curvature_std_per_nm": "1/nm", "concave_area_fraction": "", "euler_characteristic": "",
}


def shape_descriptors(shapes: list[Shape], title: str = "shape descriptors") -> cs.Table:
    """Size, form and curvature of each shape, one row per shape.

    Columns: ``label``; ``volume_nm3``; ``area_nm2``; ``sphericity``
    (``π^(1/3) (6V)^(2/3) / A``, 1 for a sphere); ``semi_axis_1..3_nm``
    (semi-axes of the solid ellipsoid with the same second moments, longest
    first); ``mean_curvature_mean_per_nm`` (area-weighted mean of the mean
    curvature, 1/nm; 1/R for a sphere); ``mean_curvature_std_per_nm`` (its
    area-weighted spread) and ``concave_area_fraction`` (share of the area
    with negative mean curvature), both from the curvature averaged over
    :data:`CURVATURE_RINGS` rings of neighbours, so that they describe the
    shape rather than the voxel staircase; ``euler_characteristic``
    (V − E + F, 2 for a sphere-like surface).
    """
    rows: dict[str, list[float]] = {name: [] for name in DESCRIPTOR_UNITS}
    for shape in shapes:
        v, t = shape.vertices, shape.triangles
        volume, _, covariance = shape.moments
        area = float(triangle_areas(v, t).sum())
        semi = np.sqrt(5.0 * np.clip(np.linalg.eigvalsh(covariance)[::-1], 0.0, None))
        weights = vertex_areas(v, t)
        mean_h = float(np.average(mean_curvature(v, t), weights=weights))  # ∫H dA / A needs no smoothing
        curvature = mean_curvature(v, t, rings=CURVATURE_RINGS)
        edges = np.concatenate([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]])
        n_edges = len(np.unique(edges.min(axis=1) * np.int64(len(v)) + edges.max(axis=1)))
        values = {
            "label": shape.label, "volume_nm3": volume, "area_nm2": area,
            "sphericity": math.pi ** (1 / 3) * (6 * volume) ** (2 / 3) / area,
            "semi_axis_1_nm": semi[0], "semi_axis_2_nm": semi[1], "semi_axis_3_nm": semi[2],
            "mean_curvature_mean_per_nm": mean_h,
            "mean_curvature_std_per_nm": float(np.sqrt(np.average((curvature - mean_h) ** 2, weights=weights))),
            "concave_area_fraction": float(weights[curvature < 0].sum() / weights.sum()),
            "euler_characteristic": len(np.unique(t)) - n_edges + len(t),
        }
        for name, value in values.items():
            rows[name].append(value)
    columns = {name: np.asarray(values, np.int64 if name in ("label", "euler_characteristic") else np.float64)
               for name, values in rows.items()}
    return cs.Table(columns, DESCRIPTOR_UNITS, title)


# --------------------------------------------------------------------------------------- surface distance


def surface_distance(vertices_a: np.ndarray, triangles_a: np.ndarray, vertices_b: np.ndarray,
                     triangles_b: np.ndarray) -> tuple[float, float]:
    """Symmetric Hausdorff and area-weighted RMS distance between two surfaces.

    Distances are measured from every vertex of each surface to the other
    surface (exact point-to-triangle distances); the RMS weighs each vertex
    by its share of its surface's area.

    Returns
    -------
    hausdorff, rms : float
        In the vertices' unit (nm).
    """
    d_ab = point_to_surface(vertices_a, vertices_b, triangles_b)
    d_ba = point_to_surface(vertices_b, vertices_a, triangles_a)
    w_a, w_b = vertex_areas(vertices_a, triangles_a), vertex_areas(vertices_b, triangles_b)
    rms = math.sqrt((float(w_a @ d_ab**2) + float(w_b @ d_ba**2)) / (float(w_a.sum()) + float(w_b.sum())))
    return float(max(d_ab.max(), d_ba.max())), rms
