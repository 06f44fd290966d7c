"""P1 finite elements on triangulated surfaces in 3D: mass, Laplace–Beltrami stiffness, volume–surface coupling.

The surface species of a model live on marked boundary triangles of a
:class:`cellscape.TetMesh`; so do the membrane fluxes that couple them to
volume species. Everything here is vectorized over triangles (one batched
2×2 inverse, one ``einsum``, one COO construction), like :mod:`._p1`.

For a P1 function ``u`` on the surface Γ with nodal values ``u_i``:

- ``v @ K @ u = ∫_Γ ∇_Γ v · ∇_Γ u dA``  (Laplace–Beltrami stiffness, unit: length⁰)
- ``v @ M @ u = ∫_Γ v u dA``            (consistent mass, unit: length²; exact for P1)
- lumped mass: each node's share of the area (a third of each triangle it belongs to)

The trace of a volume P1 function on a boundary triangle is the P1 function
on that triangle with the same nodal values, so a flux ``j(u_vol, u_surf)``
through Γ enters the volume equations of the nodes of Γ as ``M_Γ j`` (with
nodal quadrature of ``j``): the coupling matrix between volume and surface
unknowns is the surface mass matrix with rows and columns renumbered to each
species' unknowns (:func:`coupling_entries`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

import cellscape as cs

if TYPE_CHECKING:
    from scipy import sparse

__all__ = [
    "DEGENERATE_RELATIVE_AREA",
    "assemble_surface_p1",
    "coupling_entries",
    "surface_lumped_mass",
    "triangle_geometry",
]

#: a triangle is degenerate when ``2 |A| <= DEGENERATE_RELATIVE_AREA * (longest edge)²``
DEGENERATE_RELATIVE_AREA = 1e-12

# consistent P1 mass matrix of a triangle of unit area: ∫ λ_i λ_j dA = (1 + δ_ij) / 12
_UNIT_MASS = (np.ones((3, 3)) + np.eye(3)) / 12.0


def triangle_geometry(points: np.ndarray, triangles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Areas and tangential barycentric gradients of triangles embedded in 3D.

    Parameters
    ----------
    points : ndarray, shape (n, 3), float
        Node coordinates, any length unit L.
    triangles : ndarray, shape (k, 3), int
        Node indices of each triangle; orientation does not matter.

    Returns
    -------
    areas : ndarray, shape (k,), float
        Areas (L²).
    gradients : ndarray, shape (k, 3, 3), float
        ``gradients[e, i]`` is the surface gradient ∇_Γ λ_i on triangle ``e``
        (1/L), a vector in the triangle's plane; the three sum to zero.

    Raises
    ------
    cellscape.InputError
        If a triangle is degenerate (relative area at most :data:`DEGENERATE_RELATIVE_AREA`).
    """
    p0 = points[triangles[:, 0]]
    e1, e2 = points[triangles[:, 1]] - p0, points[triangles[:, 2]] - p0
    g11, g12, g22 = (e1 * e1).sum(1), (e1 * e2).sum(1), (e2 * e2).sum(1)
    determinant = g11 * g22 - g12**2  # = (2 · area)²
    longest = np.sqrt(np.maximum.reduce([g11, g22, ((e2 - e1) ** 2).sum(1)]))
    degenerate = np.sqrt(np.maximum(determinant, 0.0)) <= DEGENERATE_RELATIVE_AREA * longest**2
    if degenerate.any():
        first = int(np.flatnonzero(degenerate)[0])
        raise cs.InputError(
            f"{int(degenerate.sum())} degenerate (zero-area) boundary triangles, the first is #{first} "
            f"(nodes {triangles[first].tolist()}); repair or re-mesh the surface"
        )
    # ∇λ_1, ∇λ_2 are the columns of G g⁻¹ with G = [e1 e2] and the metric g = GᵀG
    grad1 = (g22[:, None] * e1 - g12[:, None] * e2) / determinant[:, None]
    grad2 = (g11[:, None] * e2 - g12[:, None] * e1) / determinant[:, None]
    gradients = np.stack([-(grad1 + grad2), grad1, grad2], axis=1)
    return 0.5 * np.sqrt(determinant), gradients


