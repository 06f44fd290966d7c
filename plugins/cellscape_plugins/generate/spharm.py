"""``generate.spharm``: spherical-harmonic shape space of closed surfaces, sampled and morphed.

Parameterization
----------------
Each shape (see :mod:`._shapes`) is centred on the centroid of its solid and,
by default, turned onto its principal axes. Its surface is then written as a
radius over directions, ``r(θ, φ) = Σ_{l ≤ L} Σ_m c_lm Y_lm(θ, φ)``, in the
real orthonormal basis

    Y_l0  = P̄_l0(cos θ)
    Y_lm  = √2 P̄_lm(cos θ) cos(mφ)      (m > 0)
    Y_l-m = √2 P̄_lm(cos θ) sin(mφ)      (m > 0)

where ``P̄_lm`` are the associated Legendre functions normalized so that
``∫ Y² dΩ = 1``, without the Condon–Shortley phase (so ``Y_11 ∝ x``,
``Y_1-1 ∝ y``, ``Y_10 ∝ z``). Coefficient ``c_lm`` sits at index
``l² + l + m``; ``c_00 / √(4π)`` is the mean radius.

Rays are cast from the centroid along a Gauss–Legendre (θ) × uniform (φ)
grid of ``(2L + 2) × (4L + 4)`` directions (at least 24 × 48) and each is
intersected exactly with the surface triangles (a compiled loop that visits,
per triangle, only the rays inside its θ–φ box). The coefficients are the
least-squares fit of ``r`` *over the surface*: ``∫ (r - r_L)² r² dΩ`` is
minimized, each ray's residual counting by the area ``r² dΩ`` it stands for,
so an elongated shape's long parts weigh by their area rather than by the
solid angle they subtend (plain projection over the sphere underweights
them; on the benchmark's shapes the surface distance to the true shape is
up to a quarter smaller at low degrees this way). The normal equations are solved by conjugate gradients,
each product a synthesis on the grid and a quadrature projection (an FFT over
φ, then a Legendre sum over θ; exact for band-limited radii), starting from
the plain projection. A sphere is exactly degree 0.

Checks
------
A closed, consistently oriented surface is required (an open mesh is an
error naming its marker). A degree with more coefficients than the surface
has vertices is an error; a degree above what the vertex spacing resolves
(π over the mean angle between neighbouring vertices, seen from the
centroid) is a warning naming the highest sensible degree. Fewer than 3
shapes cannot span a shape space (an error).

Shapes that are not star-shaped
-------------------------------
A radius function describes a surface only if every ray from the centroid
crosses it once. Every ray's crossings are counted; where a ray crosses
more than once the fit keeps the **outermost** crossing, i.e. it describes
the star-shaped hull seen from the centroid (folds and pockets are filled
in). Such shapes are not rejected: the share of directions crossing more
than once is reported per shape (``multi_hit_fraction``), a warning names
the shape, and the reconstruction error is always measured against the
true input surface (Hausdorff and RMS surface distance), so the price of
the radial description is visible, not hidden. A centroid outside the
object (a C-shaped or ring-shaped cell) cannot be handled this way and is
an error.

Shape space
-----------
The coefficient vectors of all shapes (in nm, or in equivalent-sphere radii
with ``scale: volume``) are centred and decomposed by PCA (an SVD). New
shapes are drawn from the Gaussian in PCA space (independent normal scores
with the modes' variances, seeded); a morph between two shapes is the
straight line between their coefficient vectors, so its ends are exactly
the two shapes. Shapes are rebuilt as closed meshes on a subdivided
icosahedron (``10·4^s + 2`` vertices).

Model format (a :class:`cellscape.Model`, ``.npz`` arrays + JSON, never pickle)
------------------------------------------------------------------------------
====================  =================  =========================================================
array                 shape              meaning
====================  =================  =========================================================
``coefficients``      (n_shapes, K)      c_lm of every shape, K = (L + 1)², nm (or radii, scaled)
``centers_nm``        (n_shapes, 3)      centroid of each shape (x, y, z), nm
``rotations``         (n_shapes, 3, 3)   rows: principal axes; normalized = R (x - center) / scale
``scales``            (n_shapes,)        1, or the equivalent-sphere radius in nm
``labels``            (n_shapes,)        label value or marker of each shape
``mean``              (K,)               mean coefficient vector
``components``        (k, K)             PCA modes (orthonormal rows), largest variance first
``variances``         (k,)               variance of the scores along each mode
====================  =================  =========================================================

``meta`` holds ``degree``, ``basis``, ``align``, ``scale``, ``coefficient_unit``
and ``mean_scale_nm`` (what sampled shapes are multiplied by when scaled).
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any

import attrs
import numpy as np

import cellscape as cs

from . import _shapes
from ._shapes import Normalization, Shape

NAME = "generate.spharm"
BASIS = "real orthonormal spherical harmonics, index l*l+l+m, no Condon-Shortley phase"


# ----------------------------------------------------------------------------------------------- the basis


def n_coefficients(degree: int) -> int:
    """Number of coefficients up to ``degree``: (L + 1)²."""
    return (degree + 1) ** 2


def _legendre(degree: int, theta: np.ndarray) -> np.ndarray:
    """P̄_lm(cos θ) for 0 ≤ m ≤ l ≤ L, shape (L + 1, L + 1, n), orthonormal on the sphere, no Condon–Shortley phase."""
    from scipy import special

    table = special.sph_legendre_p_all(degree, degree, np.asarray(theta, float))[0][:, : degree + 1]
    return table * ((-1.0) ** np.arange(degree + 1))[None, :, None]


def _index(degree: int) -> tuple[np.ndarray, np.ndarray]:
    """Degree l and order m of each coefficient index k = l² + l + m."""
    k = np.arange(n_coefficients(degree))
    l_of_k = np.sqrt(k).astype(np.int64)
    return l_of_k, k - l_of_k * l_of_k - l_of_k


def sh_basis(degree: int, directions: np.ndarray) -> np.ndarray:
    """Real spherical harmonics at unit directions, shape (n, (L + 1)²).

    Parameters
    ----------
    degree : int
        Highest degree L.
    directions : ndarray, shape (n, 3)
        Unit vectors (x, y, z).
    """
    directions = np.asarray(directions, float)
    theta = np.arccos(np.clip(directions[:, 2], -1.0, 1.0))
    phi = np.arctan2(directions[:, 1], directions[:, 0])
    legendre = _legendre(degree, theta)
    l_of_k, m_of_k = _index(degree)
    m = np.abs(m_of_k)
    trig = np.where(m_of_k > 0, np.cos(np.outer(phi, m)), np.where(m_of_k < 0, np.sin(np.outer(phi, m)), 1.0))
    factor = np.where(m_of_k == 0, 1.0, math.sqrt(2.0))
    return legendre[l_of_k, m].T * trig * factor


def evaluate(coefficients: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Radius ``Σ c_lm Y_lm`` along each unit direction, shape (n,)."""
    coefficients = np.asarray(coefficients, float)
    degree = math.isqrt(len(coefficients)) - 1
    if n_coefficients(degree) != len(coefficients):
        raise cs.InputError(f"{NAME}: {len(coefficients)} coefficients is not (L + 1)² for any degree L")
    out = np.empty(len(directions))
    for start in range(0, len(directions), 2048):
        block = slice(start, start + 2048)
        out[block] = sh_basis(degree, directions[block]) @ coefficients
    return out


