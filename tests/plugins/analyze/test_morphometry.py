"""analyze.morphometry on voxelized spheres of known volume, area, curvature and distances."""

from __future__ import annotations

import math

import numpy as np
import pytest

import cellscape as cs
from cellscape_plugins.analyze.morphometry import mean_curvature

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


def test_mean_curvature_of_a_fine_sphere_mesh() -> None:
    from skimage import measure

    z, y, x = np.mgrid[-1.2:1.2:81j, -1.2:1.2:81j, -1.2:1.2:81j]
    verts, faces, _, _ = measure.marching_cubes(np.sqrt(x**2 + y**2 + z**2), 1.0, spacing=(0.03,) * 3)
    verts = verts[:, ::-1]
    from cellscape_plugins.analyze.morphometry import _enclosed

    if _enclosed(verts, faces) < 0:
        faces = faces[:, ::-1]
    curvature, area = mean_curvature(verts, faces)
    assert area.sum() == pytest.approx(4 * math.pi, rel=0.01)
    assert np.dot(curvature, area) / area.sum() == pytest.approx(1.0, rel=0.01)


def test_morphometry_bad_inputs_have_clear_messages() -> None:
    data = np.zeros((10, 10, 10), np.uint8)
    data[3:6, 3:6, 3:6] = 2
    labels = cs.Labels(data, {2: "mito"})
    with pytest.raises(cs.InputError, match=r"membrane 'cell' is not a class of the labels; label values: 2 \(mito\)"):
        cs.method("analyze.morphometry", membrane="cell")(labels)
    with pytest.raises(cs.InputError, match="the labels hold no object of at least 100 voxel"):
        cs.method("analyze.morphometry", min_voxels=100)(labels)
