"""``filter.normalize``: rescale intensities to a standard range, so thresholds and models transfer.

How (``method``):

``zscore``
    ``(v - mean) / std``: mean 0, standard deviation 1.
``mad``
    ``(v - median) / (1.4826 × MAD)``: a robust z-score; median 0, and for Gaussian
    noise a standard deviation of about 1, unmoved by a few very bright or dark
    voxels (gold fiducials, ice).
``minmax``
    ``(v - min) / (max - min)``: exactly [0, 1].
``percentile``
    the ``low_percentile`` and ``high_percentile`` (in %) map to 0 and 1; with
    ``clip`` values outside are clipped to [0, 1].

The output is dimensionless (float32); voxel size and origin are kept. A volume
without spread (constant, or with a zero MAD or percentile range) cannot be
normalized and is an error.
"""

from __future__ import annotations

import attrs
import numpy as np

import cellscape as cs

from .gaussian import float_data, like

METHODS = ("zscore", "mad", "minmax", "percentile")


@attrs.frozen
class NormalizeParams:
    method: str = cs.param("zscore", choices=METHODS,
                           help="'zscore' (mean/std), 'mad' (median/robust std), 'minmax' to [0, 1], or "
                                "'percentile' (low/high percentiles to 0/1)")
    low_percentile: float = cs.param(1.0, ge=0, le=100, unit="%", help="method 'percentile': the value mapped to 0")
    high_percentile: float = cs.param(99.0, ge=0, le=100, unit="%", help="method 'percentile': the value mapped to 1")
    clip: bool = cs.param(False, help="method 'percentile': clip the result to [0, 1]")


class Normalize(cs.Filter):
    """Intensity normalization: z-score, robust (median/MAD) z-score, min-max or percentile range to [0, 1]."""

    name = "filter.normalize"
    Params = NormalizeParams

    def offset_and_scale(self, data: np.ndarray) -> tuple[float, float]:
        """(offset, scale) in volume units such that ``(data - offset) / scale`` is normalized."""
        p = self.params
        if p.method == "zscore":
            offset, scale, what = float(data.mean(dtype=np.float64)), float(data.std(dtype=np.float64)), "standard deviation"
        elif p.method == "mad":
            offset = float(np.median(data))
            scale = 1.4826 * float(np.median(np.abs(data - np.float32(offset))))
            what = "median absolute deviation (more than half the voxels equal the median; try method 'zscore')"
        elif p.method == "minmax":
            offset, scale, what = float(data.min()), float(data.max()) - float(data.min()), "range (max - min)"
        else:
            if not p.low_percentile < p.high_percentile:
                raise cs.InputError(f"{self.name}: low_percentile must be below high_percentile, got "
                                    f"low_percentile={p.low_percentile:g}, high_percentile={p.high_percentile:g}")
            low, high = np.percentile(data, [p.low_percentile, p.high_percentile])
            offset, scale = float(low), float(high) - float(low)
            what = f"range between the {p.low_percentile:g}th and {p.high_percentile:g}th percentiles"
        if not scale > 0:
            if float(data.min()) == float(data.max()):
                raise cs.InputError(f"{self.name}: the volume is constant ({float(data.min()):g}); "
                                    f"it has no spread to normalize by — check the input")
            raise cs.InputError(f"{self.name}: method '{p.method}' divides by the volume's {what}, which is 0")
        return offset, scale

    def filter(self, volume: cs.Volume) -> cs.Volume:
        """Normalize ``volume`` (data [z, y, x]) into a dimensionless float32 volume on the same grid."""
        data = float_data(volume)
        offset, scale = self.offset_and_scale(data)
        normalized = (data - np.float32(offset)) * np.float32(1.0 / scale)
        if self.params.method == "percentile" and self.params.clip:
            np.clip(normalized, 0.0, 1.0, out=normalized)
        return like(volume, normalized)
