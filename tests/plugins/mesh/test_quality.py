"""Mesh quality metrics against hand-built shapes with known angles, areas, volumes and topology."""

from __future__ import annotations

import numpy as np
import pytest
from meshes import cube_mesh, cube_surface

import cellscape as cs
from cellscape_plugins._trimesh import closest_points_on_triangles, point_to_surface
from cellscape_plugins.mesh import quality as q

EQUILATERAL = (np.array([[0, 0, 0], [1, 0, 0], [0.5, np.sqrt(3) / 2, 0]]), np.array([[0, 1, 2]]))
REGULAR_TET = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], float)


def torus(n_major: int = 24, n_minor: int = 12, major: float = 3.0, minor: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    u, v = np.meshgrid(np.arange(n_major) * 2 * np.pi / n_major, np.arange(n_minor) * 2 * np.pi / n_minor,
                       indexing="ij")
    vertices = np.stack([(major + minor * np.cos(v)) * np.cos(u), (major + minor * np.cos(v)) * np.sin(u),
                         minor * np.sin(v)], axis=-1).reshape(-1, 3)
    i, j = np.meshgrid(np.arange(n_major), np.arange(n_minor), indexing="ij")
    a, b = i * n_minor + j, (i + 1) % n_major * n_minor + j
    c, d = (i + 1) % n_major * n_minor + (j + 1) % n_minor, i * n_minor + (j + 1) % n_minor
    triangles = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    return vertices, triangles


def sphere(radius: float, n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    from scipy.spatial import ConvexHull

    k = np.arange(n) + 0.5
    polar, azimuth = np.arccos(1 - 2 * k / n), np.pi * (1 + 5**0.5) * k
    points = np.stack([np.cos(azimuth) * np.sin(polar), np.sin(azimuth) * np.sin(polar), np.cos(polar)], axis=1)
    return points * radius, ConvexHull(points).simplices


def test_equilateral_triangle_angles_aspect_and_edges() -> None:
    vertices, triangles = EQUILATERAL
    np.testing.assert_allclose(q.triangle_angles(vertices, triangles), [[60, 60, 60]])
    np.testing.assert_allclose(q.triangle_aspect_ratios(vertices, triangles), [1.0])
    np.testing.assert_allclose(q.edge_lengths(vertices, triangles), [[1, 1, 1]])
    assert q.surface_area(vertices, triangles) == pytest.approx(np.sqrt(3) / 4)


def test_right_isosceles_triangle() -> None:
    vertices = np.array([[0, 0, 0], [2, 0, 0], [0, 2, 0]], float)
    np.testing.assert_allclose(q.triangle_angles(vertices, np.array([[0, 1, 2]])), [[90, 45, 45]])
    np.testing.assert_allclose(q.edge_lengths(vertices, np.array([[0, 1, 2]])), [[2, np.sqrt(8), 2]])
    # R = hypotenuse / 2 = sqrt(2), r = (2 + 2 - 2 sqrt 2) / 2 = 2 - sqrt 2
    expected = np.sqrt(2) / (2 * (2 - np.sqrt(2)))
    np.testing.assert_allclose(q.triangle_aspect_ratios(vertices, np.array([[0, 1, 2]])), [expected])


def test_degenerate_triangle_has_infinite_aspect_ratio() -> None:
    vertices = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0]], float)
    assert np.isinf(q.triangle_aspect_ratios(vertices, np.array([[0, 1, 2]]))[0])


def test_regular_tetrahedron() -> None:
    tets = np.array([[0, 1, 2, 3]])
    np.testing.assert_allclose(q.dihedral_angles(REGULAR_TET, tets), np.full((1, 6), np.degrees(np.arccos(1 / 3))))
    np.testing.assert_allclose(q.radius_ratios(REGULAR_TET, tets), [1.0])
    edge = np.sqrt(8)
    np.testing.assert_allclose(q.tet_volumes(REGULAR_TET, tets), [edge**3 / (6 * np.sqrt(2))])


