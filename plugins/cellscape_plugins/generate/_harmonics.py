"""Real spherical harmonics for :mod:`.spharm`: the basis, the Gauss–Legendre × uniform ray grid, projection
onto the basis and synthesis on the grid, and closed meshes rebuilt on a subdivided icosahedron.

The basis and coefficient order are described in :mod:`.spharm` (index ``l² + l + m``, orthonormal, no
Condon–Shortley phase).
"""

from __future__ import annotations

import functools
import math

import attrs
import numpy as np

import cellscape as cs

from .._trimesh import cross

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
        raise cs.InputError(f"generate.spharm: {len(coefficients)} coefficients is not (L + 1)² for any degree L")
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
    inward = np.einsum("ij,ij->i", a, cross(b, c)) < 0
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
