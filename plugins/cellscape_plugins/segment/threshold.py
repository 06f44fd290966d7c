"""``segment.threshold``: a global, local or hysteresis threshold with morphological clean-up.

The volume is smoothed with a Gaussian whose width is given in voxels of the
finest axis and scaled per axis by the voxel size (so anisotropic EM data is
smoothed isotropically in nm), thresholded, and cleaned: opening, closing,
hole filling, removal of small components, optionally only the largest kept.

How the threshold is chosen (``method``):

``otsu``, ``li``, ``triangle``, ``yen``, ``mean``
    one level for the whole volume (inside the mask) by that rule (scikit-image).
``value``
    the level given as ``value``.
``local``
    a level per voxel: the Gaussian-weighted mean of its neighbourhood
    (``skimage.filters.threshold_local``, a cube of ``block_size_voxels`` voxels,
    or a ``block_size_voxels`` square within each z-section with
    ``local_per_slice``); a voxel is foreground when it is brighter than that
    mean by more than ``local_offset``. Follows slow illumination or staining
    gradients that defeat a global level.
``hysteresis``
    voxels above ``high`` are seeds and grow through connected voxels above
    ``low`` (``skimage.filters.apply_hysteresis_threshold``): a faint part of an
    object is kept when it touches a bright part, faint noise alone is not.
    Without ``low`` and ``high`` both come from a three-class Otsu
    (``threshold_multiotsu``): background | faint | bright.

With ``invert`` every rule segments dark objects instead (for ``hysteresis``
seeds are below ``low`` and grow through voxels below ``high``).

The clean-up radii are in voxels of a city-block ball (the 6-connected cross
applied ``r`` times): opening removes specks and thin bridges, closing
bridges thin gaps.
"""

from __future__ import annotations

import attrs
import numpy as np

import cellscape as cs

GLOBAL_METHODS = ("otsu", "li", "triangle", "yen", "mean", "value")
METHODS = (*GLOBAL_METHODS, "local", "hysteresis")


def physical_sigma(sigma_voxels: float, voxel_size_nm: tuple[float, float, float]) -> tuple[float, ...]:
    """Per-axis sigma (voxels) giving the same width in nm as ``sigma_voxels`` on the finest axis."""
    finest = min(voxel_size_nm)
    return tuple(sigma_voxels * finest / s for s in voxel_size_nm)


def clean_mask(mask: np.ndarray, closing_radius: int, fill_holes: bool, min_size: int, keep_largest: bool,
               opening_radius: int = 0) -> np.ndarray:
    """Morphological clean-up of a boolean mask (opening, closing, holes, small or all-but-largest components).

    Radii are in voxels (a 6-connected cross applied that many times). The opening's erosion treats
    the outside of the array as foreground, so objects cut by the volume's edge are not eaten from it.
    """
    from scipy import ndimage

    ball = ndimage.generate_binary_structure(3, 1)
    if opening_radius > 0:
        mask = ndimage.binary_erosion(mask, ball, iterations=opening_radius, border_value=1)
        mask = ndimage.binary_dilation(mask, ball, iterations=opening_radius, border_value=0)
    if closing_radius > 0:
        mask = ndimage.binary_closing(mask, ball, iterations=closing_radius, border_value=0)
    if fill_holes:
        mask = ndimage.binary_fill_holes(mask)
    if min_size > 0 or keep_largest:
        components, count = ndimage.label(mask)
        if count:
            sizes = np.bincount(components.ravel())
            sizes[0] = 0
            keep = sizes >= max(min_size, 1)
            if keep_largest:
                keep = np.zeros_like(keep)
                keep[int(np.argmax(sizes))] = True
            mask = keep[components]
    return mask


@attrs.frozen
class ThresholdParams:
    method: str = cs.param("otsu", choices=METHODS,
                           help="how the threshold is chosen ('value' uses `value`; 'local' a per-voxel neighbourhood "
                                "mean; 'hysteresis' `low`/`high`)")
    value: float | None = cs.param(None, help="the threshold when method is 'value' (in the volume's units)")
    block_size_voxels: int = cs.param(51, ge=3, unit="voxel",
                                      help="method 'local': neighbourhood size, odd (a cube, or a square per z-section)")
    local_offset: float = cs.param(0.0, help="method 'local': how far above its neighbourhood mean a voxel must be "
                                             "(below, with invert), in the volume's units")
    local_per_slice: bool = cs.param(False, help="method 'local': neighbourhoods within each z-section, not 3D cubes")
    low: float | None = cs.param(None, help="method 'hysteresis': level that connected voxels must pass to grow a "
                                            "seed (volume units; with `high`, default from a 3-class Otsu)")
    high: float | None = cs.param(None, help="method 'hysteresis': level that seed voxels must pass (volume units)")
    invert: bool = cs.param(False, help="segment dark objects (below the threshold) instead of bright ones")
    sigma_voxels: float = cs.param(1.0, ge=0, unit="voxel", help="Gaussian pre-smoothing (finest axis; scaled per axis)")
    opening_radius_voxels: int = cs.param(0, ge=0, unit="voxel",
                                          help="morphological opening first: removes specks and thin bridges")
    closing_radius_voxels: int = cs.param(0, ge=0, unit="voxel", help="morphological closing before filling holes")
    fill_holes: bool = cs.param(True, help="fill enclosed holes")
    min_size_voxels: int = cs.param(0, ge=0, unit="voxel", help="remove connected components smaller than this")
    keep_largest: bool = cs.param(False, help="keep only the largest connected component")
    mask_erosion_voxels: int = cs.param(0, ge=0, unit="voxel", help="shrink the optional mask by this much first")
    class_name: str = cs.param("foreground", help="name of label 1 in the output")


