"""A plugin whose registrar hook raises."""

from __future__ import annotations

import cellscape as cs


@cs.hookimpl
def cellscape_register(registry: cs.Registrar) -> None:
    raise RuntimeError("registration failed on purpose")
