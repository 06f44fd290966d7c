"""VTK XML meshes (vtk): SurfaceMesh as .vtp, TetMesh (or SurfaceMesh) as .vtu.

A TetMesh .vtu holds the tetrahedra and the boundary triangles as cells of
one unstructured grid; the cell arrays ``marker`` (region or surface marker)
and ``dim`` (3 or 2) tell them apart. Marker names go into the field data
as JSON. Files are binary XML; points stay float64, so round trips are exact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .._data import Artefact, SurfaceMesh, TetMesh
from .._errors import InputError

VTK_TRIANGLE, VTK_TETRA = 5, 10


def _cell_array(cells: np.ndarray) -> Any:
    from vtkmodules.util import numpy_support
    from vtkmodules.vtkCommonDataModel import vtkCellArray

    width = cells.shape[1]
    offsets = np.arange(0, (len(cells) + 1) * width, width, dtype=np.int64)
    array = vtkCellArray()
    array.SetData(numpy_support.numpy_to_vtkIdTypeArray(offsets, deep=True),
                  numpy_support.numpy_to_vtkIdTypeArray(np.ascontiguousarray(cells, np.int64).ravel(), deep=True))
    return array


def _points(vertices: np.ndarray) -> Any:
    from vtkmodules.util import numpy_support
    from vtkmodules.vtkCommonCore import vtkPoints

    points = vtkPoints()
    points.SetData(numpy_support.numpy_to_vtk(np.ascontiguousarray(vertices, np.float64), deep=True))
    return points


def _add_int_array(data: Any, name: str, values: np.ndarray) -> None:
    from vtkmodules.util import numpy_support

    array = numpy_support.numpy_to_vtk(np.ascontiguousarray(values, np.int32), deep=True)
    array.SetName(name)
    data.AddArray(array)


def _add_note(dataset: Any, note: dict) -> None:
    from vtkmodules.vtkCommonCore import vtkStringArray

    text = vtkStringArray()
    text.SetName("cellscape")
    text.InsertNextValue(json.dumps(note))
    dataset.GetFieldData().AddArray(text)


def _write(dataset: Any, path: Path, writer_class: Any) -> None:
    writer = writer_class()
    tmp = path.with_name(f".{path.name}.tmp")
    writer.SetFileName(str(tmp))
    writer.SetInputData(dataset)
    writer.SetDataModeToAppended()
    writer.EncodeAppendedDataOff()
    writer.SetCompressorTypeToZLib()
    if writer.Write() != 1:
        tmp.unlink(missing_ok=True)
        raise InputError(f"{path}: VTK could not write the file")
    tmp.replace(path)


def write_vtp(obj: Artefact, path: Path) -> None:
    from vtkmodules.vtkCommonDataModel import vtkPolyData
    from vtkmodules.vtkIOXML import vtkXMLPolyDataWriter

    if not isinstance(obj, SurfaceMesh):
        raise InputError(f"{path}: .vtp holds surface meshes, not {type(obj).__name__} (use .vtu for a TetMesh)")
    poly = vtkPolyData()
    poly.SetPoints(_points(obj.vertices))
    poly.SetPolys(_cell_array(obj.triangles))
    _add_int_array(poly.GetCellData(), "marker", obj.markers)
    _add_note(poly, {"kind": obj.kind, "marker_names": {str(k): v for k, v in obj.marker_names.items()}})
    _write(poly, path, vtkXMLPolyDataWriter)


def write_vtu(obj: Artefact, path: Path) -> None:
    from vtkmodules.vtkCommonDataModel import vtkUnstructuredGrid
    from vtkmodules.vtkIOXML import vtkXMLUnstructuredGridWriter

    grid = vtkUnstructuredGrid()
    if isinstance(obj, TetMesh):
        grid.SetPoints(_points(obj.points))
        n_tets, n_tris = len(obj.tetrahedra), len(obj.boundary_triangles)
        connectivity = np.concatenate([
            np.column_stack([np.full(n_tets, 4), obj.tetrahedra]).ravel(),
            np.column_stack([np.full(n_tris, 3), obj.boundary_triangles]).ravel(),
        ]).astype(np.int64)
        types = np.concatenate([np.full(n_tets, VTK_TETRA), np.full(n_tris, VTK_TRIANGLE)]).astype(np.uint8)
        markers = np.concatenate([obj.region_markers, obj.boundary_markers])
        dims = np.concatenate([np.full(n_tets, 3), np.full(n_tris, 2)])
        note = {"kind": obj.kind, "region_names": {str(k): v for k, v in obj.region_names.items()},
                "boundary_names": {str(k): v for k, v in obj.boundary_names.items()}}
    elif isinstance(obj, SurfaceMesh):
        grid.SetPoints(_points(obj.vertices))
        connectivity = np.column_stack([np.full(len(obj.triangles), 3), obj.triangles]).ravel().astype(np.int64)
        types = np.full(len(obj.triangles), VTK_TRIANGLE, np.uint8)
        markers, dims = obj.markers, np.full(len(obj.triangles), 2)
        note = {"kind": obj.kind, "marker_names": {str(k): v for k, v in obj.marker_names.items()}}
    else:
        raise InputError(f"{path}: .vtu holds meshes, not {type(obj).__name__}")
    from vtkmodules.util import numpy_support
    from vtkmodules.vtkCommonDataModel import vtkCellArray

    cells = vtkCellArray()
    cells.ImportLegacyFormat(numpy_support.numpy_to_vtkIdTypeArray(connectivity, deep=True))
    grid.SetCells(numpy_support.numpy_to_vtk(types, deep=True, array_type=3), cells)
    _add_int_array(grid.GetCellData(), "marker", markers)
    _add_int_array(grid.GetCellData(), "dim", dims)
    _add_note(grid, note)
    _write(grid, path, vtkXMLUnstructuredGridWriter)


def _read(path: Path, reader_class: Any) -> Any:
    from vtkmodules.vtkCommonCore import vtkCommand

    reader = reader_class()
    errors: list[str] = []
    reader.AddObserver(vtkCommand.ErrorEvent, lambda obj, event: errors.append(event))
    reader.GetExecutive().AddObserver(vtkCommand.ErrorEvent, lambda obj, event: errors.append(event))
    if not reader.CanReadFile(str(path)):
        raise InputError(f"{path}: not a readable VTK XML file")
    reader.SetFileName(str(path))
    reader.Update()
    output = reader.GetOutput()
    if errors or output is None or output.GetNumberOfPoints() == 0:
        raise InputError(f"{path}: corrupt, truncated or empty VTK file")
    return output


def _note_of(dataset: Any) -> dict:
    array = dataset.GetFieldData().GetAbstractArray("cellscape")
    return json.loads(array.GetValue(0)) if array is not None else {}


def _names(raw: dict) -> dict[int, str]:
    return {int(k): v for k, v in raw.items()}


def read_vtp(path: Path, kind: type[Artefact] | None) -> Artefact:
    from vtkmodules.util import numpy_support
    from vtkmodules.vtkIOXML import vtkXMLPolyDataReader

    poly = _read(path, vtkXMLPolyDataReader)
    points = numpy_support.vtk_to_numpy(poly.GetPoints().GetData()).astype(np.float64)
    polys = poly.GetPolys()
    offsets = numpy_support.vtk_to_numpy(polys.GetOffsetsArray())
    if len(offsets) > 1 and not (np.diff(offsets) == 3).all():
        raise InputError(f"{path}: the surface has polygons that are not triangles; triangulate it first")
    triangles = numpy_support.vtk_to_numpy(polys.GetConnectivityArray()).reshape(-1, 3)
    marker = poly.GetCellData().GetArray("marker")
    markers = numpy_support.vtk_to_numpy(marker) if marker is not None else None
    try:
        return SurfaceMesh(points, triangles, markers, _names(_note_of(poly).get("marker_names", {})))
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from exc


def read_vtu(path: Path, kind: type[Artefact] | None) -> Artefact:
    from vtkmodules.util import numpy_support
    from vtkmodules.vtkIOXML import vtkXMLUnstructuredGridReader

    grid = _read(path, vtkXMLUnstructuredGridReader)
    points = numpy_support.vtk_to_numpy(grid.GetPoints().GetData()).astype(np.float64)
    types = numpy_support.vtk_to_numpy(grid.GetCellTypes())
    cells = grid.GetCells()
    offsets = numpy_support.vtk_to_numpy(cells.GetOffsetsArray())
    connectivity = numpy_support.vtk_to_numpy(cells.GetConnectivityArray())
    marker = grid.GetCellData().GetArray("marker")
    markers = numpy_support.vtk_to_numpy(marker) if marker is not None else np.ones(len(types), np.int32)
    starts = offsets[:-1]
    tets = connectivity[starts[types == VTK_TETRA][:, None] + np.arange(4)].astype(np.int64)
    tris = connectivity[starts[types == VTK_TRIANGLE][:, None] + np.arange(3)].astype(np.int64)
    note = _note_of(grid)
    try:
        if (kind is None and len(tets)) or (kind is not None and kind.kind == "tet_mesh"):
            if not len(tets):
                raise InputError("the file holds no tetrahedra")
            return TetMesh(points, tets.reshape(-1, 4), markers[types == VTK_TETRA], tris.reshape(-1, 3),
                           markers[types == VTK_TRIANGLE], _names(note.get("region_names", {})),
                           _names(note.get("boundary_names", {})))
        return SurfaceMesh(points, tris.reshape(-1, 3), markers[types == VTK_TRIANGLE],
                           _names(note.get("marker_names", note.get("boundary_names", {}))))
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from exc
