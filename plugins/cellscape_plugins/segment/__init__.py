"""Built-in segmentation methods: volume to labels."""

from __future__ import annotations

import cellscape as cs


@cs.hookimpl
def cellscape_register(registry: cs.Registrar) -> None:
    """Register the built-in segmentation methods."""
    from .components import Components
    from .random_forest import RandomForest
    from .threshold import Threshold
    from .unet import UNet, UNetApply
    from .watershed import Watershed

    registry.add_method(Threshold)
    registry.add_method(Watershed)
    registry.add_method(UNet)
    registry.add_method(UNetApply)
    registry.add_method(RandomForest)
    registry.add_method(Components)
