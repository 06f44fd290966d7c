"""``generate.tilt_series``: single-axis parallel-beam projections of a volume.

Geometry (shared with ``reconstruct.wbp``): the tilt axis is the Y axis of
the volume and of every image (IMOD convention). For a tilt angle θ, a
voxel at centred coordinates (x, z) projects to the detector coordinate
``u = x cos θ + z sin θ``; the beam runs along ``(-sin θ, cos θ)`` in (x, z),
so θ = 0 sums along z. Images are ``[y, u]`` with the volume's nx columns.
A projection value is the line integral of the density with path length in
pixels, so weighted backprojection returns the density itself.
"""

from __future__ import annotations

import math

import attrs
import numpy as np

import cellscape as cs


def tilt_angles(min_angle_deg: float, max_angle_deg: float, step_deg: float) -> np.ndarray:
    """Angles from min to max (inclusive when it falls on the step), in degrees."""
    if step_deg <= 0:
        raise cs.InputError(f"generate.tilt_series: step_deg must be > 0, got {step_deg}")
    if min_angle_deg > max_angle_deg:
        raise cs.InputError(f"generate.tilt_series: min_angle_deg ({min_angle_deg}) > max_angle_deg ({max_angle_deg})")
    count = math.floor((max_angle_deg - min_angle_deg) / step_deg + 1e-9) + 1
    return min_angle_deg + step_deg * np.arange(count)


def project(volume: np.ndarray, angles_deg: np.ndarray, progress=iter) -> np.ndarray:
    """Forward-project ``volume`` [z, y, x] at each angle; returns [n_angles, y, x] float32."""
    from scipy import ndimage

    nz, ny, nx = volume.shape
    n_samples = math.ceil(math.hypot(nz, nx)) + 2
    centre_z, centre_x = (nz - 1) / 2, (nx - 1) / 2
    centre_t, centre_u = (n_samples - 1) / 2, (nx - 1) / 2
    data = np.asarray(volume, np.float32)
    out = np.empty((len(angles_deg), ny, nx), np.float32)
    for i in progress(range(len(angles_deg))):
        theta = math.radians(float(angles_deg[i]))
        c, s = math.cos(theta), math.sin(theta)
        # output grid (t, y, u) -> input (z, y, x): z = u sinθ + t cosθ, x = u cosθ − t sinθ (centred)
        matrix = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
        offset = np.array([centre_z - c * centre_t - s * centre_u, 0.0, centre_x + s * centre_t - c * centre_u])
        samples = ndimage.affine_transform(data, matrix, offset, output_shape=(n_samples, ny, nx), order=1,
                                           mode="constant", cval=0.0)
        out[i] = samples.sum(axis=0)
    return out


@attrs.frozen
class TiltSeriesParams:
    min_angle_deg: float = cs.param(-60.0, ge=-90, le=90, unit="deg", help="first tilt angle")
    max_angle_deg: float = cs.param(60.0, ge=-90, le=90, unit="deg", help="last tilt angle")
    step_deg: float = cs.param(2.0, gt=0, unit="deg", help="tilt increment")
    angles_deg: list[float] | None = cs.param(None, help="explicit tilt angles (override the range)")
    noise_snr: float | None = cs.param(None, gt=0, help="add Gaussian noise: std of the projections / std of the noise")
    seed: int = cs.param(0, help="random seed of the noise")


class TiltSeriesProjector(cs.Generator):
    """Single-axis tilt series of a volume (parallel beam, tilt axis along Y, optional noise)."""

    name = "generate.tilt_series"
    Params = TiltSeriesParams
    inputs = {"volume": cs.Volume}
    outputs = {"tilts": cs.TiltSeries}

    def generate(self, volume: cs.Volume) -> cs.TiltSeries:
        p = self.params
        vz, _, vx = volume.voxel_size_nm
        if not math.isclose(vz, vx, rel_tol=1e-6):
            raise cs.InputError(
                f"generate.tilt_series: voxel size must be equal in x and z (got z {vz} nm, x {vx} nm); resample first"
            )
        if p.angles_deg is not None:
            angles = np.asarray(p.angles_deg, float)
            if angles.size < 2 or (np.abs(angles) > 90).any():
                raise cs.InputError("generate.tilt_series: angles_deg needs >= 2 angles, each within ±90°")
        else:
            angles = tilt_angles(p.min_angle_deg, p.max_angle_deg, p.step_deg)
            if angles.size < 2:
                raise cs.InputError("generate.tilt_series: the angle range holds fewer than 2 tilts; widen it")
        projections = project(volume.data, angles, lambda r: self.progress(r, description="projecting"))
        if p.noise_snr is not None:
            rng = np.random.default_rng(p.seed)
            sigma = float(projections.std()) / p.noise_snr
            projections = projections + rng.normal(0.0, sigma, projections.shape).astype(np.float32)
        return cs.TiltSeries(projections, angles, pixel_size_nm=vx, tilt_axis_angle_deg=0.0)
