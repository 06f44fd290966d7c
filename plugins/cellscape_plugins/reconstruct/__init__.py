"""Built-in reconstruction methods: tilt series to tomogram."""

from __future__ import annotations

import cellscape as cs


@cs.hookimpl
def cellscape_register(registry: cs.Registrar) -> None:
    """Register the built-in reconstruction methods."""
    from .wbp import WeightedBackprojection

    registry.add_method(WeightedBackprojection)
