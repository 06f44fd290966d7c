"""The edge table of a triangle list, shared by every mesh module (numpy only, so listing methods stays light)."""

from __future__ import annotations

import numpy as np

__all__ = ["unique_edges"]


def unique_edges(triangles: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Undirected edges of a triangle list, each once, with the half-edges that run along them.

    Parameters
    ----------
    triangles : ndarray, shape (m, 3), int
        Vertex indices of each triangle.

    Returns
    -------
    edges : ndarray, shape (e, 2), int64
        Vertex pairs (smaller index first), sorted lexicographically.
    half_edge_to_edge : ndarray, shape (3m,), int64
        Edge of half-edge ``3 * f + i``, which runs from corner ``i`` to corner ``(i + 1) % 3`` of triangle
        ``f``; ``.reshape(-1, 3)`` gives it per triangle.
    counts : ndarray, shape (e,), int64
        Number of triangles on each edge: 2 on a closed manifold surface, 1 on a boundary (open) edge, more
        on a non-manifold edge.
    """
    triangles = np.asarray(triangles, np.int64).reshape(-1, 3)
    half = np.stack([triangles, np.roll(triangles, -1, axis=1)], axis=2).reshape(-1, 2)
    n = int(triangles.max()) + 1 if len(triangles) else 1
    keys = half.min(axis=1) * n + half.max(axis=1)  # one integer per undirected edge: much faster than unique rows
    unique_keys, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    edges = np.stack([unique_keys // n, unique_keys % n], axis=1)
    return edges, inverse.ravel().astype(np.int64), counts.astype(np.int64)
