"""``segment.watershed``: separate touching objects into instances.

Two modes: ``distance`` floods the negative distance transform of the mask
from its maxima (objects joined by a neck split at the neck); ``intensity``
floods the image's gradient magnitude from markers or from regional minima.
Markers, when given, always seed the flooding.
"""

from __future__ import annotations

import attrs
import numpy as np

import cellscape as cs

from .threshold import physical_sigma


def _same_grid(name: str, labels: cs.Labels | None, volume: cs.Volume) -> None:
    if labels is not None and labels.shape != volume.shape:
        raise cs.InputError(
            f"segment.watershed: input '{name}' has shape {labels.shape}, but the volume has {volume.shape}; "
            "they must be on the same grid"
        )


@attrs.frozen
class WatershedParams:
    mode: str = cs.param("distance", choices=("distance", "intensity"), help="what is flooded")
    min_distance_voxels: int = cs.param(5, ge=1, unit="voxel", help="minimum distance between automatic seeds")
    sigma_voxels: float = cs.param(1.0, ge=0, unit="voxel", help="smoothing before seeds are found")
    compactness: float = cs.param(0.0, ge=0, help="compact watershed (0 = classic)")
    min_size_voxels: int = cs.param(0, ge=0, unit="voxel", help="drop instances smaller than this")


class Watershed(cs.Segmenter):
    """Marker- or distance-seeded watershed that splits a mask into numbered instances."""

    name = "segment.watershed"
    Params = WatershedParams
    inputs = {
        "volume": cs.Volume,
        "mask": cs.Port(cs.Labels, help="where to segment (non-zero); default: Otsu foreground", optional=True),
        "markers": cs.Port(cs.Labels, help="seed labels (non-zero); default: automatic seeds", optional=True),
    }

    def segment(self, volume: cs.Volume, mask: cs.Labels | None = None, markers: cs.Labels | None = None) -> cs.Labels:
        from scipy import ndimage
        from skimage import feature, filters, segmentation

        p = self.params
        _same_grid("mask", mask, volume)
        _same_grid("markers", markers, volume)
        sigma = physical_sigma(p.sigma_voxels, volume.voxel_size_nm)
        image = np.asarray(volume.data, np.float32)
        if p.sigma_voxels > 0:
            image = ndimage.gaussian_filter(image, sigma)
        if mask is not None:
            foreground = mask.data > 0
        else:
            if float(image.min()) == float(image.max()):
                raise cs.InputError("segment.watershed: the volume is constant and no mask was given")
            foreground = image > filters.threshold_otsu(image)
        if not foreground.any():
            raise cs.InputError("segment.watershed: the mask is empty; nothing to separate")
        if p.mode == "distance":
            landscape = -ndimage.distance_transform_edt(foreground, sampling=volume.voxel_size_nm)
        else:
            landscape = filters.sobel(image)
        if markers is not None:
            seeds, _ = ndimage.label(markers.data > 0) if markers.data.max() <= 1 else (markers.data.astype(np.int32), 0)
        else:
            peaks_in = -landscape if p.mode == "distance" else -image
            coords = feature.peak_local_max(peaks_in, min_distance=p.min_distance_voxels, labels=foreground.astype(np.int32),
                                            exclude_border=False)
            seeds = np.zeros(foreground.shape, np.int32)
            seeds[tuple(coords.T)] = np.arange(1, len(coords) + 1)
        instances = segmentation.watershed(landscape, seeds, mask=foreground, compactness=p.compactness)
        if p.min_size_voxels > 0:
            sizes = np.bincount(instances.ravel())
            instances[sizes[instances] < p.min_size_voxels] = 0
        instances, _, _ = segmentation.relabel_sequential(instances)
        dtype = np.uint16 if instances.max() < 65536 else np.uint32
        return cs.Labels(instances.astype(dtype), {}, volume.voxel_size_nm, volume.origin_nm)
