"""P1 (linear) finite elements on tetrahedra: vectorized assembly of stiffness and mass.

No Python loop over elements: element gradients come from one batched 3×3
inverse, and the global matrices from one COO construction each.
"""

from __future__ import annotations

import numpy as np


def element_geometry(points: np.ndarray, tets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Volumes (k,) and barycentric-coordinate gradients (k, 4, 3) of each tetrahedron.

    Raises ValueError listing degenerate (zero-volume) tetrahedra.
    """
    p0 = points[tets[:, 0]]
    edges = np.stack([points[tets[:, 1]] - p0, points[tets[:, 2]] - p0, points[tets[:, 3]] - p0], axis=1)
    det = np.linalg.det(edges)
    scale = np.linalg.norm(edges, axis=2).max(axis=1) ** 3
    degenerate = np.abs(det) <= 1e-12 * scale
    if degenerate.any():
        first = int(np.flatnonzero(degenerate)[0])
        raise ValueError(f"{int(degenerate.sum())} degenerate (zero-volume) tetrahedra, the first is #{first}")
    inverse_t = np.linalg.inv(edges).transpose(0, 2, 1)  # rows: gradients of λ1, λ2, λ3
    grads = np.concatenate([-inverse_t.sum(axis=1, keepdims=True), inverse_t], axis=1)
    return np.abs(det) / 6.0, grads


def assemble_p1(points: np.ndarray, tets: np.ndarray, lumped: bool = False):
    """Global stiffness K and mass M (scipy CSR) for P1 elements; units follow ``points``."""
    from scipy import sparse

    n = len(points)
    volumes, grads = element_geometry(points, tets)
    local_k = np.einsum("e,eid,ejd->eij", volumes, grads, grads)
    rows = np.repeat(tets, 4, axis=1).ravel()
    cols = np.tile(tets, (1, 4)).ravel()
    stiffness = sparse.coo_matrix((local_k.ravel(), (rows, cols)), shape=(n, n)).tocsr()
    if lumped:
        mass = sparse.diags(lumped_mass(points, tets, volumes)).tocsr()
    else:
        local_m = volumes[:, None, None] * (np.ones((4, 4)) + np.eye(4))[None] / 20.0
        mass = sparse.coo_matrix((local_m.ravel(), (rows, cols)), shape=(n, n)).tocsr()
    return stiffness, mass


def lumped_mass(points: np.ndarray, tets: np.ndarray, volumes: np.ndarray | None = None) -> np.ndarray:
    """Each node's share of the volume: a quarter of every adjacent tetrahedron."""
    if volumes is None:
        volumes = element_geometry(points, tets)[0]
    return np.bincount(tets.ravel(), weights=np.repeat(volumes / 4.0, 4), minlength=len(points))
