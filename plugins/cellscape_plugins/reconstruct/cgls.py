"""``reconstruct.cgls``: conjugate gradient on the least-squares normal equations (CGLS).

Minimises |A x - b|² slice by slice with conjugate gradients, without
forming AᵀA; every slice of a slab has its own step lengths, all computed at
once. CGLS converges much faster than SIRT in the first iterations but
fits noise if run long: stop early (a few tens of iterations) or by
``tolerance``. ``positivity`` clips the result once at the end (clipping
inside CG would break its conjugacy).
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
class CGLSParams(IterativeParams):
    iterations: int = cs.param(20, ge=1, le=100000, help="CG iterations (upper bound when 'tolerance' is set)")


class CGLS(SlabReconstructor):
    """Least-squares reconstruction by conjugate gradients, matched projector pair, per-slice step lengths."""

    name = "reconstruct.cgls"
    Params = CGLSParams

    def setup(self, geometry: Geometry, xp: Any, context: dict[str, Any]) -> Any:
        self.history = History()
        return joseph_operator(geometry, xp)

    def solve_slab(self, state: Any, rays: Any, xp: Any) -> Any:
        operator = state
        p = self.params
        x = xp.zeros((operator.shape[1], rays.shape[1]), dtype=rays.dtype)
        data_norm = column_norms(xp, rays)
        residual = rays
        gradient = operator.adjoint(residual)
        direction = gradient
        gamma = xp.sum(gradient * gradient, axis=0)
        history = [relative_residual(xp, residual, data_norm)]
        for _ in range(p.iterations):
            if p.tolerance is not None and history[-1] < p.tolerance:
                break
            projected = operator.forward(direction)
            alpha = gamma * safe_inverse(xp, xp.sum(projected * projected, axis=0))
            x = x + alpha * direction
            residual = residual - alpha * projected
            gradient = operator.adjoint(residual)
            gamma_next = xp.sum(gradient * gradient, axis=0)
            direction = gradient + (gamma_next * safe_inverse(xp, gamma)) * direction
            gamma = gamma_next
            history.append(relative_residual(xp, residual, data_norm))
        if p.positivity:
            x = xp.maximum(x, xp.zeros_like(x))
        self.history.add(history)
        log.info("%s: %s", self.name, self.history.summary())
        return x
