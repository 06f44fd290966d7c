"""Multi-scale voxel features for pixel classification, as ilastik computes them.

At every scale σ (in voxels of the finest axis) the bank offers six groups
(channels per scale in brackets):

``gaussian`` (1)
    Gaussian smoothing G_σ * I.
``laplacian_of_gaussian`` (1)
    ∂²zz + ∂²yy + ∂²xx of G_σ * I.
``gradient_magnitude`` (1)
    |∇(G_σ * I)|.
``difference_of_gaussians`` (1)
    G_σ * I − G_0.66σ * I.
``structure_tensor_eigenvalues`` (3)
    eigenvalues of G_σ/2 * (∇(G_σ * I) ∇(G_σ * I)ᵀ): inner scale σ, outer
    scale σ/2 (ilastik's choice).
``hessian_eigenvalues`` (3)
    eigenvalues of the Hessian of G_σ * I.

Eigenvalues are sorted ascending. Anisotropic voxels: σ is converted per
axis so the smoothing has the same width in nm on every axis
(``σ_axis = σ · finest / voxel_size_axis``), and derivatives are taken per
finest-axis voxel (a z derivative on a 2× coarser axis is divided by 2), so
gradients and Hessians are those of the physical image and rotation
invariants stay rotation invariant.

Every derivative up to second order at one scale comes from one tree of
separable 1D Gaussian (derivative) filters that shares its z and y passes
(19 passes instead of 30), and the scale's features are all made from them.
Filters use ``mode="reflect"`` and scipy's kernel radius
``int(4σ + 0.5)``; :attr:`FeatureBank.halo` is the margin a chunk needs so
that features computed on the chunk plus its halo equal those of the whole
volume exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

import cellscape as cs

from .threshold import physical_sigma

__all__ = [
    "DEFAULT_SCALES",
    "FEATURE_GROUPS",
    "FeatureBank",
    "difference_of_gaussians",
    "gaussian_derivatives",
    "gaussian_smoothing",
    "gradient_magnitude",
    "hessian_eigenvalues",
    "laplacian_of_gaussian",
    "structure_tensor_eigenvalues",
    "symmetric_eigenvalues",
]

FEATURE_GROUPS: tuple[str, ...] = (
    "gaussian",
    "laplacian_of_gaussian",
    "gradient_magnitude",
    "difference_of_gaussians",
    "structure_tensor_eigenvalues",
    "hessian_eigenvalues",
)
DEFAULT_SCALES: tuple[float, ...] = (0.7, 1.0, 1.6, 3.5, 5.0, 10.0)

TRUNCATE = 4.0  # kernel radius in standard deviations (scipy's default)
DOG_RATIO = 0.66  # the narrower Gaussian of the difference of Gaussians, as a fraction of σ
OUTER_RATIO = 0.5  # outer (averaging) scale of the structure tensor, as a fraction of σ

_COUNTS = {"gaussian": 1, "laplacian_of_gaussian": 1, "gradient_magnitude": 1, "difference_of_gaussians": 1,
           "structure_tensor_eigenvalues": 3, "hessian_eigenvalues": 3}
_FIRST = ((1, 0, 0), (0, 1, 0), (0, 0, 1))
_SECOND = ((2, 0, 0), (1, 1, 0), (1, 0, 1), (0, 2, 0), (0, 1, 1), (0, 0, 2))  # zz zy zx yy yx xx
_PURE_SECOND = ((2, 0, 0), (0, 2, 0), (0, 0, 2))
_PAIRS = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))  # the same order as index pairs


def kernel_radius(sigma: float) -> int:
    """Radius in voxels of scipy's Gaussian kernel of standard deviation ``sigma`` (voxels)."""
    return int(TRUNCATE * float(sigma) + 0.5)


