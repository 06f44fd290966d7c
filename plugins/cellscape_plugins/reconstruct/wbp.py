"""``reconstruct.wbp``: weighted (filtered) backprojection for single-axis tilt series.

Geometry is the one of ``generate.tilt_series``: tilt axis along Y; a voxel
at centred (x, z) sees detector coordinate ``u = x cos θ + z sin θ``.

Each projection is filtered along u with a ramp |ω| (built from the exact
spatial ramp kernel, so the zero frequency is right) times an apodization
window, then smeared back over the volume by linear interpolation. Each
angle is weighted by the angular interval it stands for (half the distance
to its neighbours), which handles unevenly spaced tilts exactly and makes a
full 180° series reconstruct densities at their true scale.

``sirt_like_iterations: k`` replaces the window by the one that makes a
single WBP look like k iterations of ``reconstruct.sirt`` (the idea of
Zeng, 2012, and IMOD's "SIRT-like filter"): low frequencies pass, high
frequencies — mostly noise — are damped as SIRT damps them. The damping is
measured on the actual geometry (SIRT's point response on one slice), so it
holds for any angle set and thickness.
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

import cellscape as cs

from ._filters import FILTERS, angle_weights, filter_rows, padded_length, ramp_filter, sirt_like_windows
from ._geometry import Geometry, backprojection_matrix, projection_matrix
from ._slab import SlabParams, SlabReconstructor


@attrs.frozen
class WBPParams(SlabParams):
    filter: str = cs.param("ram-lak", choices=FILTERS, help="apodization window of the ramp filter")
    sirt_like_iterations: int | None = cs.param(None, ge=1, le=10000,
                                                help="mimic this many SIRT iterations (replaces the window)")
    sirt_relaxation: float = cs.param(1.0, gt=0, lt=2, help="relaxation of the SIRT being mimicked")


def sirt_transfer(geometry: Geometry) -> np.ndarray:
    """SIRT's normalised operator ``C Aᵀ R A`` on one slice, as a centred 2D transfer function (nz, nx)."""
    a = projection_matrix(geometry)
    row = np.asarray(a.sum(axis=1)).ravel()
    col = np.asarray(a.sum(axis=0)).ravel()
    delta = np.zeros(geometry.n_pixels)
    centre = (geometry.nz // 2) * geometry.nx + geometry.nx // 2
    delta[centre] = 1.0
    response = (a.T @ (np.divide(1.0, row, out=np.zeros_like(row), where=row > 0) * (a @ delta)))
    response = np.divide(response, col, out=np.zeros_like(response), where=col > 0)
    return np.abs(np.fft.fftshift(np.fft.fft2(response.reshape(geometry.nz, geometry.nx))))


class WeightedBackprojection(SlabReconstructor):
    """Weighted backprojection: ramp filters, SIRT-like filter, exact weights for uneven tilts, true density scale."""

    name = "reconstruct.wbp"
    Params = WBPParams
    working_arrays = 4

    def setup(self, geometry: Geometry, xp: Any, context: dict[str, Any]) -> Any:
        from ._backend import Operator

        p = self.params
        angles = np.asarray(geometry.angles_deg)
        n = padded_length(geometry.nu)
        response = ramp_filter(n, "ram-lak" if p.sirt_like_iterations else p.filter)[: n // 2 + 1]
        per_angle = np.tile(response, (len(angles), 1))
        if p.sirt_like_iterations:
            per_angle *= sirt_like_windows(sirt_transfer(geometry), angles, n, p.sirt_like_iterations,
                                           p.sirt_relaxation)
        per_angle *= angle_weights(angles)[:, None]
        operator = Operator(backprojection_matrix(geometry), xp, transpose=False)
        return operator, xp.asarray(per_angle[:, :, None].astype(np.complex64)), geometry

    def solve_slab(self, state: Any, rays: Any, xp: Any) -> Any:
        operator, response, geometry = state
        n_angles, nu = len(geometry.angles_deg), geometry.nu
        filtered = filter_rows(xp, xp.reshape(rays, (n_angles, nu, rays.shape[1])), response, nu)
        return operator.forward(xp.reshape(filtered, (n_angles * nu, rays.shape[1])))
