"""``segment.ridge_membrane``: membranes as sheet-like ridges, found by a multi-scale ridge filter.

Membranes in EM are thin sheets, brighter (or darker) than both sides. A
Hessian-based ridge filter (Sato, Frangi or Meijering, from scikit-image)
responds to them at the scales given in nm, which are converted to voxels
per the volume's voxel size. The response is then thresholded with
hysteresis: voxels above the high quantile seed membranes, which grow
through voxels above the low quantile, so faint stretches of a membrane stay
connected to its strong parts while isolated noise does not.
"""

from __future__ import annotations

import attrs
import numpy as np

import cellscape as cs


@attrs.frozen
class RidgeMembraneParams:
    filter: str = cs.param("sato", choices=("sato", "frangi", "meijering"), help="ridge filter of scikit-image")
    sigmas_nm: list[float] = cs.param([8.0, 16.0], unit="nm", help="scales of the filter (about the membrane thickness)")
    black_ridges: bool = cs.param(False, help="membranes are darker than their surroundings (stained EM) instead of brighter")
    low_quantile: float = cs.param(0.85, gt=0, lt=1, help="hysteresis: voxels above this response quantile may join a membrane")
    high_quantile: float = cs.param(0.95, gt=0, lt=1, help="hysteresis: voxels above this quantile seed membranes")
    min_size_voxels: int = cs.param(50, ge=0, unit="voxel", help="drop connected pieces smaller than this")


class RidgeMembrane(cs.Segmenter):
    """Membranes by a multi-scale ridge filter (Sato/Frangi/Meijering) and hysteresis thresholding."""

    name = "segment.ridge_membrane"
    Params = RidgeMembraneParams

    def segment(self, volume: cs.Volume) -> cs.Labels:
        from scipy import ndimage
        from skimage import filters

        p = self.params
        if not p.sigmas_nm or min(p.sigmas_nm) <= 0:
            raise cs.InputError(f"segment.ridge_membrane: sigmas_nm must be a non-empty list of widths > 0 nm, got {p.sigmas_nm}")
        if p.low_quantile >= p.high_quantile:
            raise cs.InputError(
                f"segment.ridge_membrane: low_quantile ({p.low_quantile}) must be below high_quantile ({p.high_quantile})"
            )
        data = np.asarray(volume.data, np.float32)
        # the filters take one isotropic sigma in voxels: resample anisotropic data to the finest axis first
        finest = min(volume.voxel_size_nm)
        zoom = [s / finest for s in volume.voxel_size_nm]
        isotropic = ndimage.zoom(data, zoom, order=1) if any(abs(z - 1) > 1e-6 for z in zoom) else data
        sigmas = [s / finest for s in p.sigmas_nm]
        ridge = {"sato": filters.sato, "frangi": filters.frangi, "meijering": filters.meijering}[p.filter]
        response = ridge(isotropic, sigmas=sigmas, black_ridges=p.black_ridges)
        if isotropic is not data:
            response = ndimage.zoom(response, [a / b for a, b in zip(data.shape, isotropic.shape, strict=True)], order=1)
            response = response[: data.shape[0], : data.shape[1], : data.shape[2]]
        low, high = np.quantile(response, [p.low_quantile, p.high_quantile])
        if high <= low:
            raise cs.InputError("segment.ridge_membrane: the ridge response is flat; is the volume constant?")
        membrane = filters.apply_hysteresis_threshold(response, low, high)
        if p.min_size_voxels:
            pieces, _ = ndimage.label(membrane)
            sizes = np.bincount(pieces.ravel())
            sizes[0] = 0
            membrane = sizes[pieces] >= p.min_size_voxels
        return cs.Labels(membrane.astype(np.uint8), {1: "membrane"}, volume.voxel_size_nm, volume.origin_nm)
