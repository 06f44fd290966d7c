"""``mesh.tetrahedralize``: a tetrahedral volume mesh of closed surfaces, with TetGen.

The surface is kept exactly (TetGen's "no bisection" mode), so every input
triangle is a boundary triangle of the volume mesh and keeps its marker.
Regions: the tetrahedra are split into connected pieces wherever a surface
separates them; a piece takes the marker of the largest surface among those
bounding it — for a nucleus nested in a cell, the piece between the two
surfaces is the cytosol (bounded by the cell surface) and the inner piece
the nucleus.
"""

from __future__ import annotations

import attrs
import numpy as np

import cellscape as cs


def open_edges(triangles: np.ndarray) -> np.ndarray:
    """Undirected edges not shared by exactly two triangles, as (n, 2) vertex pairs."""
    edges = np.sort(np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]]), axis=1)
    unique, counts = np.unique(edges, axis=0, return_counts=True)
    return unique[counts != 2]


def tet_volumes(points: np.ndarray, tets: np.ndarray) -> np.ndarray:
    """Signed volumes of tetrahedra (positive for TetGen's orientation)."""
    a, b, c, d = (points[tets[:, i]] for i in range(4))
    return np.einsum("ij,ij->i", b - a, np.cross(c - a, d - a)) / 6.0


def _face_keys(faces: np.ndarray, n_points: int) -> np.ndarray:
    s = np.sort(faces, axis=1).astype(np.int64)
    return (s[:, 0] * n_points + s[:, 1]) * n_points + s[:, 2]


def region_pieces(tets: np.ndarray, boundary: np.ndarray, n_points: int) -> tuple[int, np.ndarray]:
    """Connected pieces of tetrahedra, neighbours across faces that are not boundary triangles."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    faces = np.concatenate([tets[:, [1, 2, 3]], tets[:, [0, 2, 3]], tets[:, [0, 1, 3]], tets[:, [0, 1, 2]]])
    owner = np.tile(np.arange(len(tets)), 4)
    keys = _face_keys(faces, n_points)
    blocked = np.isin(keys, _face_keys(boundary, n_points))
    order = np.argsort(keys, kind="stable")
    keys_sorted, owner_sorted, blocked_sorted = keys[order], owner[order], blocked[order]
    shared = (keys_sorted[1:] == keys_sorted[:-1]) & ~blocked_sorted[1:]
    rows, cols = owner_sorted[:-1][shared], owner_sorted[1:][shared]
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(tets), len(tets)))
    return connected_components(graph, directed=False)


@attrs.frozen
class TetrahedralizeParams:
    max_volume_nm3: float | None = cs.param(None, gt=0, unit="nm^3", help="largest allowed tetrahedron volume")
    radius_edge_ratio: float = cs.param(1.6, ge=1.1, le=10, help="quality bound: circumradius / shortest edge")
    min_dihedral_deg: float = cs.param(10.0, ge=0, le=18, unit="deg", help="quality bound: smallest dihedral angle")


class Tetrahedralize(cs.Tetrahedralizer):
    """TetGen volume mesh of closed surfaces; the surface and its markers are kept, regions by nesting."""

    name = "mesh.tetrahedralize"
    Params = TetrahedralizeParams

    def tetrahedralize(self, surface: cs.SurfaceMesh) -> cs.TetMesh:
        import tetgen

        p = self.params
        triangles = surface.triangles
        for marker in np.unique(surface.markers):
            loose = open_edges(triangles[surface.markers == marker])
            if len(loose):
                name = surface.marker_names.get(int(marker), f"marker {marker}")
                raise cs.InputError(
                    f"mesh.tetrahedralize: the surface of region {int(marker)} ({name}) is not closed (not watertight): "
                    f"{len(loose)} edges are not shared by exactly two triangles; repair it (mesh.improve) or re-mesh "
                    "the labels"
                )
        generator = tetgen.TetGen(np.ascontiguousarray(surface.vertices, np.float64),
                                  np.ascontiguousarray(triangles, np.int32))
        options = {"nobisect": True, "quality": True, "minratio": p.radius_edge_ratio, "mindihedral": p.min_dihedral_deg}
        if p.max_volume_nm3 is not None:
            options.update(fixedvolume=True, maxvolume=p.max_volume_nm3)
        try:
            points, tets = generator.tetrahedralize(**options)[:2]
        except RuntimeError as exc:
            raise cs.InputError(
                f"mesh.tetrahedralize: TetGen rejected the surface ({exc}); it may self-intersect — repair it "
                "(mesh.improve) or smooth the labels more"
            ) from exc
        points = np.asarray(points, np.float64)
        tets = np.asarray(tets, np.int64)
        if len(tets) == 0:
            raise cs.InputError("mesh.tetrahedralize: TetGen produced no tetrahedra; is the surface closed?")
        if not np.allclose(points[: len(surface.vertices)], surface.vertices):
            raise cs.InputError("mesh.tetrahedralize: TetGen changed the surface vertices; the surface may self-intersect")
        volumes = tet_volumes(points, tets)
        flipped = volumes < 0
        tets[flipped] = tets[flipped][:, [0, 2, 1, 3]]
        count, piece = region_pieces(tets, triangles, len(points))
        enclosed = {int(m): abs(_enclosed(surface.vertices, triangles[surface.markers == m])) for m in np.unique(surface.markers)}
        # which surface markers bound each piece: look every tet face up among the boundary triangles
        keys = _face_keys(np.concatenate([tets[:, [1, 2, 3]], tets[:, [0, 2, 3]], tets[:, [0, 1, 3]], tets[:, [0, 1, 2]]]),
                          len(points))
        owner_piece = np.tile(piece, 4)
        boundary_keys = _face_keys(triangles, len(points))
        order = np.argsort(boundary_keys)
        slot = np.clip(np.searchsorted(boundary_keys[order], keys), 0, len(order) - 1)
        hit = boundary_keys[order][slot] == keys
        pairs = np.unique(np.stack([owner_piece[hit], surface.markers[order[slot[hit]]]], axis=1), axis=0)
        piece_marker = np.zeros(count, np.int32)
        for k, marker in pairs:
            current = piece_marker[k]
            if current == 0 or enclosed[int(marker)] > enclosed[int(current)]:
                piece_marker[k] = marker
        region_markers = piece_marker[piece]
        return cs.TetMesh(points, tets, region_markers, triangles, surface.markers,
                          dict(surface.marker_names), dict(surface.marker_names))


def _enclosed(vertices: np.ndarray, triangles: np.ndarray) -> float:
    from .marching_cubes import signed_volume

    return signed_volume(vertices, triangles)
