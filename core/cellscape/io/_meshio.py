"""Meshes through meshio: OBJ, STL, PLY (surfaces), Gmsh .msh and XDMF (surfaces and tetrahedra).

What each keeps: .msh and .xdmf keep markers of triangles and tetrahedra
(Gmsh as physical groups, with their names); .obj, .stl and .ply keep
geometry only, so a mesh with more than one marker is refused there rather
than silently flattened.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._data import Artefact, SurfaceMesh, TetMesh
from .._errors import InputError

NO_MARKERS = (".obj", ".stl", ".ply")


def _suffix(path: Path) -> str:
    return path.suffix.lower()


def write_meshio(obj: Artefact, path: Path) -> None:
    import meshio

    suffix = _suffix(path)
    if isinstance(obj, TetMesh):
        if suffix not in (".msh", ".xdmf"):
            raise InputError(f"{path}: {suffix} files hold surfaces only; write a TetMesh as .vtu, .msh or .xdmf")
        cells = [("tetra", obj.tetrahedra), ("triangle", obj.boundary_triangles)]
        markers = [obj.region_markers, obj.boundary_markers]
        points = obj.points
        names = [(obj.region_names, 3), (obj.boundary_names, 2)]
    elif isinstance(obj, SurfaceMesh):
        if suffix in NO_MARKERS and len(np.unique(obj.markers)) > 1:
            raise InputError(f"{path}: {suffix} files cannot hold triangle markers and this mesh has "
                             f"{len(np.unique(obj.markers))}; write .vtp, .msh or .xdmf instead")
        cells = [("triangle", obj.triangles)]
        markers = [obj.markers]
        points = obj.vertices
        names = [(obj.marker_names, 2)]
    else:
        raise InputError(f"{path}: {suffix} files hold meshes, not {type(obj).__name__}")
    cell_data: dict = {}
    field_data: dict = {}
    if suffix == ".msh":
        cell_data = {"gmsh:physical": [m.astype(np.int32) for m in markers],
                     "gmsh:geometrical": [m.astype(np.int32) for m in markers]}
        field_data = {name: np.array([marker, dim]) for mapping, dim in names for marker, name in mapping.items()}
    elif suffix not in NO_MARKERS:
        cell_data = {"marker": [m.astype(np.int32) for m in markers]}
    mesh = meshio.Mesh(np.asarray(points, np.float64), cells, cell_data=cell_data, field_data=field_data)
    tmp = path.with_name(f".tmp-{path.name}")
    kwargs = {"file_format": "gmsh22", "binary": False} if suffix == ".msh" else {}
    meshio.write(tmp, mesh, **kwargs)
    if suffix == ".xdmf":
        heavy = tmp.with_suffix(".h5")
        if heavy.exists():
            heavy.replace(path.with_suffix(".h5"))
            text = tmp.read_text().replace(heavy.name, path.with_suffix(".h5").name)
            tmp.write_text(text)
    tmp.replace(path)


def read_meshio(path: Path, kind: type[Artefact] | None) -> Artefact:
    import meshio

    try:
        mesh = meshio.read(path)
    except (Exception, SystemExit) as exc:  # meshio raises many types for bad files, and even exits
        raise InputError(f"{path}: corrupt or unreadable mesh file ({type(exc).__name__}: {exc})") from exc
    points = np.asarray(mesh.points, np.float64)
    if points.shape[1] == 2:
        points = np.column_stack([points, np.zeros(len(points))])

    def gather(cell_type: str) -> tuple[np.ndarray, np.ndarray]:
        blocks, marks = [], []
        for index, block in enumerate(mesh.cells):
            if block.type != cell_type:
                continue
            blocks.append(block.data)
            found = None
            for key in ("marker", "gmsh:physical", "medit:ref", "ply:marker"):
                if key in mesh.cell_data:
                    found = np.asarray(mesh.cell_data[key][index]).reshape(-1)
                    break
            marks.append(found if found is not None else np.ones(len(block.data), np.int32))
        if not blocks:
            width = 4 if cell_type == "tetra" else 3
            return np.zeros((0, width), np.int64), np.zeros(0, np.int32)
        return np.concatenate(blocks).astype(np.int64), np.concatenate(marks).astype(np.int32)

    tets, tet_markers = gather("tetra")
    tris, tri_markers = gather("triangle")
    names = {3: {}, 2: {}}
    for name, (marker, dim) in ((k, tuple(v[:2])) for k, v in (mesh.field_data or {}).items()):
        names.setdefault(int(dim), {})[int(marker)] = name
    try:
        if (kind is None and len(tets)) or (kind is not None and kind.kind == "tet_mesh"):
            if not len(tets):
                raise InputError("the file holds no tetrahedra")
            return TetMesh(points, tets, tet_markers, tris, tri_markers, names[3], names[2])
        if not len(tris):
            raise InputError("the file holds no triangles")
        return SurfaceMesh(points, tris, tri_markers, names[2])
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from exc
