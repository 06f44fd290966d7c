"""P1 assembly on a precomputed pattern: the same matrices as the textbook COO sum, weights, reuse, odd meshes."""

from __future__ import annotations

import numpy as np
import pytest
from meshes import cube_mesh
from scipy import sparse

import cellscape as cs
from cellscape_plugins.solve._p1 import _UNIT_MASS, TET_EDGES, P1Pattern, _coo_indices, assemble_p1, element_geometry


def jittered(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    mesh = cube_mesh(n, 1.0)
    points = mesh.points + np.random.default_rng(seed).uniform(-0.2, 0.2, mesh.points.shape) / n
    return points, np.asarray(mesh.tetrahedra)


def reference(points: np.ndarray, tets: np.ndarray, weights_k: np.ndarray, weights_m: np.ndarray):
    """K and M summed the textbook way: (k, 4, 4) element matrices from a batched inverse, COO → CSR."""
    p0 = points[tets[:, 0]]
    edges = np.stack([points[tets[:, i]] - p0 for i in (1, 2, 3)], axis=1)
    volumes = np.abs(np.linalg.det(edges)) / 6
    inverse_t = np.linalg.inv(edges).transpose(0, 2, 1)
    gradients = np.concatenate([-inverse_t.sum(axis=1, keepdims=True), inverse_t], axis=1)
    local_k = np.einsum("e,eid,ejd->eij", volumes * weights_k, gradients, gradients)
    local_m = (volumes * weights_m)[:, None, None] * _UNIT_MASS
    rows, cols = _coo_indices(tets)
    n = len(points)
    return (sparse.coo_matrix((local_k.ravel(), (rows, cols)), shape=(n, n)).tocsr(),
            sparse.coo_matrix((local_m.ravel(), (rows, cols)), shape=(n, n)).tocsr(), gradients)


@pytest.mark.parametrize("seed", [0, 1])
def test_pattern_assembly_equals_the_coo_sum(seed: int) -> None:
    points, tets = jittered(4, seed)
    rng = np.random.default_rng(seed + 10)
    tets = tets[rng.permutation(len(tets))][:, rng.permutation(4)]  # any order of elements and corners
    weights_k, weights_m = rng.uniform(0.5, 2.0, len(tets)), rng.uniform(0.0, 3.0, len(tets))
    expected_k, expected_m, expected_gradients = reference(points, tets, weights_k, weights_m)
    stiffness, mass = assemble_p1(points, tets, stiffness_weights=weights_k, mass_weights=weights_m)
    assert abs(stiffness - expected_k).max() < 1e-13 * abs(expected_k).max()
    assert abs(mass - expected_m).max() < 1e-14 * abs(expected_m).max()
    gradients = element_geometry(points, tets)[1]
    np.testing.assert_allclose(gradients, expected_gradients, rtol=1e-11, atol=1e-11)
    # one shared CSR structure with sorted indices: the nodes and the two ends of every mesh edge
    pattern = P1Pattern.from_tets(tets, len(points))
    assert stiffness.has_sorted_indices and mass.has_sorted_indices
    np.testing.assert_array_equal(stiffness.indptr, mass.indptr)
    np.testing.assert_array_equal(stiffness.indices, mass.indices)
    edges = {tuple(sorted(pair)) for t in tets.tolist() for pair in ((t[a], t[b]) for a, b in TET_EDGES)}
    assert pattern.nnz == len(points) + 2 * len(edges) == stiffness.nnz
    assert {tuple(e) for e in pattern.edges.tolist()} == edges
    np.testing.assert_array_equal(pattern.edges[pattern.edge_of[2, 7]], sorted((tets[7, 0], tets[7, 3])))
    # a known pattern gives the same matrices
    again_k, again_m = assemble_p1(points, tets, stiffness_weights=weights_k, mass_weights=weights_m, pattern=pattern)
    np.testing.assert_array_equal(again_k.data, stiffness.data)
    np.testing.assert_array_equal(again_m.data, mass.data)
    # weighted lumped mass: row sums of the weighted consistent mass, on the diagonal only
    _, lumped = assemble_p1(points, tets, lumped=True, mass_weights=weights_m)
    assert lumped.nnz == len(points)
    np.testing.assert_allclose(lumped.diagonal(), np.asarray(expected_m.sum(axis=1)).ravel(), rtol=1e-13)


def test_nodes_outside_every_tetrahedron_get_empty_rows() -> None:
    points, tets = jittered(2, 3)
    points = np.concatenate([points, [[5.0, 5.0, 5.0]]])  # an unused node at the end
    stiffness, mass = assemble_p1(points, tets)
    assert stiffness.shape == (len(points), len(points))
    assert stiffness[-1].count_nonzero() == 0 and mass[-1].count_nonzero() == 0
    assert mass.diagonal()[-1] == 0.0
    assert mass.sum() == pytest.approx(element_geometry(points, tets)[0].sum(), rel=1e-12)


def test_block_matrices_built_from_the_shared_pattern_add_without_a_merge() -> None:
    points, tets = jittered(3, 4)
    stiffness, mass = assemble_p1(points, tets)
    combined = stiffness + 0.1 * mass
    assert combined.nnz == stiffness.nnz  # same pattern, no new entries
    np.testing.assert_allclose((combined @ np.ones(len(points))).sum(), 0.1 * mass.sum(), rtol=1e-12)


def test_degenerate_tetrahedra_are_still_refused() -> None:
    points = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]], float)
    with pytest.raises(cs.InputError, match=r"1 degenerate \(zero-volume\) tetrahedra, the first is #1"):
        assemble_p1(points, np.array([[0, 1, 2, 3], [0, 1, 2, 4]]))
