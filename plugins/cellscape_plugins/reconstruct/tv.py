"""``reconstruct.tv``: total-variation regularised reconstruction (preconditioned Chambolle–Pock).

Solves, slice by slice::

    min_x  ½ |A x - b|²  +  μ TV(x)      (x >= 0 with ``positivity``)

where TV is the isotropic total variation in the (z, x) plane of each slice
— the plane of the missing wedge, whose streaks and elongation it reduces
because they are what the data term leaves undetermined. The solver is the
primal–dual algorithm of Chambolle and Pock (2011) with their diagonal
preconditioning (Pock and Chambolle, 2011): the primal step per pixel is
``1 / (column sum of A + 4)``, the dual step per ray ``1 / (row sum of A)``
and 1/2 per gradient component, so no operator norm has to be estimated and
the convergence is SIRT-like from the first iteration.

``weight`` is relative: μ = weight × (mean column sum of A) × d, where d is
the density scale of the data (the 99th percentile of projection value over
path length, computed once over the whole series), so the same weight suits
tomograms of any size, tilt count and intensity scale.
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

import cellscape as cs

from ._backend import joseph_operator, to_numpy
from ._geometry import Geometry
from ._iterative import History, IterativeParams, column_norms, log, relative_residual, safe_inverse
from ._slab import SlabReconstructor


@attrs.frozen
class TVParams(IterativeParams):
    iterations: int = cs.param(100, ge=1, le=100000, help="primal-dual iterations")
    weight: float = cs.param(0.02, ge=0, help="TV weight relative to the data's density scale (0: no regularisation)")


def add_gradient(image: Any, pz: Any, px: Any, factor: float) -> None:
    """``pz += factor ∂z image``, ``px += factor ∂x image``: forward differences of (nz, nx, s) images, in place.

    The last row of ``pz`` and the last column of ``px`` are left as they are
    (the gradient is zero there).
    """
    pz[:-1, ...] += factor * (image[1:, ...] - image[:-1, ...])
    px[:, :-1, ...] += factor * (image[:, 1:, ...] - image[:, :-1, ...])


def add_gradient_adjoint(out: Any, pz: Any, px: Any) -> None:
    """``out += ∇ᵀ(pz, px)`` (minus the divergence), in place; ``pz``, ``px`` must be zero on the last row/column."""
    out -= pz
    out[1:, ...] += pz[:-1, ...]
    out -= px
    out[:, 1:, ...] += px[:, :-1, ...]


class TotalVariation(SlabReconstructor):
    """TV-regularised least squares by preconditioned primal-dual iterations; reduces missing-wedge streaks."""

    name = "reconstruct.tv"
    Params = TVParams
    working_arrays = 7

    def setup(self, geometry: Geometry, xp: Any, context: dict[str, Any]) -> Any:
        operator = joseph_operator(geometry, xp)
        rows, cols = to_numpy(operator.row_sums()), to_numpy(operator.column_sums())
        # density scale from a sample of detector rows over the whole series (same for every slab)
        ny = context["ny"]
        sample_rows = np.unique(np.linspace(0, ny - 1, min(ny, 16)).astype(int))
        sample = np.concatenate([context["load"](y, y + 1) for y in sample_rows], axis=1)
        long_rays = rows > 0.5 * rows.max()
        density = np.abs(sample[long_rays]) / rows[long_rays, None]
        scale = float(np.percentile(density, 99)) or 1.0
        mu = self.params.weight * float(cols.mean()) * scale
        self.history = History()
        return (operator, xp.asarray(safe_inverse(np, rows)[:, None].astype(np.float32)),
                xp.asarray((1.0 / (cols + 4.0))[:, None].astype(np.float32)), mu, geometry)

    def solve_slab(self, state: Any, rays: Any, xp: Any) -> Any:
        operator, sigma, tau, mu, geometry = state
        p = self.params
        nz, nx, s = geometry.nz, geometry.nx, rays.shape[1]
        # updated in place where the array API allows, so a slab needs about seven images of memory
        x = xp.zeros((nz * nx, s), dtype=rays.dtype)
        x_bar = xp.zeros_like(x)
        dual = xp.zeros_like(rays)
        pz = xp.zeros((nz, nx, s), dtype=rays.dtype)
        px = xp.zeros_like(pz)
        data_norm = column_norms(xp, rays)
        history: list[float] = []
        for _ in range(p.iterations):
            projected = operator.forward(x_bar)
            if p.tolerance is not None:
                history.append(relative_residual(xp, rays - projected, data_norm))
                if history[-1] < p.tolerance:
                    break
            projected -= rays
            projected *= sigma
            dual += projected
            dual /= 1.0 + sigma
            del projected
            step = operator.adjoint(dual)
            if mu > 0:
                add_gradient(xp.reshape(x_bar, (nz, nx, s)), pz, px, 0.5)
                shrink = xp.sqrt(pz * pz + px * px)
                shrink /= mu
                shrink = xp.clip(shrink, min=1.0)
                pz /= shrink
                px /= shrink
                del shrink
                step = xp.reshape(step, (nz, nx, s))
                add_gradient_adjoint(step, pz, px)
                step = xp.reshape(step, (nz * nx, s))
            step *= tau
            x_next = x - step
            del step
            if p.positivity:
                x_next = xp.clip(x_next, min=0.0)
            # x_bar = 2 x_next - x, in the memory of the old x
            x_bar = x
            x_bar *= -1.0
            x_bar += x_next
            x_bar += x_next
            x = x_next
        if p.tolerance is None:
            history.append(relative_residual(xp, rays - operator.forward(x), data_norm))
        self.history.add(history)
        log.info("%s: %s", self.name, self.history.summary())
        return x
