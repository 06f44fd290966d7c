"""``mesh.refine``: local refinement of a tetrahedral mesh by longest-edge bisection, kept conforming.

Algorithm (Rivara's longest-edge bisection, one round per call of :func:`refine`):

1. Every marked tetrahedron puts its longest edge into the set ``E`` of edges to split.
2. Closure: every tetrahedron holding an edge of ``E`` puts its own longest edge into ``E`` too, until
   nothing changes — so each tetrahedron touched is first cut at its longest edge, which keeps the
   angles bounded (the same rule as Rivara's recursive propagation to the neighbours sharing a cut edge).
3. Each edge of ``E`` gets one new vertex, at its midpoint. Every tetrahedron and every boundary triangle
   still holding an edge of ``E`` is bisected at the longest of them (cut through the midpoint and the
   opposite edge or vertex), again and again, until none holds one.

"Longest" is one global order: edge length, ties broken by the vertex indices, so two cells sharing a
face cut it in the same order and the mesh stays conforming (every interior face shared by exactly two
tetrahedra). Every marked tetrahedron is cut at least once: its pieces have at most half its volume.
Children keep their parent's region marker and orientation; boundary triangles are cut the same way
and keep their marker. New vertices on the boundary lie at edge midpoints, on the flat boundary
triangles: a curved surface is not re-approximated (the mesh's boundary is piecewise flat already, so
every region's volume is exactly kept).
"""

from __future__ import annotations

import attrs
import numpy as np

import cellscape as cs

# the six edges of a tetrahedron as corner pairs, and the three of a triangle
_TET_EDGES = np.array([[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]])
_TRIANGLE_EDGES = np.array([[0, 1], [1, 2], [0, 2]])


def _edge_keys(cells: np.ndarray, corner_pairs: np.ndarray, n_points: int) -> np.ndarray:
    """Undirected edge key ``min * n_points + max`` of each edge of each cell, shape (cells, edges), int64."""
    a, b = cells[:, corner_pairs[:, 0]], cells[:, corner_pairs[:, 1]]
    return np.minimum(a, b) * n_points + np.maximum(a, b)


