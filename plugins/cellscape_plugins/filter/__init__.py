"""Built-in filter methods of cellscape: volume to volume (denoising, background, normalization)."""

from __future__ import annotations

import cellscape as cs


@cs.hookimpl
def cellscape_register(registry: cs.Registrar) -> None:
    """Register the built-in filter methods."""
    from .background import Background
    from .gaussian import Gaussian
    from .median import Median
    from .nad import NonlinearAnisotropicDiffusion
    from .normalize import Normalize

    registry.add_method(Gaussian)
    registry.add_method(Median)
    registry.add_method(NonlinearAnisotropicDiffusion)
    registry.add_method(Background)
    registry.add_method(Normalize)
