"""``filter.background``: remove uneven illumination or staining (a slowly varying background).

How the background is estimated (``method``):

``gaussian``
    a Gaussian blur with standard deviation ``radius_nm`` (per axis in voxels by the
    voxel size, so isotropic in nm). Before blurring, the volume is extended at
    its faces by point reflection (``numpy.pad``, ``reflect_type="odd"``), which
    continues a linear trend, so a linear illumination gradient is removed up to
    the border. Objects much smaller than ``radius_nm`` barely affect it. Fast.
``rolling_ball``
    scikit-image's rolling ball (``skimage.restoration.rolling_ball``) applied to
    each z-section separately (a 2D ellipse ``radius_nm`` in nm, so round in nm also
    for non-square pixels): the background is the surface a ball rolled under
    the image reaches. Objects narrower than the ball are removed from the
    background exactly, whatever their contrast. The ball's height in volume
    units is ``ball_height``; by default 0, a flat disc (then the background is a
    grey-level opening with that disc). Slice-wise because a 3D ball costs the
    ball's volume in voxels per voxel; slow for large radii.

The background is subtracted; with ``keep_mean`` the background's mean is added
back, so the result stays in the volume's range of densities. With
``objects_dark`` the ball rolls from above instead (dark objects on a bright
background, e.g. stained membranes in transmission EM); the Gaussian does not
depend on it.
"""

from __future__ import annotations

import attrs
import numpy as np

import cellscape as cs

from .gaussian import float_data, like, sigma_per_axis_voxels

METHODS = ("gaussian", "rolling_ball")


def gaussian_background(data: np.ndarray, sigma_voxels: tuple[float, float, float], truncate: float = 4.0) -> np.ndarray:
    """Gaussian blur of ``data`` (float32) after odd-reflection padding, which keeps linear trends at the faces."""
    from scipy import ndimage

    pad = [(min(int(np.ceil(truncate * s)), n - 1),) * 2 for s, n in zip(sigma_voxels, data.shape, strict=True)]
    padded = np.pad(data, pad, mode="reflect", reflect_type="odd")
    blurred = ndimage.gaussian_filter(padded, sigma_voxels, mode="reflect", truncate=truncate, output=np.float32)
    return blurred[tuple(slice(before, before + n) for (before, _), n in zip(pad, data.shape, strict=True))]


@attrs.frozen
class BackgroundParams:
    method: str = cs.param("gaussian", choices=METHODS,
                           help="background estimate: a wide 'gaussian' blur, or a 'rolling_ball' per z-section")
    radius_nm: float = cs.param(200.0, gt=0, unit="nm",
                                help="scale of the background: the Gaussian's sigma, or the ball's radius; "
                                     "larger than the objects to keep")
    keep_mean: bool = cs.param(True, help="add the background's mean back, so densities stay in their range")
    objects_dark: bool = cs.param(False, help="rolling_ball: the objects are darker than the background")
    ball_height: float = cs.param(0.0, ge=0, help="rolling_ball: height of the ball in volume units (0 = a flat disc)")


class Background(cs.Filter):
    """Background (uneven illumination) subtraction: a wide Gaussian or a rolling ball per z-section."""

    name = "filter.background"
    Params = BackgroundParams

    def rolling_ball_background(self, data: np.ndarray, voxel_size_nm: tuple[float, float, float]) -> np.ndarray:
        """The rolling-ball background of each z-section of ``data`` (float32)."""
        from skimage.restoration import ellipsoid_kernel, rolling_ball

        p = self.params
        radius_px = [max(1, round(p.radius_nm / size)) for size in voxel_size_nm[1:]]
        if max(radius_px) == 1 and p.radius_nm < min(voxel_size_nm[1:]):
            raise cs.InputError(f"{self.name}: radius_nm={p.radius_nm:g} is smaller than a pixel "
                                f"({min(voxel_size_nm[1:]):g} nm); the ball must span several pixels")
        # ellipsoid_kernel's shape is the full axis length; its intensity axis is the full height
        kernel = ellipsoid_kernel([2 * r + 1 for r in radius_px], 2 * p.ball_height)
        sign = -1.0 if p.objects_dark else 1.0
        background = np.empty_like(data)
        for z in self.progress(range(data.shape[0]), description=f"{self.name}: rolling ball per z-section"):
            background[z] = sign * rolling_ball(sign * data[z], kernel=kernel)
        return background

    def filter(self, volume: cs.Volume) -> cs.Volume:
        """Subtract the background from ``volume`` (data [z, y, x]); a float32 volume on the same grid."""
        p = self.params
        data = float_data(volume)
        if p.method == "gaussian":
            background = gaussian_background(data, sigma_per_axis_voxels(p.radius_nm, volume.voxel_size_nm))
        else:
            background = self.rolling_ball_background(data, volume.voxel_size_nm)
        corrected = data - background
        if p.keep_mean:
            corrected += np.float32(background.mean(dtype=np.float64))
        return like(volume, corrected)