@attrs.frozen(eq=False)
class SphereGrid:
    """Directions where the radius is sampled: Gauss–Legendre in cos θ, uniform in φ.

    Attributes
    ----------
    degree : int
    theta : ndarray, shape (n_theta,)
        Polar angles in radians, increasing.
    phi : ndarray, shape (n_phi,)
        Azimuths ``2π j / n_phi`` in [0, 2π).
    weights : ndarray, shape (n_theta,)
        Quadrature weight of each ray in a row (solid angle, sr); they sum to 4π over the grid.
    legendre : ndarray, shape (L + 1, L + 1, n_theta)
    rays : ndarray, shape (n_theta * n_phi, 3)
        Unit direction of each ray, row-major over (θ, φ).
    """

    degree: int
    theta: np.ndarray
    phi: np.ndarray
    weights: np.ndarray
    legendre: np.ndarray
    rays: np.ndarray = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        st, ct = np.sin(self.theta)[:, None], np.cos(self.theta)[:, None]
        rays = np.stack(np.broadcast_arrays(st * np.cos(self.phi), st * np.sin(self.phi), ct), axis=-1)
        object.__setattr__(self, "rays", np.ascontiguousarray(rays.reshape(-1, 3)))


@functools.lru_cache(maxsize=16)
def sphere_grid(degree: int) -> SphereGrid:
    """The sampling grid of a fit up to ``degree``: (2L + 2) × (4L + 4) rays, at least 24 × 48."""
    from scipy import special

    n_theta = max(2 * degree + 2, 24)
    nodes, gauss = special.roots_legendre(n_theta)
    theta = np.arccos(nodes[::-1])
    n_phi = 2 * n_theta
    phi = 2.0 * np.pi * np.arange(n_phi) / n_phi
    weights = gauss[::-1] * (2.0 * np.pi / n_phi)
    return SphereGrid(degree, theta, phi, weights, _legendre(degree, theta))


