"""Tetrahedral-mesh topology shared by the plugins: the faces of a tetrahedron, face keys, exterior faces.

A mesh is ``tetrahedra`` (k, 4) of point indices, positively oriented (corner 3 on the side of face
(0, 1, 2) its normal points to, by the right-hand rule) where an orientation matters. Face i of a tetrahedron
is the one opposite its corner i, so local face ``4 e + i`` names face i of tetrahedron e everywhere.
"""

from __future__ import annotations

import numpy as np

__all__ = ["OUTWARD_FACES", "TET_EDGES", "TET_FACES", "TRIANGLE_EDGES", "exterior_faces", "row_keys", "vertex_stars"]

# face i is the one opposite corner i
TET_FACES = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])
# the six edges as corner pairs
TET_EDGES = np.array([[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]])
# the three edges of a triangle (a face) as corner pairs
TRIANGLE_EDGES = np.array([[0, 1], [1, 2], [0, 2]])
# the same faces, each wound counter-clockwise seen from outside a positively oriented tetrahedron
OUTWARD_FACES = np.array([[1, 2, 3], [0, 3, 2], [0, 1, 3], [0, 2, 1]])


def row_keys(rows: np.ndarray, n_points: int) -> np.ndarray:
    """One int64 key per row of vertex indices (k, m), equal exactly when the rows hold the same vertices."""
    rows = np.sort(np.asarray(rows, np.int64), axis=1)
    if float(n_points) ** rows.shape[1] < 2.0**62:
        key = np.zeros(len(rows), np.int64)
        for column in range(rows.shape[1]):
            key = key * n_points + rows[:, column]
        return key
    return np.unique(rows, axis=0, return_inverse=True)[1].astype(np.int64).ravel()


def vertex_stars(tetrahedra: np.ndarray, n_points: int) -> tuple[np.ndarray, np.ndarray]:
    """The tetrahedra around each point: those of point v are ``around[starts[v]:starts[v + 1]]``.

    Returns
    -------
    starts : ndarray (n_points + 1,) int64
    around : ndarray (4 k,) int64
        Tetrahedron indices, grouped by point.
    """
    flat = np.asarray(tetrahedra, np.int64).ravel()
    order = np.argsort(flat, kind="stable")
    return np.searchsorted(flat[order], np.arange(n_points + 1)), order // 4


def exterior_faces(tetrahedra: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Faces that belong to one tetrahedron only (the surface of this set of tetrahedra).

    Returns
    -------
    triangles : ndarray (f, 3) int64
        Node indices of each exterior face, wound outward for positively oriented tetrahedra.
    owner : ndarray (f,) int64
        Index of the tetrahedron each face belongs to.
    """
    tets = np.asarray(tetrahedra, np.int64)
    faces = tets[:, OUTWARD_FACES].reshape(-1, 3)
    owner = np.repeat(np.arange(len(tets)), 4)
    if len(faces) == 0:
        return faces, owner
    key = row_keys(faces, int(tets.max()) + 1)
    order = np.argsort(key, kind="stable")
    same = key[order][1:] == key[order][:-1]
    single = np.ones(len(faces), bool)
    single[:-1] &= ~same
    single[1:] &= ~same
    picked = order[single]
    return faces[picked], owner[picked]
