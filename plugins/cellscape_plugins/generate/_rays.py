"""Exact ray casting from a shape's centroid for :mod:`.spharm`: every crossing of every grid ray with a closed
surface (a compiled loop over triangles and the rays in their θ–φ box), and the winding number that tells
whether the centroid is inside.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from .._trimesh import cross
from ._harmonics import SphereGrid

# ----------------------------------------------------------------------------------------------- ray casting


def _ray_hits(vertices: np.ndarray, triangles: np.ndarray, theta: np.ndarray, n_phi: int, rays: np.ndarray,
              hits: np.ndarray, n_hits: np.ndarray) -> None:  # pragma: no cover - compiled by numba
    """Record the distance of every ray–triangle crossing (compiled by numba; see :func:`cast_rays`).

    Each triangle visits only the rays inside its (θ, φ) box: θ from its
    corners and from where an edge passes closest to a pole, φ from its
    corners (or every φ when the triangle holds a pole). A ray crosses the
    triangle when it lies on the inner side of the three planes through the
    origin and an edge; it then meets the triangle's plane at t = (a·N)/(d·N).
    """
    n = vertices.shape[0]
    unit = np.empty((n, 3))
    v_theta = np.empty(n)
    v_phi = np.empty(n)
    for i in range(n):
        length = math.sqrt(vertices[i, 0] ** 2 + vertices[i, 1] ** 2 + vertices[i, 2] ** 2)
        length = max(length, 1e-300)
        for k in range(3):
            unit[i, k] = vertices[i, k] / length
        v_theta[i] = math.acos(min(1.0, max(-1.0, unit[i, 2])))
        v_phi[i] = math.atan2(unit[i, 1], unit[i, 0])
    n_theta = theta.shape[0]
    step_phi = 2.0 * math.pi / n_phi
    max_hits = hits.shape[1]
    normals = np.empty((3, 3))
    for f in range(triangles.shape[0]):
        corner = (triangles[f, 0], triangles[f, 1], triangles[f, 2])
        theta_lo = min(v_theta[corner[0]], v_theta[corner[1]], v_theta[corner[2]])
        theta_hi = max(v_theta[corner[0]], v_theta[corner[1]], v_theta[corner[2]])
        for k in range(3):
            p, q = corner[k], corner[(k + 1) % 3]
            nx = unit[p, 1] * unit[q, 2] - unit[p, 2] * unit[q, 1]
            ny = unit[p, 2] * unit[q, 0] - unit[p, 0] * unit[q, 2]
            nz = unit[p, 0] * unit[q, 1] - unit[p, 1] * unit[q, 0]
            norm = max(math.sqrt(nx * nx + ny * ny + nz * nz), 1e-300)
            normals[k, 0], normals[k, 1], normals[k, 2] = nx / norm, ny / norm, nz / norm
            # the polar angle along the edge peaks where it passes closest to a pole, inside the edge
            # when (n × u)_z and (v × n)_z share a sign
            nu = nx * unit[p, 1] - ny * unit[p, 0]
            vn = unit[q, 0] * ny - unit[q, 1] * nx
            top = math.asin(min(1.0, abs(nz) / norm))
            if nu > 0 and vn > 0:
                theta_lo = min(theta_lo, top)
            elif nu < 0 and vn < 0:
                theta_hi = max(theta_hi, math.pi - top)
        # inner side = the side of the opposite corner (back-facing triangles flip every normal)
        o = corner[0]
        facing = unit[o, 0] * normals[1, 0] + unit[o, 1] * normals[1, 1] + unit[o, 2] * normals[1, 2]
        sign = -1.0 if facing < 0 else 1.0
        for k in range(3):
            for c in range(3):
                normals[k, c] *= sign
        tol = 1e-12
        north = normals[0, 2] >= -tol and normals[1, 2] >= -tol and normals[2, 2] >= -tol
        south = normals[0, 2] <= tol and normals[1, 2] <= tol and normals[2, 2] <= tol
        if north:
            theta_lo = 0.0
        if south:
            theta_hi = math.pi
        if north or south:
            j0, j1 = 0, n_phi
        else:
            # without a pole inside, a triangle spans less than π in φ: unwrap around the first corner
            p0 = v_phi[corner[0]]
            d1 = (v_phi[corner[1]] - p0 + math.pi) % (2.0 * math.pi) - math.pi
            d2 = (v_phi[corner[2]] - p0 + math.pi) % (2.0 * math.pi) - math.pi
            j0 = math.ceil((p0 + min(d1, d2, 0.0) - 1e-9) / step_phi)
            j1 = math.floor((p0 + max(d1, d2, 0.0) + 1e-9) / step_phi) + 1
        # first and one-past-last θ row inside [theta_lo, theta_hi] (binary searches)
        lo, hi = 0, n_theta
        while lo < hi:
            mid = (lo + hi) // 2
            if theta[mid] < theta_lo - 1e-9:
                lo = mid + 1
            else:
                hi = mid
        i0 = lo
        lo, hi = i0, n_theta
        while lo < hi:
            mid = (lo + hi) // 2
            if theta[mid] <= theta_hi + 1e-9:
                lo = mid + 1
            else:
                hi = mid
        i1 = lo
        if i0 >= i1 or j0 >= j1:
            continue
        a, b, c = corner
        e1 = (vertices[b, 0] - vertices[a, 0], vertices[b, 1] - vertices[a, 1], vertices[b, 2] - vertices[a, 2])
        e2 = (vertices[c, 0] - vertices[a, 0], vertices[c, 1] - vertices[a, 1], vertices[c, 2] - vertices[a, 2])
        px = e1[1] * e2[2] - e1[2] * e2[1]
        py = e1[2] * e2[0] - e1[0] * e2[2]
        pz = e1[0] * e2[1] - e1[1] * e2[0]
        offset = vertices[a, 0] * px + vertices[a, 1] * py + vertices[a, 2] * pz
        for i in range(i0, i1):
            for jj in range(j0, j1):
                r = i * n_phi + jj % n_phi
                dx, dy, dz = rays[r, 0], rays[r, 1], rays[r, 2]
                if (dx * normals[0, 0] + dy * normals[0, 1] + dz * normals[0, 2] < -1e-9
                        or dx * normals[1, 0] + dy * normals[1, 1] + dz * normals[1, 2] < -1e-9
                        or dx * normals[2, 0] + dy * normals[2, 1] + dz * normals[2, 2] < -1e-9):
                    continue
                along = dx * px + dy * py + dz * pz
                if abs(along) <= 1e-300:
                    continue
                t = offset / along
                if t <= 0:
                    continue
                k = n_hits[r]
                if k < max_hits:
                    hits[r, k] = t
                n_hits[r] = k + 1


@functools.lru_cache(maxsize=1)
def _compiled_ray_hits() -> Any:
    """:func:`_ray_hits` compiled by numba (cached on disk when a cache location is writable)."""
    import numba

    signature = numba.void(numba.float64[:, ::1], numba.int64[:, ::1], numba.float64[::1], numba.int64,
                           numba.float64[:, ::1], numba.float64[:, ::1], numba.int64[::1])
    options = {"nogil": True, "error_model": "numpy", "boundscheck": False}
    try:
        return numba.njit(signature, cache=True, **options)(_ray_hits)
    except RuntimeError:  # no writable cache location: compile in memory
        return numba.njit(signature, cache=False, **options)(_ray_hits)


_NO_HIT = 1e300  # an empty hit slot: far beyond any surface, and finite, so differences stay defined


def cast_rays(vertices: np.ndarray, triangles: np.ndarray, grid: SphereGrid) -> tuple[np.ndarray, np.ndarray]:
    """Outermost crossing and number of crossings of every grid ray from the origin with a closed surface.

    Each triangle is tested only against the rays inside its (θ, φ) box, so
    the cost grows with the number of triangles plus rays, not their product
    (a compiled loop, :func:`_ray_hits`).

    Parameters
    ----------
    vertices : ndarray, shape (n, 3)
        Relative to the rays' origin.
    triangles : ndarray, shape (m, 3), int

    Returns
    -------
    radius : ndarray, shape (n_theta, n_phi)
        Distance to the outermost crossing (NaN where a ray misses).
    crossings : ndarray, shape (n_theta, n_phi), int
        Distinct crossings along each ray (1 for a star-shaped surface).
    """
    kernel = _compiled_ray_hits()
    vertices = np.require(vertices, np.float64, ["C", "W"])  # the compiled signature takes writable arrays
    triangles = np.require(triangles, np.int64, ["C", "W"])
    n_theta, n_phi = len(grid.theta), len(grid.phi)
    capacity = 8
    while True:
        hits = np.full((n_theta * n_phi, capacity), _NO_HIT)
        n_hits = np.zeros(n_theta * n_phi, np.int64)
        kernel(vertices, triangles, grid.theta, n_phi, grid.rays, hits, n_hits)
        if n_hits.max(initial=0) <= capacity:
            break
        capacity = int(n_hits.max())
    hits.sort(axis=1)
    # a ray through an edge or a vertex meets every triangle there at the same distance: count it once
    scale = float(np.sqrt(np.einsum("ij,ij->i", vertices, vertices)).max())
    distinct = hits < _NO_HIT
    distinct[:, 1:] &= np.diff(hits, axis=1) > 1e-7 * scale
    crossings = distinct.sum(axis=1)
    radius = np.where(n_hits > 0, hits[np.arange(len(hits)), np.maximum(np.minimum(n_hits, capacity) - 1, 0)], np.nan)
    return radius.reshape(n_theta, n_phi), crossings.reshape(n_theta, n_phi)


def winding_number(vertices: np.ndarray, triangles: np.ndarray) -> float:
    """How many times a closed outward surface winds around the origin (1 inside, 0 outside)."""
    a, b, c = (vertices[triangles[:, i]] for i in range(3))
    la, lb, lc = (np.linalg.norm(x, axis=1) for x in (a, b, c))
    numerator = np.einsum("ij,ij->i", a, cross(b, c))
    denominator = (la * lb * lc + np.einsum("ij,ij->i", a, b) * lc + np.einsum("ij,ij->i", a, c) * lb
                   + np.einsum("ij,ij->i", b, c) * la)
    return float(2.0 * np.arctan2(numerator, denominator).sum() / (4.0 * np.pi))