def project(radius: np.ndarray, grid: SphereGrid) -> np.ndarray:
    """Least-squares (L²-on-the-sphere) coefficients of a radius sampled on ``grid``, shape ((L + 1)²,).

    Parameters
    ----------
    radius : ndarray, shape (n_theta, n_phi)
        ``r`` along each grid ray.
    """
    degree = grid.degree
    spectrum = np.fft.rfft(radius, axis=1)[:, : degree + 1]  # Σ_j r e^{-imφ_j}
    weighted = grid.legendre * grid.weights[None, None, :]
    cos_part = np.einsum("lmi,im->lm", weighted, spectrum.real)
    sin_part = np.einsum("lmi,im->lm", weighted, -spectrum.imag)
    l_of_k, m_of_k = _index(degree)
    m = np.abs(m_of_k)
    values = np.where(m_of_k < 0, sin_part[l_of_k, m], cos_part[l_of_k, m])
    return values * np.where(m_of_k == 0, 1.0, math.sqrt(2.0))


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
    numerator = np.einsum("ij,ij->i", a, _shapes.cross(b, c))
    denominator = (la * lb * lc + np.einsum("ij,ij->i", a, b) * lc + np.einsum("ij,ij->i", a, c) * lb
                   + np.einsum("ij,ij->i", b, c) * la)
    return float(2.0 * np.arctan2(numerator, denominator).sum() / (4.0 * np.pi))


# ----------------------------------------------------------------------------------------------- fitting


@attrs.frozen(eq=False)
class ShapeFit:
    """Spherical-harmonic description of one shape.

    Attributes
    ----------
    label : int
    name : str
    coefficients : ndarray, shape ((L + 1)²,)
        In nm (or in equivalent-sphere radii when scaled), in the normalized frame.
    normalization : Normalization
        From the shape's frame to the normalized one.
    multi_hit_fraction : float
        Share of the sphere's directions whose ray crosses the surface more than once (0 when star-shaped).
    radial_rms_nm, radial_max_nm : float
        RMS (weighted by area, as in the fit) and largest difference between the fitted and the sampled
        radius, nm.
    """

    label: int
    name: str
    coefficients: np.ndarray
    normalization: Normalization
    multi_hit_fraction: float
    radial_rms_nm: float
    radial_max_nm: float

    @property
    def degree(self) -> int:
        return math.isqrt(len(self.coefficients)) - 1