def _coo_indices(triangles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.repeat(triangles, 3, axis=1).ravel(), np.tile(triangles, (1, 3)).ravel()


def assemble_surface_p1(points: np.ndarray, triangles: np.ndarray, lumped: bool = False,
                        coefficient: np.ndarray | float = 1.0) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
    """Global P1 Laplace–Beltrami stiffness (times a coefficient per triangle) and mass on a surface.

    Parameters
    ----------
    points : ndarray, shape (n, 3), float
        Node coordinates, length unit L; nodes on no triangle get empty rows.
    triangles : ndarray, shape (k, 3), int
        Triangles of the surface.
    lumped : bool
        Return the diagonal (row-sum) lumped mass instead of the consistent one.
    coefficient : float or ndarray, shape (k,)
        Multiplies each triangle's stiffness (e.g. a diffusion coefficient, L²/s).

    Returns
    -------
    stiffness : scipy.sparse.csr_matrix, shape (n, n)
        ``K_ij = ∫_Γ c ∇_Γ φ_i · ∇_Γ φ_j dA`` (unit of c); symmetric, ``K @ 1 = 0``.
    mass : scipy.sparse.csr_matrix, shape (n, n)
        ``M_ij = ∫_Γ φ_i φ_j dA`` (L²) or its lumped diagonal.

    Raises
    ------
    cellscape.InputError
        If a triangle is degenerate.
    """
    from scipy import sparse

    n = len(points)
    areas, gradients = triangle_geometry(points, triangles)
    rows, cols = _coo_indices(triangles)
    weights = areas * np.broadcast_to(np.asarray(coefficient, dtype=float), areas.shape)
    local_stiffness = np.einsum("e,eid,ejd->eij", weights, gradients, gradients)
    stiffness = sparse.coo_matrix((local_stiffness.ravel(), (rows, cols)), shape=(n, n)).tocsr()
    if lumped:
        diagonal = np.arange(n)
        mass = sparse.coo_matrix((surface_lumped_mass(points, triangles, areas), (diagonal, diagonal)),
                                 shape=(n, n)).tocsr()
    else:
        local_mass = areas[:, None, None] * _UNIT_MASS[None]
        mass = sparse.coo_matrix((local_mass.ravel(), (rows, cols)), shape=(n, n)).tocsr()
    return stiffness, mass


def surface_lumped_mass(points: np.ndarray, triangles: np.ndarray, areas: np.ndarray | None = None) -> np.ndarray:
    """Each node's share of the surface area: a third of every triangle it belongs to.

    Returns
    -------
    ndarray, shape (n,), float
        Nodal weights (L²), the row sums of the consistent surface mass; they sum to the area.
    """
    if areas is None:
        areas = triangle_geometry(points, triangles)[0]
    return np.bincount(triangles.ravel(), weights=np.repeat(areas / 3.0, 3), minlength=len(points))


def coupling_entries(mass: sparse.spmatrix, row_dofs: np.ndarray, col_dofs: np.ndarray,
                     column_weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """COO entries of ``M diag(w)`` with rows and columns renumbered to two species' unknowns.

    Parameters
    ----------
    mass : scipy sparse matrix, shape (m, m)
        A mass matrix on the m nodes of a surface (or a volume region), in local numbering.
    row_dofs, col_dofs : ndarray, shape (m,), int
        Global unknown index of each local node for the species of the rows and of the columns.
    column_weights : ndarray, shape (m,), optional
        Nodal values multiplying each column (e.g. ∂j/∂u at the nodes); default 1.

    Returns
    -------
    rows, cols, values : ndarray
        Entries to add to a global (Jacobian) matrix; duplicates are to be summed.
    """
    coo = mass.tocoo()
    values = coo.data if column_weights is None else coo.data * column_weights[coo.col]
    return row_dofs[coo.row], col_dofs[coo.col], values
