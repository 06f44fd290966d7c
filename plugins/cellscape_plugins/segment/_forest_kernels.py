"""Compiled loops of the random-forest pipeline (numba): separable filters, 3×3 eigenvalues, forest traversal.

This module imports numba at import time, so the feature bank and the forest
import it inside the functions that run, never at plugin discovery.

Every kernel computes each output value with the same sequence of float
operations wherever it lies (no ``fastmath``, so no reassociation or
contraction), hence a chunk of the volume gives bit for bit the values of
the whole volume, and a thread count never changes a result.

Filters and eigenvalues run on one thread and release the GIL (``nogil``):
the random forest runs chunks of the volume on several Python threads, so
both cores work without a parallel region (and its wake-up and barrier) per
filter pass. The traversal is parallel over blocks of voxels (``prange``)
when called with more than one numba thread.

Filters
    :func:`correlate_valid` correlates a float32 3D array with a 1D kernel
    along one axis in *valid* mode: the output is shorter by the kernel's
    length minus one, so a chunk computed on its halo returns the chunk
    only, and later passes run on smaller arrays. Symmetric kernels (Gaussian,
    second derivative) and antisymmetric ones (first derivative) use one
    multiplication per pair of taps.

Eigenvalues
    :func:`symmetric_eigenvalues_3x3` gives the ascending eigenvalues of a
    field of symmetric 3×3 matrices in closed form (trigonometric method,
    float64 per voxel).

Forest
    :func:`forest_probabilities` runs every voxel through every tree of a
    forest stored as flat node arrays (all trees concatenated), in blocks of
    voxels: a block's features are copied voxel-major into a small buffer,
    then each tree moves all the block's voxels one level at a time (leaves
    point to themselves), so the processor follows many independent paths at
    once; the block leaves the tree after the tree's depth or as soon as a
    level moves no voxel, one well-predicted test per level. Leaf
    probabilities are summed per voxel in float64 (no trees × voxels ×
    classes array) and divided by the number of trees once, as
    scikit-learn's ``predict_proba`` does.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["correlate_valid", "forest_probabilities", "symmetric_eigenvalues_3x3"]

_BLOCK = 64  # voxels classified together: their features (64 x 60 x 4 bytes) stay in the L1 cache


# -- separable filters ---------------------------------------------------------------------------------------------

@numba.njit(nogil=True, cache=True)
def _correlate_axis0(src, weights, sign, out):  # pragma: no cover - compiled
    radius = (weights.shape[0] - 1) // 2
    n0, n1, n2 = out.shape
    size = n1 * n2
    for i in range(n0):
        total = out[i].reshape(size)
        centre = src[i + radius].reshape(size)
        for k in range(size):
            total[k] = weights[radius] * centre[k]
        for t in range(1, radius + 1):
            after = src[i + radius + t].reshape(size)
            before = src[i + radius - t].reshape(size)
            weight = weights[radius + t]
            for k in range(size):
                total[k] += weight * (after[k] + sign * before[k])


@numba.njit(nogil=True, cache=True)
def _correlate_axis1(src, weights, sign, out):  # pragma: no cover - compiled
    radius = (weights.shape[0] - 1) // 2
    n0, n1, n2 = out.shape
    for i in range(n0):
        for j in range(n1):
            total = out[i, j]
            centre = src[i, j + radius]
            for k in range(n2):
                total[k] = weights[radius] * centre[k]
            for t in range(1, radius + 1):
                after = src[i, j + radius + t]
                before = src[i, j + radius - t]
                weight = weights[radius + t]
                for k in range(n2):
                    total[k] += weight * (after[k] + sign * before[k])


@numba.njit(nogil=True, cache=True)
def _correlate_axis2(src, weights, sign, out):  # pragma: no cover - compiled
    radius = (weights.shape[0] - 1) // 2
    n0, n1, n2 = out.shape
    for i in range(n0):
        for j in range(n1):
            total = out[i, j]
            row = src[i, j]
            for k in range(n2):
                total[k] = weights[radius] * row[k + radius]
            for t in range(1, radius + 1):
                after = row[radius + t:radius + t + n2]  # contiguous slices: the inner loop vectorizes
                before = row[radius - t:radius - t + n2]
                weight = weights[radius + t]
                for k in range(n2):
                    total[k] += weight * (after[k] + sign * before[k])


_CORRELATE = (_correlate_axis0, _correlate_axis1, _correlate_axis2)


def correlate_valid(src: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
    """Correlate a 3D array with a symmetric or antisymmetric 1D kernel along one axis, in valid mode.

    Only the positions whose whole kernel lies inside ``src`` are kept. Each
    pair of taps at ±t costs one multiplication: ``w[r+t] · (s[i+t] ± s[i-t])``.

    Parameters
    ----------
    src : (n0, n1, n2) float32 array
    weights : (2r + 1,) float32 array
        Correlation weights, ``out[i] = Σ_t weights[r + t] · src[i + r + t]`` along ``axis``; symmetric
        (``w[r+t] = w[r-t]``) or antisymmetric (``w[r+t] = -w[r-t]``, ``w[r] = 0``).
    axis : 0, 1 or 2

    Returns
    -------
    float32 C-contiguous array: ``src``'s shape with ``2r`` fewer positions along ``axis``.
    """
    src = np.ascontiguousarray(src, np.float32)
    weights = np.ascontiguousarray(weights, np.float32)
    radius = (weights.size - 1) // 2
    if weights.size % 2 != 1 or src.shape[axis] < weights.size:
        raise ValueError(f"correlate_valid: need an odd kernel no longer than axis {axis} of {src.shape}, "
                         f"got {weights.size} weights")
    after, before = weights[radius + 1:], weights[radius - 1::-1] if radius else weights[:0]
    if np.array_equal(after, before):
        sign = np.float32(1.0)
    elif np.array_equal(after, -before) and weights[radius] == 0:
        sign = np.float32(-1.0)
    else:
        raise ValueError("correlate_valid: the kernel must be symmetric or antisymmetric")
    shape = list(src.shape)
    shape[axis] -= 2 * radius
    out = np.empty(shape, np.float32)
    _CORRELATE[axis](src, weights, sign, out)
    return out


# -- eigenvalues of symmetric 3x3 matrices ----------------------------------------------------------------------------

@numba.njit(nogil=True, cache=True)
def _eigenvalues(zz, zy, zx, yy, yx, xx, out):  # pragma: no cover - compiled
    third_turn = 2.0 * np.pi / 3.0
    for i in range(zz.shape[0]):
        a, b, c = np.float64(zz[i]), np.float64(zy[i]), np.float64(zx[i])
        d, e, f = np.float64(yy[i]), np.float64(yx[i]), np.float64(xx[i])
        q = (a + d + f) / 3.0
        da, dd, df = a - q, d - q, f - q
        p = np.sqrt((da * da + dd * dd + df * df + 2.0 * (b * b + c * c + e * e)) / 6.0)
        if p == 0.0:
            out[0, i] = q
            out[1, i] = q
            out[2, i] = q
            continue
        # half the determinant of (A - qI) / p, clipped against rounding
        half_det = (da * (dd * df - e * e) - b * (b * df - e * c) + c * (b * e - dd * c)) / (2.0 * p * p * p)
        half_det = min(1.0, max(-1.0, half_det))
        phi = np.arccos(half_det) / 3.0
        largest = q + 2.0 * p * np.cos(phi)
        smallest = q + 2.0 * p * np.cos(phi + third_turn)
        out[0, i] = smallest
        out[1, i] = 3.0 * q - largest - smallest
        out[2, i] = largest


def symmetric_eigenvalues_3x3(zz: np.ndarray, zy: np.ndarray, zx: np.ndarray, yy: np.ndarray, yx: np.ndarray,
                              xx: np.ndarray) -> np.ndarray:
    """Ascending eigenvalues of symmetric 3×3 matrices given by their six entries (arrays of one shape).

    Returns
    -------
    (3, *shape) float32 array.
    """
    shape = np.shape(zz)
    flat = [np.ascontiguousarray(m, np.float32).reshape(-1) for m in (zz, zy, zx, yy, yx, xx)]
    out = np.empty((3, flat[0].size), np.float32)
    _eigenvalues(*flat, out)
    return out.reshape(3, *shape)


# -- forest traversal -----------------------------------------------------------------------------------------------

@numba.njit(parallel=True, nogil=True, cache=True)
def _forest(features, roots, depths, feature, threshold, children, leaf_probability, out):  # pragma: no cover
    n_features, n_voxels = features.shape
    n_trees = roots.shape[0]
    n_classes = leaf_probability.shape[1]
    n_blocks = (n_voxels + _BLOCK - 1) // _BLOCK
    for block in numba.prange(n_blocks):
        start = block * _BLOCK
        size = min(n_voxels, start + _BLOCK) - start
        # unsigned indices: numba then skips its negative-index wrap-around test on every access
        local = np.empty(size * n_features, np.float32)  # the block's features, voxel-major
        for f in range(n_features):
            for v in range(size):
                local[v * n_features + f] = features[f, start + v]
        total = np.zeros((size, n_classes), np.float64)
        node = np.empty(size, np.uintp)
        for tree in range(n_trees):
            root = np.uintp(roots[tree])
            for v in range(size):
                node[v] = root
            for _ in range(depths[tree]):
                moved = np.uintp(0)
                for v in range(size):
                    n = node[v]
                    x = local[np.uintp(v * n_features) + np.uintp(feature[n])]
                    child = np.uintp(children[np.uintp(2) * n + np.uintp(x > threshold[n])])
                    moved |= child ^ n
                    node[v] = child
                if moved == 0:  # every voxel of the block sits on a leaf (a leaf is its own child)
                    break
            for v in range(size):
                for k in range(n_classes):
                    total[v, k] += leaf_probability[node[v], k]
        for k in range(n_classes):
            for v in range(size):
                out[k, start + v] = total[v, k] / n_trees


def forest_probabilities(features: np.ndarray, roots: np.ndarray, depths: np.ndarray, feature: np.ndarray,
                         threshold: np.ndarray, children: np.ndarray, leaf_probability: np.ndarray) -> np.ndarray:
    """Mean over trees of the leaf class probabilities each voxel reaches.

    Parameters
    ----------
    features : (n_features, n_voxels) float32 array
    roots : (n_trees,) int32
        Global node index of each tree's root.
    depths : (n_trees,) int32
        Depth of each tree (levels below the root).
    feature : (n_nodes,) uint32
        Feature tested at each node (any valid index at leaves).
    threshold : (n_nodes,) float32
        A voxel goes to the second child when its feature is greater; +inf at leaves.
    children : (2 · n_nodes,) uint32
        ``children[2 n]`` and ``children[2 n + 1]``: the children of node ``n`` (a leaf's are itself).
    leaf_probability : (n_nodes, K) float32
        Class probabilities at each node.

    Returns
    -------
    (K, n_voxels) float32 array.
    """
    features = np.ascontiguousarray(features, np.float32)
    out = np.empty((leaf_probability.shape[1], features.shape[1]), np.float32)
    _forest(features, roots, depths, feature, threshold, children, leaf_probability, out)
    return out
