"""``reconstruct.sirt``: the simultaneous iterative reconstruction technique.

Every iteration projects the current estimate with Joseph's projector A,
compares with the data, and backprojects the normalised difference with the
exact transpose (matrix-free compiled kernels for NumPy arrays, sparse
matrices otherwise; see :func:`._backend.joseph_operator`)::

    x <- x + λ C Aᵀ R (b - A x),     R = 1 / row sums of A,  C = 1 / column sums of A

(Gregor & Benson's form, as in ASTRA and TomoPy). All slices of a slab are
updated together; the iteration stops at ``iterations`` or when every
slice's relative residual falls below ``tolerance``.
"""

from __future__ import annotations

from typing import Any

import attrs

import cellscape as cs

from ._backend import joseph_operator
from ._geometry import Geometry
from ._iterative import History, IterativeParams, column_norms, log, relative_residual, safe_inverse
from ._slab import SlabReconstructor


@attrs.frozen
class SIRTParams(IterativeParams):
    relaxation: float = cs.param(1.0, gt=0, lt=2, help="step length λ (0 < λ < 2 converges)")


class SIRT(SlabReconstructor):
    """SIRT with a matched projector/backprojector pair, positivity option, stopping by count or residual."""

    name = "reconstruct.sirt"
    Params = SIRTParams

    def setup(self, geometry: Geometry, xp: Any, context: dict[str, Any]) -> Any:
        operator = joseph_operator(geometry, xp)
        self.history = History()
        return operator, safe_inverse(xp, operator.row_sums())[:, None]

    def solve_slab(self, state: Any, rays: Any, xp: Any) -> Any:
        operator, inv_rows = state
        p = self.params
        x = xp.zeros((operator.shape[1], rays.shape[1]), dtype=rays.dtype)
        data_norm = column_norms(xp, rays)
        history: list[float] = []
        for _ in range(p.iterations):
            residual = rays - operator.forward(x)
            history.append(relative_residual(xp, residual, data_norm))
            if p.tolerance is not None and history[-1] < p.tolerance:
                break
            x = operator.update(x, inv_rows * residual, p.relaxation, p.positivity)
        self.history.add(history)
        log.info("%s: %s", self.name, self.history.summary())
        return x
