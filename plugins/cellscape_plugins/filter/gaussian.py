"""``filter.gaussian``: Gaussian smoothing with a width in nm, so anisotropic voxels are smoothed isotropically.

The width is ``sigma_nm`` (nm), or, when that is not given, ``sigma_voxels`` voxels of
the finest axis. Each axis gets ``sigma_nm / voxel_size_nm[axis]`` voxels, so a
tomogram with thick z-sections is smoothed by the same physical distance along
every axis. The edges are reflected (``scipy.ndimage.gaussian_filter``,
``mode="reflect"``), which preserves the mean of the volume.
"""

from __future__ import annotations

import attrs
import numpy as np

import cellscape as cs


def sigma_per_axis_voxels(sigma_nm: float, voxel_size_nm: tuple[float, float, float]) -> tuple[float, float, float]:
    """Per-axis sigma in voxels ``(z, y, x)`` of a Gaussian ``sigma_nm`` nm wide."""
    return tuple(sigma_nm / size for size in voxel_size_nm)  # type: ignore[return-value]


def float_data(volume: cs.Volume) -> np.ndarray:
    """The volume's voxel values as float32 (a copy only when the dtype differs)."""
    return np.asarray(volume.data, dtype=np.float32)


def like(volume: cs.Volume, data: np.ndarray) -> cs.Volume:
    """A new float32 volume with ``data`` on the same grid (voxel size, origin) as ``volume``."""
    return cs.Volume(np.asarray(data, dtype=np.float32), volume.voxel_size_nm, volume.origin_nm)


@attrs.frozen
class GaussianParams:
    sigma_nm: float | None = cs.param(None, gt=0, unit="nm",
                                      help="standard deviation of the Gaussian in nm (same on every axis); "
                                           "None uses sigma_voxels")
    sigma_voxels: float = cs.param(1.0, gt=0, unit="voxel",
                                   help="standard deviation in voxels of the finest axis, used when sigma_nm is "
                                        "None (scaled per axis by the voxel size)")
    truncate: float = cs.param(4.0, gt=0, unit="sigma", help="the kernel is cut off this many sigmas from its centre")


class Gaussian(cs.Filter):
    """Gaussian smoothing, width in nm (or voxels of the finest axis), isotropic in physical space."""

    name = "filter.gaussian"
    Params = GaussianParams
    chunk_port = "volume"

    def sigma_nm(self, volume: cs.Volume) -> float:
        """The Gaussian's standard deviation in nm for this volume's voxel size."""
        p = self.params
        return p.sigma_nm if p.sigma_nm is not None else p.sigma_voxels * min(volume.voxel_size_nm)

    def chunk_halo(self, voxel_size_nm: tuple[float, float, float]) -> tuple[int, int, int]:
        """The kernel radius per axis (voxels): scipy cuts the Gaussian at ``int(truncate * sigma + 0.5)``."""
        p = self.params
        sigma_nm = p.sigma_nm if p.sigma_nm is not None else p.sigma_voxels * min(voxel_size_nm)
        return tuple(int(p.truncate * s + 0.5) for s in sigma_per_axis_voxels(sigma_nm, voxel_size_nm))  # type: ignore[return-value]

    def filter(self, volume: cs.Volume) -> cs.Volume:
        """Smooth ``volume`` (data [z, y, x], any real dtype) into a float32 volume on the same grid."""
        from scipy import ndimage

        sigma = sigma_per_axis_voxels(self.sigma_nm(volume), volume.voxel_size_nm)
        smoothed = ndimage.gaussian_filter(float_data(volume), sigma, mode="reflect", truncate=self.params.truncate,
                                           output=np.float32)
        return like(volume, smoothed)
