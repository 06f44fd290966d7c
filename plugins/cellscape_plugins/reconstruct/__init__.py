"""Built-in reconstruction methods: tilt series to tomogram."""

from __future__ import annotations

import cellscape as cs


@cs.hookimpl
def cellscape_register(registry: cs.Registrar) -> None:
    """Register the built-in reconstruction methods."""
    from .align import Align
    from .cgls import CGLS
    from .sart import SART
    from .sirt import SIRT
    from .tv import TotalVariation
    from .wbp import WeightedBackprojection

    for method in (WeightedBackprojection, SIRT, SART, CGLS, TotalVariation, Align):
        registry.add_method(method)
