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


def _csr(rows: list[np.ndarray], cols: list[np.ndarray], vals: list[np.ndarray], shape: tuple[int, int]) -> sp.csr_matrix:
    matrix = sp.coo_matrix((np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
                           shape=shape).tocsr()
    matrix.sum_duplicates()
    matrix.indices = matrix.indices.astype(np.int32, copy=False)
    matrix.indptr = matrix.indptr.astype(np.int32 if matrix.nnz < 2**31 else np.int64, copy=False)
    return matrix


@functools.lru_cache(maxsize=8)
def backprojection_matrix(geometry: Geometry) -> sp.csr_matrix:
    """Pixel-driven linear-interpolation backprojector, shape (n_pixels, n_rays)."""
    x, z = geometry.centred_axes()
    nu = geometry.nu
    centre = (nu - 1) / 2
    pixel = np.arange(geometry.n_pixels).reshape(geometry.nz, geometry.nx)
    rows, cols, vals = [], [], []
    for a, theta in enumerate(np.radians(geometry.angles_deg)):
        u = x[None, :] * np.cos(theta) + z[:, None] * np.sin(theta) + centre
        lower = np.floor(u).astype(np.int64)
        frac = u - lower
        for index, weight in ((lower, 1.0 - frac), (lower + 1, frac)):
            inside = (index >= 0) & (index < nu) & (weight > 0)
            rows.append(pixel[inside])
            cols.append(a * nu + index[inside])
            vals.append(weight[inside])
    return _csr(rows, cols, vals, (geometry.n_pixels, geometry.n_rays))


@functools.lru_cache(maxsize=8)
def projection_matrix(geometry: Geometry) -> sp.csr_matrix:
    """Joseph's ray-driven projector, shape (n_rays, n_pixels): ``A @ slab`` gives line integrals in pixel units."""
    x, z = geometry.centred_axes()
    nu, nx, nz = geometry.nu, geometry.nx, geometry.nz
    u = np.arange(nu) - (nu - 1) / 2
    rows, cols, vals = [], [], []
    for a, theta in enumerate(np.radians(geometry.angles_deg)):
        c, s = np.cos(theta), np.sin(theta)
        ray = a * nu + np.arange(nu)
        if abs(c) >= abs(s):  # step through rows z; x where the ray crosses each row
            crossing = (u[:, None] - z[None, :] * s) / c + (nx - 1) / 2  # (nu, nz), in x index units
            step, fixed, by_rows, n_moving = 1.0 / abs(c), np.arange(nz), True, nx
        else:  # step through columns x; z where the ray crosses each column
            crossing = (u[:, None] - x[None, :] * c) / s + (nz - 1) / 2 - geometry.z_offset
            step, fixed, by_rows, n_moving = 1.0 / abs(s), np.arange(nx), False, nz
        lower = np.floor(crossing).astype(np.int64)
        frac = crossing - lower
        for index, weight in ((lower, 1.0 - frac), (lower + 1, frac)):
            inside = (index >= 0) & (index < n_moving) & (weight > 0)
            ray_index = np.broadcast_to(ray[:, None], index.shape)[inside]
            fixed_index = np.broadcast_to(fixed[None, :], index.shape)[inside]
            moving = index[inside]
            pixel = fixed_index * nx + moving if by_rows else moving * nx + fixed_index
            rows.append(ray_index)
            cols.append(pixel)
            vals.append(step * weight[inside])
    return _csr(rows, cols, vals, (geometry.n_rays, geometry.n_pixels))


@functools.lru_cache(maxsize=8)
def projection_matrix_transpose(geometry: Geometry) -> sp.csr_matrix:
    """CSR of Aᵀ (the backprojector matched to :func:`projection_matrix`), built once per geometry."""
    result = projection_matrix(geometry).T.tocsr()
    result.indices = result.indices.astype(np.int32, copy=False)
    return result
