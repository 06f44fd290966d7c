"""``segment.threshold``: a global threshold with morphological clean-up.

The volume is smoothed with a Gaussian whose width is given in voxels of the
finest axis and scaled per axis by the voxel size (so anisotropic EM data is
smoothed isotropically in nm), thresholded, and cleaned: closing, hole
filling, removal of small components, optionally only the largest kept.
"""

from __future__ import annotations

import attrs
import numpy as np

import cellscape as cs

METHODS = ("otsu", "li", "triangle", "yen", "mean", "value")


def physical_sigma(sigma_voxels: float, voxel_size_nm: tuple[float, float, float]) -> tuple[float, ...]:
    """Per-axis sigma (voxels) giving the same width in nm as ``sigma_voxels`` on the finest axis."""
    finest = min(voxel_size_nm)
    return tuple(sigma_voxels * finest / s for s in voxel_size_nm)


def clean_mask(mask: np.ndarray, closing_radius: int, fill_holes: bool, min_size: int, keep_largest: bool) -> np.ndarray:
    """Morphological clean-up of a boolean mask (closing, holes, small or all-but-largest components)."""
    from scipy import ndimage

    if closing_radius > 0:
        ball = ndimage.generate_binary_structure(3, 1)
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
    method: str = cs.param("otsu", choices=METHODS, help="how the threshold is chosen ('value' uses `value`)")
    value: float | None = cs.param(None, help="the threshold when method is 'value' (in the volume's units)")
    invert: bool = cs.param(False, help="segment dark objects (below the threshold) instead of bright ones")
    sigma_voxels: float = cs.param(1.0, ge=0, unit="voxel", help="Gaussian pre-smoothing (finest axis; scaled per axis)")
    closing_radius_voxels: int = cs.param(0, ge=0, unit="voxel", help="morphological closing before filling holes")
    fill_holes: bool = cs.param(True, help="fill enclosed holes")
    min_size_voxels: int = cs.param(0, ge=0, unit="voxel", help="remove connected components smaller than this")
    keep_largest: bool = cs.param(False, help="keep only the largest connected component")
    mask_erosion_voxels: int = cs.param(0, ge=0, unit="voxel", help="shrink the optional mask by this much first")
    class_name: str = cs.param("foreground", help="name of label 1 in the output")


class Threshold(cs.Segmenter):
    """Global threshold (Otsu, Li, triangle, Yen, mean or a value) with morphological clean-up."""

    name = "segment.threshold"
    Params = ThresholdParams
    inputs = {
        "volume": cs.Volume,
        "mask": cs.Port(cs.Labels, optional=True,
                        help="segment only inside this mask (non-zero), e.g. organelles inside a segmented cell"),
    }

    def threshold_value(self, smoothed: np.ndarray) -> float:
        """The threshold the chosen rule gives for these (smoothed, in-mask) values."""
        from skimage import filters

        p = self.params
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
        level = self.threshold_value(data[region])
        foreground = (data < level if p.invert else data > level) & region
        foreground = clean_mask(foreground, p.closing_radius_voxels, p.fill_holes, p.min_size_voxels, p.keep_largest)
        return cs.Labels(foreground.astype(np.uint8), {1: p.class_name}, volume.voxel_size_nm, volume.origin_nm)
