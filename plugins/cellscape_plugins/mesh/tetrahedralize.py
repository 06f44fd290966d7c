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

Options: ``holes_nm`` (points whose enclosed region TetGen leaves empty),
``regions_to_mesh`` (keep only some regions' tetrahedra),
``max_volume_per_region_nm3`` (a volume bound per region, through TetGen's
region attributes: ``add_region(id, point, max_vol)`` with ``-A -a``; the
binding has no other size field than a background mesh).

Quality. With the surface kept, TetGen's own optimisation (``-O``/``-o/``:
flips and smoothing; its kwargs ``opt_max_flip_level``, ``opt_scheme``,
``opt_iterations``, ``optmaxdihedral``) leaves a few slivers near the surface
(on an improved ball: min dihedral 4.6°, min radius ratio 0.09, changing
those kwargs did not move them). ``optimize`` therefore adds a sliver
clean-up of our own: each interior (non-surface) vertex of a tetrahedron below
the targets moves, within its star, to the best of a few candidate positions
(the centroid of its neighbours, seeded random offsets); a move is taken only
when every tetrahedron around the vertex stays positively oriented and the
worst of them gets better. It aims at 1.25x the targets, for a margin (measured
after mesh.improve: ball 10.1°/0.138, phantom cell 10.0°/0.138 in every region).
The connectivity, the surface and so every region's volume are unchanged. On
unimproved marching-cubes surfaces most slivers have all four corners on the
kept surface and cannot be moved; the clean-up then costs seconds and the
targets are missed (warned). The result is reported (``self.report``) and a warning
says when the targets — minimum dihedral ≥ 8°, radius ratio ≥ 0.1 — are missed.
"""

from __future__ import annotations

import warnings
from typing import Any

import attrs
import numpy as np

import cellscape as cs

from .._isolated import ChildDied, isolated
from ._edges import unique_edges
from ._slivers import flip_slivers, remove_slivers
from .quality import tet_volumes


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
        loose = int((unique_edges(triangles)[2] != 2).sum())
        if loose:
            raise cs.InputError(
                f"mesh.tetrahedralize: the surface of {_region(marker, names)} is not closed (not watertight): "
                f"{loose} edge(s) are not shared by exactly two triangles; re-mesh the labels with "
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
    holes_nm: list[list[float]] | None = cs.param(None, unit="nm",
                                                  help="points (x, y, z) inside regions to leave empty (holes)")
    regions_to_mesh: list[int] | None = cs.param(None, help="keep only the tetrahedra of these region markers "
                                                 "(default: all)")
    max_volume_per_region_nm3: dict[int, float] | None = cs.param(
        None, unit="nm^3", help="largest tetrahedron volume per region marker (TetGen region attributes)")
    optimize: bool = cs.param(True, help="sliver clean-up after TetGen: move interior vertices of tetrahedra "
                              "below the quality targets, then 2-3 / 3-2 flips inside regions for those left")
    target_min_dihedral_deg: float = cs.param(8.0, ge=0, lt=70, unit="deg",
                                              help="quality target: warn when a tetrahedron has a smaller dihedral")
    target_min_radius_ratio: float = cs.param(0.1, ge=0, lt=1,
                                              help="quality target: warn when a tetrahedron has a smaller radius ratio")
    isolate: bool = cs.param(True, help="run TetGen in a child process, so a TetGen crash becomes an error, not ours")
    timeout_s: float = cs.param(600.0, gt=0, unit="s", help="give up on TetGen after this long (with isolate)")


class Tetrahedralize(cs.Tetrahedralizer):
    """TetGen volume mesh of closed surfaces; the surface and its markers are kept, regions by nesting.

    Output: a :class:`cellscape.TetMesh` with points (x, y, z) in the
    surface's unit (nm), positively oriented tetrahedra, ``region_markers`` =
    marker of the innermost surface containing each tetrahedron,
    ``boundary_triangles`` = the input triangles (indices into ``points``;
    the surface vertices come first) with their markers, and region and
    boundary names copied from the surface's marker names. With
    ``regions_to_mesh`` or ``holes_nm``, only the kept tetrahedra, the points
    they use and the surface triangles they touch remain.

    After a call, ``self.report`` holds the quality of the result (see
    :func:`quality_report`).
    """

    name = "mesh.tetrahedralize"
    version = "2"
    Params = TetrahedralizeParams

    report: dict[str, Any] | None = None

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
        present = np.unique(surface.markers).tolist()
        everything = ", ".join(_region(m, names) for m in present)
        holes = _checked_holes(surface, p.holes_nm)
        regions = _region_points(surface, p.max_volume_per_region_nm3)
        options = {"nobisect": True, "quality": True, "minratio": p.radius_edge_ratio, "mindihedral": p.min_dihedral_deg,
                   "optmaxdihedral": p.max_dihedral_deg}
        if p.max_volume_nm3 is not None:
            options.update(fixedvolume=True, maxvolume=p.max_volume_nm3)
        if regions:
            options.update(regionattrib=True, varvolume=True)
        vertices = np.ascontiguousarray(surface.vertices, np.float64)
        triangles = np.ascontiguousarray(surface.triangles, np.int32)
        advice = "re-mesh the labels with more smoothing (sigma_voxels) or a coarser step_size, or run mesh.improve"
        try:
            if p.isolate:
                points, tets = isolated(run_tetgen, (vertices, triangles, options, holes, regions), p.timeout_s)
            else:
                points, tets = run_tetgen(vertices, triangles, options, holes, regions)
        except (RuntimeError, ValueError) as exc:
            raise cs.InputError(f"mesh.tetrahedralize: TetGen failed on the surfaces of {everything} ({exc}); "
                                f"{advice}") from exc
        except ChildDied as exc:
            raise cs.InputError(f"mesh.tetrahedralize: TetGen {exc} on the surfaces of {everything}; {advice}") from exc
        points = np.array(points, np.float64)
        tets = np.array(tets, np.int64)
        n = len(surface.vertices)
        if len(tets) == 0 or len(points) < n or not np.array_equal(points[:n], surface.vertices):
            raise cs.InputError(f"mesh.tetrahedralize: TetGen merged or moved vertices of the surfaces of {everything} "
                                "(duplicate or nearly coincident vertices?); re-mesh the labels")
        flipped = tet_volumes(points, tets, signed=True) < 0
        tets[flipped] = tets[flipped][:, [0, 2, 1, 3]]
        boundary, boundary_markers = surface.triangles, surface.markers
        if holes:
            # a hole's surface bounds tetrahedra on one side only, and nothing is inside it
            boundary, boundary_markers = _touched(tets, boundary, boundary_markers)
        markers = region_markers(points, tets, boundary, boundary_markers, names)
        if p.optimize:
            # aim a little above the targets, so they hold with a margin
            aims = (1.25 * p.target_min_dihedral_deg, 1.25 * p.target_min_radius_ratio)
            movable = np.arange(len(points)) >= n
            points = remove_slivers(points, tets, movable, *aims)
            # a sliver whose movable corners cannot escape (in a sheet a few tetrahedra thick, say) is flipped away
            tets, markers, flips = flip_slivers(points, tets, markers, boundary, *aims)
            if flips:
                points = remove_slivers(points, tets, movable, *aims)
        if p.regions_to_mesh is not None:
            missing = sorted(set(p.regions_to_mesh) - set(np.unique(markers).tolist()))
            if missing:
                raise cs.InputError(f"mesh.tetrahedralize: regions_to_mesh names region marker(s) {missing}, which the "
                                    f"mesh does not have; its regions are {sorted(set(markers.tolist()))}")
            keep = np.isin(markers, p.regions_to_mesh)
            tets, markers = tets[keep], markers[keep]
            boundary, boundary_markers = _touched(tets, boundary, boundary_markers)
        points, tets, boundary = _drop_unused_points(points, tets, boundary)
        region_names = {k: v for k, v in names.items() if k in set(markers.tolist())}
        boundary_names = {k: v for k, v in names.items() if k in set(boundary_markers.tolist())}
        mesh = cs.TetMesh(points, tets, markers, boundary, boundary_markers, region_names, boundary_names)
        self.report = quality_report(mesh)
        _warn_missed_targets(self.report, p.target_min_dihedral_deg, p.target_min_radius_ratio)
        return mesh


def _checked_holes(surface: cs.SurfaceMesh, holes_nm: list[list[float]] | None) -> list[list[float]]:
    """The hole points as float triples; a hole outside every surface is an InputError (TetGen would ignore it)."""
    if not holes_nm:
        return []
    holes = []
    for i, point in enumerate(holes_nm):
        if len(point) != 3:
            raise cs.InputError(f"mesh.tetrahedralize: holes_nm[{i}] = {point!r} is not a point (x, y, z) in nm")
        if abs(winding_number(surface.vertices, surface.triangles, np.asarray(point, float))) < 0.5:
            raise cs.InputError(f"mesh.tetrahedralize: holes_nm[{i}] = {list(point)} lies outside every surface; "
                                "a hole point must be inside the region to leave empty")
        holes.append([float(v) for v in point])
    return holes


def winding_number(vertices: np.ndarray, triangles: np.ndarray, point: np.ndarray) -> float:
    """How many times the closed surface winds around ``point`` (1 inside an outward surface, 0 outside).

    Sum of the solid angles of the triangles seen from the point (Van Oosterom & Strackee), over 4π.
    """
    a, b, c = (vertices[triangles[:, i]] - point for i in range(3))
    la, lb, lc = (np.linalg.norm(x, axis=1) for x in (a, b, c))
    numerator = np.einsum("ij,ij->i", a, np.cross(b, c))
    denominator = (la * lb * lc + np.einsum("ij,ij->i", a, b) * lc + np.einsum("ij,ij->i", b, c) * la
                   + np.einsum("ij,ij->i", c, a) * lb)
    return float(2 * np.arctan2(numerator, denominator).sum() / (4 * np.pi))


def _region_points(surface: cs.SurfaceMesh, max_volumes: dict[int, float] | None) -> list[tuple[int, list[float], float]]:
    """TetGen regions (marker, a point inside, max volume) for each connected surface piece of each marker.

    The point lies a small step behind the largest triangle of the piece: inside that surface and, since surfaces
    do not touch, outside any surface nested in it.
    """
    if not max_volumes:
        return []
    names = surface.marker_names
    present = set(np.unique(surface.markers).tolist())
    for marker, bound in max_volumes.items():
        if marker not in present:
            raise cs.InputError(f"mesh.tetrahedralize: max_volume_per_region_nm3 names region marker {marker}, which "
                                f"the surface does not have; its markers are {sorted(present)}")
        if not bound > 0:
            raise cs.InputError(f"mesh.tetrahedralize: max_volume_per_region_nm3 of {_region(marker, names)} is "
                                f"{bound:g}; it must be > 0")
    regions = []
    for marker in sorted(present):
        triangles = surface.triangles[surface.markers == marker]
        a, b, c = (surface.vertices[triangles[:, i]] for i in range(3))
        normal = np.cross(b - a, c - a)
        area = np.linalg.norm(normal, axis=1)
        component = surface_components(triangles, len(surface.vertices))
        for piece in range(component.max() + 1):
            best = np.flatnonzero(component == piece)[np.argmax(area[component == piece])]
            step = 1e-3 * np.sqrt(area[best])
            inside = (a[best] + b[best] + c[best]) / 3 - step * normal[best] / area[best]
            regions.append((int(marker), inside.tolist(), float(max_volumes.get(marker, 0.0))))
    return regions


def _touched(tets: np.ndarray, boundary: np.ndarray, markers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The boundary triangles that are faces of some tetrahedron, and their markers."""
    faces = np.sort(np.concatenate([tets[:, [1, 2, 3]], tets[:, [0, 2, 3]], tets[:, [0, 1, 3]], tets[:, [0, 1, 2]]]),
                    axis=1)
    key = np.sort(boundary, axis=1)
    both = np.unique(np.concatenate([faces, key]), axis=0, return_inverse=True)[1].ravel()
    keep = np.isin(both[len(faces):], both[: len(faces)])
    return boundary[keep], markers[keep]


