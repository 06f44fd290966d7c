"""Reading and writing artefacts; the format is chosen from the file suffix.

==================  ==========================================  ==========================
suffix              artefacts                                   library
==================  ==========================================  ==========================
.npz                every kind (lossless, cellscape's own)      numpy
.mrc .rec .st .ali  Volume, Labels, TiltSeries (+ .tlt beside)  mrcfile
.tif .tiff          Volume, Labels, TiltSeries (+ .tlt beside)  tifffile
.ome.tif(f)         Volume, Labels, TiltSeries                  tifffile
.zarr .ome.zarr     Volume, Labels (OME-NGFF 0.4 multiscales)   zarr
.vtp                SurfaceMesh                                 vtk
.vtu                TetMesh, SurfaceMesh                        vtk
.obj .stl .ply      SurfaceMesh                                 meshio
.msh .xdmf          SurfaceMesh, TetMesh                        meshio
.mdl                SurfaceMesh (MCell3 POLYGON_LIST, in µm)    plain text
.csv                Table (units in the header: "volume [um^3]")    csv
.tlt .rawtlt        tilt angles (IMOD: one angle in ° per line) plain text
==================  ==========================================  ==========================
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from .._data import Artefact, artefact_kinds
from .._errors import InputError

__all__ = ["Format", "formats", "read", "register_format", "write"]


@attrs.frozen
class Format:
    """A file format: its suffixes, the artefact kinds it holds, and its reader/writer.

    ``reader(path, kind)`` returns an artefact (``kind`` is the requested
    artefact class or None); ``writer(artefact, path)`` writes one.
    """

    name: str
    suffixes: tuple[str, ...]
    kinds: tuple[str, ...]
    reader: Callable[[Path, type[Artefact] | None], Artefact] | None
    writer: Callable[[Artefact, Path], None] | None


_FORMATS: list[Format] = []


def register_format(fmt: Format) -> None:
    """Add a file format (plugins may add their own)."""
    _FORMATS.append(fmt)


def formats() -> list[Format]:
    _load_builtin_formats()
    return list(_FORMATS)


_BUILTINS_LOADED = False


def _load_builtin_formats() -> None:
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    from . import _builtin, _table  # noqa: F401  (importing them registers the built-in formats)


def _suffix_of(path: Path) -> str:
    name = path.name.lower().rstrip("/")
    matches = [s for f in formats() for s in f.suffixes if name.endswith(s)]
    return max(matches, key=len) if matches else path.suffix.lower()


def _find(path: Path, purpose: str) -> Format:
    suffix = _suffix_of(path)
    for fmt in formats():
        if suffix in fmt.suffixes and (fmt.reader if purpose == "read" else fmt.writer) is not None:
            return fmt
    known = sorted({s for f in formats() for s in f.suffixes if (f.reader if purpose == "read" else f.writer)})
    raise InputError(f"{path}: cannot {purpose} files with suffix '{suffix}'; supported: {', '.join(known)}")


def _kind_class(kind: str | type[Artefact] | None) -> type[Artefact] | None:
    if kind is None or isinstance(kind, type):
        return kind
    classes = artefact_kinds()
    if kind not in classes:
        raise InputError(f"unknown artefact kind '{kind}'; known: {', '.join(classes)}")
    return classes[kind]


def read(path: str | os.PathLike[str], kind: str | type[Artefact] | None = None) -> Any:
    """Read a file into a data-model object; the format comes from the suffix.

    Parameters
    ----------
    path : path-like
        The file (or ``.zarr`` folder) to read.
    kind : str or artefact class, optional
        What to read it as when the file could hold several kinds, e.g.
        ``"labels"`` for an integer TIFF of labels (default: the file's
        own kind if cellscape wrote it, else a Volume for images).

    Raises
    ------
    InputError
        The file is missing, truncated, corrupt or not of the requested kind.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    fmt = _find(path, "read")
    wanted = _kind_class(kind)
    if wanted is not None and wanted.kind not in fmt.kinds and fmt.kinds != ("*",):
        raise InputError(f"{path}: {fmt.name} files cannot hold a {wanted.__name__}")
    result = fmt.reader(path, wanted)  # type: ignore[misc]
    if wanted is not None and not isinstance(result, wanted):
        raise InputError(f"{path}: holds a {type(result).__name__}, expected a {wanted.__name__}")
    return result


def write(obj: Artefact, path: str | os.PathLike[str]) -> Path:
    """Write a data-model object; the format comes from the suffix. Returns the path written."""
    path = Path(path)
    if not isinstance(obj, Artefact):
        raise InputError(f"{path}: cannot write a {type(obj).__name__}; expected a cellscape data object")
    fmt = _find(path, "write")
    if obj.kind not in fmt.kinds and fmt.kinds != ("*",):
        raise InputError(f"{path}: {fmt.name} files cannot hold a {type(obj).__name__} (they hold {', '.join(fmt.kinds)})")
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt.writer(obj, path)  # type: ignore[misc]
    return path
