"""``mesh.refine``: local refinement of a tetrahedral mesh by longest-edge bisection, kept conforming.

Algorithm (Rivara's longest-edge bisection with its conformity closure, one round per call of :func:`refine`):

1. Every marked tetrahedron is bisected at its longest edge: a new vertex at the edge's midpoint, two
   children that each replace one end of the edge by the midpoint.
2. Closure: a tetrahedron that holds an edge which has a midpoint (a hanging vertex) is bisected at *its own*
   longest edge — not at the hanging one — which may put a midpoint on a longer edge and so propagate along
   the longest-edge path; repeat until no tetrahedron holds a split edge.
3. Each boundary triangle holding a split edge is bisected at its longest edge the same way, until none
   does; it then matches the faces of the tetrahedra on it.
4. Relaxation (``relax=True``, the default): the new vertices that lie inside one region (on no boundary or
   interface triangle) are moved within their stars to lift tetrahedra below the quality targets
   (:func:`~cellscape_plugins.mesh._slivers.remove_slivers`, as ``mesh.tetrahedralize`` does after TetGen).
   The old points, the boundary and every region's volume are unchanged.

Why step 4. Bisection alone does not keep TetGen's quality: the flat, nearly co-circular tetrahedra that
TetGen leaves beside the surface (radius ratio ≈ 0.2, two dihedrals ≈ 160°) have children of ratio 0.025
when cut at their longest edge (at most 0.11 at any edge). Measured on a TetGen mesh of a ball (minimum
radius ratio 0.148, minimum dihedral 10.1°), three rounds of local refinement give 0.026 and 7.8° by
bisection alone (an earlier version that cut children at split edges other than their longest made 0.018
and 6.3° after three rounds, 0.005 and 3.0° after five, with no floor); with relaxation 0.094 and 7.6°,
and further rounds lose nothing more. Cutting at longest edges keeps well-shaped tetrahedra well shaped
(a regular tetrahedron's descendants stay at radius ratio ≥ 0.17), so relaxation only has work near the
surface. With ``relax=False`` the meshes are nested (new vertices exactly at edge midpoints).

"Longest" is one global order: edge length, ties broken by the vertex indices, so cells sharing a face
cut it at the same edge and the mesh stays conforming: a face is cut exactly when one of its edges has a
midpoint, always at its longest edge, whichever side cuts it. Every marked tetrahedron is cut at least
once: its pieces have at most half its volume (before relaxation moves interior vertices). Children keep
their parent's region marker and orientation; boundary triangles keep their marker. New vertices on the
boundary lie at edge midpoints, on the flat boundary triangles: a curved surface is not re-approximated
(the mesh's boundary is piecewise flat already, so every region's volume is exactly kept).
"""

from __future__ import annotations

import attrs
import numpy as np

import cellscape as cs

from .._tetmesh import TET_EDGES, TET_FACES, TRIANGLE_EDGES
from ._slivers import remove_slivers
from .quality import tet_volumes

# edge keys are ``low * _KEY_BASE + high``: one int64 per undirected edge, valid while points are added
_KEY_BASE = np.int64(1) << 31


