"""cellscape: from 3D electron microscopy to simulations in the real shapes of cells.

>>> import cellscape as cs
>>> vol = cs.read("tomogram.mrc")                                  # doctest: +SKIP
>>> wbp = cs.method("reconstruct.wbp", filter="shepp-logan")       # doctest: +SKIP
>>> run = cs.run("pipeline.yaml")                                  # doctest: +SKIP
"""

from __future__ import annotations

from ._api import MethodInfo, method, methods, run
from ._data import Artefact, Fields, Labels, Model, SurfaceMesh, Table, TetMesh, TiltSeries, Volume, register_artefact_kind
from ._deps import MissingDependencyError, require
from ._errors import CellscapeError, InputError, PluginError, SpecError, SpecIssue, StepError, StoreError
from ._method import (
    Analyzer,
    Filter,
    Generator,
    Mesher,
    Method,
    NoParams,
    Port,
    Reconstructor,
    Segmenter,
    Solver,
    Tetrahedralizer,
)
from ._mpi import mpi_shared
from ._params import ParamInfo, param
from ._payload import content_hash
from ._progress import progress
from ._registry import Registrar, Registry, get_registry, hookimpl, hookspec
from .io import read, write

__version__ = "0.1.0"

__all__ = [
    "Analyzer",
    "Artefact",
    "CellscapeError",
    "Fields",
    "Filter",
    "Generator",
    "InputError",
    "Labels",
    "Mesher",
    "Method",
    "MethodInfo",
    "MissingDependencyError",
    "Model",
    "NoParams",
    "ParamInfo",
    "PluginError",
    "Port",
    "Reconstructor",
    "Registrar",
    "Registry",
    "Segmenter",
    "Solver",
    "SpecError",
    "SpecIssue",
    "StepError",
    "StoreError",
    "SurfaceMesh",
    "Table",
    "TetMesh",
    "Tetrahedralizer",
    "TiltSeries",
    "Volume",
    "__version__",
    "content_hash",
    "get_registry",
    "hookimpl",
    "hookspec",
    "method",
    "methods",
    "mpi_shared",
    "param",
    "progress",
    "read",
    "register_artefact_kind",
    "require",
    "run",
    "write",
]
