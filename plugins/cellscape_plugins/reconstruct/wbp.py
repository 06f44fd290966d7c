"""``reconstruct.wbp``: weighted (filtered) backprojection for single-axis tilt series.

Geometry is the one of ``generate.tilt_series``: tilt axis along Y; a voxel
at centred (x, z) sees detector coordinate ``u = x cos θ + z sin θ``.

Each projection is filtered along u with a ramp |ω| (built from the exact
spatial ramp kernel, so the zero frequency is right) times an apodization
window, then smeared back over the volume by linear interpolation (for
NumPy arrays a compiled pixel-driven kernel that writes each slab straight
into the tomogram; on other array libraries a sparse matrix). Each
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

from ._backend import is_numpy
from ._filters import FILTERS, angle_weights, filter_rows, padded_length, ramp_filter, sirt_like_windows
from ._geometry import Geometry
from ._slab import SlabParams, SlabReconstructor


@attrs.frozen
class WBPParams(SlabParams):
    filter: str = cs.param("ram-lak", choices=FILTERS, help="apodization window of the ramp filter")
    sirt_like_iterations: int | None = cs.param(None, ge=1, le=10000,
                                                help="mimic this many SIRT iterations (replaces the window)")
    sirt_relaxation: float = cs.param(1.0, gt=0, lt=2, help="relaxation of the SIRT being mimicked")


def sirt_transfer(geometry: Geometry) -> np.ndarray:
    """SIRT's normalised operator ``C Aᵀ R A`` on one slice, as a centred 2D transfer function (nz, nx)."""
    from ._kernels import Projector

    a = Projector(geometry)
    row, col = a.row_sums(), a.column_sums()
    delta = np.zeros((geometry.n_pixels, 1), np.float32)
    delta[(geometry.nz // 2) * geometry.nx + geometry.nx // 2] = 1.0
    response = a.adjoint(np.divide(1.0, row, out=np.zeros_like(row), where=row > 0)[:, None] * a.forward(delta))[:, 0]
    response = np.divide(response, col, out=np.zeros_like(response), where=col > 0)
    return np.abs(np.fft.fftshift(np.fft.fft2(response.reshape(geometry.nz, geometry.nx).astype(np.float64))))


@attrs.frozen
class _CompiledState:
    """What a NumPy slab needs: per-angle filter responses (n_angles, n // 2 + 1, 1), geometry, FFT threads."""

    response: np.ndarray
    geometry: Geometry
    threads: int


class WeightedBackprojection(SlabReconstructor):
    """Weighted backprojection: ramp filters, SIRT-like filter, exact weights for uneven tilts, true density scale."""

    name = "reconstruct.wbp"
    Params = WBPParams
    working_arrays = 4

    def setup(self, geometry: Geometry, xp: Any, context: dict[str, Any]) -> Any:
        p = self.params
        angles = np.asarray(geometry.angles_deg)
        n = padded_length(geometry.nu)
        response = ramp_filter(n, "ram-lak" if p.sirt_like_iterations else p.filter)[: n // 2 + 1]
        per_angle = np.tile(response, (len(angles), 1))
        if p.sirt_like_iterations:
            per_angle *= sirt_like_windows(sirt_transfer(geometry), angles, n, p.sirt_like_iterations,
                                           p.sirt_relaxation)
        per_angle *= angle_weights(angles)[:, None]
        if is_numpy(xp):
            return _CompiledState(per_angle[:, :, None].astype(np.float32), geometry, context.get("threads", 1))
        from ._backend import Operator
        from ._geometry import backprojection_matrix

        operator = Operator(backprojection_matrix(geometry), xp, transpose=False)
        return operator, xp.asarray(per_angle[:, :, None].astype(np.complex64)), geometry

    def solve_slab(self, state: Any, rays: Any, xp: Any) -> Any:
        if isinstance(state, _CompiledState):
            g = state.geometry
            out = np.empty((g.nz, g.nx, rays.shape[1]), np.float32)
            self._backproject_filtered(state, rays, out)
            return out.reshape(g.n_pixels, -1)
        operator, response, geometry = state
        n_angles, nu = len(geometry.angles_deg), geometry.nu
        filtered = filter_rows(xp, xp.reshape(rays, (n_angles, nu, rays.shape[1])), response, nu)
        return operator.forward(xp.reshape(filtered, (n_angles * nu, rays.shape[1])))

    def solve_slab_into(self, state: Any, rays: Any, xp: Any, out: np.ndarray) -> None:
        if not isinstance(state, _CompiledState):
            super().solve_slab_into(state, rays, xp, out)
            return
        self._backproject_filtered(state, rays, out.transpose(0, 2, 1))

    @staticmethod
    def _backproject_filtered(state: _CompiledState, rays: np.ndarray, out: np.ndarray) -> None:
        """Filter ``rays`` (n_rays, s) along the detector and backproject them into ``out`` (nz, nx, s), any strides.

        The zero-padded FFT's output is read in place by the kernel (no copy
        of the first ``nu`` samples); one filtered slab is the only sinogram
        in memory.
        """
        import scipy.fft

        from ._kernels import backproject

        g = state.geometry
        n = 2 * (state.response.shape[1] - 1)
        sinogram = rays.reshape(len(g.angles_deg), g.nu, -1)
        spectrum = scipy.fft.rfft(sinogram, n=n, axis=1, workers=state.threads)
        spectrum *= state.response
        filtered = scipy.fft.irfft(spectrum, n=n, axis=1, workers=state.threads, overwrite_x=True)
        del spectrum
        backproject(np.ascontiguousarray(filtered, np.float32), g.nu, g, out)
