"""Sliver clean-up by vertex relocation, shared by ``mesh.tetrahedralize`` and ``mesh.refine`` (numpy only).

A tetrahedron below the quality targets (minimum dihedral angle, radius ratio) is improved by moving its
movable corners within their stars: each such vertex tries a few candidate positions (the centroid of its
neighbours, seeded random offsets of a few sizes; when none helps, 640 more offsets, since a vertex between two
slivers may only escape in a narrow cone) and takes the best one only when every tetrahedron around it stays
positively oriented and the worst of them gets better. The connectivity never changes.

Moving is not always enough: in a sheet a few tetrahedra thick, most corners lie on the surface and may not
move, and a sliver's free corners can be pinned by their other tetrahedra (the thin pierced shell of the mesh
benchmark kept slivers of 5.6° this way on two of five hole patterns). :func:`flip_slivers` then changes the
connectivity instead, by 2-3 and 3-2 flips inside one region that keep every surface triangle
(``mesh.tetrahedralize`` only: ``mesh.refine`` promises to keep its cuts).
"""

from __future__ import annotations

import numpy as np

from .._tetmesh import TET_EDGES, TET_FACES, vertex_stars
from .quality import tet_volumes

__all__ = ["flip_slivers", "remove_slivers", "tet_scores"]

_FACE_PAIRS = TET_EDGES  # every pair of faces: as index pairs, the same six as the edges


