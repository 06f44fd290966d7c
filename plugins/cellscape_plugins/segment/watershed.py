"""``segment.watershed``: separate touching objects into instances.

Three landscapes can be flooded inside the foreground:

``distance``
    the negative Euclidean distance (in nm) to the mask's edge, seeded from its
    maxima: objects joined by a neck split at the neck, whatever their contrast.
``intensity``
    the inverted smoothed image, seeded from its bright maxima: blobs whose
    brightness falls off towards their edges split along the dark valley between them.
``gradient``
    the gradient magnitude of the smoothed image, seeded from its flat regions
    (gradient below Otsu's threshold): regions of different brightness split
    where the intensity changes.

Markers, when given, replace the automatic seeds in every mode.
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


def seeds_from_markers(markers: np.ndarray) -> np.ndarray:
    """Seed image from marker labels: each distinct value is one seed; a binary image is split into its components.

    Parameters
    ----------
    markers : (z, y, x) integer array
        Non-zero where seeds are.

    Returns
    -------
    (z, y, x) int32 array, 0 = no seed.
    """
    from scipy import ndimage

    if int(markers.max()) <= 1:
        return ndimage.label(markers > 0)[0].astype(np.int32)
    return markers.astype(np.int32)


def seeds_from_maxima(height: np.ndarray, foreground: np.ndarray, min_distance: int) -> np.ndarray:
    """One seed per local maximum of ``height`` inside ``foreground``, maxima at least ``min_distance`` voxels apart.

    Parameters
    ----------
    height : (z, y, x) float array
    foreground : (z, y, x) bool array
    min_distance : int, voxels

    Returns
    -------
    (z, y, x) int32 array, seeds numbered 1..N, 0 elsewhere.
    """
    from skimage import feature

    peaks = feature.peak_local_max(height, min_distance=min_distance, labels=foreground.astype(np.int32),
                                   exclude_border=False)
    seeds = np.zeros(foreground.shape, np.int32)
    seeds[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return seeds


def seeds_from_flat_regions(gradient: np.ndarray, foreground: np.ndarray, min_width: float) -> np.ndarray:
    """One seed per connected flat region: gradient below Otsu's threshold (over ``foreground``), at least ``min_width`` wide.

    Parameters
    ----------
    gradient : (z, y, x) float array
        Gradient magnitude.
    foreground : (z, y, x) bool array
    min_width : float, voxels
        Regions whose largest inscribed ball is narrower than this are not seeds (noise).

    Returns
    -------
    (z, y, x) int32 array, seeds numbered 1..N, 0 elsewhere.
    """
    from scipy import ndimage
    from skimage import filters, segmentation

    values = gradient[foreground]
    flat = foreground & (gradient < filters.threshold_otsu(values)) if values.min() < values.max() else foreground
    regions, count = ndimage.label(flat)
    if count == 0:
        return regions.astype(np.int32)
    half_width = ndimage.maximum(ndimage.distance_transform_edt(flat), regions, np.arange(1, count + 1))
    keep = np.concatenate([[False], np.asarray(half_width) * 2 >= min_width])
    regions[~keep[regions]] = 0
    return segmentation.relabel_sequential(regions)[0].astype(np.int32)


@attrs.frozen
class WatershedParams:
    mode: str = cs.param("distance", choices=("distance", "intensity", "gradient"),
                         help="landscape flooded: distance to the mask edge, inverted intensity, or gradient magnitude")
    invert: bool = cs.param(False, help="objects are dark: Otsu foreground below the threshold, intensity seeds at minima")
    min_distance_voxels: int = cs.param(5, ge=1, unit="voxel",
                                        help="automatic seeds: minimum distance between maxima (gradient mode: minimum width"
                                        " of a flat seed region)")
    sigma_voxels: float = cs.param(1.0, ge=0, unit="voxel",
                                   help="Gaussian smoothing of the image (finest axis; scaled per axis by voxel size)")
    compactness: float = cs.param(0.0, ge=0, help="compact watershed: larger values give rounder instances (0 = classic)")
    min_size_voxels: int = cs.param(0, ge=0, unit="voxel", help="drop instances smaller than this, then renumber")


class Watershed(cs.Segmenter):
    """Seeded watershed that splits a foreground into numbered instances (distance, intensity or gradient)."""

    name = "segment.watershed"
    Params = WatershedParams
    inputs = {
        "volume": cs.Volume,
        "mask": cs.Port(cs.Labels, optional=True, help="where to segment (non-zero); default: Otsu foreground of the volume"),
        "markers": cs.Port(cs.Labels, optional=True,
                           help="seeds: one instance per label value (a binary image: per connected component)"),
    }

    def segment(self, volume: cs.Volume, mask: cs.Labels | None = None, markers: cs.Labels | None = None) -> cs.Labels:
        """Split the foreground of ``volume`` into instances.

        Parameters
        ----------
        volume : cs.Volume
            The image, (z, y, x).
        mask : cs.Labels, optional
            Same shape as ``volume``; non-zero voxels are segmented.
        markers : cs.Labels, optional
            Same shape as ``volume``; seeds (markers outside the foreground are ignored).

        Returns
        -------
        cs.Labels
            uint16 (uint32 beyond 65535 instances), instances 1..N, 0 = background,
            no class names, on the volume's grid.
        """
        from scipy import ndimage
        from skimage import filters, segmentation

        p = self.params
        _same_grid("mask", mask, volume)
        _same_grid("markers", markers, volume)
        image = np.asarray(volume.data, np.float32)
        if p.sigma_voxels > 0:
            image = ndimage.gaussian_filter(image, physical_sigma(p.sigma_voxels, volume.voxel_size_nm))
        bright = -image if p.invert else image  # objects are high in `bright`
        if mask is not None:
            foreground = mask.data > 0
        else:
            if float(image.min()) == float(image.max()):
                raise cs.InputError("segment.watershed: the volume is constant and no mask was given; "
                                    "give a 'mask' or check the input")
            foreground = bright > filters.threshold_otsu(bright)
        if not foreground.any():
            raise cs.InputError("segment.watershed: the mask is empty; nothing to separate")

        if p.mode == "distance":
            landscape = -ndimage.distance_transform_edt(foreground, sampling=volume.voxel_size_nm)
        elif p.mode == "intensity":
            landscape = -bright
        else:
            landscape = filters.sobel(image)
        if markers is not None:
            seeds = seeds_from_markers(markers.data)
        elif p.mode == "gradient":
            seeds = seeds_from_flat_regions(landscape, foreground, p.min_distance_voxels)
        else:
            seeds = seeds_from_maxima(-landscape, foreground, p.min_distance_voxels)

        instances = segmentation.watershed(landscape, seeds, mask=foreground, compactness=p.compactness)
        if p.min_size_voxels > 0:
            sizes = np.bincount(instances.ravel())
            instances[sizes[instances] < p.min_size_voxels] = 0
        instances = segmentation.relabel_sequential(instances)[0]
        dtype = np.uint16 if instances.max() < 65536 else np.uint32
        return cs.Labels(instances.astype(dtype), {}, volume.voxel_size_nm, volume.origin_nm)