def _drop_unused_points(points: np.ndarray, tets: np.ndarray,
                        boundary: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points no tetrahedron uses are removed; the kept ones keep their order."""
    used = np.zeros(len(points), bool)
    used[tets.ravel()] = True
    if used.all():
        return points, tets, boundary
    index = np.cumsum(used) - 1
    return points[used], index[tets], index[boundary]


# -- quality: report and sliver clean-up --------------------------------------------------------


def quality_report(mesh: cs.TetMesh) -> dict[str, Any]:
    """Quality of a volume mesh, overall and per region marker.

    Returns
    -------
    dict
        ``{"all": row, "regions": {marker: row}}``, each row with ``n_tetrahedra``, ``min_dihedral_deg``,
        ``share_dihedral_below_10_deg`` (fraction of tetrahedra whose smallest dihedral angle is below 10°) and
        ``min_radius_ratio``.
    """
    from .quality import dihedral_angles, radius_ratios

    dihedral = dihedral_angles(mesh.points, mesh.tetrahedra).min(axis=1)
    ratio = radius_ratios(mesh.points, mesh.tetrahedra)

    def row(mask: np.ndarray) -> dict[str, float]:
        return {"n_tetrahedra": int(mask.sum()), "min_dihedral_deg": float(dihedral[mask].min()),
                "share_dihedral_below_10_deg": float((dihedral[mask] < 10).mean()),
                "min_radius_ratio": float(ratio[mask].min())}

    return {"all": row(np.ones(len(dihedral), bool)),
            "regions": {int(m): row(mesh.region_markers == m) for m in np.unique(mesh.region_markers).tolist()}}


def _warn_missed_targets(report: dict[str, Any], min_dihedral_deg: float, min_radius_ratio: float) -> None:
    missed = [f"region {marker}: min dihedral {row['min_dihedral_deg']:.2f} deg, min radius ratio "
              f"{row['min_radius_ratio']:.3f}" for marker, row in report["regions"].items()
              if row["min_dihedral_deg"] < min_dihedral_deg or row["min_radius_ratio"] < min_radius_ratio]
    if missed:
        warnings.warn(f"mesh.tetrahedralize: quality targets (min dihedral >= {min_dihedral_deg:g} deg, radius ratio "
                      f">= {min_radius_ratio:g}) missed — {'; '.join(missed)}; run mesh.improve on the surface first "
                      "(slivers often sit on its skinny triangles)", stacklevel=3)


def run_tetgen(vertices: np.ndarray, triangles: np.ndarray, options: dict, holes: list | tuple = (),
               regions: list | tuple = ()) -> tuple[np.ndarray, np.ndarray]:
    """TetGen on a closed surface, in this process: (points, tetrahedra).

    ``holes``: points (x, y, z) inside regions to leave empty; ``regions``: (id, point inside, max volume) triples
    for TetGen's region attributes (per-region volume bound with ``varvolume``).
    """
    import tetgen

    generator = tetgen.TetGen(vertices, triangles)
    for point in holes:
        generator.add_hole(point)
    for region_id, point, max_volume in regions:
        generator.add_region(region_id, point, max_volume)
    points, tets = generator.tetrahedralize(**options)[:2]
    return np.asarray(points, np.float64), np.asarray(tets, np.int64)
