"""P1 (piecewise-linear) finite elements on tetrahedra: vectorized assembly of stiffness and mass.

There is no Python loop over elements. The barycentric gradients of all
tetrahedra come from cross products of their edge vectors, computed on
``(3, k)`` arrays (one contiguous row per coordinate); the element matrices
are products of those rows. A P1 matrix has one entry per node and two per
mesh edge, so the global matrices are assembled on that pattern
(:class:`P1Pattern`): the diagonal is a ``bincount`` over the four corners of
every tetrahedron, the off-diagonal entries a ``bincount`` over its six
edges, and both land at CSR positions computed once per mesh. No
``(16 k)``-entry COO matrix is built, sorted and summed, and the stiffness and
mass matrices (and any further weighted ones) share the pattern.

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

__all__ = ["DEGENERATE_RELATIVE_VOLUME", "TET_EDGES", "P1Pattern", "assemble_p1", "element_geometry", "integrate",
           "lumped_mass"]

#: a tetrahedron is degenerate when ``6 |V| <= DEGENERATE_RELATIVE_VOLUME * (longest edge)³``
DEGENERATE_RELATIVE_VOLUME = 1e-12

#: the six edges of a tetrahedron as pairs of its corners; the order of :attr:`P1Pattern.edge_of`
TET_EDGES = np.array([[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]])

# consistent P1 mass matrix of a tetrahedron of unit volume: ∫ λ_i λ_j dV = (1 + δ_ij) / 20
_UNIT_MASS = (np.ones((4, 4)) + np.eye(4)) / 20.0


def _geometry(points: np.ndarray, tets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Volumes (k,) and gradients laid out (4, 3, k): ``gradients[i, d, e] = ∂λ_i/∂x_d`` on tetrahedron e.

    Rows of the inverse of the edge matrix E = [e1; e2; e3] (eᵢ = pᵢ − p0) are
    ∇λ1, ∇λ2, ∇λ3 = (e2 × e3, e3 × e1, e1 × e2) / det E; ∇λ0 = −(∇λ1 + ∇λ2 + ∇λ3).
    """
    coordinates = np.ascontiguousarray(np.asarray(points, dtype=np.float64).T)
    corners = np.ascontiguousarray(np.asarray(tets).T)
    k = corners.shape[1]
    edges = np.empty((3, 3, k))
    origin = np.take(coordinates, corners[0], axis=1)
    for i in range(3):
        np.take(coordinates, corners[i + 1], axis=1, out=edges[i])
        edges[i] -= origin
    del origin
    gradients = np.empty((4, 3, k))
    for row, (a, b) in zip((1, 2, 3), ((1, 2), (2, 0), (0, 1)), strict=True):
        for d in range(3):
            np.multiply(edges[a, (d + 1) % 3], edges[b, (d + 2) % 3], out=gradients[row, d])
            gradients[row, d] -= edges[a, (d + 2) % 3] * edges[b, (d + 1) % 3]
    six_volumes = np.einsum("de,de->e", edges[0], gradients[1])
    # squared edge lengths: |e_i|² and |e_j − e_i|² = |e_i|² + |e_j|² − 2 e_i · e_j
    squared = [np.einsum("de,de->e", edges[i], edges[i]) for i in range(3)]
    longest = np.maximum(np.maximum(squared[0], squared[1]), squared[2])
    for i, j in ((0, 1), (0, 2), (1, 2)):
        np.maximum(longest, squared[i] + squared[j] - 2.0 * np.einsum("de,de->e", edges[i], edges[j]), out=longest)
    del edges, squared
    degenerate = np.abs(six_volumes) <= DEGENERATE_RELATIVE_VOLUME * longest * np.sqrt(longest)
    if degenerate.any():
        first = int(np.flatnonzero(degenerate)[0])
        raise cs.InputError(
            f"{int(degenerate.sum())} degenerate (zero-volume) tetrahedra, the first is #{first} "
            f"(nodes {np.asarray(tets)[first].tolist()}); repair or re-mesh the volume"
        )
    gradients[1:] *= 1.0 / six_volumes
    np.add(gradients[1], gradients[2], out=gradients[0])
    gradients[0] += gradients[3]
    np.negative(gradients[0], out=gradients[0])
    return np.abs(six_volumes) / 6.0, gradients


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
    volumes, gradients = _geometry(points, tets)
    return volumes, np.ascontiguousarray(gradients.transpose(2, 0, 1))


