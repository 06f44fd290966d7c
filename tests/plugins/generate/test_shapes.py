"""Shape data: shapes from labels and meshes, exact moments, normalization, descriptors, surface distance."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special

import cellscape as cs
from cellscape_plugins._trimesh import closest_points_on_triangles
from cellscape_plugins.generate import _descriptors, _shapes
from cellscape_plugins.generate._harmonics import icosphere


def star_mesh(radius, subdivisions: int = 5, center=(0.0, 0.0, 0.0), rotation=None):
    """A closed mesh of a star-shaped solid: icosphere directions scaled by ``radius(directions)`` (nm)."""
    directions, triangles = icosphere(subdivisions)
    vertices = directions * radius(directions)[:, None]
    if rotation is not None:
        vertices = vertices @ rotation.T
    return vertices + np.asarray(center), np.array(triangles)


def ellipsoid(a: float, b: float, c: float):
    return lambda d: 1.0 / np.sqrt((d[:, 0] / a) ** 2 + (d[:, 1] / b) ** 2 + (d[:, 2] / c) ** 2)


def ellipsoid_area(a: float, b: float, c: float) -> float:
    """Exact surface area of an ellipsoid with a ≥ b ≥ c (incomplete elliptic integrals)."""
    phi = math.acos(c / a)
    m = a**2 * (b**2 - c**2) / (b**2 * (a**2 - c**2))
    return 2 * math.pi * c**2 + 2 * math.pi * a * b / math.sin(phi) * (
        special.ellipeinc(phi, m) * math.sin(phi) ** 2 + special.ellipkinc(phi, m) * math.cos(phi) ** 2)


def random_rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((3, 3)))
    q *= np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def ball_labels(n: int = 40, radius: float = 12.0, value: int = 1, voxel: float = 5.0) -> cs.Labels:
    z, y, x = np.mgrid[:n, :n, :n] - (n - 1) / 2 + 0.23
    return cs.Labels(((x**2 + y**2 + z**2) <= radius**2).astype(np.uint8) * value, {value: "ball"}, voxel)


# ------------------------------------------------------------------------------------------------ moments


def test_moments_of_a_box_are_exact() -> None:
    corners = np.array([[x + 10, y + 20, z + 30] for x in (0, 4) for y in (0, 2) for z in (0, 1)], float)
    from scipy.spatial import ConvexHull

    triangles = ConvexHull(corners).simplices.astype(np.int64)
    a, b, c = (corners[triangles[:, i]] for i in range(3))
    inward = np.einsum("ij,ij->i", np.cross(b - a, c - a), a - corners.mean(axis=0)) < 0
    triangles[inward] = triangles[inward][:, ::-1]  # the hull's triangles come in no particular winding
    shape = _shapes.outward_shape(1, "box", corners, triangles)
    volume, centroid, covariance = shape.moments
    assert volume == pytest.approx(8.0, rel=1e-12)
    np.testing.assert_allclose(centroid, [12, 21, 30.5], atol=1e-12)
    np.testing.assert_allclose(covariance, np.diag([16, 4, 1]) / 12.0, atol=1e-12)


def test_ellipsoid_descriptors_match_the_analytic_values() -> None:
    a, b, c = 300.0, 200.0, 120.0
    vertices, triangles = star_mesh(ellipsoid(a, b, c), 6, center=(5e3, -2e3, 1e3), rotation=random_rotation(1))
    table = _descriptors.shape_descriptors([_shapes.outward_shape(7, "ellipsoid", vertices, triangles)])
    row = table.rows()[0]
    volume, area = 4 / 3 * math.pi * a * b * c, ellipsoid_area(a, b, c)
    assert row["label"] == 7 and row["euler_characteristic"] == 2
    assert row["volume_nm3"] == pytest.approx(volume, rel=1e-3)
    assert row["area_nm2"] == pytest.approx(area, rel=1e-3)
    assert row["sphericity"] == pytest.approx(math.pi ** (1 / 3) * (6 * volume) ** (2 / 3) / area, rel=2e-3)
    for key, semi in (("semi_axis_1_nm", a), ("semi_axis_2_nm", b), ("semi_axis_3_nm", c)):
        assert row[key] == pytest.approx(semi, rel=2e-3)
    assert row["concave_area_fraction"] == 0.0
    assert table.units["volume_nm3"] == "nm^3" and table.units["mean_curvature_mean_per_nm"] == "1/nm"


def test_curvature_of_voxel_shapes_sphere_and_dumbbell() -> None:
    # a voxelized sphere of radius 12 voxels × 5 nm: H = 1/60 nm⁻¹, convex everywhere
    sphere = _shapes.shapes_from_labels(ball_labels(), who="test")[0]
    row = _descriptors.shape_descriptors([sphere]).rows()[0]
    assert row["mean_curvature_mean_per_nm"] == pytest.approx(1 / 60, rel=0.05)
    assert row["concave_area_fraction"] < 0.02
    assert row["mean_curvature_std_per_nm"] < 0.25 / 60
    # a dumbbell (two overlapping balls) has a concave neck
    n = 56
    z, y, x = np.mgrid[:n, :n, :n] - (n - 1) / 2 + 0.31
    dumbbell = ((x - 9) ** 2 + y**2 + z**2 <= 144) | ((x + 9) ** 2 + y**2 + z**2 <= 144)
    shape = _shapes.shapes_from_labels(cs.Labels(dumbbell.astype(np.uint8), {}, 5.0), who="test")[0]
    assert _descriptors.shape_descriptors([shape]).rows()[0]["concave_area_fraction"] > 0.04


# ---------------------------------------------------------------------------------------------- normalization


def test_normalization_centres_and_aligns_principal_axes() -> None:
    rotation = random_rotation(4)
    # an egg: an ellipsoid fatter on its body +x side, so its long axis has a definite direction
    egg = lambda d: ellipsoid(300, 180, 110)(d) * (1 + 0.15 * d[:, 0])
    vertices, triangles = star_mesh(egg, 5, center=(1e3, 2e3, -5e2), rotation=rotation)
    shape = _shapes.outward_shape(1, "egg", vertices, triangles)
    norm = _shapes.normalization(shape, align=True)
    assert np.linalg.det(norm.rotation) == pytest.approx(1.0, abs=1e-12)
    moved = _shapes.outward_shape(1, "egg", norm.apply(vertices), triangles)
    _, centroid, covariance = moved.moments
    np.testing.assert_allclose(centroid, 0.0, atol=1e-6)
    assert np.abs(covariance - np.diag(np.diag(covariance))).max() < 1e-6 * covariance.max()
    assert covariance[0, 0] > covariance[1, 1] > covariance[2, 2]
    # the pointed end (the longer tail: positive third moment) lies at +x whatever the input orientation;
    # the egg's fat end was along its body x axis, rotation[:, 0]
    assert norm.rotation[0] @ rotation[:, 0] < -0.999
    np.testing.assert_allclose(norm.invert(norm.apply(vertices)), vertices, atol=1e-9)
    scaled = _shapes.normalization(shape, align=False, scale="volume")
    assert scaled.scale == pytest.approx((3 * shape.moments[0] / (4 * math.pi)) ** (1 / 3), rel=1e-12)
    np.testing.assert_array_equal(scaled.rotation, np.eye(3))


# ------------------------------------------------------------------------------------------------ sources


def test_shapes_from_labels_are_placed_in_nm() -> None:
    data = np.zeros((30, 30, 30), np.uint8)
    data[5:15, 8:20, 10:16] = 3  # a box of 10 × 12 × 6 voxels, centre at voxel (z, y, x) = (9.5, 13.5, 12.5)
    labels = cs.Labels(data, {3: "box"}, (2.0, 3.0, 4.0), (100.0, 200.0, 300.0))
    (shape,) = _shapes.shapes_from_labels(labels, sigma_voxels=0.0, who="test")
    assert shape.label == 3 and shape.name == "label 3 (box)"
    volume, centroid, _ = shape.moments
    expected = np.array([300 + 12.5 * 4, 200 + 13.5 * 3, 100 + 9.5 * 2])  # (x, y, z) nm
    np.testing.assert_allclose(centroid, expected, atol=0.05)
    # the unsmoothed contour cuts the corner voxels: a little less than the 720 voxels' volume
    assert 0.93 * 720 * 24 < volume < 720 * 24


def test_enclosed_holes_are_filled() -> None:
    n = 40
    z, y, x = np.mgrid[:n, :n, :n] - (n - 1) / 2
    r = np.sqrt(x**2 + y**2 + z**2)
    shell = ((r <= 14) & (r > 8)).astype(np.uint8)
    (shape,) = _shapes.shapes_from_labels(cs.Labels(shell, {}, 1.0), who="test")
    assert shape.moments[0] == pytest.approx(4 / 3 * math.pi * 14**3, rel=0.03)
    assert len(shape.vertices) - len(shape.triangles) // 2 == 2  # one closed surface, no inner one


def test_object_touching_the_border_is_an_error_naming_it() -> None:
    data = np.asarray(ball_labels(value=1).data).copy()
    data[0:4, 0:4, 0:4] = 2
    labels = cs.Labels(data, {1: "ball", 2: "corner"}, 5.0)
    with pytest.raises(cs.InputError, match=r"label 2 \(corner\) touch.*border.*on_border: skip"):
        _shapes.shapes_from_labels(labels, who="test")
    with pytest.warns(UserWarning, match="label 2 .*left out"):
        kept = _shapes.shapes_from_labels(labels, on_border="skip", who="test")
    assert [s.label for s in kept] == [1]
    with pytest.warns(UserWarning, match="label 2 .*kept"):
        assert len(_shapes.shapes_from_labels(labels, on_border="keep", who="test")) == 2


def test_label_in_pieces_needs_split_components() -> None:
    data = np.zeros((30, 30, 30), np.uint8)
    for corner in (3, 12, 21):
        data[corner:corner + 5, 5:10, 5:10] = 4
    labels = cs.Labels(data, {4: "vesicle"}, 1.0)
    with pytest.raises(cs.InputError, match="label 4 .*3 separate pieces.*split_components"):
        _shapes.shapes_from_labels(labels, who="test")
    shapes = _shapes.shapes_from_labels(labels, split_components=True, who="test")
    assert [s.name for s in shapes] == [f"label 4 (vesicle), piece {i}" for i in (1, 2, 3)]
    assert all(s.moments[0] == pytest.approx(125, rel=0.15) for s in shapes)


def test_missing_or_empty_labels_are_errors() -> None:
    with pytest.raises(cs.InputError, match="empty"):
        _shapes.shapes_from_labels(cs.Labels(np.zeros((8, 8, 8), np.uint8)), who="test")
    with pytest.raises(cs.InputError, match=r"label\(s\) \[5\].*present: \[1\]"):
        _shapes.shapes_from_labels(ball_labels(), [5], who="test")


def test_shapes_from_surface_one_per_marker_and_open_surfaces_rejected() -> None:
    labels = np.asarray(ball_labels(n=48, radius=8).data).copy()
    labels[labels == 0] = 0
    z, y, x = np.mgrid[:48, :48, :48]
    labels[((x - 36) ** 2 + (y - 36) ** 2 + (z - 36) ** 2) <= 36] = 2
    surface = cs.method("mesh.marching_cubes")(cs.Labels(labels, {1: "a", 2: "b"}, 2.0))
    shapes = _shapes.shapes_from_surface(surface, who="test")
    assert [(s.label, s.name) for s in shapes] == [(1, "marker 1 (a)"), (2, "marker 2 (b)")]
    assert shapes[0].moments[0] > 0 and shapes[1].moments[0] > 0
    vertices, triangles = icosphere(2)
    with pytest.raises(cs.InputError, match=r"marker 1 is not a closed surface \(3 boundary edge"):
        _shapes.shapes_from_surface(cs.SurfaceMesh(vertices, triangles[1:]), who="test")
    flipped = np.array(triangles)
    flipped[0] = flipped[0, ::-1]
    with pytest.raises(cs.InputError, match="inconsistently oriented"):
        _shapes.shapes_from_surface(cs.SurfaceMesh(vertices, flipped), who="test")


def test_marker_of_two_closed_pieces_keeps_the_larger_with_a_warning() -> None:
    big_v, big_t = star_mesh(lambda d: np.full(len(d), 40.0), 3)
    small_v, small_t = star_mesh(lambda d: np.full(len(d), 20.0), 3, center=(200.0, 0.0, 0.0))
    surface = cs.SurfaceMesh(np.concatenate([small_v, big_v]), np.concatenate([small_t, big_t + len(small_v)]),
                             marker_names={1: "two vesicles"})
    # volumes 8 : 1, so the dropped piece is 1/9 of the total
    with pytest.warns(UserWarning, match=r"marker 1 \(two vesicles\) falls into 2 separate pieces.*dropping 11\.1%"):
        (shape,) = _shapes.shapes_from_surface(surface, who="test")
    assert len(shape.vertices) == len(big_v)
    assert shape.moments[0] == pytest.approx(_shapes.solid_moments(big_v, big_t)[0], rel=1e-12)
    np.testing.assert_allclose(shape.moments[1], 0.0, atol=1e-9)


# ------------------------------------------------------------------------------------------ surface distance


def test_surface_distance_of_concentric_spheres() -> None:
    inner = star_mesh(lambda d: np.full(len(d), 100.0), 5)
    outer = star_mesh(lambda d: np.full(len(d), 103.0), 4)
    hausdorff, rms = _descriptors.surface_distance(*inner, *outer)
    # faceting of the meshes (chords inside the sphere) shifts distances by < 0.1 nm
    assert hausdorff == pytest.approx(3.0, abs=0.1)
    assert rms == pytest.approx(3.0, abs=0.1)


def test_point_to_surface_is_exact_against_brute_force() -> None:
    vertices, triangles = star_mesh(ellipsoid(50, 30, 20), 2)
    points = np.random.default_rng(3).normal(scale=40, size=(200, 3))
    fast = _descriptors.point_to_surface(points, vertices, triangles)
    a, b, c = (vertices[triangles[:, i]] for i in range(3))
    # every point against every triangle
    p, k = np.repeat(points, len(a), axis=0), np.tile(np.arange(len(a)), len(points))
    brute = np.linalg.norm(p - closest_points_on_triangles(p, a[k], b[k], c[k]), axis=1).reshape(len(points), -1).min(axis=1)
    np.testing.assert_allclose(fast, brute, rtol=1e-12)
    # a point on a face, one on an edge and one at a vertex are at distance 0
    on_face = (a[0] + b[0] + c[0]) / 3
    on_edge = (a[5] + b[5]) / 2
    assert np.abs(_descriptors.point_to_surface(np.array([on_face, on_edge, a[9]]), vertices, triangles)).max() < 1e-12