def tet_scores(corners: np.ndarray, min_dihedral_deg: float, min_radius_ratio: float) -> np.ndarray:
    """Quality of tetrahedra given by their corners, shape (..., 4, 3): min(dihedral / target, ratio / target);
    ≥ 1 meets both targets, -inf when inverted or flat.

    The same angles and ratios as :func:`~cellscape_plugins.mesh.quality.dihedral_angles` and
    :func:`~cellscape_plugins.mesh.quality.radius_ratios`, from the outward face normals (the dihedral angle
    between faces k and l is 180° minus the angle between their normals), for speed in the clean-up loop.
    """
    a, b, c, d = (corners[..., i, :] for i in range(4))
    triple = np.einsum("...j,...j->...", b - a, np.cross(c - a, d - a))
    face = corners[..., TET_FACES, :]
    normal = np.cross(face[..., 1, :] - face[..., 0, :], face[..., 2, :] - face[..., 0, :])
    # face i's normal points away from corner i when the tetrahedron is positive
    towards = np.einsum("...ij,...ij->...i", normal, corners - face[..., 0, :])
    normal = np.where(towards[..., None] > 0, -normal, normal)
    area2 = np.linalg.norm(normal, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        unit = normal / area2[..., None]
        cos = -np.einsum("...ij,...ij->...i", unit[..., _FACE_PAIRS[:, 0], :], unit[..., _FACE_PAIRS[:, 1], :])
        dihedral = np.degrees(np.arccos(np.clip(np.nan_to_num(cos.max(axis=-1), nan=1.0), -1, 1)))
        e1, e2, e3 = b - a, c - a, d - a
        offset = (np.einsum("...j,...j->...", e1, e1)[..., None] * np.cross(e2, e3)
                  + np.einsum("...j,...j->...", e2, e2)[..., None] * np.cross(e3, e1)
                  + np.einsum("...j,...j->...", e3, e3)[..., None] * np.cross(e1, e2))
        inradius = np.abs(triple) / area2.sum(axis=-1)
        circumradius = np.linalg.norm(offset, axis=-1) / (2 * np.abs(triple))
        ratio = np.nan_to_num(3 * inradius / circumradius, nan=0.0)
    score = np.minimum(dihedral / max(min_dihedral_deg, 1e-9), ratio / max(min_radius_ratio, 1e-9))
    return np.where(triple > 0, score, -np.inf)


def remove_slivers(points: np.ndarray, tets: np.ndarray, movable: np.ndarray, min_dihedral_deg: float = 8.0,
                   min_radius_ratio: float = 0.1, rounds: int = 6, seed: int = 0) -> np.ndarray:
    """Move interior vertices of poor tetrahedra within their stars to raise the worst quality around them.

    Parameters
    ----------
    points : ndarray, shape (n, 3), float
    tets : ndarray, shape (k, 4), int
        Positively oriented tetrahedra; their connectivity is not changed.
    movable : ndarray, shape (n,), bool
        The points allowed to move: never those on a surface (boundary or interface triangle), which would
        change the surface and the regions' volumes.
    min_dihedral_deg, min_radius_ratio : float
        Targets: a tetrahedron below either is worked on.
    rounds : int
        Sweeps over the vertices of poor tetrahedra at most.
    seed : int
        Seed of the random candidate offsets (the result is deterministic).

    Returns
    -------
    ndarray, shape (n, 3)
        New points; a vertex moves only when every tetrahedron around it stays positively oriented and the
        worst of them improves, so the mesh stays valid and each region's volume is unchanged.
    """
    points = np.array(points, np.float64)
    rng = np.random.default_rng(seed)
    starts, star_of = vertex_stars(tets, len(points))
    directions = rng.normal(size=(32, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    scales = np.repeat([0.03, 0.08, 0.15, 0.3], 8)[:, None]
    wide_directions = rng.normal(size=(640, 3))
    wide_directions /= np.linalg.norm(wide_directions, axis=1, keepdims=True)
    wide_scales = np.repeat([0.01, 0.03, 0.1, 0.2, 0.4], 128)[:, None]
    # a vertex that found no better place is tried again only after a neighbour moved
    waiting = np.ones(len(points), bool)
    for _ in range(rounds):
        score = tet_scores(points[tets], min_dihedral_deg, min_radius_ratio)
        poor = np.flatnonzero(score < 1)
        poor_vertices = np.unique(tets[poor].ravel())
        poor_vertices = poor_vertices[movable[poor_vertices] & waiting[poor_vertices]]
        if len(poor_vertices) == 0:
            break
        worst_first = np.argsort(-np.bincount(tets[poor].ravel(), minlength=len(points))[poor_vertices])
        for vertex in poor_vertices[worst_first]:
            star = star_of[starts[vertex]:starts[vertex + 1]]
            corners = points[tets[star]]
            here = tets[star] == vertex
            current = tet_scores(corners, min_dihedral_deg, min_radius_ratio).min()
            waiting[vertex] = False
            if current >= 1:
                continue
            neighbours = np.unique(tets[star].ravel())
            neighbours = neighbours[neighbours != vertex]
            length = np.linalg.norm(points[neighbours] - points[vertex], axis=1).mean()
            candidates = np.concatenate([points[neighbours].mean(axis=0)[None],
                                         points[vertex] + length * scales * directions])
            best, worst = _best_place(corners, here, candidates, min_dihedral_deg, min_radius_ratio)
            if worst <= current:  # rarely needed, so searched only now: the way out may be a narrow cone
                candidates = points[vertex] + length * wide_scales * wide_directions
                best, worst = _best_place(corners, here, candidates, min_dihedral_deg, min_radius_ratio)
            if worst > current:
                points[vertex] = candidates[best]
                waiting[neighbours] = True
                waiting[vertex] = worst < 1
    return points


def _best_place(corners: np.ndarray, here: np.ndarray, candidates: np.ndarray, min_dihedral_deg: float,
                min_radius_ratio: float) -> tuple[int, float]:
    """The candidate position (index) that gives the star ``corners`` the best worst score, and that score."""
    trial = np.broadcast_to(corners, (len(candidates), *corners.shape)).copy()
    trial[:, here] = candidates[:, None, :]
    worst = tet_scores(trial, min_dihedral_deg, min_radius_ratio).min(axis=1)
    best = int(np.argmax(worst))
    return best, float(worst[best])


def flip_slivers(points: np.ndarray, tets: np.ndarray, markers: np.ndarray, boundary: np.ndarray,
                 min_dihedral_deg: float = 8.0, min_radius_ratio: float = 0.1,
                 rounds: int = 4) -> tuple[np.ndarray, np.ndarray, int]:
    """Remove poor tetrahedra by 2-3 and 3-2 flips, where moving vertices cannot (no corner is movable enough).

    A poor tetrahedron is replaced together with a neighbour across one of its faces by three tetrahedra around
    the edge joining their opposite corners (2-3 flip), or, when one of its edges lies in exactly three
    tetrahedra, those three by two sharing the triangle of the edge's ring (3-2 flip). A flip is made only when
    every tetrahedron involved has the same region marker, no face it removes is a boundary or interface
    triangle, the new tetrahedra fill exactly the old ones' space (equal total volume, none flat), and the worst
    quality among them is better than among the old ones. Points never move, so the surface, the markers and
    every region's volume stay as they were.

    Parameters
    ----------
    points : ndarray, shape (n, 3)
    tets : ndarray, shape (k, 4), int
        Positively oriented tetrahedra.
    markers : ndarray, shape (k,)
        Region marker of each tetrahedron.
    boundary : ndarray, shape (b, 3), int
        Boundary and interface triangles, which every flip keeps.
    min_dihedral_deg, min_radius_ratio : float
        Targets: a tetrahedron below either is worked on.
    rounds : int
        Sweeps over the poor tetrahedra at most.

    Returns
    -------
    tets : ndarray, shape (k', 4)
        Positively oriented; k' = k + (2-3 flips) - (3-2 flips).
    markers : ndarray, shape (k',)
    flips : int
        Number of flips made.
    """
    tets, markers = np.array(tets, np.int64), np.array(markers)
    kept: set[tuple[int, ...]] | None = None  # the surface triangles, made only when some tetrahedron is poor
    flips = 0
    for _ in range(rounds):
        score = tet_scores(points[tets], min_dihedral_deg, min_radius_ratio)
        poor = np.flatnonzero(score < 1)
        if len(poor) == 0:
            break
        if kept is None:
            kept = {tuple(sorted(t)) for t in np.asarray(boundary, np.int64).tolist()}
        starts, star_of = vertex_stars(tets, len(points))
        touched = np.zeros(len(tets), bool)
        removed: list[int] = []
        added: list[np.ndarray] = []
        added_markers: list[np.ndarray] = []

        def around(*vertices: int, star_of: np.ndarray = star_of, starts: np.ndarray = starts) -> np.ndarray:
            """The tetrahedra that have every one of ``vertices`` as a corner."""
            common = star_of[starts[vertices[0]]:starts[vertices[0] + 1]]
            for v in vertices[1:]:
                common = np.intersect1d(common, star_of[starts[v]:starts[v + 1]])
            return common

        for t in poor[np.argsort(score[poor])]:
            if touched[t]:
                continue
            best = None
            corners = tets[t]
            for i in range(4):  # 2-3: with the neighbour across the face opposite corner i
                face = np.delete(corners, i)
                if tuple(sorted(face.tolist())) in kept:
                    continue
                other = [s for s in around(*face) if s != t]
                if len(other) != 1 or touched[other[0]] or markers[other[0]] != markers[t]:
                    continue
                s = other[0]
                d, e = corners[i], int(np.setdiff1d(tets[s], face)[0])
                new = np.array([[d, e, face[0], face[1]], [d, e, face[1], face[2]], [d, e, face[2], face[0]]])
                best = _better(points, tets, [t, s], new, best, min_dihedral_deg, min_radius_ratio)
            for a, b in TET_EDGES:  # 3-2: the edge (a, b) in exactly three tetrahedra
                u, v = int(corners[a]), int(corners[b])
                ring = around(u, v)
                if len(ring) != 3 or touched[ring].any() or (markers[ring] != markers[t]).any():
                    continue
                others = np.setdiff1d(tets[ring].ravel(), [u, v])
                if len(others) != 3 or any(tuple(sorted((u, v, int(w)))) in kept for w in others):
                    continue
                new = np.array([[*others, u], [*others, v]])
                best = _better(points, tets, ring.tolist(), new, best, min_dihedral_deg, min_radius_ratio)
            if best is not None:
                old, new = best[1], best[2]
                touched[old] = True
                removed.extend(old)
                added.append(new)
                added_markers.append(np.full(len(new), markers[t]))
                flips += 1
        if not removed:
            break
        keep = np.ones(len(tets), bool)
        keep[removed] = False
        tets = np.concatenate([tets[keep], *added])
        markers = np.concatenate([markers[keep], *added_markers])
    return tets, markers, flips



def _better(points: np.ndarray, tets: np.ndarray, old: list[int], new: np.ndarray, best: tuple | None,
            min_dihedral_deg: float, min_radius_ratio: float) -> tuple | None:
    """``(worst new score, old, new)`` when ``new`` (oriented here) fills ``old``'s space and beats it and ``best``."""
    volume = tet_volumes(points, new, signed=True)
    old_volume = tet_volumes(points, tets[old]).sum()
    if (np.abs(volume) <= 1e-12 * old_volume).any() or abs(np.abs(volume).sum() - old_volume) > 1e-9 * old_volume:
        return None  # a flat tetrahedron, or the new ones overlap or stick out: not the same space
    new = np.where((volume < 0)[:, None], new[:, [0, 2, 1, 3]], new)
    worst = tet_scores(points[new], min_dihedral_deg, min_radius_ratio).min()
    before = tet_scores(points[tets[old]], min_dihedral_deg, min_radius_ratio).min()
    if worst <= before or (best is not None and worst <= best[0]):
        return best
    return worst, list(old), new