def test_corner_tetrahedron_dihedral_angles_and_radius_ratio() -> None:
    points = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float)
    tets = np.array([[0, 1, 2, 3]])
    # right angles along the three axes, arccos(1/sqrt 3) between a coordinate face and the slanted face
    slanted = np.degrees(np.arccos(1 / np.sqrt(3)))
    np.testing.assert_allclose(q.dihedral_angles(points, tets), [[90, 90, 90, slanted, slanted, slanted]])
    # r = 3V / area = 0.5 / (1.5 + sqrt(3)/2); R = sqrt(3)/2
    expected = 3 * 0.5 / (1.5 + np.sqrt(3) / 2) / (np.sqrt(3) / 2)
    np.testing.assert_allclose(q.radius_ratios(points, tets), [expected])


def test_two_tetrahedra_sharing_a_face_volumes() -> None:
    points = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, -2]], float)
    tets = np.array([[0, 1, 2, 3], [0, 2, 1, 4]])
    np.testing.assert_allclose(q.tet_volumes(points, tets), [1 / 6, 2 / 6])
    np.testing.assert_allclose(q.tet_volumes(points, tets, signed=True), [1 / 6, 2 / 6])
    np.testing.assert_allclose(q.tet_volumes(points, tets[:, [1, 0, 2, 3]], signed=True), [-1 / 6, -2 / 6])


def test_flat_tetrahedron_radius_ratio_zero() -> None:
    points = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], float)
    assert q.radius_ratios(points, np.array([[0, 1, 2, 3]]))[0] == 0.0


def test_cube_surface_area_volume_topology() -> None:
    cube = cube_surface(3.0)
    assert q.surface_area(cube.vertices, cube.triangles) == pytest.approx(54.0)
    assert q.enclosed_volume(cube.vertices, cube.triangles) == pytest.approx(27.0)
    assert q.enclosed_volume(cube.vertices, cube.triangles[:, ::-1]) == pytest.approx(-27.0)
    assert q.euler_characteristic(cube.vertices, cube.triangles) == 2
    assert q.genus(cube.vertices, cube.triangles) == 0
    report = q.manifold_report(cube.triangles)
    assert (report["edges"], report["boundary_edges"], report["non_manifold_edges"],
            report["non_manifold_vertices"]) == (18, 0, 0, 0)
    assert report["closed"] and report["manifold"] and report["oriented"]


def test_torus_has_genus_one() -> None:
    vertices, triangles = torus()
    assert q.euler_characteristic(vertices, triangles) == 0
    assert q.genus(vertices, triangles) == 1
    assert q.manifold_report(triangles)["manifold"]
    # outward-facing, and below the smooth torus's 2 pi² R r² (a 12-gon holds 3/pi of its circle's area)
    volume = q.enclosed_volume(vertices, triangles)
    assert 0.94 * 2 * np.pi**2 * 3.0 < volume < 2 * np.pi**2 * 3.0


def test_genus_sums_components_and_counts_boundary_loops() -> None:
    vertices, triangles = torus()
    cube = cube_surface(1.0)
    both_v = np.concatenate([vertices, cube.vertices + 10])
    both_t = np.concatenate([triangles, cube.triangles + len(vertices)])
    assert q.genus(both_v, both_t) == 1
    assert q.euler_characteristic(both_v, both_t) == 2
    # a cube with one face (two triangles) removed is a disc: one boundary loop, genus 0, chi 1
    assert q.genus(cube.vertices, cube.triangles[2:]) == 0
    assert q.euler_characteristic(cube.vertices, cube.triangles[2:]) == 1


def test_open_mesh_has_three_boundary_edges() -> None:
    cube = cube_surface(1.0)
    report = q.manifold_report(cube.triangles[1:])
    assert report["boundary_edges"] == 3
    assert (report["non_manifold_edges"], report["non_manifold_vertices"]) == (0, 0)
    assert not report["closed"] and report["manifold"]
    assert sorted(map(tuple, report["boundary_edge_list"])) == [(0, 1), (0, 2), (1, 2)]