def _edge_keys(cells: np.ndarray, corner_pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both ends (lower, higher index) and the key of each edge of each cell, each shape (cells, edges), int64."""
    a, b = cells[:, corner_pairs[:, 0]], cells[:, corner_pairs[:, 1]]
    low, high = np.minimum(a, b), np.maximum(a, b)
    return low, high, low * _KEY_BASE + high


def _longest_edges(cells: np.ndarray, corner_pairs: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Index (into ``corner_pairs``) of each cell's longest edge in the global order: length, then key.

    The squared length of an edge is computed from its ends in index order by one fixed sum, so every cell
    holding it gets the same floating-point number and cells sharing a face agree on its longest edge.
    """
    low, high, keys = _edge_keys(cells, corner_pairs)
    step = points[high] - points[low]
    squared = step[..., 0] * step[..., 0] + step[..., 1] * step[..., 1] + step[..., 2] * step[..., 2]
    tied = squared == squared.max(axis=1, keepdims=True)
    return np.argmax(np.where(tied, keys, -1), axis=1)


def _holds_edge(cells: np.ndarray, corner_pairs: np.ndarray, keys: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Whether each cell has an edge among ``keys`` (sorted), shape (cells,), bool.

    ``ends`` (bool per point) marks the ends of those edges: only cells with two marked corners are looked up.
    """
    held = np.zeros(len(cells), bool)
    if not len(keys) or not len(cells):
        return held
    candidate = np.flatnonzero(ends[cells].sum(axis=1) >= 2)
    cell_keys = _edge_keys(cells[candidate], corner_pairs)[2]
    where = np.minimum(np.searchsorted(keys, cell_keys), len(keys) - 1)
    held[candidate] = (keys[where] == cell_keys).any(axis=1)
    return held


def _bisect(cells: np.ndarray, corner_pairs: np.ndarray, edge: np.ndarray, middle: np.ndarray) -> np.ndarray:
    """The two children of each cell cut at its edge ``edge`` through the vertex ``middle``, shape (2 cells, corners).

    A child replaces one end of the cut edge by the midpoint, so it keeps the parent's orientation.
    """
    rows = np.arange(len(cells))
    first, second = cells.copy(), cells.copy()
    first[rows, corner_pairs[edge, 1]] = middle
    second[rows, corner_pairs[edge, 0]] = middle
    return np.concatenate([first, second])


class _Midpoints:
    """The midpoint vertex of every edge split so far: sorted edge keys, their vertex indices, and the points."""

    def __init__(self, points: np.ndarray):
        self.points = points
        self.keys = np.zeros(0, np.int64)
        self.vertices = np.zeros(0, np.int64)

    def ends(self, keys: np.ndarray) -> np.ndarray:
        """Bool per point: is it an end of one of ``keys``."""
        marked = np.zeros(len(self.points), bool)
        marked[keys // _KEY_BASE] = True
        marked[keys % _KEY_BASE] = True
        return marked

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Midpoint vertex of each edge key, -1 where the edge has none."""
        if not len(self.keys):
            return np.full(keys.shape, -1, np.int64)
        where = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return np.where(self.keys[where] == keys, self.vertices[where], -1)

    def split(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Midpoint vertex of each edge key, adding a point for the edges not split yet; also those edges' keys."""
        fresh = np.unique(keys[self.lookup(keys) < 0])
        if len(fresh):
            low, high = fresh // _KEY_BASE, fresh % _KEY_BASE
            new_vertices = len(self.points) + np.arange(len(fresh))
            self.points = np.concatenate([self.points, (self.points[low] + self.points[high]) / 2])
            keys_all = np.concatenate([self.keys, fresh])
            order = np.argsort(keys_all, kind="stable")
            self.keys = keys_all[order]
            self.vertices = np.concatenate([self.vertices, new_vertices])[order]
        return self.lookup(keys), fresh


def _bisect_with_closure(cells: np.ndarray, markers: np.ndarray, corner_pairs: np.ndarray, first_cut: np.ndarray,
                         midpoints: _Midpoints, add_vertices: bool) -> tuple[np.ndarray, np.ndarray]:
    """Bisect the cells ``first_cut``, then every cell holding a split edge, each at its longest edge, until none does.

    Tetrahedra (``add_vertices``: a cut edge without a midpoint gets one in ``midpoints``) or boundary triangles
    (every edge they are cut at must have been split by the tetrahedra already). A cut cell's first child takes its
    row, the second is appended, both with its marker.
    """
    cells, markers = cells.copy(), markers.copy()
    cut = first_cut
    while len(cut):
        parents = cells[cut]
        edge = _longest_edges(parents, corner_pairs, midpoints.points)
        keys = _edge_keys(parents, corner_pairs)[2][np.arange(len(parents)), edge]
        if add_vertices:
            middle, fresh = midpoints.split(keys)
        else:
            middle, fresh = midpoints.lookup(keys), keys[:0]
            if (middle < 0).any():
                raise cs.InputError("mesh.refine: a boundary triangle is not a face of the tetrahedra (its longest "
                                    "edge was not split with them); the mesh's boundary_triangles must be faces of "
                                    "its tetrahedra")
        children = _bisect(parents, corner_pairs, edge, middle)
        cells[cut] = children[: len(cut)]
        changed = np.concatenate([cut, len(cells) + np.arange(len(cut))])
        cells = np.concatenate([cells, children[len(cut):]])
        markers = np.concatenate([markers, markers[cut]])
        # the other cells held no split edge before this pass: only the fresh ones can be in them now
        holds_fresh = np.flatnonzero(_holds_edge(cells, corner_pairs, fresh, midpoints.ends(fresh)))
        changed = changed[_holds_edge(cells[changed], corner_pairs, midpoints.keys, midpoints.ends(midpoints.keys))]
        cut = np.union1d(changed, holds_fresh)
    return cells, markers


def refine(mesh: cs.TetMesh, tets_to_refine: np.ndarray | list[int], *, relax: bool = True,
           target_min_dihedral_deg: float = 8.0, target_min_radius_ratio: float = 0.1) -> cs.TetMesh:
    """One round of conforming longest-edge bisection of the marked tetrahedra (and what closure needs).

    Parameters
    ----------
    mesh : cellscape.TetMesh
        Positively oriented, conforming tetrahedra (as :class:`Tetrahedralize` makes them), points in nm;
        its boundary triangles must be faces of its tetrahedra.
    tets_to_refine : array of int, shape (m,)
        Indices of tetrahedra to refine; repeats are fine, an empty list returns ``mesh``.
    relax : bool
        Move the new vertices inside regions to lift tetrahedra below the targets (step 4 above); False keeps
        every new vertex at its edge's midpoint (nested meshes).
    target_min_dihedral_deg, target_min_radius_ratio : float
        Quality targets of the relaxation, which aims 1.25x above them for a margin (as ``mesh.tetrahedralize``).

    Returns
    -------
    cellscape.TetMesh
        The old points first (unchanged), then one new point per cut edge (at its midpoint, unless relaxed
        inside a region). Each marked
        tetrahedron is replaced by at least two children of at most half its volume; neighbours are cut
        (always at their longest edge) as far as conformity needs. Every child is positively oriented and
        keeps its parent's region marker; boundary triangles are cut to match and keep their markers;
        region and boundary names are kept.
    """
    tets = np.asarray(mesh.tetrahedra, np.int64)
    marked = np.asarray(tets_to_refine)
    if marked.size and (marked.dtype.kind not in "iuf" or (marked.dtype.kind == "f" and
                                                          not np.all(np.mod(marked, 1) == 0))):
        raise cs.InputError(f"mesh.refine: tetrahedron indices must be integers, got {marked.ravel()[:5].tolist()}")
    marked = np.unique(marked.astype(np.int64).ravel())
    bad = marked[(marked < 0) | (marked >= len(tets))]
    if len(bad):
        raise cs.InputError(f"mesh.refine: tetrahedron index {int(bad[0])} is out of range: the mesh has "
                            f"{len(tets)} tetrahedra (indices 0 to {len(tets) - 1})"
                            + (f"; {len(bad)} indices are out of range" if len(bad) > 1 else ""))
    if not len(marked):
        return mesh
    midpoints = _Midpoints(np.asarray(mesh.points, np.float64))
    new_tets, new_markers = _bisect_with_closure(tets, np.asarray(mesh.region_markers), TET_EDGES, marked, midpoints,
                                                 add_vertices=True)
    boundary = np.asarray(mesh.boundary_triangles, np.int64)
    boundary_markers = np.asarray(mesh.boundary_markers)
    if len(boundary):
        first_cut = np.flatnonzero(_holds_edge(boundary, TRIANGLE_EDGES, midpoints.keys,
                                               midpoints.ends(midpoints.keys)))
        boundary, boundary_markers = _bisect_with_closure(boundary, boundary_markers, TRIANGLE_EDGES, first_cut,
                                                          midpoints, add_vertices=False)
    points = midpoints.points
    if relax:
        movable = _inside_regions(new_tets, new_markers, boundary, np.arange(len(points)) >= len(mesh.points))
        points = remove_slivers(points, new_tets, movable, 1.25 * target_min_dihedral_deg,
                                1.25 * target_min_radius_ratio)
    return cs.TetMesh(points, new_tets, new_markers, boundary, boundary_markers, dict(mesh.region_names),
                      dict(mesh.boundary_names))


def _inside_regions(tets: np.ndarray, markers: np.ndarray, boundary: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Which of the ``candidate`` points (bool per point) may move without changing the boundary or a region's volume.

    Not those on a boundary triangle, on a face of only one tetrahedron (an outer face the boundary triangles
    may have left out) or on tetrahedra of two regions (an interface).
    """
    movable = candidate.copy()
    movable[boundary.ravel()] = False
    around = tets[movable[tets].any(axis=1)]
    around_markers = markers[movable[tets].any(axis=1)]
    if not len(around):
        return movable
    lowest = np.full(len(movable), np.iinfo(np.int64).max)
    highest = np.full(len(movable), np.iinfo(np.int64).min)
    np.minimum.at(lowest, around.ravel(), np.repeat(around_markers.astype(np.int64), 4))
    np.maximum.at(highest, around.ravel(), np.repeat(around_markers.astype(np.int64), 4))
    movable &= lowest == highest
    # a face with a movable corner is in ``around`` with every tetrahedron that shares it: counted once = outer
    faces = np.sort(around[:, TET_FACES].reshape(-1, 3), axis=1)
    faces = faces[movable[faces].any(axis=1)]
    if len(faces):
        unique, counts = np.unique(faces, axis=0, return_counts=True)
        movable[unique[counts == 1].ravel()] = False
    return movable


@attrs.frozen
class RefineParams:
    max_volume_nm3: float | None = cs.param(None, gt=0, unit="nm^3",
                                            help="refine, round after round, every tetrahedron larger than this")
    max_rounds: int = cs.param(20, ge=1, le=100, help="rounds of bisection at most (with max_volume_nm3)")
    relax: bool = cs.param(True, help="move new vertices inside regions to lift tetrahedra below the quality targets "
                           "(False: nested meshes, new vertices at edge midpoints)")
    target_min_dihedral_deg: float = cs.param(8.0, ge=0, lt=70, unit="deg",
                                              help="quality target of the relaxation: smallest dihedral angle")
    target_min_radius_ratio: float = cs.param(0.1, ge=0, lt=1,
                                              help="quality target of the relaxation: smallest radius ratio")


class Refine(cs.Method):
    """Conforming longest-edge bisection of marked (or too large) tetrahedra, new interior vertices relaxed; markers kept.

    Inputs: ``mesh`` and, optionally, ``marked``: a table whose column ``tet`` lists tetrahedron indices to
    refine (one round). With ``max_volume_nm3``, rounds repeat (after the marked round, if any) until no
    tetrahedron is larger. See :func:`refine` for the algorithm and guarantees.
    """

    name = "mesh.refine"
    version = "2"  # 2: cut at longest edges only, new vertices inside regions relaxed
    stage = "mesh"
    Params = RefineParams
    inputs = {
        "mesh": cs.Port(cs.TetMesh, "the tetrahedral mesh to refine"),
        "marked": cs.Port(cs.Table, "column 'tet': indices of the tetrahedra to refine", optional=True),
    }
    outputs = {"mesh": cs.Port(cs.TetMesh, "the refined mesh: old points first, then the new ones")}

    def run(self, **inputs: cs.Artefact) -> dict[str, cs.Artefact]:
        mesh: cs.TetMesh = inputs["mesh"]  # type: ignore[assignment]
        table = inputs.get("marked")
        p = self.params
        options = {"relax": p.relax, "target_min_dihedral_deg": p.target_min_dihedral_deg,
                   "target_min_radius_ratio": p.target_min_radius_ratio}
        if table is None and p.max_volume_nm3 is None:
            raise cs.InputError("mesh.refine: nothing to refine; give a 'marked' table (column 'tet') or "
                                "max_volume_nm3")
        if table is not None:
            if "tet" not in table.columns:  # type: ignore[attr-defined]
                raise cs.InputError(f"mesh.refine: the 'marked' table needs a column 'tet' of tetrahedron indices; "
                                    f"it has {', '.join(table.columns) or 'no columns'}")  # type: ignore[attr-defined]
            mesh = refine(mesh, table.columns["tet"], **options)  # type: ignore[attr-defined]
        if p.max_volume_nm3 is not None:
            for _ in range(p.max_rounds):
                large = np.flatnonzero(tet_volumes(mesh.points, mesh.tetrahedra, signed=True) > p.max_volume_nm3)
                if not len(large):
                    break
                mesh = refine(mesh, large, **options)
            else:
                if (tet_volumes(mesh.points, mesh.tetrahedra, signed=True) > p.max_volume_nm3).any():
                    raise cs.InputError(f"mesh.refine: tetrahedra larger than max_volume_nm3={p.max_volume_nm3:g} "
                                        f"remain after max_rounds={p.max_rounds}; raise max_rounds")
        return {"mesh": mesh}
