"""Meshes with known geometry for tests: a cube cut into tetrahedra, its surface, a tetrahedralized ball."""

from __future__ import annotations

import numpy as np

import cellscape as cs

# the six tetrahedra of a unit hexahedron sharing its main diagonal (Kuhn triangulation), corners in (x, y, z) bit order
KUHN = np.array([[0, 1, 3, 7], [0, 1, 5, 7], [0, 2, 3, 7], [0, 2, 6, 7], [0, 4, 5, 7], [0, 4, 6, 7]])


def cube_mesh(n: int, side_nm: float, regions_split: bool = False) -> cs.TetMesh:
    """A cube [0, side]³ cut into n³ hexahedra of 6 tetrahedra each; region 2 where x > side/2 if asked.

    The boundary triangles are the cube's faces, marker 1.
    """
    ticks = np.linspace(0.0, side_nm, n + 1)
    x, y, z = np.meshgrid(ticks, ticks, ticks, indexing="ij")
    points = np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)
    index = np.arange((n + 1) ** 3).reshape(n + 1, n + 1, n + 1)
    i, j, k = np.meshgrid(np.arange(n), np.arange(n), np.arange(n), indexing="ij")
    # corner c has offsets (c & 1, c >> 1 & 1, c >> 2 & 1) along (x, y, z)
    corners = np.stack([index[i + (c & 1), j + (c >> 1 & 1), k + (c >> 2 & 1)].ravel() for c in range(8)], axis=1)
    tets = corners[:, KUHN].reshape(-1, 4)
    centroids = points[tets].mean(axis=1)
    markers = np.where(regions_split & (centroids[:, 0] > side_nm / 2), 2, 1)
    faces = np.concatenate([tets[:, [1, 2, 3]], tets[:, [0, 2, 3]], tets[:, [0, 1, 3]], tets[:, [0, 1, 2]]])
    keys, counts = np.unique(np.sort(faces, axis=1), axis=0, return_counts=True)
    boundary = keys[counts == 1]
    return cs.TetMesh(points, tets, markers, boundary, np.ones(len(boundary), np.int32),
                      {1: "left", 2: "right"} if regions_split else {1: "cube"}, {1: "surface"})


def cube_surface(side: float) -> cs.SurfaceMesh:
    """The 12 outward-oriented triangles of the cube [0, side]³."""
    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]], float) * side
    t = np.array([[0, 2, 1], [0, 3, 2], [4, 5, 6], [4, 6, 7], [0, 1, 5], [0, 5, 4],
                  [1, 2, 6], [1, 6, 5], [2, 3, 7], [2, 7, 6], [3, 0, 4], [3, 4, 7]])
    return cs.SurfaceMesh(v, t, np.ones(12, np.int32), {1: "cube"})


def ball_mesh(radius_nm: float, h: float) -> cs.TetMesh:
    """A ball centred on the origin (region 1 'cytosol', boundary 1 'membrane'), edges of about ``h · radius``.

    Fibonacci points on the unit sphere, their convex hull as the surface, TetGen inside
    (no Steiner points on the surface, so every boundary node lies on the sphere).
    """
    import tetgen
    from scipy.spatial import ConvexHull

    n = max(12, round(8 * np.pi / (np.sqrt(3) * h**2)))
    k = np.arange(n) + 0.5
    polar, azimuth = np.arccos(1 - 2 * k / n), np.pi * (1 + 5**0.5) * k
    sphere = np.stack([np.cos(azimuth) * np.sin(polar), np.sin(azimuth) * np.sin(polar), np.cos(polar)], axis=1)
    points, tets = tetgen.TetGen(sphere, ConvexHull(sphere).simplices).tetrahedralize(
        order=1, mindihedral=15, minratio=1.5, maxvolume=h**3 / (6 * 2**0.5), fixedvolume=True, nobisect=True,
        verbose=0)[:2]
    faces = np.concatenate([tets[:, [1, 2, 3]], tets[:, [0, 2, 3]], tets[:, [0, 1, 3]], tets[:, [0, 1, 2]]])
    keys, counts = np.unique(np.sort(faces, axis=1), axis=0, return_counts=True)
    return cs.TetMesh(points * radius_nm, tets, None, keys[counts == 1], None, {1: "cytosol"}, {1: "membrane"})
