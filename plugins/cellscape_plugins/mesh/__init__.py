"""Built-in meshing methods: labels to surfaces to tetrahedral volume meshes."""

from __future__ import annotations

import cellscape as cs


@cs.hookimpl
def cellscape_register(registry: cs.Registrar) -> None:
    """Register the built-in meshing methods."""
    from .improve import Improve
    from .marching_cubes import MarchingCubes
    from .quality import Quality
    from .refine import Refine
    from .tetrahedralize import Tetrahedralize

    registry.add_method(MarchingCubes)
    registry.add_method(Tetrahedralize)
    registry.add_method(Quality)
    registry.add_method(Improve)
    registry.add_method(Refine)
