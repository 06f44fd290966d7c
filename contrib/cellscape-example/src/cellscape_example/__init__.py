"""cellscape-example: a third-party plugin that adds ``segment.ridge_membrane``.

cellscape imports this module through the ``cellscape`` entry point and calls
its ``cellscape_register`` hook. Keep this file cheap to import: listing
plugins imports it, and the method imports SciPy and scikit-image only when it runs.
"""

from __future__ import annotations

import cellscape as cs

__version__ = "0.1.0"


@cs.hookimpl
def cellscape_register(registry: cs.Registrar) -> None:
    """Add this plugin's methods to cellscape."""
    from .ridge import RidgeMembrane

    registry.add_method(RidgeMembrane)
