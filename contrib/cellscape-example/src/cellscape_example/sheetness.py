"""Hessian sheet measures: how much each voxel looks like the middle of a thin bright (or dark) sheet.

A membrane is a sheet: across it the intensity has a sharp peak (one large
second derivative), along it the intensity hardly changes (two small ones).
All three measures start from the eigenvalues of the scale-normalised Hessian
``σ² H``, computed in physical units so anisotropic voxels are handled
exactly, sign-flipped so that the ridge's curvature is positive, and sorted
by magnitude: ``|μ1| <= |μ2| <= |μ3|``. An ideal sheet has ``μ3 > 0`` and
``μ1 ≈ μ2 ≈ 0``; a tube has ``μ2 ≈ μ3``; a blob has all three alike.

scikit-image's ``filters.sato`` and ``filters.frangi`` measure *tubes* in 3D
(Sato's is the geometric mean of the two largest curvatures, Frangi's
suppresses plates on purpose), so they miss a flat membrane; these are the
sheet versions of the same ideas:

- :func:`sato_sheetness` — the sheet condition of Sato et al. (2000):
  ``μ3 · w(μ2) · w(μ1)``, where ``w`` falls from 1 to 0 as a small
  eigenvalue grows towards ``μ3`` (same sign) or towards ``-μ3 / α`` (opposite sign).
- :func:`frangi_sheetness` — Frangi et al.'s (1998) vesselness written for
  plates, as in Descoteaux et al. (2005): ``exp(-R_sheet²/2α²) ·
  (1 - exp(-R_blob²/2β²)) · (1 - exp(-S²/2c²))``.
- :func:`meijering_sheetness` — Meijering et al.'s (2004) normalised
  eigenvalue ``μ3 + α (μ1 + μ2)`` with their α = -1/3, which ranks one
  dominant curvature (a sheet) above two (a tube) and three (a blob).

References
----------
Sato Y., Westin C.-F., Bhalerao A. et al. (2000). Tissue classification based on 3D local intensity
structures for volume rendering. IEEE Trans. Vis. Comput. Graph. 6(2), 160-180.
Frangi A. F., Niessen W. J., Vincken K. L., Viergever M. A. (1998). Multiscale vessel enhancement
filtering. MICCAI, LNCS 1496, 130-137.
Descoteaux M., Audette M., Chinzei K., Siddiqi K. (2005). Bone enhancement filtering: application to
sinus bone segmentation and simulation of pituitary surgery. MICCAI, LNCS 3749, 9-16.
Meijering E., Jacob M., Sarria J.-C. F. et al. (2004). Design and validation of a tool for neurite
tracing and analysis in fluorescence microscopy images. Cytometry A 58(2), 167-176.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["MEASURES", "frangi_sheetness", "hessian_eigenvalues", "meijering_sheetness", "sato_sheetness"]

_TINY = np.float32(1e-30)


def hessian_eigenvalues(
    data: np.ndarray, sigma_nm: float, voxel_size_nm: tuple[float, float, float], dark: bool, slab: int = 16
) -> np.ndarray:
    """Eigenvalues of the scale-normalised Hessian, ridge curvature positive, sorted by magnitude.

    Parameters
    ----------
    data : ndarray, shape (nz, ny, nx), float32
        The image.
    sigma_nm : float
        Scale: standard deviation of the Gaussian derivative filters in nm
        (``sigma_nm / voxel_size_nm`` voxels along each axis).
    voxel_size_nm : (3,) floats
        Voxel edge lengths ``(z, y, x)`` in nm.
    dark : bool
        The ridges are darker than their surroundings (``H`` is used as is);
        otherwise brighter (``-H`` is used), so the ridge's curvature is positive either way.
    slab : int
        Number of z-sections whose 3×3 matrices are diagonalised at once (bounds memory).

    Returns
    -------
    ndarray, shape (nz, ny, nx, 3), float32
        ``σ² H`` eigenvalues (dimensionless: ``σ`` in nm, ``H`` in intensity/nm²),
        ordered ``|μ1| <= |μ2| <= |μ3|`` along the last axis.
    """
    from scipy import ndimage

    sigma_voxels = [sigma_nm / v for v in voxel_size_nm]
    sign = 1.0 if dark else -1.0
    # a constant has no curvature, but a truncated derivative kernel does not sum to exactly 0: remove the mean so
    # a large offset (raw detector counts) does not leak into the result
    data = np.asarray(data, np.float32) - np.float32(data.mean(dtype=np.float64))
    components: dict[tuple[int, int], np.ndarray] = {}
    for i in range(3):
        for j in range(i, 3):
            order = [0, 0, 0]
            order[i] += 1
            order[j] += 1
            # "nearest" rather than "reflect": mirroring a ramp at the border would make a false ridge there
            derivative = ndimage.gaussian_filter(data, sigma_voxels, order=order, mode="nearest")
            derivative *= np.float32(sign * sigma_nm**2 / (voxel_size_nm[i] * voxel_size_nm[j]))
            components[i, j] = derivative
    eigenvalues = np.empty((*data.shape, 3), np.float32)
    for start in range(0, data.shape[0], slab):
        part = slice(start, start + slab)
        matrices = np.empty((*components[0, 0][part].shape, 3, 3), np.float32)
        for (i, j), derivative in components.items():
            matrices[..., i, j] = derivative[part]
            matrices[..., j, i] = derivative[part]
        values = np.linalg.eigvalsh(matrices)
        eigenvalues[part] = np.take_along_axis(values, np.abs(values).argsort(axis=-1), axis=-1)
    return eigenvalues


def sato_sheetness(mu: np.ndarray, alpha: float = 0.25) -> np.ndarray:
    """Sato et al.'s sheet measure ``μ3 · w(μ2) · w(μ1)`` (γ = 1).

    ``w(μ) = 1 - μ/μ3`` for ``0 <= μ <= μ3`` (curving the same way: towards a
    tube or blob) and ``1 + α μ/μ3`` for ``-μ3/α < μ < 0`` (a saddle), 0 beyond.

    Parameters
    ----------
    mu : ndarray, shape (..., 3)
        Eigenvalues from :func:`hessian_eigenvalues`.
    alpha : float
        How much opposite-sign curvature is tolerated (smaller tolerates more).

    Returns
    -------
    ndarray, shape (...), float32
        Sheetness ≥ 0, in units of ``μ`` (zero where ``μ3 <= 0``).
    """
    m3 = mu[..., 2]
    scale = np.maximum(m3, _TINY)

    def weight(small: np.ndarray) -> np.ndarray:
        ratio = small / scale
        return np.where(ratio >= 0, 1 - ratio, 1 + alpha * ratio).clip(0, None)

    return np.where(m3 > 0, m3 * weight(mu[..., 1]) * weight(mu[..., 0]), 0).astype(np.float32)


def frangi_sheetness(mu: np.ndarray, alpha: float = 0.5, beta: float = 0.5, c: float | None = None) -> np.ndarray:
    """Frangi-type plate measure (Descoteaux et al. 2005), in [0, 1).

    Parameters
    ----------
    mu : ndarray, shape (..., 3)
        Eigenvalues from :func:`hessian_eigenvalues`.
    alpha : float
        Sensitivity to ``R_sheet = |μ2|/|μ3|`` (a plate has 0, a tube 1).
    beta : float
        Sensitivity to ``R_blob = |2|μ3| - |μ2| - |μ1|| / |μ3|`` (a plate has 2, a blob 0).
    c : float, optional
        Sensitivity to the structure strength ``S = |μ|``; default half the
        largest ``S`` in ``mu`` (so the measure adapts to the image's contrast).

    Returns
    -------
    ndarray, shape (...), float32
        Sheetness, zero where ``μ3 <= 0``.
    """
    a1, a2, a3 = (np.abs(mu[..., k]) for k in range(3))
    scale = np.maximum(a3, _TINY)
    r_sheet = a2 / scale
    r_blob = np.abs(2 * a3 - a2 - a1) / scale
    strength = np.sqrt(a1**2 + a2**2 + a3**2)
    if c is None:
        c = float(strength.max()) / 2 or 1.0
    value = (
        np.exp(-(r_sheet**2) / (2 * alpha**2))
        * -np.expm1(-(r_blob**2) / (2 * beta**2))
        * -np.expm1(-(strength**2) / (2 * c**2))
    )
    return np.where(mu[..., 2] > 0, value, 0).astype(np.float32)


def meijering_sheetness(mu: np.ndarray, alpha: float = -1 / 3) -> np.ndarray:
    """Meijering et al.'s normalised eigenvalue ``μ3 + α (μ1 + μ2)``, clipped at 0.

    Parameters
    ----------
    mu : ndarray, shape (..., 3)
        Eigenvalues from :func:`hessian_eigenvalues`.
    alpha : float
        Weight of the other two eigenvalues; negative values favour sheets
        (``μ3``) over tubes (``(1 + α) μ3``) and blobs (``(1 + 2α) μ3``).

    Returns
    -------
    ndarray, shape (...), float32
        Sheetness ≥ 0, in units of ``μ``.
    """
    return np.clip(mu[..., 2] + alpha * (mu[..., 0] + mu[..., 1]), 0, None).astype(np.float32)


MEASURES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sato": sato_sheetness,
    "frangi": frangi_sheetness,
    "meijering": meijering_sheetness,
}
