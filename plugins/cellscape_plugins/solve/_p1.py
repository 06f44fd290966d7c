"""P1 (piecewise-linear) finite elements on tetrahedra: vectorized assembly of stiffness and mass.

There is no Python loop over elements: the barycentric gradients of all
tetrahedra come from one batched 3×3 inverse on a ``(k, 3, 3)`` array, the
element matrices from one ``einsum``, and each global matrix from one COO
construction (duplicate entries are summed).

Lengths are in whatever unit ``points`` uses; the solvers pass µm so that
with diffusion coefficients in µm²/s and times in s the units are consistent.
For a P1 function ``u`` with nodal values ``u_i`` and any P1 ``v``:

- ``v @ K @ u = ∫ ∇v · ∇u dV``  (stiffness, unit: length)
- ``v @ M @ u = ∫ v u dV``      (consistent mass, unit: length³; exact for P1)
- ``lumped_mass(...) @ u``       (row sums of M: each node's share of the volume; equals ``∫ u dV``)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

import cellscape as cs

if TYPE_CHECKING:
    from scipy import sparse

__all__ = ["DEGENERATE_RELATIVE_VOLUME", "assemble_p1", "element_geometry", "integrate", "lumped_mass"]

#: a tetrahedron is degenerate when ``6 |V| <= DEGENERATE_RELATIVE_VOLUME * (longest edge)³``
DEGENERATE_RELATIVE_VOLUME = 1e-12

# consistent P1 mass matrix of a tetrahedron of unit volume: ∫ λ_i λ_j dV = (1 + δ_ij) / 20
_UNIT_MASS = (np.ones((4, 4)) + np.eye(4)) / 20.0


def element_geometry(points: np.ndarray, tets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Volumes and barycentric-coordinate gradients of every tetrahedron.

    Parameters
    ----------
    points : ndarray, shape (n, 3), float
        Node coordinates (x, y, z), any length unit L.
    tets : ndarray, shape (k, 4), int
        Node indices of each tetrahedron; orientation does not matter.

    Returns
    -------
    volumes : ndarray, shape (k,), float
        Unsigned volumes (L³).
    gradients : ndarray, shape (k, 4, 3), float
        ``gradients[e, i]`` is ∇λ_i on tetrahedron ``e`` (1/L), the gradient of
        the hat function of its i-th node; the four gradients sum to zero.

    Raises
    ------
    cellscape.InputError
        If any tetrahedron is degenerate (relative volume at most
        :data:`DEGENERATE_RELATIVE_VOLUME`); the message gives their count and
        the index of the first one.
    """
    p0 = points[tets[:, 0]]
    edges = np.stack([points[tets[:, 1]] - p0, points[tets[:, 2]] - p0, points[tets[:, 3]] - p0], axis=1)
    six_volumes = np.linalg.det(edges)
    longest = np.linalg.norm(edges, axis=2).max(axis=1)
    longest = np.maximum(longest, np.linalg.norm(edges[:, [1, 2, 2]] - edges[:, [0, 0, 1]], axis=2).max(axis=1))
    degenerate = np.abs(six_volumes) <= DEGENERATE_RELATIVE_VOLUME * longest**3
    if degenerate.any():
        first = int(np.flatnonzero(degenerate)[0])
        raise cs.InputError(
            f"{int(degenerate.sum())} degenerate (zero-volume) tetrahedra, the first is #{first} "
            f"(nodes {tets[first].tolist()}); repair or re-mesh the volume"
        )
    # rows of E⁻ᵀ are ∇λ1, ∇λ2, ∇λ3 (x − p0 = Eᵀ λ); ∇λ0 = −(∇λ1 + ∇λ2 + ∇λ3)
    inverse_t = np.linalg.inv(edges).transpose(0, 2, 1)
    gradients = np.concatenate([-inverse_t.sum(axis=1, keepdims=True), inverse_t], axis=1)
    return np.abs(six_volumes) / 6.0, gradients


def _coo_indices(tets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of each entry of the (k, 4, 4) element matrices, raveled in (e, i, j) order."""
    rows = np.repeat(tets, 4, axis=1).ravel()
    cols = np.tile(tets, (1, 4)).ravel()
    return rows, cols


def assemble_p1(points: np.ndarray, tets: np.ndarray, lumped: bool = False) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
    """Global P1 stiffness and mass matrices.

    Parameters
    ----------
    points : ndarray, shape (n, 3), float
        Node coordinates, length unit L. Nodes in no tetrahedron get empty rows.
    tets : ndarray, shape (k, 4), int
        Tetrahedra of the domain.
    lumped : bool
        Return the diagonal (row-sum) lumped mass instead of the consistent one.

    Returns
    -------
    stiffness : scipy.sparse.csr_matrix, shape (n, n)
        ``K_ij = ∫ ∇φ_i · ∇φ_j dV`` (unit L); symmetric, ``K @ 1 = 0``.
    mass : scipy.sparse.csr_matrix, shape (n, n)
        ``M_ij = ∫ φ_i φ_j dV`` (unit L³), or its lumped diagonal.

    Raises
    ------
    cellscape.InputError
        If a tetrahedron is degenerate (see :func:`element_geometry`).
    """
    from scipy import sparse

    n = len(points)
    volumes, gradients = element_geometry(points, tets)
    rows, cols = _coo_indices(tets)
    local_stiffness = np.einsum("e,eid,ejd->eij", volumes, gradients, gradients)
    stiffness = sparse.coo_matrix((local_stiffness.ravel(), (rows, cols)), shape=(n, n)).tocsr()
    if lumped:
        diagonal = np.arange(n)
        mass = sparse.coo_matrix((lumped_mass(points, tets, volumes), (diagonal, diagonal)), shape=(n, n)).tocsr()
    else:
        local_mass = volumes[:, None, None] * _UNIT_MASS[None]
        mass = sparse.coo_matrix((local_mass.ravel(), (rows, cols)), shape=(n, n)).tocsr()
    return stiffness, mass


def lumped_mass(points: np.ndarray, tets: np.ndarray, volumes: np.ndarray | None = None) -> np.ndarray:
    """Each node's share of the volume: a quarter of every tetrahedron it belongs to.

    Parameters
    ----------
    points : ndarray, shape (n, 3), float
        Node coordinates, length unit L.
    tets : ndarray, shape (k, 4), int
        Tetrahedra of the domain.
    volumes : ndarray, shape (k,), optional
        Tetrahedron volumes if already known (L³).

    Returns
    -------
    ndarray, shape (n,), float
        Nodal weights (L³); they are the row sums of the consistent mass matrix
        and sum to the domain's volume. Nodes in no tetrahedron weigh 0.
    """
    if volumes is None:
        volumes = element_geometry(points, tets)[0]
    return np.bincount(tets.ravel(), weights=np.repeat(volumes / 4.0, 4), minlength=len(points))


def integrate(points: np.ndarray, tets: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Exact integral ``∫ u dV`` of P1 fields over the tetrahedra.

    Parameters
    ----------
    points : ndarray, shape (n, 3), float
        Node coordinates, length unit L.
    tets : ndarray, shape (k, 4), int
        Tetrahedra to integrate over.
    values : ndarray, shape (n,) or (n_times, n)
        Nodal values of one field or of one field per row.

    Returns
    -------
    float or ndarray, shape (n_times,)
        The integral(s), in (unit of values) · L³.
    """
    return np.asarray(values) @ lumped_mass(points, tets)