def gaussian_derivatives(image: np.ndarray, sigmas: Sequence[float],
                         orders: Sequence[tuple[int, int, int]]) -> dict[tuple[int, int, int], np.ndarray]:
    """Gaussian-smoothed derivatives of a 3D image, sharing the separable passes between them.

    Parameters
    ----------
    image : (z, y, x) float32 array
    sigmas : (3,) floats, voxels per axis (z, y, x)
    orders : sequence of (order_z, order_y, order_x), each order 0..2
        Derivative orders wanted, in voxel units of each axis.

    Returns
    -------
    dict mapping each order to a (z, y, x) float32 array. ``(0, 0, 0)`` equals
    ``scipy.ndimage.gaussian_filter(image, sigmas)``.
    """
    from scipy import ndimage

    image = np.asarray(image, np.float32)
    passes: dict[tuple[int, ...], np.ndarray] = {(): image}
    for order in orders:
        for axis in range(3):
            prefix = tuple(order[:axis + 1])
            if prefix not in passes:
                passes[prefix] = ndimage.gaussian_filter1d(passes[prefix[:-1]], float(sigmas[axis]), axis=axis,
                                                           order=prefix[-1], mode="reflect", truncate=TRUNCATE)
    return {tuple(order): passes[tuple(order)] for order in orders}  # type: ignore[misc]


def symmetric_eigenvalues(zz: np.ndarray, zy: np.ndarray, zx: np.ndarray, yy: np.ndarray, yx: np.ndarray,
                          xx: np.ndarray) -> np.ndarray:
    """Eigenvalues of a field of symmetric 3×3 matrices, in closed form (trigonometric method).

    Parameters
    ----------
    zz, zy, zx, yy, yx, xx : arrays of one shape
        The six distinct entries of each matrix.

    Returns
    -------
    float32 array of shape (3, *shape): eigenvalues sorted ascending along axis 0
    (computed in float64; relative accuracy ≈ 1e-7 of the matrix norm).
    """
    a = [np.asarray(m, np.float64) for m in (zz, zy, zx, yy, yx, xx)]
    zz, zy, zx, yy, yx, xx = a
    q = (zz + yy + xx) / 3.0
    off = zy * zy + zx * zx + yx * yx
    dz, dy, dx = zz - q, yy - q, xx - q
    p = np.sqrt((dz * dz + dy * dy + dx * dx + 2.0 * off) / 6.0)
    safe = np.where(p > 0, p, 1.0)
    # det((A - qI) / p) / 2, clipped for rounding
    det = (dz * (dy * dx - yx * yx) - zy * (zy * dx - yx * zx) + zx * (zy * yx - dy * zx)) / (safe ** 3)
    phi = np.arccos(np.clip(det / 2.0, -1.0, 1.0)) / 3.0
    largest = q + 2.0 * p * np.cos(phi)
    smallest = q + 2.0 * p * np.cos(phi + 2.0 * np.pi / 3.0)
    middle = 3.0 * q - largest - smallest
    return np.stack([smallest, middle, largest]).astype(np.float32)


def _scaled(derivatives: dict[tuple[int, int, int], np.ndarray], factors: tuple[float, float, float]
            ) -> dict[tuple[int, int, int], np.ndarray]:
    """Derivatives per finest-axis voxel: multiply ∂ along axis a by ``factors[a]`` per order."""
    if all(f == 1.0 for f in factors):
        return derivatives
    out = {}
    for order, array in derivatives.items():
        factor = float(np.prod([f ** o for f, o in zip(factors, order, strict=True)]))
        out[order] = array if factor == 1.0 else array * np.float32(factor)
    return out


def _factors(voxel_size_nm: Sequence[float]) -> tuple[float, float, float]:
    finest = min(voxel_size_nm)
    return tuple(finest / s for s in voxel_size_nm)  # type: ignore[return-value]


def _image(image: np.ndarray) -> np.ndarray:
    return np.asarray(image, np.float32)


