"""Built-in generate methods: synthetic cells, tilt series and training scribbles."""

from __future__ import annotations

import cellscape as cs


@cs.hookimpl
def cellscape_register(registry: cs.Registrar) -> None:
    """Register the built-in generate methods."""
    from .phantom_cell import PhantomCell
    from .scribbles import Scribbles
    from .tilt_series import TiltSeriesProjector

    registry.add_method(PhantomCell)
    registry.add_method(TiltSeriesProjector)
    registry.add_method(Scribbles)
