"""``mesh.tetrahedralize``: a tetrahedral volume mesh of closed surfaces, with TetGen.

The surface is kept exactly (TetGen's "no bisection" mode, ``-Y``), so every
input triangle is a face of the volume mesh and becomes a boundary triangle
with its marker. Each closed surface encloses a region; nested surfaces (a
nucleus inside a cell) give nested regions. Surfaces split the tetrahedra
into connected pieces; a piece takes the marker of the surface it lies
*inside* of, read from the outward orientation of the surface triangles it
touches — for a nucleus in a cell, the piece between the two surfaces is
inside the cell surface and outside the nucleus surface, so it is the cell's.

TetGen aborts the whole process on some invalid surfaces (self-intersecting
ones), so the surface is checked first: closed, outward-oriented, free of
intersections.
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

import cellscape as cs


def open_edges(triangles: np.ndarray) -> np.ndarray:
    """Undirected edges not shared by exactly two triangles.

    Parameters
    ----------
    triangles : ndarray, shape (m, 3), int

    Returns
    -------
    ndarray, shape (k, 2), int
        Vertex pairs (sorted) of the offending edges; empty for a closed surface.
    """
    edges = np.sort(np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]]), axis=1)
    unique, counts = np.unique(edges, axis=0, return_counts=True)
    return unique[counts != 2]


def tet_volumes(points: np.ndarray, tets: np.ndarray) -> np.ndarray:
    """Signed volumes of tetrahedra, shape (k,), in the cube of the points' unit.

    Positive when ``d`` lies on the side of triangle ``(a, b, c)`` its normal
    ``(b - a) x (c - a)`` points to.
    """
    a, b, c, d = (points[tets[:, i]] for i in range(4))
    return np.einsum("ij,ij->i", b - a, np.cross(c - a, d - a)) / 6.0


def surface_components(triangles: np.ndarray, n_vertices: int) -> np.ndarray:
    """Connected component of each triangle, numbered 0, 1, ... (triangles sharing a vertex are connected), shape (m,)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    rows = np.repeat(np.arange(len(triangles)), 3)
    cols = len(triangles) + triangles.ravel()
    size = len(triangles) + n_vertices
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(size, size))
    component = connected_components(graph, directed=False)[1][: len(triangles)]
    return np.unique(component, return_inverse=True)[1].ravel()


def _region(marker: int, names: dict[int, str]) -> str:
    return f"region {marker} ({names[marker]})" if marker in names else f"region {marker}"


def check_surface(surface: cs.SurfaceMesh) -> None:
    """Raise :class:`cellscape.InputError` unless TetGen can mesh ``surface`` safely.

    Checks, per marker: every edge shared by exactly two triangles (closed,
    watertight); every connected component encloses a positive volume
    (triangles counter-clockwise seen from outside); and no triangle crosses or
    touches another one (of any marker) except at shared vertices and edges.
    """
    pymeshlab = cs.require("pymeshlab", extra="mesh", who="mesh.tetrahedralize (surface self-intersection check)")

    names = surface.marker_names
    for marker in np.unique(surface.markers).tolist():
        triangles = surface.triangles[surface.markers == marker]
        loose = open_edges(triangles)
        if len(loose):
            raise cs.InputError(
                f"mesh.tetrahedralize: the surface of {_region(marker, names)} is not closed (not watertight): "
                f"{len(loose)} edge(s) are not shared by exactly two triangles; re-mesh the labels with "
                "mesh.marching_cubes or repair the surface"
            )
        component = surface_components(triangles, len(surface.vertices))
        a, b, c = (surface.vertices[triangles[:, i]] for i in range(3))
        enclosed = np.bincount(component, np.einsum("ij,ij->i", a, np.cross(b, c)) / 6.0)
        if enclosed.min() <= 0:
            raise cs.InputError(
                f"mesh.tetrahedralize: the surface of {_region(marker, names)} has {int((enclosed <= 0).sum())} "
                "component(s) oriented inwards (enclosed volume <= 0); triangles must be counter-clockwise seen from "
                "outside: reverse those triangles' vertex order"
            )
    meshset = pymeshlab.MeshSet()
    meshset.add_mesh(pymeshlab.Mesh(np.ascontiguousarray(surface.vertices, np.float64),
                                    np.ascontiguousarray(surface.triangles, np.int32)))
    meshset.compute_selection_by_self_intersections_per_face()
    crossing = meshset.current_mesh().face_selection_array()
    if crossing.any():
        involved = ", ".join(_region(m, names) for m in np.unique(surface.markers[crossing]).tolist())
        raise cs.InputError(
            f"mesh.tetrahedralize: {int(crossing.sum())} surface triangle(s) of {involved} intersect or touch other "
            "triangles; surfaces must not cross or touch — labels that touch each other give touching surfaces: "
            "separate them (e.g. erode one by a voxel) or mesh them together with mesh.marching_cubes mode='union'"
        )