def gaussian_smoothing(image: np.ndarray, sigma: float, voxel_size_nm: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Gaussian smoothing at ``sigma`` (voxels of the finest axis); (z, y, x) float32."""
    return gaussian_derivatives(_image(image), physical_sigma(sigma, tuple(voxel_size_nm)), [(0, 0, 0)])[(0, 0, 0)]


def laplacian_of_gaussian(image: np.ndarray, sigma: float, voxel_size_nm: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Laplacian of the Gaussian-smoothed image, per finest-axis voxel²; (z, y, x) float32."""
    d = _scaled(gaussian_derivatives(_image(image), physical_sigma(sigma, tuple(voxel_size_nm)), _PURE_SECOND),
                _factors(voxel_size_nm))
    return d[(2, 0, 0)] + d[(0, 2, 0)] + d[(0, 0, 2)]


def gradient_magnitude(image: np.ndarray, sigma: float, voxel_size_nm: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Gradient magnitude of the Gaussian-smoothed image, per finest-axis voxel; (z, y, x) float32."""
    d = _scaled(gaussian_derivatives(_image(image), physical_sigma(sigma, tuple(voxel_size_nm)), _FIRST),
                _factors(voxel_size_nm))
    return np.sqrt(d[_FIRST[0]] ** 2 + d[_FIRST[1]] ** 2 + d[_FIRST[2]] ** 2)


def difference_of_gaussians(image: np.ndarray, sigma: float, voxel_size_nm: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """G_σ * I − G_0.66σ * I (σ in voxels of the finest axis); (z, y, x) float32."""
    return gaussian_smoothing(image, sigma, voxel_size_nm) - gaussian_smoothing(image, DOG_RATIO * sigma, voxel_size_nm)


def structure_tensor_eigenvalues(image: np.ndarray, sigma: float,
                                 voxel_size_nm: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Eigenvalues of the structure tensor, inner scale σ, outer scale σ/2; (3, z, y, x) float32, ascending."""
    sigmas = physical_sigma(sigma, tuple(voxel_size_nm))
    d = _scaled(gaussian_derivatives(_image(image), sigmas, _FIRST), _factors(voxel_size_nm))
    return _structure_tensor(d, sigmas)


def hessian_eigenvalues(image: np.ndarray, sigma: float, voxel_size_nm: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Eigenvalues of the Hessian of the Gaussian-smoothed image; (3, z, y, x) float32, ascending."""
    d = _scaled(gaussian_derivatives(_image(image), physical_sigma(sigma, tuple(voxel_size_nm)), _SECOND),
                _factors(voxel_size_nm))
    return symmetric_eigenvalues(*(d[o] for o in _SECOND))


def _structure_tensor(first: dict[tuple[int, int, int], np.ndarray], sigmas: Sequence[float]) -> np.ndarray:
    from scipy import ndimage

    outer = [OUTER_RATIO * s for s in sigmas]
    gradient = [first[o] for o in _FIRST]
    tensor = [ndimage.gaussian_filter(gradient[a] * gradient[b], outer, mode="reflect", truncate=TRUNCATE)
              for a, b in _PAIRS]
    return symmetric_eigenvalues(*tensor)


class FeatureBank:
    """A chosen set of feature groups at chosen scales, for one voxel size.

    Parameters
    ----------
    groups : sequence of str
        Names from :data:`FEATURE_GROUPS`; computed in that canonical order.
    scales : sequence of float
        σ values in voxels of the finest axis, each > 0.
    voxel_size_nm : (3,) floats
        Voxel size ``(z, y, x)`` of the images the bank will see.

    Attributes
    ----------
    names : list of str
        One name per feature channel, e.g. ``"hessian_eigenvalues_2_s1.6"``.
    halo : (3,) ints
        Margin (voxels, z y x) a chunk needs for exact features: the largest
        kernel radius (structure tensor: inner plus outer) over all scales.
    """

    def __init__(self, groups: Sequence[str], scales: Sequence[float], voxel_size_nm: Sequence[float] = (1.0, 1.0, 1.0),
                 who: str = "FeatureBank"):
        unknown = [g for g in groups if g not in FEATURE_GROUPS]
        if unknown or not groups:
            raise cs.InputError(f"{who}: parameter 'features' must list one or more of {', '.join(FEATURE_GROUPS)}"
                                + (f"; unknown: {', '.join(map(repr, unknown))}" if unknown else ""))
        if not scales or any(not np.isfinite(s) or s <= 0 for s in scales):
            raise cs.InputError(f"{who}: parameter 'scales' must list one or more σ > 0 (voxels), got {list(scales)}")
        self.groups = tuple(g for g in FEATURE_GROUPS if g in groups)
        self.scales = tuple(float(s) for s in scales)
        self.voxel_size_nm = tuple(float(v) for v in voxel_size_nm)
        self.names = [name for scale in self.scales for name in self._scale_names(scale)]

    def __repr__(self) -> str:
        return f"FeatureBank(groups={list(self.groups)}, scales={list(self.scales)}, voxel_size_nm={self.voxel_size_nm})"

    @property
    def n_features(self) -> int:
        return len(self.names)

    @property
    def halo(self) -> tuple[int, int, int]:
        halos = [self.scale_halo(s) for s in self.scales]
        return tuple(max(h[a] for h in halos) for a in range(3))  # type: ignore[return-value]

    def scale_halo(self, scale: float) -> tuple[int, int, int]:
        """Margin (voxels, z y x) the features of one scale need."""
        sigmas = physical_sigma(scale, self.voxel_size_nm)
        extra = "structure_tensor_eigenvalues" in self.groups
        return tuple(kernel_radius(s) + (kernel_radius(OUTER_RATIO * s) if extra else 0)
                     for s in sigmas)  # type: ignore[return-value]

    def _scale_names(self, scale: float) -> list[str]:
        names = []
        for group in self.groups:
            if _COUNTS[group] == 1:
                names.append(f"{group}_s{scale:g}")
            else:
                names.extend(f"{group}_{i}_s{scale:g}" for i in range(_COUNTS[group]))
        return names

    def compute(self, image: np.ndarray, region: tuple[slice, slice, slice] | None = None) -> np.ndarray:
        """Features of ``image`` over ``region`` (default: all of it).

        Each scale is computed on the region grown by that scale's halo (clipped
        to the image, whose true borders are reflected), then cropped, so the
        result equals the same voxels of the whole-image features and memory
        is bounded by the region size.

        Parameters
        ----------
        image : (z, y, x) real array (a memmap is read only where needed)
        region : three slices with steps of 1, optional

        Returns
        -------
        (n_features, rz, ry, rx) float32 array, channels in the order of :attr:`names`.
        """
        if np.ndim(image) != 3:
            raise cs.InputError(f"FeatureBank: image must be 3D (z, y, x), got shape {np.shape(image)}")
        shape = image.shape
        if region is None:
            region = tuple(slice(0, n) for n in shape)  # type: ignore[assignment]
        bounds = [s.indices(n)[:2] for s, n in zip(region, shape, strict=True)]  # type: ignore[arg-type]
        out = np.empty((self.n_features, *(b - a for a, b in bounds)), np.float32)
        channel = 0
        for scale in self.scales:
            halo = self.scale_halo(scale)
            grown = [(max(0, a - h), min(n, b + h)) for (a, b), h, n in zip(bounds, halo, shape, strict=True)]
            sub = np.asarray(image[tuple(slice(a, b) for a, b in grown)], np.float32)
            crop = tuple(slice(a - ga, b - ga) for (a, b), (ga, _) in zip(bounds, grown, strict=True))
            for feature in self._scale_features(sub, scale):
                out[channel] = feature[crop]
                channel += 1
        return out

    def _scale_features(self, image: np.ndarray, scale: float) -> list[np.ndarray]:
        groups = self.groups
        sigmas = physical_sigma(scale, self.voxel_size_nm)
        orders: list[tuple[int, int, int]] = []
        if "gaussian" in groups or "difference_of_gaussians" in groups:
            orders.append((0, 0, 0))
        if {"gradient_magnitude", "structure_tensor_eigenvalues"} & set(groups):
            orders.extend(_FIRST)
        if "hessian_eigenvalues" in groups:
            orders.extend(_SECOND)
        elif "laplacian_of_gaussian" in groups:
            orders.extend(_PURE_SECOND)
        d = _scaled(gaussian_derivatives(image, sigmas, orders), _factors(self.voxel_size_nm))
        features: list[np.ndarray] = []
        for group in groups:
            if group == "gaussian":
                features.append(d[(0, 0, 0)])
            elif group == "laplacian_of_gaussian":
                features.append(d[(2, 0, 0)] + d[(0, 2, 0)] + d[(0, 0, 2)])
            elif group == "gradient_magnitude":
                features.append(np.sqrt(d[_FIRST[0]] ** 2 + d[_FIRST[1]] ** 2 + d[_FIRST[2]] ** 2))
            elif group == "difference_of_gaussians":
                narrow = gaussian_derivatives(image, [DOG_RATIO * s for s in sigmas], [(0, 0, 0)])[(0, 0, 0)]
                features.append(d[(0, 0, 0)] - narrow)
            elif group == "structure_tensor_eigenvalues":
                features.extend(_structure_tensor(d, sigmas))
            else:
                features.extend(symmetric_eigenvalues(*(d[o] for o in _SECOND)))
        return features
