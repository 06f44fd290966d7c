"""Triangle-surface geometry shared by the plugins: areas, enclosed volume, mean curvature.

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
