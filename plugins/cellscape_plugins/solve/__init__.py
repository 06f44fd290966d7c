"""Built-in solvers: finite elements on tetrahedral meshes."""

from __future__ import annotations

import cellscape as cs


@cs.hookimpl
def cellscape_register(registry: cs.Registrar) -> None:
    """Register the built-in solvers and the ParaView writers of their Fields."""
    from ._output import register_formats
    from .diffusion import Diffusion
    from .reaction_diffusion import ReactionDiffusion
    from .stationary import Stationary

    registry.add_method(Diffusion)
    registry.add_method(ReactionDiffusion)
    registry.add_method(Stationary)
    register_formats()
