"""Single-axis parallel-beam geometry and its projection matrices.

The tilt axis runs along Y, so every Y slice of the tomogram is an
independent 2D problem in the (z, x) plane, and every slice shares one
system matrix. Coordinates are in detector pixels, centred: pixel ``j`` of a
row of ``nx`` sits at ``x = j - (nx - 1) / 2``; slab row ``k`` of ``nz`` at
``z = k - (nz - 1) / 2 + z_offset``. A point (x, z) seen at tilt θ lands on
the detector at ``u = x cos θ + z sin θ`` (the convention of
``generate.tilt_series``).

Two matrices, both sparse (CSR, float32) and shared by every slice:

- :func:`projection_matrix` — Joseph's ray-driven projector: each ray steps
  through the slab one row (or column) at a time and interpolates linearly
  between the two nearest pixels, weighted by the step length. Accurate line
  integrals; the iterative methods use it and its exact transpose.
- :func:`backprojection_matrix` — the pixel-driven backprojector of filtered
  backprojection: each pixel reads its detector position by linear
  interpolation. Shape (pixels, rays).

Rays are numbered ``angle * nu + u``, pixels ``z * nx + x``.
"""

from __future__ import annotations

import functools

import attrs
import numpy as np
import scipy.sparse as sp


@attrs.frozen
class Geometry:
    """One slice's geometry: detector width, slab size and tilt angles (degrees)."""

    nu: int
    nx: int
    nz: int
    angles_deg: tuple[float, ...]
    z_offset: float = 0.0

    @property
    def n_rays(self) -> int:
        return self.nu * len(self.angles_deg)

    @property
    def n_pixels(self) -> int:
        return self.nx * self.nz

    def centred_axes(self) -> tuple[np.ndarray, np.ndarray]:
        x = np.arange(self.nx) - (self.nx - 1) / 2
        z = np.arange(self.nz) - (self.nz - 1) / 2 + self.z_offset
        return x, z


def _csr(blocks: list[tuple[np.ndarray, np.ndarray]], shape: tuple[int, int]) -> sp.csr_matrix:
    """CSR straight from row-major blocks of equal-length rows, no sorting.

    Each block is (indices, weights) of shape (rows, k): k entries for each of
    its rows, in row order; entries of weight 0 (outside the grid) are dropped.
    """
    counts = np.concatenate([np.full(idx.shape[0], idx.shape[1], np.int64) for idx, _ in blocks])
    indptr = np.zeros(shape[0] + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    indices = np.concatenate([idx.ravel() for idx, _ in blocks]).astype(np.int32)
    data = np.concatenate([w.ravel() for _, w in blocks]).astype(np.float32)
    matrix = sp.csr_matrix((data, indices, indptr), shape=shape)
    matrix.eliminate_zeros()
    if matrix.nnz < 2**31:
        matrix.indptr = matrix.indptr.astype(np.int32)
    return matrix


def _pairs(position: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation at fractional ``position`` (shape (r, m)) on the grid 0..n-1.

    Returns indices and weights of shape (r, 2m): the lower neighbours of
    the m positions, then the upper ones (CSR rows need no sorted columns).
    Positions outside the grid get weight 0 and a clipped index, so every
    row keeps its length.
    """
    lower = np.floor(position)
    upper_weight = (position - lower).astype(np.float32)
    lower = lower.astype(np.int64)
    index = np.concatenate([lower, lower + 1], axis=-1)
    weight = np.concatenate([1.0 - upper_weight, upper_weight], axis=-1)
    weight *= (index >= 0) & (index < n)
    np.clip(index, 0, n - 1, out=index)
    return index, weight


@functools.lru_cache(maxsize=8)
def backprojection_matrix(geometry: Geometry) -> sp.csr_matrix:
    """Pixel-driven linear-interpolation backprojector, shape (n_pixels, n_rays)."""
    x, z = geometry.centred_axes()
    nu = geometry.nu
    theta = np.radians(np.asarray(geometry.angles_deg))
    # (pixel, angle): detector position of every pixel at every tilt
    u = (x[None, :, None] * np.cos(theta) + z[:, None, None] * np.sin(theta)).reshape(geometry.n_pixels, -1)
    index, weight = _pairs(u + (nu - 1) / 2, nu)
    index += np.tile(np.arange(len(theta)) * nu, 2)[None, :]
    return _csr([(index, weight)], (geometry.n_pixels, geometry.n_rays))


@functools.lru_cache(maxsize=8)
def projection_matrix(geometry: Geometry) -> sp.csr_matrix:
    """Joseph's ray-driven projector, shape (n_rays, n_pixels): ``A @ slab`` gives line integrals in pixel units."""
    x, z = geometry.centred_axes()
    nu, nx, nz = geometry.nu, geometry.nx, geometry.nz
    u = np.arange(nu) - (nu - 1) / 2
    blocks = []
    for theta in np.radians(geometry.angles_deg):
        c, s = np.cos(theta), np.sin(theta)
        if abs(c) >= abs(s):  # step through rows z; interpolate along x where the ray crosses each row
            index, weight = _pairs((u[:, None] - z[None, :] * s) / c + (nx - 1) / 2, nx)  # (nu, 2 nz)
            pixel = np.tile(np.arange(nz) * nx, 2)[None, :] + index
            weight /= abs(c)
        else:  # step through columns x; interpolate along z where the ray crosses each column
            index, weight = _pairs((u[:, None] - x[None, :] * c) / s + (nz - 1) / 2 - geometry.z_offset, nz)
            pixel = index * nx + np.tile(np.arange(nx), 2)[None, :]
            weight /= abs(s)
        blocks.append((pixel, weight))
    return _csr(blocks, (geometry.n_rays, geometry.n_pixels))


@functools.lru_cache(maxsize=8)
def projection_matrix_transpose(geometry: Geometry) -> sp.csr_matrix:
    """CSR of Aᵀ (the backprojector matched to :func:`projection_matrix`), built once per geometry."""
    result = projection_matrix(geometry).T.tocsr()
    result.indices = result.indices.astype(np.int32, copy=False)
    return result
