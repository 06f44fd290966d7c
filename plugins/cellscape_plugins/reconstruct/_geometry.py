"""Single-axis parallel-beam geometry and its projection matrices.

The tilt axis runs along Y, so every Y slice of the tomogram is an
independent 2D problem in the (z, x) plane, and every slice shares one
system matrix. Coordinates are in detector pixels, centred: pixel ``j`` of a
row of ``nx`` sits at ``x = j - (nx - 1) / 2``; slab row ``k`` of ``nz`` at
``z = k - (nz - 1) / 2 + z_offset``. A point (x, z) seen at tilt θ lands on
the detector at ``u = x cos θ + z sin θ`` (the convention of
``generate.tilt_series``).

Two matrices, both sparse (CSR, float32) and shared by every slice. They
serve CuPy and other array-API libraries; on NumPy arrays the same operators
run matrix-free as compiled kernels (:mod:`._kernels`), tested equal to these
matrices:

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
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import attrs
import numpy as np

if TYPE_CHECKING:  # SciPy is imported when a matrix is built, not when the plugin is listed
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


def _csr(blocks: list[tuple[int, Callable[[], tuple[np.ndarray, np.ndarray]]]], row_lengths: np.ndarray,
         shape: tuple[int, int]) -> sp.csr_matrix:
    """CSR filled block by block into preallocated arrays (no COO, no sorting, no concatenated copies).

    ``blocks`` lists (first row, maker); a maker returns (indices, weights) of
    shape (rows, k) for consecutive rows starting there, k being those rows'
    entry in ``row_lengths``. Blocks are made on two threads (NumPy releases
    the GIL), each writing its own slice. Entries of weight 0 lie outside the
    grid and are dropped at the end when they are many.
    """
    import scipy.sparse as sp

    indptr = np.zeros(shape[0] + 1, np.int64)
    np.cumsum(row_lengths, out=indptr[1:])
    indices = np.empty(int(indptr[-1]), np.int32)
    data = np.empty(int(indptr[-1]), np.float32)

    def fill(block: tuple[int, Callable[[], tuple[np.ndarray, np.ndarray]]]) -> None:
        row, make = block
        index, weight = make()
        start, stop = indptr[row], indptr[row + index.shape[0]]
        indices[start:stop] = index.ravel()
        data[start:stop] = weight.ravel()

    with ThreadPoolExecutor(min(2, os.cpu_count() or 1)) as pool:
        list(pool.map(fill, blocks))
    if indptr[-1] < 2**31:
        indptr = indptr.astype(np.int32)
    matrix = sp.csr_matrix((data, indices, indptr), shape=shape, copy=False)
    if np.count_nonzero(data == 0) > 0.25 * len(data):
        matrix.eliminate_zeros()
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
    lower = lower.astype(np.int32 if n < 2**30 else np.int64)
    index = np.concatenate([lower, lower + 1], axis=-1)
    weight = np.concatenate([1.0 - upper_weight, upper_weight], axis=-1)
    weight *= (index >= 0) & (index < n)
    np.clip(index, 0, n - 1, out=index)
    return index, weight


@functools.lru_cache(maxsize=8)
def backprojection_matrix(geometry: Geometry) -> sp.csr_matrix:
    """Pixel-driven linear-interpolation backprojector, shape (n_pixels, n_rays)."""
    x, z = geometry.centred_axes()
    nu, n_angles = geometry.nu, len(geometry.angles_deg)
    theta = np.radians(np.asarray(geometry.angles_deg))
    cos, sin = np.cos(theta), np.sin(theta)
    offsets = np.tile(np.arange(n_angles, dtype=np.int64) * nu, 2)[None, :]
    rows_per_block = max(1, (1 << 20) // max(1, geometry.nx * n_angles))  # ~1M positions at a time

    def block(start: int) -> tuple[np.ndarray, np.ndarray]:
        zs = z[start:start + rows_per_block]
        # (pixel, angle): detector position of every pixel of these rows at every tilt
        u = (x[None, :, None] * cos + zs[:, None, None] * sin).reshape(-1, n_angles)
        index, weight = _pairs(u + (nu - 1) / 2, nu)
        return index + offsets, weight

    blocks = [(start * geometry.nx, functools.partial(block, start)) for start in range(0, geometry.nz, rows_per_block)]
    lengths = np.full(geometry.n_pixels, 2 * n_angles, np.int64)
    return _csr(blocks, lengths, (geometry.n_pixels, geometry.n_rays))


@functools.lru_cache(maxsize=8)
def projection_matrix(geometry: Geometry) -> sp.csr_matrix:
    """Joseph's ray-driven projector, shape (n_rays, n_pixels): ``A @ slab`` gives line integrals in pixel units."""
    x, z = geometry.centred_axes()
    nu, nx, nz = geometry.nu, geometry.nx, geometry.nz
    u = np.arange(nu) - (nu - 1) / 2
    thetas = np.radians(geometry.angles_deg)
    by_rows = np.abs(np.cos(thetas)) >= np.abs(np.sin(thetas))  # step through rows z (else through columns x)

    def block(theta: float, rows: bool) -> tuple[np.ndarray, np.ndarray]:
        c, s = np.cos(theta), np.sin(theta)
        if rows:  # interpolate along x where the ray crosses each row
            index, weight = _pairs((u[:, None] - z[None, :] * s) / c + (nx - 1) / 2, nx)  # (nu, 2 nz)
            return np.tile(np.arange(nz) * nx, 2)[None, :] + index, weight / abs(c)
        # interpolate along z where the ray crosses each column
        index, weight = _pairs((u[:, None] - x[None, :] * c) / s + (nz - 1) / 2 - geometry.z_offset, nz)
        return index * nx + np.tile(np.arange(nx), 2)[None, :], weight / abs(s)

    blocks = [(a * nu, functools.partial(block, theta, rows))
              for a, (theta, rows) in enumerate(zip(thetas, by_rows, strict=True))]
    lengths = np.repeat(np.where(by_rows, 2 * nz, 2 * nx), nu)
    return _csr(blocks, lengths, (geometry.n_rays, geometry.n_pixels))


@functools.lru_cache(maxsize=8)
def projection_matrix_transpose(geometry: Geometry) -> sp.csr_matrix:
    """CSR of Aᵀ (the backprojector matched to :func:`projection_matrix`), built once per geometry."""
    result = projection_matrix(geometry).T.tocsr()
    result.indices = result.indices.astype(np.int32, copy=False)
    return result