def test_fin_triangle_makes_one_non_manifold_edge() -> None:
    cube = cube_surface(1.0)
    vertices = np.concatenate([cube.vertices, [[0.5, -1.0, -1.0]]])
    triangles = np.concatenate([cube.triangles, [[0, 1, 8]]])  # fin on the cube edge (0, 1)
    report = q.manifold_report(triangles)
    assert report["non_manifold_edges"] == 1
    assert report["non_manifold_edge_list"].tolist() == [[0, 1]]
    assert report["boundary_edges"] == 2
    assert report["non_manifold_vertices"] == 2  # both ends of the fin's edge
    assert not report["manifold"]
    assert len(vertices) == 9


def test_bowtie_vertex_is_non_manifold_and_flipped_triangle_is_reported() -> None:
    bowtie = np.array([[0, 1, 2], [0, 3, 4]])
    report = q.manifold_report(bowtie)
    assert report["non_manifold_vertex_list"].tolist() == [0]
    assert report["non_manifold_edges"] == 0
    cube = cube_surface(1.0)
    flipped = cube.triangles.copy()
    flipped[0] = flipped[0, ::-1]
    assert q.manifold_report(flipped)["inconsistently_oriented_edges"] == 3
    assert not q.manifold_report(flipped)["oriented"]


def test_hausdorff_between_concentric_spheres() -> None:
    inner, outer = sphere(1.0), sphere(1.1, 2500)
    assert q.hausdorff_distance(*inner, *outer, samples=5000) == pytest.approx(0.1, rel=0.1)
    assert q.hausdorff_distance(*inner, *inner, samples=5000) == pytest.approx(0.0, abs=1e-12)


def test_hausdorff_is_point_to_surface_not_point_to_vertex() -> None:
    # a big square against the same square lifted by 0.25: vertices are far apart relative to 0.25
    square = np.array([[0, 0, 0], [10, 0, 0], [10, 10, 0], [0, 10, 0]], float)
    triangles = np.array([[0, 1, 2], [0, 2, 3]])
    lifted = square + np.array([0, 0, 0.25])
    assert q.hausdorff_distance(square, triangles, lifted, triangles) == pytest.approx(0.25)
    # a small triangle floating above the middle of a large one is 2 away from it, but ~7 from its corners
    small = np.array([[5, 5, 2], [5.1, 5, 2], [5, 5.1, 2]], float)
    assert q.hausdorff_distance(small, np.array([[0, 1, 2]]), square, triangles, samples=100) > 2
    distances = point_to_surface(small, square, triangles)
    np.testing.assert_allclose(distances, [2, 2, 2])


def test_closest_point_regions() -> None:
    a, b, c = np.array([[0.0, 0, 0]]), np.array([[1.0, 0, 0]]), np.array([[0.0, 1, 0]])
    cases = {(-1, -1, 0): (0, 0, 0), (2, -1, 0): (1, 0, 0), (-1, 2, 0): (0, 1, 0), (0.5, -1, 0): (0.5, 0, 0),
             (-1, 0.5, 0): (0, 0.5, 0), (1, 1, 0): (0.5, 0.5, 0), (0.2, 0.2, 3): (0.2, 0.2, 0)}
    for point, expected in cases.items():
        closest = closest_points_on_triangles(np.array([point], float), a, b, c)
        np.testing.assert_allclose(closest, [expected], atol=1e-12)


def test_surface_quality_table_per_marker() -> None:
    cube = cube_surface(2.0)
    mesh = cs.SurfaceMesh(cube.vertices, cube.triangles, [1] * 6 + [2] * 6, {1: "bottom"})
    table = q.surface_quality(mesh)
    rows = table.rows()
    assert [r["region"] for r in rows] == ["bottom", "marker_2", "all"]
    assert [r["marker"] for r in rows] == [1, 2, -1]
    whole = rows[-1]
    assert (whole["triangles"], whole["vertices"]) == (12, 8)
    assert whole["area"] == pytest.approx(24.0)
    assert whole["volume"] == pytest.approx(8.0)
    assert (whole["euler_characteristic"], whole["genus"]) == (2, 0)
    assert (whole["min_angle"], whole["max_angle"]) == pytest.approx((45.0, 90.0))
    assert (whole["share_below_15deg"], whole["share_above_150deg"]) == (0.0, 0.0)
    assert whole["min_edge"] == pytest.approx(2.0)
    assert whole["max_edge"] == pytest.approx(2 * np.sqrt(2))
    assert whole["mean_edge"] == pytest.approx((12 * 2 + 6 * 2 * np.sqrt(2)) / 18)
    assert whole["mean_aspect_ratio"] == pytest.approx(np.sqrt(2) / (2 * (2 - np.sqrt(2))))
    assert (whole["non_manifold_edges"], whole["non_manifold_vertices"], whole["boundary_edges"]) == (0, 0, 0)
    assert rows[0]["area"] == pytest.approx(12.0)
    assert np.isnan(rows[0]["volume"])  # half a cube encloses nothing
    assert rows[0]["boundary_edges"] > 0
    assert table.units["area"] == "nm^2" and table.units["volume"] == "nm^3" and table.units["min_angle"] == "deg"


