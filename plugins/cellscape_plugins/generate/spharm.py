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

import math
import warnings
from typing import Any

import attrs
import numpy as np

import cellscape as cs

from .._trimesh import cross
from . import _descriptors, _shapes
from ._harmonics import SphereGrid, _grid_values, n_coefficients, project, reconstruct, sphere_grid
from ._rays import cast_rays, winding_number
from ._shapes import Normalization, Shape

NAME = "generate.spharm"
BASIS = "real orthonormal spherical harmonics, index l*l+l+m, no Condon-Shortley phase"


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
        hausdorff, rms = _descriptors.surface_distance(fit.normalization.invert(vertices), triangles,
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
            "descriptors": _descriptors.shape_descriptors(shapes),
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
        if (np.einsum("ij,ij->i", a, cross(b, c)) <= 0).any():
            bad.append(index)
    if bad:
        warnings.warn(f"{who}: {what}(s) {bad[:10]} fold through the centre (the radius turns negative in some "
                      "direction), so their meshes self-intersect; use fewer PCA modes or a lower degree",
                      UserWarning, stacklevel=3)