def resolvable_degree(vertices: np.ndarray, triangles: np.ndarray) -> int:
    """Highest degree the mesh's vertex spacing can carry: π / (mean edge angle seen from the origin)."""
    sample = triangles[:: max(1, len(triangles) // 2000)]  # a few thousand edges estimate the mean well
    a, b = vertices[sample[:, 0]], vertices[sample[:, 1]]
    radii = 0.5 * (np.sqrt(np.einsum("ij,ij->i", a, a)) + np.sqrt(np.einsum("ij,ij->i", b, b)))
    angle = float(np.mean(np.sqrt(np.einsum("ij,ij->i", b - a, b - a)) / np.maximum(radii, 1e-300)))
    return int(math.pi / max(angle, 1e-12))


def fit_shape(shape: Shape, degree: int, *, align: bool = True, scale: str = "none", who: str = NAME) -> ShapeFit:
    """Fit the spherical-harmonic expansion of one closed shape up to ``degree``.

    Parameters
    ----------
    shape : Shape
        A closed, outward-oriented surface in nm.
    degree : int
        Highest degree L ≥ 0; (L + 1)² coefficients.
    align, scale
        Normalization (see :func:`._shapes.normalization`).

    Raises
    ------
    cellscape.InputError
        A negative degree, a mesh with fewer vertices than coefficients, a
        centroid outside the shape, or rays that miss the surface (gaps).

    Warns
    -----
    UserWarning
        The degree asks for finer detail than the vertex spacing holds, or
        the shape is not star-shaped about its centroid.
    """
    if degree < 0:
        raise cs.InputError(f"{who}: degree must be >= 0, got {degree}")
    k = n_coefficients(degree)
    n_vertices = len(shape.vertices)
    if k > n_vertices:
        raise cs.InputError(
            f"{who}: degree {degree} has {k} coefficients but {shape.name} has only {n_vertices} surface vertices; "
            f"lower degree to <= {math.isqrt(n_vertices) - 1} or give a finer mesh"
        )
    norm = _shapes.normalization(shape, align=align, scale=scale)
    local = norm.apply(shape.vertices)
    triangles = shape.triangles
    limit = resolvable_degree(local, triangles)
    if degree > limit:
        warnings.warn(
            f"{who}: degree {degree} asks for finer detail than the surface of {shape.name} holds (its vertices are "
            f"~π/{limit} rad apart, seen from the centroid); coefficients above degree {limit} fit the facets, "
            f"not the shape: lower degree to <= {limit} or give a finer mesh (smaller voxels)",
            UserWarning, stacklevel=2,
        )
    grid = sphere_grid(degree)
    radius, crossings = cast_rays(local, triangles, grid)
    if np.isnan(radius).any():
        if abs(winding_number(local, triangles) - 1.0) > 0.5:
            raise cs.InputError(
                f"{who}: the centroid of {shape.name} lies outside it (a C- or ring-like shape), so no radius function "
                "r(θ, φ) describes it; leave it out or split it into star-shaped parts"
            )
        raise cs.InputError(f"{who}: {int(np.isnan(radius).sum())} rays from the centroid of {shape.name} miss its "
                            "surface; the mesh has gaps (close them with mesh.improve)")
    solid_angle = np.broadcast_to(grid.weights[:, None], radius.shape)
    multi = float(solid_angle[crossings > 1].sum() / (4.0 * np.pi))
    coefficients = fit_radius(radius, grid)
    residual = _grid_values(coefficients, grid) - radius
    area = solid_angle * radius * radius  # r² dΩ: the area each ray stands for, seen along the ray
    if multi > 0:
        warnings.warn(
            f"{who}: {shape.name} is not star-shaped about its centroid: {100 * multi:.1f}% of the directions cross "
            "its surface more than once; the radial fit keeps the outermost crossing (folds are filled in). See its "
            "Hausdorff and RMS surface distance in the errors table",
            UserWarning, stacklevel=2,
        )
    return ShapeFit(
        shape.label, shape.name, coefficients, norm, multi,
        float(np.sqrt((area * residual * residual).sum() / area.sum())) * norm.scale,
        float(np.abs(residual).max()) * norm.scale,
    )


def fit_radius(radius: np.ndarray, grid: SphereGrid, tolerance: float = 1e-6, max_iterations: int = 50) -> np.ndarray:
    """Coefficients of the least-squares fit of a radius over the surface rather than over the sphere.

    Minimizes ``∫ (r - r_L)² r² dΩ``: each ray's radial residual counts by
    the area ``r² dΩ`` its patch of solid angle covers at distance ``r``, so
    the long parts of an elongated shape weigh by their area, not by the
    solid angle they subtend (plain projection, ``∫ (r - r_L)² dΩ``,
    underweights them). Solved by conjugate gradients on the normal
    equations, each product a synthesis on the grid and a quadrature
    projection (``O(L³)``), starting from the plain projection; stops at
    ``tolerance`` relative residual.

    Parameters
    ----------
    radius : ndarray, shape (n_theta, n_phi)
        Radius along each grid ray (any length unit; the coefficients come in the same unit).
    grid : SphereGrid

    Returns
    -------
    ndarray, shape ((L + 1)²,)
    """
    solid_angle = np.broadcast_to(grid.weights[:, None], radius.shape)
    weight = radius * radius
    weight = weight * (4.0 * np.pi / float((solid_angle * weight).sum()))  # mean 1 over the sphere

    def normal(c: np.ndarray) -> np.ndarray:
        return project(weight * _grid_values(c, grid), grid)

    right = project(weight * radius, grid)
    solution = project(radius, grid)
    residual = right - normal(solution)
    direction = residual.copy()
    norm_right = float(np.linalg.norm(right)) or 1.0
    squared = float(residual @ residual)
    for _ in range(max_iterations):
        if np.sqrt(squared) <= tolerance * norm_right:
            break
        product = normal(direction)
        step = squared / float(direction @ product)
        solution = solution + step * direction
        residual = residual - step * product
        previous, squared = squared, float(residual @ residual)
        direction = residual + (squared / previous) * direction
    return solution


def _grid_values(coefficients: np.ndarray, grid: SphereGrid) -> np.ndarray:
    """The expansion evaluated on the grid rays, shape (n_theta, n_phi)."""
    degree = grid.degree
    l_of_k, m_of_k = _index(degree)
    m = np.abs(m_of_k)
    cos_c = np.zeros((degree + 1, degree + 1))
    sin_c = np.zeros((degree + 1, degree + 1))
    scaled = coefficients * np.where(m_of_k == 0, 1.0, math.sqrt(2.0))
    cos_c[l_of_k[m_of_k >= 0], m[m_of_k >= 0]] = scaled[m_of_k >= 0]
    sin_c[l_of_k[m_of_k < 0], m[m_of_k < 0]] = scaled[m_of_k < 0]
    a = np.einsum("lm,lmi->im", cos_c, grid.legendre)
    b = np.einsum("lm,lmi->im", sin_c, grid.legendre)
    angles = np.outer(np.arange(degree + 1), grid.phi)
    return a @ np.cos(angles) + b @ np.sin(angles)


# ------------------------------------------------------------------------------------------ reconstruction


@functools.lru_cache(maxsize=8)
def icosphere(subdivisions: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit sphere mesh: a subdivided icosahedron.

    Returns
    -------
    vertices : ndarray, shape (10·4^s + 2, 3)
        Unit vectors.
    triangles : ndarray, shape (20·4^s, 3), int64
        Counter-clockwise seen from outside.
    """
    golden = (1.0 + math.sqrt(5.0)) / 2.0
    corners = []
    for a in (-1.0, 1.0):
        for b in (-golden, golden):
            corners += [(0.0, a, b), (a, b, 0.0), (b, 0.0, a)]
    vertices = np.array(corners) / math.hypot(1.0, golden)
    # the 20 faces join the corners three at a time at the shortest distance (edge length 2 before scaling)
    pairs = np.linalg.norm(vertices[:, None] - vertices[None], axis=-1)
    edge = pairs[pairs > 1e-9].min()
    adjacent = np.abs(pairs - edge) < 1e-6
    faces = [(i, j, k) for i in range(12) for j in range(i + 1, 12) for k in range(j + 1, 12)
             if adjacent[i, j] and adjacent[j, k] and adjacent[i, k]]
    triangles = np.array(faces, np.int64)
    for _ in range(subdivisions):
        edges = np.sort(np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]]), axis=1)
        unique, inverse = np.unique(edges, axis=0, return_inverse=True)
        midpoints = vertices[unique].sum(axis=1)
        midpoints /= np.linalg.norm(midpoints, axis=1, keepdims=True)
        mid = inverse.reshape(3, -1).T + len(vertices)  # midpoint of edges (01, 12, 20) of each triangle
        vertices = np.concatenate([vertices, midpoints])
        a, b, c = triangles.T
        ab, bc, ca = mid.T
        triangles = np.concatenate([np.stack(x, axis=1) for x in ((a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca))])
    vertices = vertices / np.linalg.norm(vertices, axis=1, keepdims=True)
    # the corner faces were found in no particular winding: orient each triangle on its own
    a, b, c = (vertices[triangles[:, i]] for i in range(3))
    inward = np.einsum("ij,ij->i", a, _shapes.cross(b, c)) < 0
    triangles[inward] = triangles[inward][:, ::-1]
    vertices.setflags(write=False)
    triangles.setflags(write=False)
    return vertices, triangles


def reconstruct(coefficients: np.ndarray, subdivisions: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Closed mesh of an expansion in its own frame: icosphere directions scaled by the radius.

    Parameters
    ----------
    coefficients : ndarray, shape ((L + 1)²,)
    subdivisions : int
        Icosphere level s: ``10·4^s + 2`` vertices.

    Returns
    -------
    vertices : ndarray, shape (n, 3)
        In the coefficients' unit (nm), centred on the origin.
    triangles : ndarray, shape (m, 3), int64
        Counter-clockwise seen from outside (where the radius stays positive).
    """
    directions, triangles = icosphere(subdivisions)
    coefficients = np.asarray(coefficients, float)
    degree = math.isqrt(len(coefficients)) - 1
    if len(directions) * len(coefficients) <= _CACHED_BASIS_SIZE and n_coefficients(degree) == len(coefficients):
        radius = _icosphere_basis(degree, subdivisions) @ coefficients
    else:
        radius = evaluate(coefficients, directions)
    return directions * radius[:, None], np.array(triangles)


#: Largest icosphere basis (values) kept between calls: 16 M doubles, 128 MB (degree 32 on a level-6 icosphere)
_CACHED_BASIS_SIZE = 16_000_000


@functools.lru_cache(maxsize=2)
def _icosphere_basis(degree: int, subdivisions: int) -> np.ndarray:
    """The basis at the icosphere's vertices, shape (10·4^s + 2, (L + 1)²): rebuilding many shapes is one product each."""
    directions = icosphere(subdivisions)[0]
    basis = np.concatenate([sh_basis(degree, directions[start:start + 2048])
                            for start in range(0, len(directions), 2048)])
    basis.setflags(write=False)
    return basis


# ----------------------------------------------------------------------------------------------- shape space


@attrs.frozen(eq=False)
class ShapeSpace:
    """PCA of coefficient vectors and the Gaussian over its scores.

    Attributes
    ----------
    mean : ndarray, shape (K,)
    components : ndarray, shape (k, K)
        Orthonormal modes, largest variance first.
    variances : ndarray, shape (k,)
        Variance of the shapes' scores along each mode (unbiased, n − 1).
    """

    mean: np.ndarray
    components: np.ndarray
    variances: np.ndarray

    @classmethod
    def fit(cls, coefficients: np.ndarray, n_components: int | None = None, who: str = NAME) -> ShapeSpace:
        """PCA of ``coefficients`` (n_shapes, K); keeps ``n_components`` modes (default all with variance)."""
        coefficients = np.asarray(coefficients, float)
        n = len(coefficients)
        if n < 3:
            raise cs.InputError(f"{who}: a PCA shape space needs at least 3 shapes, got {n}; give more shapes "
                                "(more labels, or split_components for a class label of many objects)")
        mean = coefficients.mean(axis=0)
        _, singular, vt = np.linalg.svd(coefficients - mean, full_matrices=False)
        variances = singular**2 / (n - 1)
        useful = int((variances > 1e-12 * max(float(variances.sum()), 1e-300)).sum())
        keep = useful if n_components is None else int(n_components)
        if keep > min(n - 1, coefficients.shape[1]):
            raise cs.InputError(f"{who}: n_components={keep} but {n} shapes span at most "
                                f"{min(n - 1, coefficients.shape[1])} modes; lower n_components or give more shapes")
        keep = max(keep, 1)
        return cls(mean, vt[:keep], variances[:keep])

    def scores(self, coefficients: np.ndarray) -> np.ndarray:
        """Coordinates of coefficient vectors (n, K) along the modes, shape (n, k)."""
        return (np.asarray(coefficients, float) - self.mean) @ self.components.T

    def sample(self, n: int, seed: int) -> np.ndarray:
        """``n`` coefficient vectors drawn from the Gaussian in PCA space, shape (n, K); same seed, same shapes."""
        scores = np.random.default_rng(seed).standard_normal((n, len(self.variances))) * np.sqrt(self.variances)
        return self.mean + scores @ self.components


def morph(start: np.ndarray, end: np.ndarray, n_steps: int) -> np.ndarray:
    """Coefficient vectors along the straight line from ``start`` to ``end``, both included, shape (n_steps, K)."""
    t = np.linspace(0.0, 1.0, n_steps)[:, None]
    return (1.0 - t) * np.asarray(start, float)[None] + t * np.asarray(end, float)[None]


def reconstruction_errors(shapes: list[Shape], fits: list[ShapeFit], subdivisions: int) -> cs.Table:
    """Per shape: surface distance between input and reconstruction, radial-fit error, multi-hit fraction."""
    columns: dict[str, list[Any]] = {name: [] for name in (
        "label", "degree", "hausdorff_nm", "rms_nm", "radial_rms_nm", "radial_max_nm", "multi_hit_fraction",
        "star_shaped")}
    for shape, fit in zip(shapes, fits, strict=True):
        vertices, triangles = reconstruct(fit.coefficients, subdivisions)
        hausdorff, rms = _shapes.surface_distance(fit.normalization.invert(vertices), triangles,
                                                  shape.vertices, shape.triangles)
        for name, value in (("label", fit.label), ("degree", fit.degree), ("hausdorff_nm", hausdorff),
                            ("rms_nm", rms), ("radial_rms_nm", fit.radial_rms_nm), ("radial_max_nm", fit.radial_max_nm),
                            ("multi_hit_fraction", fit.multi_hit_fraction), ("star_shaped", fit.multi_hit_fraction == 0)):
            columns[name].append(value)
    units = {"label": "", "degree": "", "hausdorff_nm": "nm", "rms_nm": "nm", "radial_rms_nm": "nm",
             "radial_max_nm": "nm", "multi_hit_fraction": "", "star_shaped": ""}
    return cs.Table({k: np.asarray(v) for k, v in columns.items()}, units,
                    "spherical-harmonic reconstruction error per shape")


def _surfaces(meshes: list[tuple[np.ndarray, np.ndarray]], names: list[str]) -> cs.SurfaceMesh:
    """One SurfaceMesh holding each mesh under its own marker 1, 2, ..."""
    vertices, triangles, markers, offset = [], [], [], 0
    for marker, (v, t) in enumerate(meshes, start=1):
        vertices.append(v)
        triangles.append(t + offset)
        markers.append(np.full(len(t), marker, np.int32))
        offset += len(v)
    return cs.SurfaceMesh(np.concatenate(vertices), np.concatenate(triangles), np.concatenate(markers),
                          dict(enumerate(names, start=1)))


# ------------------------------------------------------------------------------------------------ the method


@attrs.frozen
class SphericalHarmonicsParams:
    degree: int = cs.param(8, ge=0, le=64, help="highest spherical-harmonic degree L; (L+1)^2 coefficients per shape")
    label_values: list[int] | None = cs.param(None, help="label values to use (labels input); default: every non-zero "
                                                       "label")
    split_components: bool = cs.param(False, help="each connected piece of a label is its own shape (a class label "
                                                  "holding many objects); otherwise one object per label")
    on_border: str = cs.param("error", choices=_shapes.BORDER_CHOICES,
                              help="objects touching the volume border: raise, 'skip' them, or 'keep' them cut off")
    sigma_voxels: float = cs.param(0.5, ge=0, le=5, unit="voxel",
                                   help="Gaussian smoothing of each mask before its surface is extracted (labels input); "
                                        "raise it for noisy segmentations")
    align: bool = cs.param(True, help="turn each shape onto its principal axes (longest along x) before fitting")
    scale: str = cs.param("none", choices=("none", "volume"),
                          help="'volume': divide each shape by its equivalent-sphere radius, so the shape space "
                               "ignores size")
    n_components: int | None = cs.param(None, ge=1, help="PCA modes kept; default every mode with variance")
    n_samples: int = cs.param(10, ge=1, le=10000, help="new shapes drawn from the Gaussian in PCA space")
    seed: int = cs.param(0, help="random seed of the samples (same seed, same shapes)")
    morph: list[int] = cs.param([0, 1], help="positions (0-based, input order) of the two shapes to morph between")
    morph_steps: int = cs.param(8, ge=2, le=1000, help="meshes in the morph sequence, both ends included")
    subdivisions: int = cs.param(4, ge=1, le=7, help="icosphere level of rebuilt meshes: 10*4^s+2 vertices each")


class SphericalHarmonics(cs.Generator):
    """Spherical-harmonic shape space of closed shapes: fit, rebuild, PCA, sample new shapes, morph two shapes.

    Give exactly one of ``labels`` (one object per label value, or per piece
    with ``split_components``) or ``surface`` (one closed surface per
    marker). Sampled and morphed shapes are centred on the origin in the
    normalized frame, in nm; rebuilt input shapes sit where the inputs were.
    """

    name = NAME
    Params = SphericalHarmonicsParams
    inputs = {
        "labels": cs.Port(cs.Labels, optional=True, help="objects to learn from, one per label value"),
        "surface": cs.Port(cs.SurfaceMesh, optional=True, help="closed surfaces to learn from, one per marker"),
    }
    outputs = {
        "model": cs.Port(cs.Model, help="coefficients, normalizations and the PCA shape space (npz, no pickle)"),
        "reconstruction": cs.Port(cs.SurfaceMesh, help="each input shape rebuilt from its coefficients, in place; "
                                                       "marker i = i-th shape"),
        "errors": cs.Port(cs.Table, help="per shape: Hausdorff and RMS surface distance (nm), radial-fit error, "
                                         "share of directions crossing the surface more than once"),
        "descriptors": cs.Port(cs.Table, help="volume, area, sphericity, semi-axes, curvature of each input shape"),
        "samples": cs.Port(cs.SurfaceMesh, help="new shapes drawn from the shape space, one marker each"),
        "morph": cs.Port(cs.SurfaceMesh, help="the morph sequence between two input shapes, one marker per step"),
    }

    def shapes(self, labels: cs.Labels | None = None, surface: cs.SurfaceMesh | None = None) -> list[Shape]:
        """The input shapes, in order."""
        p = self.params
        if (labels is None) == (surface is None):
            raise cs.InputError(f"{self.name}: give exactly one input, 'labels' or 'surface'")
        if labels is not None:
            return _shapes.shapes_from_labels(labels, p.label_values, sigma_voxels=p.sigma_voxels, on_border=p.on_border,
                                              split_components=p.split_components, who=self.name)
        assert surface is not None
        return _shapes.shapes_from_surface(surface, who=self.name)

    def generate(self, labels: cs.Labels | None = None, surface: cs.SurfaceMesh | None = None) -> dict[str, cs.Artefact]:
        p = self.params
        shapes = self.shapes(labels, surface)
        if len(shapes) < 3:
            raise cs.InputError(f"{self.name}: a PCA shape space needs at least 3 shapes, got {len(shapes)}; give more "
                                "shapes (more labels, or split_components for a class label of many objects)")
        ends = [int(i) for i in p.morph]
        if len(ends) != 2 or not all(0 <= i < len(shapes) for i in ends):
            raise cs.InputError(f"{self.name}: morph must be two positions in 0..{len(shapes) - 1}, got {p.morph}")
        fits = [fit_shape(s, p.degree, align=p.align, scale=p.scale, who=self.name)
                for s in self.progress(shapes, description="fitting")]
        coefficients = np.stack([f.coefficients for f in fits])
        space = ShapeSpace.fit(coefficients, p.n_components, who=self.name)
        scales = np.array([f.normalization.scale for f in fits])
        mean_scale = float(scales.mean())

        rebuilt = []
        for fit in fits:
            v, t = reconstruct(fit.coefficients, p.subdivisions)
            rebuilt.append((fit.normalization.invert(v), t))
        samples = [reconstruct(c, p.subdivisions) for c in space.sample(p.n_samples, p.seed)]
        samples = [(v * mean_scale, t) for v, t in samples]
        first, second = ends
        steps = morph(coefficients[first], coefficients[second], p.morph_steps)
        sizes = np.geomspace(scales[first], scales[second], p.morph_steps)
        morphed = []
        for c, size in zip(steps, sizes, strict=True):
            v, t = reconstruct(c, p.subdivisions)
            morphed.append((v * size, t))
        _warn_negative_radius(self.name, samples, "sample")

        model = cs.Model(self.name, {
            "coefficients": coefficients, "centers_nm": np.stack([f.normalization.center_nm for f in fits]),
            "rotations": np.stack([f.normalization.rotation for f in fits]), "scales": scales,
            "labels": np.array([f.label for f in fits], np.int64), "mean": space.mean,
            "components": space.components, "variances": space.variances,
        }, {
            "degree": p.degree, "basis": BASIS, "align": p.align, "scale": p.scale,
            "coefficient_unit": "nm" if p.scale == "none" else "equivalent-sphere radius",
            "mean_scale_nm": mean_scale, "names": [s.name for s in shapes],
        })
        t_values = np.linspace(0.0, 1.0, p.morph_steps)
        return {
            "model": model,
            "reconstruction": _surfaces(rebuilt, [s.name for s in shapes]),
            "errors": reconstruction_errors(shapes, fits, p.subdivisions),
            "descriptors": _shapes.shape_descriptors(shapes),
            "samples": _surfaces(samples, [f"sample {i}" for i in range(1, p.n_samples + 1)]),
            "morph": _surfaces(morphed, [f"{shapes[first].name} -> {shapes[second].name}, t={t:.3g}" for t in t_values]),
        }


def shape_space_from_model(model: cs.Model) -> ShapeSpace:
    """The PCA shape space stored in a ``generate.spharm`` model."""
    model = model.require(NAME)
    return ShapeSpace(np.asarray(model.arrays["mean"]), np.asarray(model.arrays["components"]),
                      np.asarray(model.arrays["variances"]))


def _warn_negative_radius(who: str, meshes: list[tuple[np.ndarray, np.ndarray]], what: str) -> None:
    bad = []
    for index, (vertices, triangles) in enumerate(meshes, start=1):
        a, b, c = (vertices[triangles[:, i]] for i in range(3))
        if (np.einsum("ij,ij->i", a, _shapes.cross(b, c)) <= 0).any():
            bad.append(index)
    if bad:
        warnings.warn(f"{who}: {what}(s) {bad[:10]} fold through the centre (the radius turns negative in some "
                      "direction), so their meshes self-intersect; use fewer PCA modes or a lower degree",
                      UserWarning, stacklevel=3)
