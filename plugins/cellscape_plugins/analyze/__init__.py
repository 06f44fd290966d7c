"""Built-in analysis methods and the report figures of every artefact kind."""

from __future__ import annotations

import cellscape as cs


@cs.hookimpl
def cellscape_register(registry: cs.Registrar) -> None:
    """Register the analysis methods and one figure maker per artefact kind (matplotlib loads only when drawing)."""
    from . import figures
    from .fit import Fit
    from .morphometry import Morphometry
    from .reduce import Reduce
    from .segmentation_metrics import SegmentationMetrics
    from .summary import Summary
    from .uq import UQ

    registry.add_method(Summary)
    registry.add_method(SegmentationMetrics)
    registry.add_method(UQ)
    registry.add_method(Reduce)
    registry.add_method(Fit)
    registry.add_method(Morphometry)
    for kind, maker in figures.FIGURE_MAKERS:
        registry.add_figure(kind, maker)
