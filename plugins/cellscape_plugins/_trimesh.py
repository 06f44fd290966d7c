"""Triangle-surface geometry shared by the plugins: areas, enclosed volume, mean curvature, exact distances.

Surfaces are ``vertices`` (n, 3) in any length unit (nm for cellscape
meshes) and ``triangles`` (m, 3) of vertex indices, counter-clockwise seen
from outside where an orientation matters. Every function is vectorized over
the triangles; none checks that the surface is closed (the callers do, with
their own step names in the message).
"""

from __future__ import annotations

import numpy as np


def cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cross product of two (n, 3) arrays (numpy's generic ``cross`` is several times slower)."""
    a0, a1, a2 = a[:, 0], a[:, 1], a[:, 2]
    b0, b1, b2 = b[:, 0], b[:, 1], b[:, 2]
    return np.stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], axis=1)


def triangle_areas(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Area of each triangle, shape (m,), in the vertices' unit squared."""
    vertices = np.asarray(vertices, float)
    a, b, c = (vertices[triangles[:, i]] for i in range(3))
    return 0.5 * np.linalg.norm(cross(b - a, c - a), axis=1)


def vertex_areas(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """A third of the area of the triangles around each vertex, shape (n,): the vertex's share of the surface."""
    third = np.repeat(triangle_areas(vertices, triangles) / 3.0, 3)
    return np.bincount(np.asarray(triangles).ravel(), weights=third, minlength=len(vertices))


def signed_volumes(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Signed volume of the tetrahedron each triangle spans with the origin, shape (m,).

    Their sum is the enclosed volume of a closed surface (divergence theorem): positive when the
    triangles face outwards, negative when they face inwards.
    """
    vertices = np.asarray(vertices, float)
    a, b, c = (vertices[triangles[:, i]] for i in range(3))
    return np.einsum("ij,ij->i", a, cross(b, c)) / 6.0


def enclosed_volume(vertices: np.ndarray, triangles: np.ndarray) -> float:
    """Volume enclosed by a closed surface, in the vertices' unit cubed (negative if it faces inwards)."""
    return float(signed_volumes(vertices, triangles).sum())


def mean_curvature(vertices: np.ndarray, triangles: np.ndarray, rings: int = 0) -> np.ndarray:
    """Discrete mean curvature at each vertex (cotangent Laplacian), 1/(the vertices' unit); positive where convex.

    A sphere of radius R has H = 1/R everywhere (outward-facing triangles). The
    cotangent Laplacian of the positions is ``-2 H n`` times the vertex area;
    it is projected on the area-weighted vertex normal, so flat vertices give
    0 and saddles keep their sign.

    Parameters
    ----------
    vertices : ndarray, shape (n, 3)
    triangles : ndarray, shape (m, 3), int
        Counter-clockwise seen from outside.
    rings : int
        Average the values this many times over each vertex and its
        neighbours (area-weighted), which removes the voxel-scale noise of a
        marching-cubes surface while keeping the area integral of H.

    Returns
    -------
    ndarray, shape (n,)
        H at each vertex; weigh by :func:`vertex_areas` for surface averages.
    """
    from scipy import sparse

    vertices = np.asarray(vertices, float)
    corners = [vertices[triangles[:, i]] for i in range(3)]
    laplacian = np.zeros_like(vertices)
    for i in range(3):
        # the angle at corner i weighs the opposite edge (j, k)
        j, k = (i + 1) % 3, (i + 2) % 3
        u, v = corners[j] - corners[i], corners[k] - corners[i]
        cot = np.einsum("ij,ij->i", u, v) / np.maximum(np.linalg.norm(cross(u, v), axis=1), 1e-300)
        edge = corners[k] - corners[j]
        for axis in range(3):
            laplacian[:, axis] += np.bincount(triangles[:, j], weights=cot * edge[:, axis], minlength=len(vertices))
            laplacian[:, axis] -= np.bincount(triangles[:, k], weights=cot * edge[:, axis], minlength=len(vertices))
    areas = vertex_areas(vertices, triangles)
    a, b, c = corners
    face_normals = cross(b - a, c - a)
    normals = np.zeros_like(vertices)
    for i in range(3):
        for axis in range(3):
            normals[:, axis] += np.bincount(triangles[:, i], weights=face_normals[:, axis], minlength=len(vertices))
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-300)
    safe_areas = np.maximum(areas, 1e-300)
    # Σ cot (x_j - x_i) = -4 A H n for barycentric areas A (the factor 1/2 per cotangent is folded in)
    curvature = -np.einsum("ij,ij->i", laplacian, normals) / (4.0 * safe_areas)
    if rings > 0:
        n = len(vertices)
        rows = triangles[:, [0, 1, 2, 1, 2, 0]].ravel()
        cols = triangles[:, [1, 2, 0, 0, 1, 2]].ravel()
        adjacency = sparse.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n)).tocsr()
        adjacency.data[:] = 1.0  # duplicates (each edge seen from both triangles) summed: count once
        adjacency = adjacency + sparse.identity(n, format="csr")
        weight_sum = adjacency @ safe_areas
        for _ in range(rings):
            curvature = adjacency @ (safe_areas * curvature) / weight_sum
    return curvature