def test_volume_quality_table_per_region() -> None:
    mesh = cube_mesh(2, 100.0, regions_split=True)
    rows = q.volume_quality(mesh).rows()
    assert [r["region"] for r in rows] == ["left", "right", "all"]
    assert [r["tetrahedra"] for r in rows] == [24, 24, 48]
    assert rows[-1]["total_volume"] == pytest.approx(1e6)
    assert rows[0]["total_volume"] == pytest.approx(5e5)
    assert rows[-1]["min_volume"] == pytest.approx(50.0**3 / 6)
    # Kuhn tetrahedra have dihedral angles of 45°, 60° and 90°
    assert (rows[-1]["min_dihedral"], rows[-1]["max_dihedral"]) == pytest.approx((45.0, 90.0))
    assert rows[-1]["share_dihedrals_below_10deg"] == 0.0
    assert 0 < rows[-1]["min_radius_ratio"] < 1


def test_quality_method_takes_exactly_one_mesh() -> None:
    method = q.Quality()
    assert (method.name, method.stage) == ("mesh.quality", "mesh")
    table = method(surface=cube_surface(1.0))
    assert table.rows()[-1]["genus"] == 0
    assert method(mesh=cube_mesh(1, 10.0)).rows()[-1]["tetrahedra"] == 6
    with pytest.raises(cs.InputError, match="exactly one input.*neither"):
        method()
    with pytest.raises(cs.InputError, match="exactly one input.*both"):
        method(surface=cube_surface(1.0), mesh=cube_mesh(1, 10.0))


def test_quality_figure_surface_and_tet_mesh() -> None:
    fig = q.quality_figure(cube_surface(1.0))
    (ax,) = fig.axes
    assert len(ax.patches) == 180
    assert len(ax.lines) == 3  # density curve and the lines at 15° and 150°
    assert sorted(line.get_xdata()[0] for line in ax.lines[1:]) == [15, 150]
    heights = [p.get_height() for p in ax.patches]
    assert heights[45] == 24 and heights[90] == 12 and sum(heights) == 36
    fig = q.quality_figure(cube_mesh(2, 100.0))
    triangles_ax, dihedral_ax = fig.axes
    assert (len(triangles_ax.patches), len(dihedral_ax.patches)) == (180, 180)
    assert (len(triangles_ax.lines), len(dihedral_ax.lines)) == (3, 2)
    assert sum(p.get_height() for p in dihedral_ax.patches) == 48 * 6
    with pytest.raises(cs.InputError, match="SurfaceMesh or a TetMesh"):
        q.quality_figure(cs.Table({"a": np.zeros(2)}))


def test_density_curve_integrates_to_count() -> None:
    rng = np.random.default_rng(1)
    vertices = rng.normal(size=(300, 3))
    triangles = rng.integers(0, 300, size=(400, 3))
    triangles = triangles[(triangles[:, 0] != triangles[:, 1]) & (triangles[:, 1] != triangles[:, 2])
                          & (triangles[:, 0] != triangles[:, 2])]
    fig = q.quality_figure(cs.SurfaceMesh(vertices, triangles))
    curve = fig.axes[0].lines[0]
    x, y = curve.get_xdata(), curve.get_ydata()
    assert np.trapezoid(y, x) == pytest.approx(3 * len(triangles), rel=0.02)
