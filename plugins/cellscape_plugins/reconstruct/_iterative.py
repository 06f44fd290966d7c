"""Shared pieces of the iterative reconstructions: parameters, normalisations, stopping, bookkeeping."""

from __future__ import annotations

import logging
from typing import Any

import attrs
import numpy as np

import cellscape as cs

from ._backend import to_numpy
from ._slab import SlabParams

log = logging.getLogger("cellscape.reconstruct")


@attrs.frozen
class IterativeParams(SlabParams):
    iterations: int = cs.param(50, ge=1, le=100000, help="iterations (upper bound when 'tolerance' is set)")
    tolerance: float | None = cs.param(None, gt=0, lt=1,
                                       help="stop once a slab's relative residual |b - Ax| / |b| is below this")
    positivity: bool = cs.param(False, help="clip negative densities to 0 after every update")


def safe_inverse(xp: Any, values: Any) -> Any:
    """1 / values where values > 0, else 0 (rays that miss the slab, pixels no ray sees)."""
    positive = values > 0
    return xp.where(positive, 1.0 / xp.where(positive, values, xp.ones_like(values)), xp.zeros_like(values))


def column_norms(xp: Any, values: Any) -> Any:
    """Euclidean norm of each column (slice), shape (s,)."""
    return xp.sqrt(xp.sum(values * values, axis=0))


class History:
    """Relative residual per iteration of each slab; read it after a run as ``method.history``."""

    def __init__(self) -> None:
        self.residuals: list[list[float]] = []

    def add(self, values: list[float]) -> None:
        self.residuals.append(values)

    def summary(self) -> str:
        if not self.residuals:
            return "no slab solved"
        last = max(r[-1] for r in self.residuals if r)
        return f"{len(self.residuals)} slab(s), {max(len(r) for r in self.residuals)} iteration(s), final residual {last:.3g}"


def relative_residual(xp: Any, residual: Any, data_norm: Any) -> float:
    """|r| / |b| over the whole slab (slices without an object are mostly noise, so not slice by slice)."""
    total = float(to_numpy(xp.sum(data_norm * data_norm)))
    return float(np.sqrt(float(to_numpy(xp.sum(residual * residual))) / total)) if total > 0 else 0.0