# -- distance from points to a surface ---------------------------------------------------------------------

def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("...i,...i->...", a, b)


def closest_points_on_triangles(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Closest point to p[i] on triangle (a[i], b[i], c[i]), by Voronoi regions (Ericson, Real-Time
    Collision Detection, 5.1.5). All arrays shape (p, 3)."""
    ab, ac = b - a, c - a
    d1, d2 = _dot(ab, p - a), _dot(ac, p - a)
    d3, d4 = _dot(ab, p - b), _dot(ac, p - b)
    d5, d6 = _dot(ab, p - c), _dot(ac, p - c)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ab = (d1 / (d1 - d3))[:, None]
        t_ac = (d2 / (d2 - d6))[:, None]
        t_bc = ((d4 - d3) / ((d4 - d3) + (d5 - d6)))[:, None]
        denom = va + vb + vc
        inside = a + ab * (vb / denom)[:, None] + ac * (vc / denom)[:, None]
    regions = [
        (d1 <= 0) & (d2 <= 0),
        (d3 >= 0) & (d4 <= d3),
        (vc <= 0) & (d1 >= 0) & (d3 <= 0),
        (d6 >= 0) & (d5 <= d6),
        (vb <= 0) & (d2 >= 0) & (d6 <= 0),
        (va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0),
    ]
    choices = [a, b, a + ab * t_ab, c, a + ac * t_ac, b + (c - b) * t_bc]
    return np.select([r[:, None] for r in regions], choices, default=inside)


def point_to_surface(points: np.ndarray, vertices: np.ndarray, triangles: np.ndarray,
                     chunk: int = 20000) -> np.ndarray:
    """Exact distance from each point to the nearest triangle.

    The nearest vertex bounds the distance from above (u); a triangle with centroid c and largest
    centroid-to-corner distance R can only be that close if |p − c| ≤ u + R, so only those triangles
    are tested exactly. The triangles are searched in groups of similar R (within a factor of 2),
    smallest first, each with its own largest R and the bound u lowered by the groups before: one
    long triangle would otherwise widen every point's search, and the candidate pairs (memory) with
    it — the phantom cell's surfaces decimated by pymeshlab took 17 GB that way.
    """
    from scipy.spatial import cKDTree

    corners = vertices[triangles]
    centroids = corners.mean(axis=1)
    reaches = np.linalg.norm(corners - centroids[:, None], axis=2).max(axis=1)
    positive = reaches[reaches > 0]
    base = float(positive.min()) if len(positive) else 1.0
    group = np.floor(np.log2(np.maximum(reaches, base) / base)).astype(np.int64)
    distances = cKDTree(vertices).query(points)[0]
    for g in np.unique(group):
        members = np.flatnonzero(group == g)
        reach = float(reaches[members].max())
        tree = cKDTree(centroids[members])
        for start in range(0, len(points), chunk):  # chunks bound the memory of the candidate pairs
            block, bound = points[start:start + chunk], distances[start:start + chunk]
            hits = tree.query_ball_point(block, bound + reach * (1 + 1e-9) + 1e-12, return_sorted=False)
            sizes = np.fromiter(map(len, hits), np.int64, len(hits))
            if not sizes.sum():
                continue
            candidate = members[np.concatenate(hits).astype(np.int64)]
            which = np.repeat(np.arange(len(block)), sizes)
            # the same bound with each triangle's own reach drops most candidates before the exact test
            near = (np.linalg.norm(block[which] - centroids[candidate], axis=1) - reaches[candidate]
                    <= bound[which] * (1 + 1e-9) + 1e-12)
            candidate, which = candidate[near], which[near]
            tri = corners[candidate]
            nearest = closest_points_on_triangles(block[which], tri[:, 0], tri[:, 1], tri[:, 2])
            gap = np.linalg.norm(block[which] - nearest, axis=1)
            # a degenerate triangle gives NaN: its corners still bound the distance
            gap = np.where(np.isfinite(gap), gap, np.linalg.norm(tri - block[which][:, None], axis=2).min(axis=1))
            best = np.full(len(block), np.inf)
            np.minimum.at(best, which, gap)
            distances[start:start + chunk] = np.minimum(best, bound)
    return distances
