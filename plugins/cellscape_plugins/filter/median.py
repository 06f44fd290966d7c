"""``filter.median``: median filter over a cube of voxels; removes salt-and-pepper noise, keeps step edges.

Each voxel becomes the median of the ``size_voxels``³ cube around it
(``scipy.ndimage.median_filter``, edges reflected). The cube is in voxels, not
nm: with anisotropic voxels it spans more nm along the coarse axis.
"""

from __future__ import annotations

import attrs
import numpy as np

import cellscape as cs

from .gaussian import float_data, like


@attrs.frozen
class MedianParams:
    size_voxels: int = cs.param(3, ge=3, unit="voxel", help="edge of the cube the median is taken over; odd")


class Median(cs.Filter):
    """Median filter over a cube of voxels (odd edge length)."""

    name = "filter.median"
    Params = MedianParams
    chunk_port = "volume"

    def chunk_halo(self, voxel_size_nm: tuple[float, float, float]) -> tuple[int, int, int]:
        """Half the cube's edge on every axis (voxels)."""
        return (self.params.size_voxels // 2,) * 3  # type: ignore[return-value]

    def filter(self, volume: cs.Volume) -> cs.Volume:
        """Median-filter ``volume`` (data [z, y, x]) into a float32 volume on the same grid."""
        from scipy import ndimage

        size = self.params.size_voxels
        if size % 2 == 0:
            raise cs.InputError(f"{self.name}: size_voxels must be odd (the cube is centred on the voxel), got {size}; "
                                f"use {size - 1} or {size + 1}")
        return like(volume, ndimage.median_filter(float_data(volume), size=size, mode="reflect", output=np.float32))