def _ranked(keys: np.ndarray, points: np.ndarray, n_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Unique edge keys, sorted, and the rank of each in the global "longer" order (length, then key)."""
    unique = np.unique(keys)
    length = np.linalg.norm(points[unique % n_points] - points[unique // n_points], axis=1)
    rank = np.empty(len(unique), np.int64)
    rank[np.lexsort((unique, length))] = np.arange(len(unique))
    return unique, rank


def _bisect_until_clean(cells: np.ndarray, markers: np.ndarray, corner_pairs: np.ndarray, split_keys: np.ndarray,
                        split_rank: np.ndarray, midpoints: np.ndarray,
                        n_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Bisect cells (tetrahedra or triangles) at their highest-ranked edge in the split set until none holds one.

    ``split_keys`` is sorted; ``midpoints[i]`` is the new vertex of edge ``split_keys[i]``. A child replaces one
    end of the cut edge by the midpoint, so it keeps the parent's orientation and marker.
    """
    done_cells, done_markers = [], []
    while len(cells):
        keys = _edge_keys(cells, corner_pairs, n_points)
        where = np.clip(np.searchsorted(split_keys, keys), 0, len(split_keys) - 1)
        hit = split_keys[where] == keys
        clean = ~hit.any(axis=1)
        done_cells.append(cells[clean])
        done_markers.append(markers[clean])
        cells, markers, hit, where = cells[~clean], markers[~clean], hit[~clean], where[~clean]
        if not len(cells):
            break
        edge = np.argmax(np.where(hit, split_rank[where], -1), axis=1)
        rows = np.arange(len(cells))
        middle = midpoints[where[rows, edge]]
        first, second = cells.copy(), cells.copy()
        first[rows, corner_pairs[edge, 1]] = middle
        second[rows, corner_pairs[edge, 0]] = middle
        cells = np.concatenate([first, second])
        markers = np.concatenate([markers, markers])
    return np.concatenate(done_cells), np.concatenate(done_markers)


def refine(mesh: cs.TetMesh, tets_to_refine: np.ndarray | list[int]) -> cs.TetMesh:
    """One round of conforming longest-edge bisection of the marked tetrahedra (and what closure needs).

    Parameters
    ----------
    mesh : cellscape.TetMesh
        Positively oriented, conforming tetrahedra (as :class:`Tetrahedralize` makes them).
    tets_to_refine : array of int, shape (m,)
        Indices of tetrahedra to refine; repeats are fine, an empty list returns ``mesh``.

    Returns
    -------
    cellscape.TetMesh
        The old points first (unchanged), then one new point per cut edge at its midpoint. Each marked
        tetrahedron is replaced by at least two children of at most half its volume; neighbours are cut
        as far as conformity and the longest-edge rule need. Region and boundary markers and names kept.
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
    points = np.asarray(mesh.points, np.float64)
    n = len(points)
    keys = _edge_keys(tets, _TET_EDGES, n)
    unique, rank = _ranked(keys, points, n)
    tet_rank = rank[np.searchsorted(unique, keys)]
    longest = keys[np.arange(len(tets)), np.argmax(tet_rank, axis=1)]
    in_split = np.zeros(len(unique), bool)
    in_split[np.searchsorted(unique, longest[marked])] = True
    edge_index = np.searchsorted(unique, keys)
    while True:  # closure: a tetrahedron holding a cut edge is cut at its longest edge first
        touched = in_split[edge_index].any(axis=1)
        grown = in_split.copy()
        grown[np.searchsorted(unique, longest[touched])] = True
        if (grown == in_split).all():
            break
        in_split = grown
    split_keys = unique[in_split]
    split_rank = rank[in_split]
    midpoints = n + np.arange(len(split_keys))
    new_points = (points[split_keys // n] + points[split_keys % n]) / 2
    all_points = np.concatenate([points, new_points])
    # keys of edges between old points stay valid with the old count; new edges never need splitting
    n_all = len(all_points)
    split_keys_all = (split_keys // n) * n_all + split_keys % n
    order = np.argsort(split_keys_all)
    new_tets, new_markers = _bisect_until_clean(tets, mesh.region_markers, _TET_EDGES, split_keys_all[order],
                                                split_rank[order], midpoints[order], n_all)
    boundary, boundary_markers = mesh.boundary_triangles, mesh.boundary_markers
    if len(boundary):
        boundary, boundary_markers = _bisect_until_clean(np.asarray(boundary, np.int64), boundary_markers,
                                                         _TRIANGLE_EDGES, split_keys_all[order], split_rank[order],
                                                         midpoints[order], n_all)
    return cs.TetMesh(all_points, new_tets, new_markers, boundary, boundary_markers, dict(mesh.region_names),
                      dict(mesh.boundary_names))


def _volumes(points: np.ndarray, tets: np.ndarray) -> np.ndarray:
    a, b, c, d = (points[tets[:, i]] for i in range(4))
    return np.einsum("ij,ij->i", b - a, np.cross(c - a, d - a)) / 6.0


@attrs.frozen
class RefineParams:
    max_volume_nm3: float | None = cs.param(None, gt=0, unit="nm^3",
                                            help="refine, round after round, every tetrahedron larger than this")
    max_rounds: int = cs.param(20, ge=1, le=100, help="rounds of bisection at most (with max_volume_nm3)")


class Refine(cs.Method):
    """Conforming longest-edge bisection of marked (or too large) tetrahedra; markers kept.

    Inputs: ``mesh`` and, optionally, ``marked``: a table whose column ``tet`` lists tetrahedron indices to
    refine (one round). With ``max_volume_nm3``, rounds repeat (after the marked round, if any) until no
    tetrahedron is larger. See :func:`refine` for the algorithm and guarantees.
    """

    name = "mesh.refine"
    stage = "mesh"
    Params = RefineParams
    inputs = {
        "mesh": cs.Port(cs.TetMesh, "the tetrahedral mesh to refine"),
        "marked": cs.Port(cs.Table, "column 'tet': indices of the tetrahedra to refine", optional=True),
    }
    outputs = {"mesh": cs.Port(cs.TetMesh, "the refined mesh: old points first, then edge midpoints")}

    def run(self, **inputs: cs.Artefact) -> dict[str, cs.Artefact]:
        mesh: cs.TetMesh = inputs["mesh"]  # type: ignore[assignment]
        table = inputs.get("marked")
        p = self.params
        if table is None and p.max_volume_nm3 is None:
            raise cs.InputError("mesh.refine: nothing to refine; give a 'marked' table (column 'tet') or "
                                "max_volume_nm3")
        if table is not None:
            if "tet" not in table.columns:  # type: ignore[attr-defined]
                raise cs.InputError(f"mesh.refine: the 'marked' table needs a column 'tet' of tetrahedron indices; "
                                    f"it has {', '.join(table.columns) or 'no columns'}")  # type: ignore[attr-defined]
            mesh = refine(mesh, table.columns["tet"])  # type: ignore[attr-defined]
        if p.max_volume_nm3 is not None:
            for _ in range(p.max_rounds):
                large = np.flatnonzero(_volumes(mesh.points, mesh.tetrahedra) > p.max_volume_nm3)
                if not len(large):
                    break
                mesh = refine(mesh, large)
            else:
                if (_volumes(mesh.points, mesh.tetrahedra) > p.max_volume_nm3).any():
                    raise cs.InputError(f"mesh.refine: tetrahedra larger than max_volume_nm3={p.max_volume_nm3:g} "
                                        f"remain after max_rounds={p.max_rounds}; raise max_rounds")
        return {"mesh": mesh}
