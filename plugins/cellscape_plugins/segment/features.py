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

How they are computed
---------------------
The kernels are scipy's (``scipy.ndimage.gaussian_filter1d``: radius
``int(4σ + 0.5)``, boundary ``mode="reflect"``), so the features equal
scipy's filters to float32 rounding. The work is done by compiled float32
loops (:mod:`._forest_kernels`, numba, parallel over the cores):

- every derivative up to second order at one scale comes from one tree of
  separable 1D passes that shares its z and y passes (19 passes instead of
  30), and every feature of the scale is made from them;
- passes are *valid* correlations: a region is read with its halo (mirrored
  beyond the image's borders, which is what ``mode="reflect"`` means), and
  each pass returns only the voxels its kernel fully covers, so the z pass
  already drops the z halo and later passes run on smaller arrays;
- eigenvalues of the symmetric 3×3 Hessian and structure tensor are computed
  in closed form per voxel, not by ``numpy.linalg.eigvalsh`` on (N, 3, 3).

Each voxel's value is computed by the same float operations whether the
volume is processed whole or in chunks, so :meth:`FeatureBank.compute` on a
region equals the same voxels of the whole-volume features bit for bit;
:attr:`FeatureBank.halo` is the margin a chunk needs for that.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator, Sequence

import numpy as np

import cellscape as cs

from .threshold import physical_sigma

__all__ = [
    "DEFAULT_SCALES",
    "FEATURE_GROUPS",
    "FeatureBank",
    "correlation_weights",
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


def correlation_weights(sigma: float, order: int, scale: float = 1.0) -> np.ndarray:
    """Weights of scipy's Gaussian (derivative) filter, ready for correlation.

    Parameters
    ----------
    sigma : float
        Standard deviation in voxels.
    order : 0, 1 or 2
        Derivative order.
    scale : float
        Factor applied to the weights (a derivative per finest-axis voxel on a coarser axis).

    Returns
    -------
    (2r + 1,) float32 array, r = :func:`kernel_radius`; ``Σ_t w[r + t] · I[i + t]`` is
    ``gaussian_filter1d(I, sigma, order=order)`` at ``i``. Symmetric for orders 0 and 2,
    antisymmetric for order 1 (exactly, so the compiled passes pair the taps).
    """
    radius = kernel_radius(sigma)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    variance = float(sigma) ** 2
    phi = np.exp(-0.5 * x * x / variance)
    phi /= phi.sum()
    if order == 0:
        kernel = phi
    elif order == 1:
        kernel = -x / variance * phi
    elif order == 2:
        kernel = (x * x / variance**2 - 1.0 / variance) * phi
    else:
        raise ValueError(f"correlation_weights: derivative order {order} is not 0, 1 or 2")
    return (kernel[::-1] * scale).astype(np.float32)  # correlation is convolution with the reversed kernel


def reflected_block(image: np.ndarray, start: Sequence[int], stop: Sequence[int]) -> np.ndarray:
    """The image over ``[start, stop)`` per axis as float32, mirrored where the box leaves the image.

    The mirror is scipy's ``mode="reflect"`` (``d c b a | a b c d | d c b a``),
    so valid passes over the block equal scipy's filters over the whole image.
    """
    inside = tuple(slice(max(0, a), min(n, b)) for a, b, n in zip(start, stop, image.shape, strict=True))
    block = np.asarray(image[inside], np.float32)
    pad = [(max(0, -a), max(0, b - n)) for a, b, n in zip(start, stop, image.shape, strict=True)]
    if any(p for pair in pad for p in pair):
        block = _reflect_pad(block, pad)
    return np.ascontiguousarray(block)


def _reflect_pad(block: np.ndarray, pad: Sequence[tuple[int, int]]) -> np.ndarray:
    """Mirror ``block`` outward by ``pad`` per axis, as scipy's ``reflect`` does, however wide the pad."""
    for axis, (before, after) in enumerate(pad):
        n = block.shape[axis]
        # scipy's reflect repeats the axis and its mirror image with period 2n
        index = np.arange(-before, n + after) % (2 * n)
        index = np.where(index < n, index, 2 * n - 1 - index)
        block = np.take(block, index, axis=axis)
    return block


def _derivative_tree(block: np.ndarray, sigmas: Sequence[float], factors: Sequence[float],
                     orders: Sequence[tuple[int, int, int]], inner: tuple[slice, slice, slice] | None = None,
                     full: Sequence[tuple[int, int, int]] = ()) -> dict[tuple[int, int, int], np.ndarray]:
    """Valid Gaussian derivatives of ``block``, sharing the z and y passes; each pass shrinks its axis by 2r.

    The valid output covers ``block`` less a kernel radius per side (the "full" box). With ``inner`` (slices of
    the full box), only the orders in ``full`` are returned on the full box; the others are computed on
    ``inner`` only: their passes read just the rows that box needs, so the work arrays of a chunk shrink to
    the chunk where no wider context is wanted. Each value is the same sum of the same products either way.
    """
    from ._forest_kernels import correlate_valid

    def weights(axis: int, order: int) -> np.ndarray:
        return correlation_weights(sigmas[axis], order, factors[axis] ** order)

    radius = [kernel_radius(s) for s in sigmas]
    wanted = sorted(set(orders))
    wide = set(wanted) if inner is None else set(full) & set(wanted)

    def rows(axis: int, on_full: bool) -> slice:
        # the input positions the valid pass along ``axis`` reads for the full box or for ``inner`` only
        if on_full or inner is None:
            return slice(None)
        return slice(inner[axis].start, inner[axis].stop + 2 * radius[axis])

    def outputs(axis: int, on_full: bool) -> slice:
        # the positions along ``axis`` (already passed) that the later passes keep
        return slice(None) if on_full or inner is None else inner[axis]

    out: dict[tuple[int, int, int], np.ndarray] = {}
    for oz in sorted({o[0] for o in wanted}):
        z_full = any(o in wide for o in wanted if o[0] == oz)
        along_z = correlate_valid(block[rows(0, z_full)], weights(0, oz), 0)
        for oy in sorted({o[1] for o in wanted if o[0] == oz}):
            y_full = any(o in wide for o in wanted if o[:2] == (oz, oy))
            crop_z = outputs(0, y_full) if z_full else slice(None)
            along_y = correlate_valid(along_z[crop_z, rows(1, y_full)], weights(1, oy), 1)
            for order in (o for o in wanted if o[:2] == (oz, oy)):
                x_full = order in wide
                crop = (outputs(0, x_full) if y_full else slice(None), outputs(1, x_full) if y_full else slice(None),
                        rows(2, x_full))
                out[order] = correlate_valid(along_y[crop], weights(2, order[2]), 2)
            del along_y
        del along_z  # only one z and one y intermediate live at a time
    return out


def gaussian_derivatives(image: np.ndarray, sigmas: Sequence[float],
                         orders: Sequence[tuple[int, int, int]]) -> dict[tuple[int, int, int], np.ndarray]:
    """Gaussian-smoothed derivatives of a 3D image, sharing the separable passes between them.

    Parameters
    ----------
    image : (z, y, x) real array
    sigmas : (3,) floats, voxels per axis (z, y, x)
    orders : sequence of (order_z, order_y, order_x), each order 0..2
        Derivative orders wanted, in voxel units of each axis.

    Returns
    -------
    dict mapping each order to a (z, y, x) float32 array. ``(0, 0, 0)`` equals
    ``scipy.ndimage.gaussian_filter(image, sigmas)`` to float32 rounding.
    """
    radius = [kernel_radius(s) for s in sigmas]
    block = reflected_block(image, [-r for r in radius], [n + r for n, r in zip(np.shape(image), radius, strict=True)])
    return _derivative_tree(block, sigmas, (1.0, 1.0, 1.0), [tuple(o) for o in orders])  # type: ignore[misc]


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
    (computed in float64 per voxel; absolute accuracy ≈ 1e-7 of the matrix norm).
    """
    from ._forest_kernels import symmetric_eigenvalues_3x3

    return symmetric_eigenvalues_3x3(zz, zy, zx, yy, yx, xx)


def _factors(voxel_size_nm: Sequence[float]) -> tuple[float, float, float]:
    finest = min(voxel_size_nm)
    return tuple(finest / s for s in voxel_size_nm)  # type: ignore[return-value]


def _one_group(group: str, image: np.ndarray, sigma: float, voxel_size_nm: Sequence[float]) -> np.ndarray:
    if np.ndim(image) != 3:
        raise cs.InputError(f"{group}: image must be 3D (z, y, x), got shape {np.shape(image)}")
    return FeatureBank([group], [sigma], voxel_size_nm, who=group).compute(image)


def gaussian_smoothing(image: np.ndarray, sigma: float, voxel_size_nm: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Gaussian smoothing at ``sigma`` (voxels of the finest axis); (z, y, x) float32."""
    return _one_group("gaussian", image, sigma, voxel_size_nm)[0]


def laplacian_of_gaussian(image: np.ndarray, sigma: float, voxel_size_nm: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Laplacian of the Gaussian-smoothed image, per finest-axis voxel²; (z, y, x) float32."""
    return _one_group("laplacian_of_gaussian", image, sigma, voxel_size_nm)[0]


def gradient_magnitude(image: np.ndarray, sigma: float, voxel_size_nm: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Gradient magnitude of the Gaussian-smoothed image, per finest-axis voxel; (z, y, x) float32."""
    return _one_group("gradient_magnitude", image, sigma, voxel_size_nm)[0]


def difference_of_gaussians(image: np.ndarray, sigma: float, voxel_size_nm: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """G_σ * I − G_0.66σ * I (σ in voxels of the finest axis); (z, y, x) float32."""
    return _one_group("difference_of_gaussians", image, sigma, voxel_size_nm)[0]


def structure_tensor_eigenvalues(image: np.ndarray, sigma: float,
                                 voxel_size_nm: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Eigenvalues of the structure tensor, inner scale σ, outer scale σ/2; (3, z, y, x) float32, ascending."""
    return _one_group("structure_tensor_eigenvalues", image, sigma, voxel_size_nm)


def hessian_eigenvalues(image: np.ndarray, sigma: float, voxel_size_nm: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Eigenvalues of the Hessian of the Gaussian-smoothed image; (3, z, y, x) float32, ascending."""
    return _one_group("hessian_eigenvalues", image, sigma, voxel_size_nm)


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

    def compute(self, image: np.ndarray, region: tuple[slice, slice, slice] | None = None,
                threads: int = 1) -> np.ndarray:
        """Features of ``image`` over ``region`` (default: all of it).

        Each scale reads the region grown by that scale's halo (mirrored beyond
        the image's borders) and returns the region only, so the result equals
        the same voxels of the whole-image features and memory is bounded by
        the region size.

        Parameters
        ----------
        image : (z, y, x) real array (a memmap is read only where needed)
        region : three slices with steps of 1, optional
        threads : int
            Scales computed at once on this many threads (the compiled filters release the GIL): the work
            arrays of that many scales live together, the features are the same bit for bit.

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
        per_scale = self.n_features // len(self.scales)

        def one_scale(index: int) -> None:
            for channel, feature in enumerate(self._scale_features(image, bounds, self.scales[index])):
                out[index * per_scale + channel] = feature

        if threads <= 1 or len(self.scales) == 1:
            for index in range(len(self.scales)):
                one_scale(index)
            return out
        # the widest scales first (their blocks grown by the halo are the most work), the others fill the threads in
        order = sorted(range(len(self.scales)), key=lambda i: -int(np.prod(
            [b - a + 2 * h for (a, b), h in zip(bounds, self.scale_halo(self.scales[i]), strict=True)])))
        with concurrent.futures.ThreadPoolExecutor(min(threads, len(self.scales))) as pool:
            list(pool.map(one_scale, order))  # raises a scale's error here
        return out

    def _scale_features(self, image: np.ndarray, bounds: list[tuple[int, int]], scale: float) -> Iterator[np.ndarray]:
        """The features of one scale over the box ``bounds`` ((start, stop) per axis), one channel at a time."""
        from ._forest_kernels import correlate_valid

        groups = self.groups
        shape = image.shape
        sigmas = physical_sigma(scale, self.voxel_size_nm)
        factors = _factors(self.voxel_size_nm)
        radius = [kernel_radius(s) for s in sigmas]
        tensor = "structure_tensor_eigenvalues" in groups
        outer = [kernel_radius(OUTER_RATIO * s) if tensor else 0 for s in sigmas]
        # derivatives are needed on the box grown by the structure tensor's outer radius (within the image: beyond
        # it scipy mirrors the gradient products, not the image), and read the image a kernel radius further
        grown = [(max(0, a - o), min(n, b + o)) for (a, b), o, n in zip(bounds, outer, shape, strict=True)]
        block = reflected_block(image, [a - r for (a, _), r in zip(grown, radius, strict=True)],
                                [b + r for (_, b), r in zip(grown, radius, strict=True)])
        orders: list[tuple[int, int, int]] = []
        if "gaussian" in groups or "difference_of_gaussians" in groups:
            orders.append((0, 0, 0))
        if {"gradient_magnitude", "structure_tensor_eigenvalues"} & set(groups):
            orders.extend(_FIRST)
        if "hessian_eigenvalues" in groups:
            orders.extend(_SECOND)
        elif "laplacian_of_gaussian" in groups:
            orders.extend(_PURE_SECOND)
        inner = tuple(slice(a - ga, b - ga) for (a, b), (ga, _) in zip(bounds, grown, strict=True))
        narrow = None
        if "difference_of_gaussians" in groups:
            narrow_sigmas = [DOG_RATIO * s for s in sigmas]
            narrow_radius = [kernel_radius(s) for s in narrow_sigmas]
            # the narrow Gaussian reads the same block, cropped to the box plus its own (smaller) radius
            narrow = block[tuple(slice(a - n - (ga - r), b + n - (ga - r)) for (a, b), (ga, _), r, n
                                 in zip(bounds, grown, radius, narrow_radius, strict=True))]
            for axis in range(3):
                narrow = correlate_valid(narrow, correlation_weights(narrow_sigmas[axis], 0), axis)
        # only the gradient feeds the structure tensor's outer smoothing, so only it is needed beyond the box
        wide = _FIRST if tensor else ()
        d = _derivative_tree(block, sigmas, factors, orders, inner, wide)
        del block  # the tree's work arrays and the image block are gone before the features are assembled

        def at(order: tuple[int, int, int]) -> np.ndarray:
            return d[order][inner] if order in wide else d[order]

        for group in groups:
            if group == "gaussian":
                yield at((0, 0, 0))
            elif group == "laplacian_of_gaussian":
                yield at((2, 0, 0)) + at((0, 2, 0)) + at((0, 0, 2))
            elif group == "gradient_magnitude":
                gz, gy, gx = (at(o) for o in _FIRST)
                yield np.sqrt(gz * gz + gy * gy + gx * gx)
            elif group == "difference_of_gaussians":
                yield at((0, 0, 0)) - narrow
            elif group == "structure_tensor_eigenvalues":
                yield from self._structure_tensor(d, bounds, grown, sigmas)
            else:
                yield from symmetric_eigenvalues(*(at(o) for o in _SECOND))

    @staticmethod
    def _structure_tensor(d: dict[tuple[int, int, int], np.ndarray], bounds: list[tuple[int, int]],
                          grown: list[tuple[int, int]], sigmas: Sequence[float]) -> np.ndarray:
        """Eigenvalues of the gradient products (given on ``grown``) averaged at the outer scale over ``bounds``."""
        from ._forest_kernels import correlate_valid

        outer_sigmas = [OUTER_RATIO * s for s in sigmas]
        outer = [kernel_radius(s) for s in outer_sigmas]
        # where the grown box was clipped by the image, scipy mirrors the products there
        pad = [(max(0, ga - (a - o)), max(0, (b + o) - gb))
               for (a, b), (ga, gb), o in zip(bounds, grown, outer, strict=True)]
        gradient = [d[o] for o in _FIRST]
        entries = []
        for a, b in _PAIRS:
            product = gradient[a] * gradient[b]
            if any(p for pair in pad for p in pair):
                product = _reflect_pad(product, pad)
            for axis in range(3):
                product = correlate_valid(product, correlation_weights(outer_sigmas[axis], 0), axis)
            entries.append(product)
        return symmetric_eigenvalues(*entries)
