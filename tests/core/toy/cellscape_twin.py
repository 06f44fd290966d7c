"""A plugin registering a method name another plugin already uses."""

from __future__ import annotations

from cellscape_toy import ToyScale

import cellscape as cs


class TwinScale(ToyScale):
    """Same name as the toy plugin's method."""


@cs.hookimpl
def cellscape_register(registry: cs.Registrar) -> None:
    registry.add_method(TwinScale)