class Threshold(cs.Segmenter):
    """Global (Otsu, Li, triangle, Yen, mean, value), local or hysteresis threshold with morphological clean-up."""

    name = "segment.threshold"
    Params = ThresholdParams
    inputs = {
        "volume": cs.Volume,
        "mask": cs.Port(cs.Labels, optional=True,
                        help="segment only inside this mask (non-zero), e.g. organelles inside a segmented cell"),
    }

    def threshold_value(self, smoothed: np.ndarray) -> float:
        """The threshold a global rule (not 'local' or 'hysteresis') gives for these (smoothed, in-mask) values."""
        from skimage import filters

        p = self.params
        if p.method not in GLOBAL_METHODS:
            raise ValueError(f"threshold_value is for the global rules {GLOBAL_METHODS}, not '{p.method}'")
        if p.method == "value":
            if p.value is None:
                raise cs.InputError("segment.threshold: method 'value' needs the parameter 'value'")
            return float(p.value)
        if float(smoothed.min()) == float(smoothed.max()):
            raise cs.InputError(
                f"segment.threshold: the volume is constant ({float(smoothed.min()):g}); a {p.method} threshold is "
                "undefined — check the input or give method: value"
            )
        chooser = {"otsu": filters.threshold_otsu, "li": filters.threshold_li, "triangle": filters.threshold_triangle,
                   "yen": filters.threshold_yen, "mean": filters.threshold_mean}[p.method]
        return float(chooser(smoothed))

    def local_foreground(self, smoothed: np.ndarray) -> np.ndarray:
        """Voxels brighter (darker with invert) than their neighbourhood's Gaussian-weighted mean by ``local_offset``.

        The neighbourhood spans the whole volume, also outside a mask.
        """
        from skimage import filters

        p = self.params
        if p.block_size_voxels % 2 == 0:
            raise cs.InputError(f"segment.threshold: block_size_voxels must be odd, got {p.block_size_voxels}; "
                                f"use {p.block_size_voxels + 1}")
        signal = -smoothed if p.invert else smoothed
        block = (1, p.block_size_voxels, p.block_size_voxels) if p.local_per_slice else p.block_size_voxels
        return signal > filters.threshold_local(signal, block, method="gaussian", offset=-p.local_offset)

    def hysteresis_levels(self, signal: np.ndarray) -> tuple[float, float]:
        """(low, high) in ``signal`` units (the volume, negated with invert), from the params or a 3-class Otsu."""
        from skimage import filters

        p = self.params
        if (p.low is None) != (p.high is None):
            raise cs.InputError("segment.threshold: method 'hysteresis' needs both 'low' and 'high', or neither "
                                "(then both come from a three-class Otsu)")
        if p.low is not None and p.high is not None:
            if not p.low < p.high:
                raise cs.InputError(f"segment.threshold: hysteresis needs low < high, got low={p.low:g}, "
                                    f"high={p.high:g}")
            return (-p.high, -p.low) if p.invert else (p.low, p.high)
        if float(signal.min()) == float(signal.max()):
            raise cs.InputError("segment.threshold: the volume is constant (inside the mask); hysteresis levels "
                                "are undefined — check the input or give 'low' and 'high'")
        try:
            low, high = filters.threshold_multiotsu(signal, classes=3)
        except ValueError as exc:
            raise cs.InputError(
                "segment.threshold: cannot derive hysteresis levels, the volume has fewer than three distinct "
                f"intensity levels ({exc}); give 'low' and 'high'") from exc
        return float(low), float(high)

    def hysteresis_foreground(self, smoothed: np.ndarray, region: np.ndarray) -> np.ndarray:
        """Components above ``low`` that contain a voxel above ``high`` (inverted with invert), inside ``region``."""
        from skimage import filters

        signal = -smoothed if self.params.invert else smoothed
        low, high = self.hysteresis_levels(signal[region])
        below = min(float(signal.min()), low) - 1.0  # outside the mask: never foreground, never a bridge
        return filters.apply_hysteresis_threshold(np.where(region, signal, below), low, high)

    def segment(self, volume: cs.Volume, mask: cs.Labels | None = None) -> cs.Labels:
        from scipy import ndimage

        p = self.params
        data = np.asarray(volume.data, np.float32)
        if p.sigma_voxels > 0:
            data = ndimage.gaussian_filter(data, physical_sigma(p.sigma_voxels, volume.voxel_size_nm))
        region = np.ones(data.shape, bool)
        if mask is not None:
            if mask.shape != volume.shape:
                raise cs.InputError(f"segment.threshold: input 'mask' has shape {mask.shape}, but the volume has "
                                    f"{volume.shape}; they must be on the same grid")
            region = mask.data > 0
            if p.mask_erosion_voxels:
                region = ndimage.binary_erosion(region, iterations=p.mask_erosion_voxels)
            if not region.any():
                raise cs.InputError("segment.threshold: the mask is empty (after erosion); nothing to segment")
        if p.method == "local":
            foreground = self.local_foreground(data) & region
        elif p.method == "hysteresis":
            foreground = self.hysteresis_foreground(data, region)
        else:
            level = self.threshold_value(data[region])
            foreground = (data < level if p.invert else data > level) & region
        foreground = clean_mask(foreground, p.closing_radius_voxels, p.fill_holes, p.min_size_voxels, p.keep_largest,
                                opening_radius=p.opening_radius_voxels)
        return cs.Labels(foreground.astype(np.uint8), {1: p.class_name}, volume.voxel_size_nm, volume.origin_nm)
