"""mesh.refine: conformity, volumes, markers, mesh size, quality over rounds, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from meshes import cube_mesh
from scipy.spatial import cKDTree

import cellscape as cs
from cellscape_plugins.mesh.quality import dihedral_angles, radius_ratios, tet_volumes
from cellscape_plugins.mesh.refine import Refine, refine


def oriented(mesh: cs.TetMesh) -> cs.TetMesh:
    """The mesh with every tetrahedron positively oriented (the Kuhn cube alternates)."""
    tets = np.array(mesh.tetrahedra)
    flipped = tet_volumes(mesh.points, tets, signed=True) < 0
    tets[flipped] = tets[flipped][:, [0, 2, 1, 3]]
    return cs.TetMesh(mesh.points, tets, mesh.region_markers, mesh.boundary_triangles, mesh.boundary_markers,
                      mesh.region_names, mesh.boundary_names)


def ball_mesh() -> cs.TetMesh:
    n = 24
    z, y, x = np.mgrid[:n, :n, :n] - (n - 1) / 2
    data = np.zeros(z.shape, np.uint8)
    data[x**2 + y**2 + z**2 <= 9.0**2] = 1
    data[x**2 + y**2 + z**2 <= 4.0**2] = 2
    surface = cs.method("mesh.marching_cubes")(cs.Labels(data, {1: "cytosol", 2: "nucleus"}, 10.0))
    return cs.method("mesh.tetrahedralize", isolate=False)(cs.method("mesh.improve")(surface))


def assert_conforming(mesh: cs.TetMesh) -> None:
    """Every face is shared by two tetrahedra, except the boundary triangles (one each, exactly those)."""
    tets = mesh.tetrahedra
    faces = np.sort(np.concatenate([tets[:, [1, 2, 3]], tets[:, [0, 2, 3]], tets[:, [0, 1, 3]], tets[:, [0, 1, 2]]]),
                    axis=1)
    keys, counts = np.unique(faces, axis=0, return_counts=True)
    assert counts.max() == 2
    outer = keys[counts == 1]
    boundary = np.unique(np.sort(mesh.boundary_triangles, axis=1), axis=0)
    # interfaces between regions are boundary triangles shared by two tetrahedra; the rest of them is outer
    shared_boundary = boundary[np.isin(_rows(boundary), _rows(keys[counts == 2]))]
    np.testing.assert_array_equal(np.unique(np.concatenate([outer, shared_boundary]), axis=0), boundary)
    assert len(boundary) == len(mesh.boundary_triangles)  # no duplicate boundary triangle


def _rows(a: np.ndarray) -> np.ndarray:
    return a[:, 0] * 10**12 + a[:, 1] * 10**6 + a[:, 2]


def region_volumes(mesh: cs.TetMesh) -> dict[int, float]:
    volumes = tet_volumes(mesh.points, mesh.tetrahedra, signed=True)
    return {m: float(volumes[mesh.region_markers == m].sum()) for m in np.unique(mesh.region_markers).tolist()}


def max_edge(mesh: cs.TetMesh) -> float:
    corners = mesh.points[mesh.tetrahedra[:, [0, 1, 0, 2, 0, 3, 1, 2, 1, 3, 2, 3]].reshape(-1, 2)]
    return float(np.linalg.norm(corners[:, 0] - corners[:, 1], axis=1).max())


def test_uniform_rounds_halve_h_and_keep_volumes_and_markers() -> None:
    mesh = oriented(cube_mesh(2, 8.0, regions_split=True))
    before = region_volumes(mesh)
    h0, n0 = max_edge(mesh), len(mesh.tetrahedra)
    for _ in range(3):
        mesh = refine(mesh, np.arange(len(mesh.tetrahedra)))
        assert_conforming(mesh)
        assert tet_volumes(mesh.points, mesh.tetrahedra, signed=True).min() > 0
        after = region_volumes(mesh)
        assert after.keys() == before.keys()
        for marker, volume in before.items():
            assert after[marker] == pytest.approx(volume, rel=1e-12)
    # every tetrahedron cut once per round: 2 children each, so 3 rounds give 8x tetrahedra and half the edge length
    assert len(mesh.tetrahedra) == 8 * n0
    assert max_edge(mesh) == pytest.approx(h0 / 2, rel=1e-12)
    # the cube's faces: 48 triangles of (n=2) become 4x as many, all marker 1, lying on the cube's faces
    assert len(mesh.boundary_triangles) == 4 * 48
    assert set(mesh.boundary_markers.tolist()) == {1}
    on_face = np.isclose(mesh.points[mesh.boundary_triangles], 0) | np.isclose(mesh.points[mesh.boundary_triangles], 8)
    assert on_face.all(axis=1).any(axis=1).all()
    assert mesh.region_names == {1: "left", 2: "right"}
    # Kuhn simplices bisected at their longest edge stay similar to a few shapes: the angles do not degrade
    assert dihedral_angles(mesh.points, mesh.tetrahedra).min() == pytest.approx(45.0)


def test_marked_refinement_is_local_and_conforming() -> None:
    mesh = oriented(cube_mesh(4, 8.0))
    centroids = mesh.points[mesh.tetrahedra].mean(axis=1)
    marked = np.flatnonzero(np.linalg.norm(centroids, axis=1) < 2.5)
    refined = refine(mesh, marked)
    assert_conforming(refined)
    volumes = tet_volumes(refined.points, refined.tetrahedra, signed=True)
    assert volumes.min() > 0
    assert volumes.sum() == pytest.approx(512.0, rel=1e-12)
    # the old points keep their index and place; the marked tetrahedra are gone, each cut at least once
    np.testing.assert_array_equal(refined.points[: len(mesh.points)], mesh.points)
    old = {tuple(t) for t in np.sort(mesh.tetrahedra, axis=1).tolist()}
    new = {tuple(t) for t in np.sort(refined.tetrahedra, axis=1).tolist()}
    assert not old.intersection(tuple(t) for t in np.sort(mesh.tetrahedra[marked], axis=1).tolist()) & new
    # tetrahedra far from the marked corner (beyond the closure's reach) are untouched
    far = np.flatnonzero(np.linalg.norm(centroids, axis=1) > 7.0)
    assert {tuple(t) for t in np.sort(mesh.tetrahedra[far], axis=1).tolist()} <= new
    assert len(refined.tetrahedra) < 2 * len(mesh.tetrahedra)
    assert tet_volumes(refined.points, refined.tetrahedra).max() == pytest.approx(8.0 / 6.0)


@pytest.fixture(scope="module")
def tetgen_ball() -> cs.TetMesh:
    return ball_mesh()


def three_inner_rounds(mesh: cs.TetMesh, relax: bool) -> list[cs.TetMesh]:
    """The meshes after each of three rounds refining the tetrahedra within 60 nm of the centre."""
    centre = mesh.points.mean(axis=0)
    meshes = []
    for _ in range(3):
        centroids = mesh.points[mesh.tetrahedra].mean(axis=1)
        mesh = refine(mesh, np.flatnonzero(np.linalg.norm(centroids - centre, axis=1) < 60.0), relax=relax)
        meshes.append(mesh)
    return meshes


def test_repeated_local_refinement_of_a_tetgen_mesh_keeps_quality(tetgen_ball: cs.TetMesh) -> None:
    mesh0 = tetgen_ball
    before = region_volumes(mesh0)
    dihedral0 = dihedral_angles(mesh0.points, mesh0.tetrahedra).min()
    ratio0 = radius_ratios(mesh0.points, mesh0.tetrahedra).min()
    assert dihedral0 >= 8.0 and ratio0 >= 0.1  # mesh.tetrahedralize's targets hold on the input
    meshes = three_inner_rounds(mesh0, relax=True)
    mesh = meshes[-1]
    assert_conforming(mesh)
    assert tet_volumes(mesh.points, mesh.tetrahedra, signed=True).min() > 0
    after = region_volumes(mesh)
    for marker, volume in before.items():
        assert after[marker] == pytest.approx(volume, rel=1e-12)
    # the interface between nucleus and cytosol is kept: its triangles are split, each piece keeps marker 2
    assert set(mesh.boundary_markers.tolist()) == {1, 2}
    assert mesh.region_names == {1: "cytosol", 2: "nucleus"}
    # each round keeps the points before it; new points on boundary triangles stay on the surface (edge midpoints)
    for coarse, fine in zip([mesh0, *meshes[:-1]], meshes, strict=True):
        np.testing.assert_array_equal(fine.points[: len(coarse.points)], coarse.points)
    # measured: min dihedral 10.07 deg -> 10.09, 7.63, 7.63 deg over the rounds, min radius ratio 0.148 -> 0.131,
    # 0.094, 0.094 (two tetrahedra beside the surface whose only new corner cannot move further); bisection alone
    # gives 7.78 deg and 0.026 (next test)
    for refined in meshes:
        assert dihedral_angles(refined.points, refined.tetrahedra).min() > 7.5
        assert radius_ratios(refined.points, refined.tetrahedra).min() > 0.09
    assert len(mesh.tetrahedra) > 15 * len(mesh0.tetrahedra)


def test_bisection_alone_is_nested_and_degrades_tetgen_slivers(tetgen_ball: cs.TetMesh) -> None:
    mesh0 = tetgen_ball
    ratio0 = radius_ratios(mesh0.points, mesh0.tetrahedra).min()
    coarse = mesh0
    for fine in three_inner_rounds(mesh0, relax=False):
        # nested: every new point is the midpoint of an edge cut in the round, so the mirror of one of its
        # neighbours through it is a point too
        edges = np.unique(np.sort(fine.tetrahedra[:, [0, 1, 0, 2, 0, 3, 1, 2, 1, 3, 2, 3]].reshape(-1, 2), axis=1), axis=0)
        edges = np.concatenate([edges, edges[:, ::-1]])
        edges = edges[edges[:, 0] >= len(coarse.points)]
        mirrors = 2 * fine.points[edges[:, 0]] - fine.points[edges[:, 1]]
        hit = cKDTree(fine.points).query(mirrors)[0] < 1e-9
        assert np.bincount(edges[hit, 0], minlength=len(fine.points))[len(coarse.points):].min() >= 1
        coarse = fine
    assert_conforming(coarse)
    # measured: min radius ratio 0.148 -> 0.026, min dihedral 10.07 -> 7.78 deg: the children of TetGen's flat
    # tetrahedra beside the surface (cutting children at split edges that are not their longest gave 0.018 and 6.26
    # deg here, and kept falling in later rounds)
    ratio = radius_ratios(coarse.points, coarse.tetrahedra).min()
    assert 0.16 * ratio0 < ratio < 0.3 * ratio0
    assert dihedral_angles(coarse.points, coarse.tetrahedra).min() > 7.5


def regular_tetrahedron() -> cs.TetMesh:
    corners = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], float)
    tet = np.array([[0, 2, 1, 3]])  # positively oriented
    faces = tet[0][np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])]
    return cs.TetMesh(corners, tet, np.ones(1, np.int32), faces, np.ones(4, np.int32), {1: "inside"}, {1: "surface"})


def test_longest_edge_bisection_of_a_regular_tetrahedron_keeps_a_quality_floor() -> None:
    mesh = regular_tetrahedron()
    assert tet_volumes(mesh.points, mesh.tetrahedra, signed=True)[0] > 0
    worst_ratio, worst_dihedral = [], []
    for _ in range(8):
        mesh = refine(mesh, np.arange(len(mesh.tetrahedra)))
        worst_ratio.append(radius_ratios(mesh.points, mesh.tetrahedra).min())
        worst_dihedral.append(dihedral_angles(mesh.points, mesh.tetrahedra).min())
    assert_conforming(mesh)
    assert tet_volumes(mesh.points, mesh.tetrahedra).sum() == pytest.approx(8.0 / 3.0, rel=1e-12)
    # one longest-edge cut of the regular tetrahedron: two children of radius ratio 0.742; in eight uniform rounds the
    # worst is 0.1705 (first seen in round 7) with dihedral angles of 25.2 deg or more; cutting children at split edges
    # that are not their longest reached 0.122 and 14.5 deg by round 7 and kept falling
    assert worst_ratio[0] == pytest.approx(0.7417, abs=1e-4)
    assert min(worst_ratio) == pytest.approx(0.1705, abs=1e-3)
    assert min(worst_dihedral) > 25.0


def test_method_with_table_and_max_volume() -> None:
    mesh = oriented(cube_mesh(2, 8.0))
    table = cs.Table({"tet": np.array([0, 5])})
    refined = Refine()(mesh, marked=table)
    assert len(refined.tetrahedra) > len(mesh.tetrahedra)
    bounded = Refine(max_volume_nm3=0.2)(mesh)
    volumes = tet_volumes(bounded.points, bounded.tetrahedra)
    assert volumes.max() <= 0.2
    assert volumes.sum() == pytest.approx(512.0, rel=1e-12)
    assert_conforming(bounded)


def test_method_passes_the_relaxation_switch(tetgen_ball: cs.TetMesh) -> None:
    centroids = tetgen_ball.points[tetgen_ball.tetrahedra].mean(axis=1)
    marked = np.flatnonzero(np.linalg.norm(centroids - tetgen_ball.points.mean(axis=0), axis=1) < 60.0)
    table = cs.Table({"tet": marked})
    nested = Refine(relax=False)(tetgen_ball, marked=table)
    relaxed = Refine()(tetgen_ball, marked=table)
    np.testing.assert_array_equal(nested.points, refine(tetgen_ball, marked, relax=False).points)
    np.testing.assert_array_equal(relaxed.tetrahedra, nested.tetrahedra)  # the same cuts, only points moved
    moved = np.linalg.norm(relaxed.points - nested.points, axis=1) > 0
    assert moved.any() and not moved[: len(tetgen_ball.points)].any()
    assert not moved[np.unique(relaxed.boundary_triangles)].any()
    # measured: 0.071 without relaxation, 0.109 with it (the targets are 0.1 and 8 deg)
    assert radius_ratios(nested.points, nested.tetrahedra).min() < 0.1
    assert radius_ratios(relaxed.points, relaxed.tetrahedra).min() >= 0.1


def test_bad_input_is_named() -> None:
    mesh = oriented(cube_mesh(1, 1.0))
    with pytest.raises(cs.InputError, match="tetrahedron index 6 is out of range: the mesh has 6 tetrahedra"):
        refine(mesh, [0, 6])
    with pytest.raises(cs.InputError, match="tetrahedron index -1 is out of range"):
        refine(mesh, [-1])
    with pytest.raises(cs.InputError, match="needs a column 'tet'"):
        Refine()(mesh, cs.Table({"index": np.array([0])}))
    with pytest.raises(cs.InputError, match="nothing to refine"):
        Refine()(mesh)
    assert refine(mesh, []) is mesh