def _face_ids(tets: np.ndarray, boundary: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """One integer id per distinct triangle: ids of the 4 faces of each tet (face i opposite vertex i), shape (k, 4), and
    of each boundary triangle, shape (b,)."""
    faces = np.stack([tets[:, [1, 2, 3]], tets[:, [0, 2, 3]], tets[:, [0, 1, 3]], tets[:, [0, 1, 2]]], axis=1)
    both = np.sort(np.concatenate([faces.reshape(-1, 3), boundary]), axis=1)
    unique, ids = np.unique(both, axis=0, return_inverse=True)
    ids = ids.ravel()
    return ids[: 4 * len(tets)].reshape(-1, 4), ids[4 * len(tets):], len(unique)


def region_markers(points: np.ndarray, tets: np.ndarray, boundary: np.ndarray, boundary_markers: np.ndarray,
                   names: dict[int, str]) -> np.ndarray:
    """Marker of the surface enclosing each tetrahedron, shape (k,), int32.

    Parameters
    ----------
    points : ndarray, shape (n, 3)
    tets : ndarray, shape (k, 4), int
    boundary : ndarray, shape (b, 3), int
        Outward-oriented surface triangles, each a face of one or two tetrahedra.
    boundary_markers : ndarray, shape (b,), int
    names : dict[int, str]
        Marker names, for error messages.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    tet_faces, boundary_ids, n_ids = _face_ids(tets, boundary)
    boundary_of = np.full(n_ids, -1, np.int64)
    boundary_of[boundary_ids] = np.arange(len(boundary))
    hits = np.bincount(boundary_ids, minlength=n_ids)[boundary_ids]
    seen = np.bincount(tet_faces.ravel(), minlength=n_ids)[boundary_ids]
    if (hits > 1).any() or (seen == 0).any():
        lost = np.unique(boundary_markers[(seen == 0) | (hits > 1)]).tolist()
        raise cs.InputError(
            "mesh.tetrahedralize: TetGen did not keep the surface triangles of "
            f"{', '.join(_region(m, names) for m in lost)} (duplicate or split triangles); re-mesh the labels"
        )
    # pieces: tetrahedra connected through faces that are not surface triangles
    flat = tet_faces.ravel()
    owner = np.repeat(np.arange(len(tets)), 4)
    order = np.argsort(flat, kind="stable")
    flat_sorted, owner_sorted = flat[order], owner[order]
    shared = (flat_sorted[1:] == flat_sorted[:-1]) & (boundary_of[flat_sorted[1:]] < 0)
    rows, cols = owner_sorted[:-1][shared], owner_sorted[1:][shared]
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(tets), len(tets)))
    count, piece = connected_components(graph, directed=False)
    # a tetrahedron on a surface triangle is inside that surface when its opposite vertex is behind the outward normal
    tet_index, corner = np.nonzero(boundary_of[tet_faces] >= 0)
    triangle = boundary_of[tet_faces[tet_index, corner]]
    a, b, c = (points[boundary[triangle, i]] for i in range(3))
    behind = np.einsum("ij,ij->i", np.cross(b - a, c - a), points[tets[tet_index, corner]] - a) < 0
    pairs, votes = np.unique(np.stack([piece[tet_index[behind]], boundary_markers[triangle[behind]]], axis=1), axis=0,
                             return_counts=True)
    piece_marker = np.zeros(count, np.int32)
    best = np.zeros(count, np.int64)
    for (k, marker), n in zip(pairs.tolist(), votes.tolist(), strict=True):
        if n > best[k]:
            piece_marker[k], best[k] = marker, n
    if (best == 0).any():
        raise cs.InputError("mesh.tetrahedralize: part of the mesh is inside no surface; check that every surface is "
                            "closed and oriented outwards")
    return piece_marker[piece]


@attrs.frozen
class TetrahedralizeParams:
    max_volume_nm3: float | None = cs.param(None, gt=0, unit="nm^3", help="largest allowed tetrahedron volume (None: no bound)")
    radius_edge_ratio: float = cs.param(1.5, ge=1.1, le=10, help="quality bound: circumradius / shortest edge")
    min_dihedral_deg: float = cs.param(10.0, ge=0, le=18, unit="deg", help="quality bound: smallest dihedral angle")
    max_dihedral_deg: float = cs.param(165.0, ge=90, le=179, unit="deg",
                                       help="mesh optimisation flips and smooths tetrahedra with a larger dihedral angle")
    isolate: bool = cs.param(True, help="run TetGen in a child process, so a TetGen crash becomes an error, not ours")
    timeout_s: float = cs.param(600.0, gt=0, unit="s", help="give up on TetGen after this long (with isolate)")


class Tetrahedralize(cs.Tetrahedralizer):
    """TetGen volume mesh of closed surfaces; the surface and its markers are kept, regions by nesting.

    Output: a :class:`cellscape.TetMesh` with points (x, y, z) in the
    surface's unit (nm), positively oriented tetrahedra, ``region_markers`` =
    marker of the innermost surface containing each tetrahedron,
    ``boundary_triangles`` = the input triangles (indices into ``points``;
    the surface vertices come first) with their markers, and region and
    boundary names copied from the surface's marker names.
    """

    name = "mesh.tetrahedralize"
    Params = TetrahedralizeParams

    def tetrahedralize(self, surface: cs.SurfaceMesh) -> cs.TetMesh:
        p = self.params
        if len(surface.triangles) < 4:
            raise cs.InputError(f"mesh.tetrahedralize: the surface has {len(surface.triangles)} triangle(s); a closed "
                                "surface needs at least 4")
        used = np.unique(surface.triangles)
        remap = np.full(len(surface.vertices), -1, np.int64)
        remap[used] = np.arange(len(used))
        surface = cs.SurfaceMesh(surface.vertices[used], remap[surface.triangles], surface.markers, surface.marker_names)
        check_surface(surface)
        names = surface.marker_names
        everything = ", ".join(_region(m, names) for m in np.unique(surface.markers).tolist())
        options = {"nobisect": True, "quality": True, "minratio": p.radius_edge_ratio, "mindihedral": p.min_dihedral_deg,
                   "optmaxdihedral": p.max_dihedral_deg}
        if p.max_volume_nm3 is not None:
            options.update(fixedvolume=True, maxvolume=p.max_volume_nm3)
        vertices = np.ascontiguousarray(surface.vertices, np.float64)
        triangles = np.ascontiguousarray(surface.triangles, np.int32)
        advice = "re-mesh the labels with more smoothing (sigma_voxels) or a coarser step_size, or run mesh.improve"
        try:
            if p.isolate:
                points, tets = isolated(run_tetgen, (vertices, triangles, options), p.timeout_s)
            else:
                points, tets = run_tetgen(vertices, triangles, options)
        except (RuntimeError, ValueError) as exc:
            raise cs.InputError(f"mesh.tetrahedralize: TetGen failed on the surfaces of {everything} ({exc}); "
                                f"{advice}") from exc
        except _Crashed as exc:
            raise cs.InputError(f"mesh.tetrahedralize: TetGen {exc} on the surfaces of {everything}; {advice}") from exc
        points = np.asarray(points, np.float64)
        tets = np.asarray(tets, np.int64)
        n = len(surface.vertices)
        if len(tets) == 0 or len(points) < n or not np.array_equal(points[:n], surface.vertices):
            raise cs.InputError(f"mesh.tetrahedralize: TetGen merged or moved vertices of the surfaces of {everything} "
                                "(duplicate or nearly coincident vertices?); re-mesh the labels")
        flipped = tet_volumes(points, tets) < 0
        tets[flipped] = tets[flipped][:, [0, 2, 1, 3]]
        regions = region_markers(points, tets, surface.triangles, surface.markers, names)
        return cs.TetMesh(points, tets, regions, surface.triangles, surface.markers, dict(names), dict(names))


def run_tetgen(vertices: np.ndarray, triangles: np.ndarray, options: dict) -> tuple[np.ndarray, np.ndarray]:
    """TetGen on a closed surface, in this process: (points, tetrahedra)."""
    import tetgen

    points, tets = tetgen.TetGen(vertices, triangles).tetrahedralize(**options)[:2]
    return np.asarray(points, np.float64), np.asarray(tets, np.int64)


class _Crashed(Exception):
    """TetGen's process died (a segfault or abort inside TetGen) or ran out of time."""


def isolated(function: Any, args: tuple, timeout_s: float) -> Any:
    """``function(*args)`` in a fresh child process: a crash or hang there is reported here, this process lives on.

    ``function`` must be importable by name (a module-level function).
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures import TimeoutError as FutureTimeout
    from concurrent.futures.process import BrokenProcessPool

    context = multiprocessing.get_context("spawn")  # no fork of a threaded parent
    pool = ProcessPoolExecutor(max_workers=1, mp_context=context)
    try:
        return pool.submit(function, *args).result(timeout=timeout_s)
    except BrokenProcessPool as exc:
        raise _Crashed("crashed (its process died)") from exc
    except FutureTimeout as exc:
        for process in list(getattr(pool, "_processes", {}).values()):
            process.kill()
        raise _Crashed(f"did not finish within timeout_s={timeout_s:g} s") from exc
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
