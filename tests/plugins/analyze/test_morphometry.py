"""analyze.morphometry on voxelized spheres of known volume, area, curvature and distances."""

from __future__ import annotations

import math

import numpy as np
import pytest

import cellscape as cs
from cellscape_plugins._trimesh import enclosed_volume, mean_curvature, vertex_areas

VOXEL_NM = 8.0
N = 100
CELL, MITO, ER = ((50, 50, 50), 45), ((50, 50, 30), 10), ((50, 50, 70), 12)  # (z, y, x) centre and radius, voxels


def ball(centre: tuple[int, int, int], radius: float) -> np.ndarray:
    z, y, x = np.indices((N, N, N))
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius**2


@pytest.fixture(scope="module")
def scene() -> dict[str, cs.Table]:
    data = np.zeros((N, N, N), np.uint8)
    data[ball(*CELL)] = 1
    data[ball(*MITO)] = 2
    data[ball(*ER)] = 3
    labels = cs.Labels(data, {1: "cytosol", 2: "mito", 3: "er"}, VOXEL_NM)
    return cs.method("analyze.morphometry", membrane="cytosol")(labels)


def test_volume_area_shape_and_curvature_of_spheres(scene: dict[str, cs.Table]) -> None:
    rows = {r["object"]: r for r in scene["table"].rows()}
    for name, (centre, radius) in (("mito", MITO), ("er", ER)):
        r_nm = radius * VOXEL_NM
        row = rows[name]
        assert row["voxels"] == int(ball(centre, radius).sum())
        assert row["volume"] == pytest.approx(row["voxels"] * VOXEL_NM**3 / 1e9, rel=1e-12)  # exact for voxels
        assert row["volume"] == pytest.approx(4 / 3 * math.pi * r_nm**3 / 1e9, rel=0.015)  # the sphere's
        assert row["area"] == pytest.approx(4 * math.pi * r_nm**2 / 1e6, rel=0.03)
        assert row["equivalent_radius"] == pytest.approx(r_nm, rel=0.01)
        assert row["sphericity"] == pytest.approx(1.0, abs=0.03)
        assert row["mean_curvature"] == pytest.approx(1000.0 / r_nm, rel=0.03)  # 1/µm
        assert (row["centroid_z"], row["centroid_y"], row["centroid_x"]) == pytest.approx(
            tuple(c * VOXEL_NM for c in centre))
    # the cytosol's surface is the cell's plus the two cavities its organelles leave
    cavities = 4 * math.pi * (MITO[1] ** 2 + ER[1] ** 2) * VOXEL_NM**2 / 1e6
    assert rows["cytosol"]["area"] == pytest.approx(4 * math.pi * (CELL[1] * VOXEL_NM) ** 2 / 1e6 + cavities, rel=0.03)
    assert math.isnan(rows["cytosol"]["membrane_distance"])


def test_distances_between_organelles_and_to_the_membrane(scene: dict[str, cs.Table]) -> None:
    rows = {r["object"]: r for r in scene["table"].rows()}
    for name, (centre, radius) in (("mito", MITO), ("er", ER)):
        gap = (CELL[1] - math.dist(centre, CELL[0]) - radius) * VOXEL_NM
        assert rows[name]["membrane_distance"] == pytest.approx(gap, abs=0.5 * VOXEL_NM)
    pairs = {(r["object_a"], r["object_b"]): r for r in scene["distances"].rows()}
    between = pairs[("mito", "er")]
    assert between["centroid_distance"] == pytest.approx(math.dist(MITO[0], ER[0]) * VOXEL_NM)
    expected = (math.dist(MITO[0], ER[0]) - MITO[1] - ER[1]) * VOXEL_NM
    assert between["surface_distance"] == pytest.approx(expected, abs=VOXEL_NM)
    assert pairs[("cytosol", "mito")]["surface_distance"] < 0.25 * VOXEL_NM  # they touch


def test_instances_split_a_class_into_its_components() -> None:
    data = np.zeros((N, N, N), np.uint8)
    data[ball((50, 50, 25), 8)] = 1
    data[ball((50, 50, 75), 12)] = 1
    out = cs.method("analyze.morphometry", instances=True, distances=False)(cs.Labels(data, {1: "vesicle"}, 2.0))
    rows = {r["object"]: r for r in out["table"].rows()}
    assert set(rows) == {"vesicle_1", "vesicle_2"}
    radii = sorted(r["equivalent_radius"] for r in rows.values())  # components are numbered in raster order
    assert radii == [pytest.approx(16.0, rel=0.01), pytest.approx(24.0, rel=0.01)]
    assert out["distances"].n_rows == 0


def test_a_cube_is_less_spherical_and_a_tiny_object_is_measured_unsmoothed() -> None:
    data = np.zeros((40, 40, 40), np.uint8)
    data[5:35, 5:35, 5:35] = 1
    data[1:3, 1:3, 1:3] = 2  # 2 voxels across: smoothing by 1 voxel leaves nothing above ½
    rows = {r["object"]: r for r in cs.method("analyze.morphometry")(cs.Labels(data, {1: "cube", 2: "tiny"}, 5.0))[
        "table"].rows()}
    # a cube's sphericity is (π/6)^⅓ = 0.806; smoothing by 1 voxel rounds its 30-voxel edges a little
    assert 0.806 < rows["cube"]["sphericity"] < 0.86 and rows["cube"]["smoothed"] == 1
    assert 0.92 * 6 * 150.0**2 / 1e6 < rows["cube"]["area"] < 6 * 150.0**2 / 1e6  # rounding only cuts edges off
    assert rows["tiny"]["smoothed"] == 0 and rows["tiny"]["voxels"] == 8
    assert 0 < rows["tiny"]["sphericity"] <= 1


