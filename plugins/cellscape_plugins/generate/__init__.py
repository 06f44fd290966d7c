"""Built-in generate methods: synthetic cells, tilt series and training scribbles."""

from __future__ import annotations

import cellscape as cs


@cs.hookimpl
def cellscape_register(registry: cs.Registrar) -> None:
    """Register the built-in generate methods."""
    from .em_image import EMImage
    from .gan import ShapeGAN
    from .gmm import CellGMM
    from .phantom_cell import PhantomCell
    from .scribbles import Scribbles
    from .spharm import SphericalHarmonics
    from .tilt_series import TiltSeriesProjector

    registry.add_method(PhantomCell)
    registry.add_method(TiltSeriesProjector)
    registry.add_method(Scribbles)
    registry.add_method(CellGMM)
    registry.add_method(ShapeGAN)
    registry.add_method(EMImage)
    registry.add_method(SphericalHarmonics)