def _coo_indices(tets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of each entry of the (k, 4, 4) element matrices, raveled in (e, i, j) order."""
    rows = np.repeat(tets, 4, axis=1).ravel()
    cols = np.tile(tets, (1, 4)).ravel()
    return rows, cols


class P1Pattern:
    """The CSR sparsity pattern of P1 matrices on a tetrahedral mesh, and where element entries land in it.

    Row i holds the diagonal entry and one entry per mesh edge at node i. Build it once per mesh
    (:meth:`from_tets`) and pass it to :func:`assemble_p1` or :meth:`matrix` for every matrix on
    that mesh: all share ``indptr`` and ``indices``, so they add without a sparsity merge.

    Attributes
    ----------
    n_points : int
        Matrix size (n, n).
    edges : ndarray, shape (m, 2), int64
        The mesh edges, ``edges[:, 0] < edges[:, 1]``, sorted.
    edge_of : ndarray, shape (6, k), intp
        ``edge_of[j, e]`` is the index in ``edges`` of edge :data:`TET_EDGES` ``[j]`` of tetrahedron e.
    corners : ndarray, shape (4, k), intp
        The tetrahedra, transposed (corner i of every tetrahedron is one contiguous row).
    indptr, indices : ndarray, int32
        The CSR structure (sorted column indices) shared by every matrix built on the pattern.
    """

    def __init__(self, n_points: int, edges: np.ndarray, edge_of: np.ndarray, corners: np.ndarray,
                 indptr: np.ndarray, indices: np.ndarray, source: np.ndarray):
        self.n_points, self.edges, self.edge_of, self.corners = n_points, edges, edge_of, corners
        self.indptr, self.indices = indptr, indices
        # data[p] = concatenate([upper values per edge, lower values per edge, diagonal per node])[source[p]]
        self._source = source

    @classmethod
    def from_tets(cls, tets: np.ndarray, n_points: int) -> P1Pattern:
        """The pattern of the mesh with tetrahedra ``tets`` (k, 4) over ``n_points`` nodes.

        Cost: linear in k apart from sorts within rows of a dozen or so entries. The 6 k (lower, higher)
        node pairs go through a COO → CSR conversion (a counting sort by row) that merges repeated
        edges; the full pattern is that upper triangle, its transpose and the diagonal added, with
        each entry's number riding along as its value.
        """
        from scipy import sparse

        corners = np.ascontiguousarray(np.asarray(tets, dtype=np.intp).T)
        first, second = corners[TET_EDGES[:, 0]], corners[TET_EDGES[:, 1]]
        low, high = np.minimum(first, second).ravel(), np.maximum(first, second).ravel()
        del first, second
        shape = (n_points, n_points)
        upper = sparse.csr_matrix((np.ones(len(low), np.int32), (low, high)), shape=shape)
        upper.sum_duplicates()
        m = upper.nnz
        # entry numbers + 1 as values: a stored 0 would be dropped by the sums below
        upper.data = np.arange(1, m + 1, dtype=np.int64)
        edge_of = np.asarray(upper[low, high]).reshape(6, -1) - 1
        del low, high
        edges = np.stack([np.repeat(np.arange(n_points), np.diff(upper.indptr)), upper.indices], axis=1).astype(np.int64)
        lower = upper.T.tocsr()
        lower.data += m
        diagonal = sparse.csr_matrix((np.arange(2 * m + 1, 2 * m + n_points + 1, dtype=np.int64), np.arange(n_points),
                                      np.arange(n_points + 1)), shape=shape)
        full = (upper + lower + diagonal).tocsr()
        full.sort_indices()
        return cls(n_points, edges, edge_of.astype(np.intp), corners, full.indptr.astype(np.int32),
                   full.indices.astype(np.int32), (full.data - 1).astype(np.intp))

    @property
    def nnz(self) -> int:
        """Stored entries of every matrix on the pattern: n + 2 (number of edges)."""
        return len(self.indices)

    def matrix(self, diagonal: np.ndarray, off_diagonal: np.ndarray) -> sparse.csr_matrix:
        """Assemble a symmetric matrix from element contributions.

        Parameters
        ----------
        diagonal : ndarray, shape (4, k) or (k,)
            ``A_T[i, i]`` of every tetrahedron T, corner-major; shape (k,) when the four are equal.
        off_diagonal : ndarray, shape (6, k) or (k,)
            ``A_T[a, b] = A_T[b, a]`` for the corner pairs :data:`TET_EDGES`; shape (k,) when the six are equal.

        Returns
        -------
        scipy.sparse.csr_matrix, shape (n, n)
            ``Σ_T A_T`` scattered to global nodes, with sorted indices.
        """
        from scipy import sparse

        values = np.zeros(2 * len(self.edges) + self.n_points)
        on_edges, on_nodes = values[: len(self.edges)], values[2 * len(self.edges):]
        # one bincount per corner pair / corner: rows of (6, k) and (4, k) are contiguous, nothing is copied
        for j in range(6):
            on_edges += np.bincount(self.edge_of[j], weights=off_diagonal if off_diagonal.ndim == 1 else off_diagonal[j],
                                    minlength=len(self.edges))
        for i in range(4):
            on_nodes += np.bincount(self.corners[i], weights=diagonal if diagonal.ndim == 1 else diagonal[i],
                                    minlength=self.n_points)
        values[len(self.edges): 2 * len(self.edges)] = on_edges
        shape = (self.n_points, self.n_points)
        return sparse.csr_matrix((values[self._source], self.indices, self.indptr), shape=shape, copy=False)

    def diagonal_matrix(self, values: np.ndarray) -> sparse.csr_matrix:
        """A diagonal matrix (n,) on this pattern (zeros stored off the diagonal), so it adds to the others cheaply."""
        from scipy import sparse

        data = np.concatenate([np.zeros(2 * len(self.edges)), np.asarray(values, dtype=np.float64)])[self._source]
        return sparse.csr_matrix((data, self.indices, self.indptr), shape=(self.n_points, self.n_points), copy=False)


def assemble_p1(points: np.ndarray, tets: np.ndarray, lumped: bool = False, *,
                stiffness_weights: np.ndarray | None = None, mass_weights: np.ndarray | None = None,
                pattern: P1Pattern | None = None) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
    """Global P1 stiffness and mass matrices.

    Parameters
    ----------
    points : ndarray, shape (n, 3), float
        Node coordinates, length unit L. Nodes in no tetrahedron get empty rows
        (explicit zeros on the diagonal).
    tets : ndarray, shape (k, 4), int
        Tetrahedra of the domain.
    lumped : bool
        Return the diagonal (row-sum) lumped mass instead of the consistent one.
    stiffness_weights, mass_weights : ndarray, shape (k,), optional
        A coefficient per tetrahedron multiplying its contribution: ``K_ij = Σ_T w_T ∫_T ∇φ_i · ∇φ_j``
        (e.g. D in L²/s) and ``M_ij = Σ_T w_T ∫_T φ_i φ_j`` (e.g. a reaction rate in 1/s).
    pattern : P1Pattern, optional
        The pattern of ``tets`` (from :meth:`P1Pattern.from_tets`), to skip computing it again.

    Returns
    -------
    stiffness : scipy.sparse.csr_matrix, shape (n, n)
        ``K_ij = ∫ ∇φ_i · ∇φ_j dV`` (unit L); symmetric, ``K @ 1 = 0``.
    mass : scipy.sparse.csr_matrix, shape (n, n)
        ``M_ij = ∫ φ_i φ_j dV`` (unit L³), or its lumped diagonal (n stored entries).
        The consistent mass and the stiffness share one sparsity pattern, with sorted indices.

    Raises
    ------
    cellscape.InputError
        If a tetrahedron is degenerate (see :func:`element_geometry`).
    """
    tets = np.asarray(tets)
    n = len(points)
    volumes, gradients = _geometry(points, tets)
    if pattern is None:
        pattern = P1Pattern.from_tets(tets, n)
    stiffness_volumes = volumes if stiffness_weights is None else volumes * np.asarray(stiffness_weights, np.float64)
    mass_volumes = volumes if mass_weights is None else volumes * np.asarray(mass_weights, np.float64)
    # K_T[a, b] = |T| ∇λ_a · ∇λ_b, one contiguous (k,) row per pair
    diagonal = np.einsum("ide,ide->ie", gradients, gradients)
    diagonal *= stiffness_volumes
    off_diagonal = np.empty((6, len(volumes)))
    for j, (a, b) in enumerate(TET_EDGES):
        np.einsum("de,de->e", gradients[a], gradients[b], out=off_diagonal[j])
    off_diagonal *= stiffness_volumes
    del gradients
    stiffness = pattern.matrix(diagonal, off_diagonal)
    if lumped:
        from scipy import sparse

        diagonal_entries = np.arange(n + 1, dtype=np.int32)
        mass = sparse.csr_matrix((lumped_mass(points, tets, mass_volumes), diagonal_entries[:-1], diagonal_entries),
                                 shape=(n, n))
    else:
        mass = pattern.matrix(mass_volumes * _UNIT_MASS[0, 0], mass_volumes * _UNIT_MASS[0, 1])
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
        Tetrahedron volumes if already known (L³), or any weight per tetrahedron.

    Returns
    -------
    ndarray, shape (n,), float
        Nodal weights (L³); they are the row sums of the consistent mass matrix
        and sum to the domain's volume. Nodes in no tetrahedron weigh 0.
    """
    if volumes is None:
        volumes = _geometry(points, tets)[0]
    return np.bincount(np.asarray(tets).ravel(), weights=np.repeat(volumes / 4.0, 4), minlength=len(points))


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