def test_mean_curvature_of_a_fine_sphere_mesh() -> None:
    from skimage import measure

    z, y, x = np.mgrid[-1.2:1.2:81j, -1.2:1.2:81j, -1.2:1.2:81j]
    verts, faces, _, _ = measure.marching_cubes(np.sqrt(x**2 + y**2 + z**2), 1.0, spacing=(0.03,) * 3)
    verts = verts[:, ::-1]
    if enclosed_volume(verts, faces) < 0:
        faces = faces[:, ::-1]
    curvature, area = mean_curvature(verts, faces), vertex_areas(verts, faces)
    assert area.sum() == pytest.approx(4 * math.pi, rel=0.01)
    assert np.dot(curvature, area) / area.sum() == pytest.approx(1.0, rel=0.01)


def icosphere(radius: float, centre: tuple[float, float, float], levels: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """An outward-oriented sphere mesh: an icosahedron subdivided ``levels`` times, vertices pushed to the sphere."""
    phi = (1 + 5**0.5) / 2
    vertices = [np.array(v, float) for v in [(-1, phi, 0), (1, phi, 0), (-1, -phi, 0), (1, -phi, 0), (0, -1, phi),
                                             (0, 1, phi), (0, -1, -phi), (0, 1, -phi), (phi, 0, -1), (phi, 0, 1),
                                             (-phi, 0, -1), (-phi, 0, 1)]]
    faces = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4), (11, 10, 2), (10, 7, 6),
             (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9), (4, 9, 5), (2, 4, 11), (6, 2, 10),
             (8, 6, 7), (9, 8, 1)]
    for _ in range(levels):
        middle: dict[tuple[int, int], int] = {}

        def midpoint(i: int, j: int, middle: dict[tuple[int, int], int] = middle) -> int:
            key = (min(i, j), max(i, j))
            if key not in middle:
                vertices.append((vertices[i] + vertices[j]) / 2)
                middle[key] = len(vertices) - 1
            return middle[key]

        faces = [f for a, b, c in faces for f in ((a, midpoint(a, b), midpoint(c, a)), (b, midpoint(b, c), midpoint(a, b)),
                                                  (c, midpoint(c, a), midpoint(b, c)),
                                                  (midpoint(a, b), midpoint(b, c), midpoint(c, a)))]
    points = np.array(vertices)
    points = points / np.linalg.norm(points, axis=1, keepdims=True) * radius + np.array(centre)
    return points, np.array(faces)


def test_morphometry_of_a_surface_mesh_of_spheres() -> None:
    spheres = {1: (400.0, (0.0, 0.0, 0.0)), 2: (100.0, (150.0, 0.0, 0.0)), 3: (80.0, (-200.0, 0.0, 0.0))}
    vertices, triangles, markers = [], [], []
    for marker, (radius, centre) in spheres.items():
        v, t = icosphere(radius, centre)
        triangles.append(t + sum(len(x) for x in vertices))
        vertices.append(v)
        markers.append(np.full(len(t), marker))
    surface = cs.SurfaceMesh(np.concatenate(vertices), np.concatenate(triangles), np.concatenate(markers),
                             {1: "membrane", 2: "vesicle", 3: "granule"})
    out = cs.method("analyze.morphometry", membrane="membrane")(surface=surface)
    rows = {r["label"]: r for r in out["table"].rows()}
    for marker, (radius, centre) in spheres.items():
        row = rows[marker]
        assert row["volume"] == pytest.approx(4 / 3 * math.pi * radius**3 / 1e9, rel=0.01)
        assert row["area"] == pytest.approx(4 * math.pi * radius**2 / 1e6, rel=0.01)
        assert row["mean_curvature"] == pytest.approx(1000.0 / radius, rel=0.01)
        assert row["sphericity"] == pytest.approx(1.0, abs=0.01)
        assert (row["centroid_x"], row["centroid_y"], row["centroid_z"]) == pytest.approx(centre, abs=1e-6)
        assert row["triangles"] == 20 * 4**4
    assert rows[2]["membrane_distance"] == pytest.approx(400 - 150 - 100, abs=2.0)
    assert rows[3]["membrane_distance"] == pytest.approx(400 - 200 - 80, abs=2.0)
    pairs = {(r["object_a"], r["object_b"]): r for r in out["distances"].rows()}
    assert pairs[("vesicle", "granule")]["surface_distance"] == pytest.approx(350 - 100 - 80, abs=2.0)
    assert pairs[("vesicle", "granule")]["centroid_distance"] == pytest.approx(350.0)


def test_morphometry_bad_inputs_have_clear_messages() -> None:
    data = np.zeros((10, 10, 10), np.uint8)
    data[3:6, 3:6, 3:6] = 2
    labels = cs.Labels(data, {2: "mito"})
    with pytest.raises(cs.InputError, match=r"membrane 'cell' is not a class of the labels; label values: 2 \(mito\)"):
        cs.method("analyze.morphometry", membrane="cell")(labels)
    with pytest.raises(cs.InputError, match="the labels hold no object of at least 100 voxel"):
        cs.method("analyze.morphometry", min_voxels=100)(labels)
    with pytest.raises(cs.InputError, match="needs exactly one input: 'labels' or 'surface'.*got neither"):
        cs.method("analyze.morphometry")()
    points, faces = icosphere(1.0, (0, 0, 0), levels=1)
    with pytest.raises(cs.InputError, match=r"membrane 'cell' is not a marker of the surface; markers: 1 \(ball\)"):
        cs.method("analyze.morphometry", membrane="cell")(surface=cs.SurfaceMesh(points, faces, None, {1: "ball"}))
