"""Registers the built-in file formats (imported on first use of cellscape.io)."""

from __future__ import annotations

from pathlib import Path

from .._data import Artefact
from .._payload import read_npz, write_npz
from . import Format, register_format
from ._mdl import read_mdl, write_mdl
from ._meshio import read_meshio, write_meshio
from ._mrc import read_mrc, write_mrc
from ._tiff import read_tiff, write_tiff
from ._vtk import read_vtp, read_vtu, write_vtp, write_vtu
from ._zarr import read_zarr, write_zarr


def _read_npz(path: Path, kind: type[Artefact] | None) -> Artefact:
    return read_npz(path)


IMAGES = ("volume", "labels")
register_format(Format("NumPy npz", (".npz",), ("*",), _read_npz, write_npz))
register_format(Format("MRC", (".mrc", ".rec", ".st", ".ali", ".map"), (*IMAGES, "tilt_series"), read_mrc, write_mrc))
register_format(Format("TIFF", (".tif", ".tiff", ".ome.tif", ".ome.tiff"), (*IMAGES, "tilt_series"), read_tiff, write_tiff))
register_format(Format("OME-Zarr", (".zarr", ".ome.zarr"), IMAGES, read_zarr, write_zarr))
register_format(Format("VTK polydata", (".vtp",), ("surface_mesh",), read_vtp, write_vtp))
register_format(Format("VTK unstructured grid", (".vtu",), ("surface_mesh", "tet_mesh"), read_vtu, write_vtu))
register_format(Format("surface mesh", (".obj", ".stl", ".ply"), ("surface_mesh",), read_meshio, write_meshio))
register_format(Format("Gmsh/XDMF mesh", (".msh", ".xdmf"), ("surface_mesh", "tet_mesh"), read_meshio, write_meshio))
register_format(Format("MCell3 MDL geometry", (".mdl",), ("surface_mesh",), read_mdl, write_mdl))
