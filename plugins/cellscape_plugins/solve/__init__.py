"""Built-in solvers: finite elements on tetrahedral meshes."""

from __future__ import annotations

import cellscape as cs


@cs.hookimpl
def cellscape_register(registry: cs.Registrar) -> None:
    """Register the built-in solvers."""
    from .diffusion import Diffusion

    registry.add_method(Diffusion)
