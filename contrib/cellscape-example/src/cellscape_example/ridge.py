"""``segment.ridge_membrane``: membranes as sheet-like ridges, found by a multi-scale Hessian filter.

Membranes in EM are thin sheets, brighter (or darker) than both sides. At
each scale in ``sigmas_nm`` the Hessian of the volume is measured with
Gaussian derivatives in physical units (so anisotropic voxels need no
resampling) and turned into a sheetness (Sato, Frangi or Meijering type, see
:mod:`cellscape_example.sheetness`); the largest response over the scales is
kept. It is then thresholded with hysteresis: voxels above the high quantile
seed membranes, which grow through voxels above the low quantile, so faint
stretches of a membrane stay connected to its strong parts while isolated
noise does not. Pieces smaller than ``min_size_voxels`` are dropped.
"""

from __future__ import annotations

import attrs
import numpy as np

import cellscape as cs

NAME = "segment.ridge_membrane"

#: below 0.8 voxel a sampled Gaussian second-derivative kernel no longer sums to ~0 (−0.56 at 0.5 voxel):
#: it would measure intensity, not curvature
MIN_SIGMA_VOXELS = 0.8


@attrs.frozen
class RidgeMembraneParams:
    filter: str = cs.param("sato", choices=("sato", "frangi", "meijering"),
                           help="sheetness measure built from the Hessian eigenvalues")
    sigmas_nm: list[float] = cs.param([8.0, 16.0], gt=0, unit="nm",
                                      help="scales of the Gaussian derivatives (about the membrane's apparent thickness)")
    black_ridges: bool = cs.param(False, help="membranes are darker than their surroundings (stained EM) instead of brighter")
    low_quantile: float = cs.param(0.85, gt=0, lt=1, help="hysteresis: voxels above this response quantile may join a membrane")
    high_quantile: float = cs.param(0.95, gt=0, lt=1, help="hysteresis: voxels above this response quantile seed membranes")
    min_size_voxels: int = cs.param(50, ge=0, unit="voxel", help="drop connected pieces smaller than this")

    def __attrs_post_init__(self) -> None:
        # checks of a whole list or of two parameters together (cs.param's bounds check single values), all reported at once
        problems = []
        if not self.sigmas_nm:
            problems.append("sigmas_nm is empty; give at least one scale in nm, e.g. [8.0, 16.0]")
        if self.low_quantile >= self.high_quantile:
            problems.append(f"low_quantile ({self.low_quantile:g}) must be below high_quantile ({self.high_quantile:g})")
        if problems:
            raise cs.InputError(f"{NAME}: " + "; ".join(problems))


class RidgeMembrane(cs.Segmenter):
    """Membranes by a multi-scale Hessian sheet filter (Sato/Frangi/Meijering type) and hysteresis thresholding."""

    name = NAME
    version = "2"
    Params = RidgeMembraneParams

    def sheetness(self, volume: cs.Volume) -> np.ndarray:
        """The largest sheetness over the scales, shape (nz, ny, nx), float32, ≥ 0.

        Raises
        ------
        cellscape.InputError
            If a scale is finer than 0.8 voxel along some axis, or the volume is constant.
        """
        from .sheetness import MEASURES, hessian_eigenvalues

        p = self.params
        coarsest = max(volume.voxel_size_nm)
        too_fine = [s for s in p.sigmas_nm if s < MIN_SIGMA_VOXELS * coarsest]
        if too_fine:
            raise cs.InputError(
                f"{NAME}: sigmas_nm {too_fine} are finer than {MIN_SIGMA_VOXELS:g} voxel along the coarsest axis of voxel "
                f"size {volume.voxel_size_nm} nm, too fine to measure curvature; use scales >= {MIN_SIGMA_VOXELS * coarsest:g} nm"
            )
        data = np.asarray(volume.data, np.float32)
        if float(data.min()) == float(data.max()):
            raise cs.InputError(f"{NAME}: the volume is constant ({float(data.min()):g}); there are no membranes to find")
        # in units of the volume's standard deviation: the response no longer depends on the detector's scale
        data = (data - data.mean(dtype=np.float64)) / data.std(dtype=np.float64)
        data = data.astype(np.float32, copy=False)
        measure = MEASURES[p.filter]
        response = np.zeros(data.shape, np.float32)
        for sigma_nm in self.progress(p.sigmas_nm, total=len(p.sigmas_nm), description=f"{NAME} scales"):
            eigenvalues = hessian_eigenvalues(data, sigma_nm, volume.voxel_size_nm, dark=p.black_ridges)
            np.maximum(response, measure(eigenvalues), out=response)
        return response

    def segment(self, volume: cs.Volume) -> cs.Labels:
        from scipy import ndimage
        from skimage import filters

        p = self.params
        response = self.sheetness(volume)
        low, high = np.quantile(response, [p.low_quantile, p.high_quantile])
        # strict '>' on both: when most voxels respond 0, low == high == 0 and every responding voxel is kept
        membrane = filters.apply_hysteresis_threshold(response, low, high)
        if p.min_size_voxels:
            pieces, _ = ndimage.label(membrane)
            sizes = np.bincount(pieces.ravel())
            sizes[0] = 0
            membrane = sizes[pieces] >= p.min_size_voxels
        return cs.Labels(membrane.astype(np.uint8), {1: "membrane"}, volume.voxel_size_nm, volume.origin_nm)
