"""The public functions notebooks, tests and the CLI call."""

from __future__ import annotations

import os
from typing import Any

import attrs

from ._method import Method
from ._params import ParamInfo
from ._registry import get_registry

__all__ = ["MethodInfo", "method", "methods", "run"]


@attrs.frozen
class MethodInfo:
    """A registered method as listed by ``cs.methods()`` and ``cellscape plugins``."""

    name: str
    stage: str
    summary: str
    distribution: str
    version: str
    plugin: str
    params: tuple[ParamInfo, ...]
    inputs: dict[str, str]
    outputs: dict[str, str]


def method(name: str, /, params: Any = None, **values: Any) -> Method:
    """An instance of the method ``name`` with validated parameters.

    >>> wbp = cs.method("reconstruct.wbp", filter="shepp-logan")   # doctest: +SKIP
    >>> tomo = wbp(tilts)                                          # doctest: +SKIP

    Raises PluginError for an unknown method (with a "did you mean") and
    InputError for parameters of the wrong type or out of range.
    """
    entry = get_registry().get(name)
    return entry.cls(params, **values)


def methods(stage: str | None = None) -> list[MethodInfo]:
    """Every registered method (optionally of one stage), sorted by name."""
    infos = []
    for entry in sorted(get_registry().methods.values(), key=lambda e: e.name):
        if stage is not None and entry.stage != stage:
            continue
        cls = entry.cls
        infos.append(MethodInfo(
            name=entry.name, stage=entry.stage, summary=cls.summary(), distribution=entry.distribution,
            version=entry.dist_version, plugin=entry.plugin, params=tuple(cls.param_infos()),
            inputs={k: p.kind.__name__ for k, p in cls.input_ports().items()},
            outputs={k: p.kind.__name__ for k, p in cls.output_ports().items()},
        ))
    return infos


def run(spec: str | os.PathLike[str], **options: Any) -> Any:
    """Run a pipeline spec file (the same as ``cellscape run``); returns a RunResult.

    Options are those of :class:`cellscape.runner.Runner`: ``run_dir``,
    ``force`` (step ids to recompute), ``quiet``, ``report``, ``workers``
    (local threads) and ``scheduler`` (a Dask scheduler address).
    """
    from ._runner import run_spec

    return run_spec(spec, **options)
