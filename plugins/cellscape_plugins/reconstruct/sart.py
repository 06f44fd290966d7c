"""``reconstruct.sart``: SART / ordered-subset SIRT.

The tilts are split into ``subsets`` interleaved groups (each spread over the
whole tilt range: subset k holds every n-th tilt in angle order, visited in
an order that keeps consecutive subsets far apart); one SIRT update per
subset, so one iteration updates the volume ``subsets`` times and converges
in far fewer passes. ``subsets`` equal to the number of tilts is classic
SART (one projection per update).
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

import cellscape as cs

from ._backend import joseph_operator
from ._geometry import Geometry
from ._iterative import History, IterativeParams, column_norms, log, relative_residual, safe_inverse
from ._slab import SlabReconstructor


@attrs.frozen
class SARTParams(IterativeParams):
    iterations: int = cs.param(10, ge=1, le=100000, help="passes over all subsets")
    subsets: int | None = cs.param(None, ge=1, help="ordered subsets; default: one per tilt (classic SART)")
    relaxation: float = cs.param(0.5, gt=0, lt=2, help="step length λ per subset update")


def subset_order(n_subsets: int) -> list[int]:
    """Visit order of subsets: bit-reversal-like, so consecutive subsets cover distant angles."""
    order: list[int] = []
    step = 1 << max(0, (n_subsets - 1).bit_length())
    while step >= 1:
        for k in range(0, 1 << max(0, (n_subsets - 1).bit_length()), step):
            if k < n_subsets and k not in order:
                order.append(k)
        step //= 2
    return order


class SART(SlabReconstructor):
    """Ordered-subset SIRT (SART when each subset is one tilt), matched projector pair, positivity option."""

    name = "reconstruct.sart"
    Params = SARTParams
    small_kernels = True  # two kernel launches per subset, each over a few tilts only

    def setup(self, geometry: Geometry, xp: Any, context: dict[str, Any]) -> Any:
        p = self.params
        n_angles = len(geometry.angles_deg)
        n_subsets = min(p.subsets or n_angles, n_angles)
        by_angle = np.argsort(geometry.angles_deg)
        full = joseph_operator(geometry, xp)
        subsets = []
        for k in subset_order(n_subsets):
            angles = by_angle[k::n_subsets]
            rows = (angles[:, None] * geometry.nu + np.arange(geometry.nu)[None, :]).ravel()
            operator = full.subset(angles)
            subsets.append((operator, xp.asarray(rows), safe_inverse(xp, operator.row_sums())[:, None]))
        self.history = History()
        return full, subsets

    def solve_slab(self, state: Any, rays: Any, xp: Any) -> Any:
        full, subsets = state
        p = self.params
        x = xp.zeros((full.shape[1], rays.shape[1]), dtype=rays.dtype)
        data_norm = column_norms(xp, rays)
        parts = [xp.take(rays, rows, axis=0) for _, rows, _ in subsets]
        history: list[float] = []
        for _ in range(p.iterations):
            if p.tolerance is not None:
                history.append(relative_residual(xp, rays - full.forward(x), data_norm))
                if history[-1] < p.tolerance:
                    break
            for (operator, _, inv_rows), part in zip(subsets, parts, strict=True):
                x = operator.update(x, inv_rows * (part - operator.forward(x)), p.relaxation, p.positivity)
        if p.tolerance is None:
            history.append(relative_residual(xp, rays - full.forward(x), data_norm))
        self.history.add(history)
        log.info("%s: %s", self.name, self.history.summary())
        return x
