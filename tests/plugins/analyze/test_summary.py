"""analyze.summary on objects with exactly known sizes."""

from __future__ import annotations

import numpy as np
import pytest
from meshes import cube_mesh, cube_surface

import cellscape as cs
from cellscape_plugins.analyze.summary import (
    enclosed_volume,
    mean_concentration_by_region,
    region_volumes,
    surface_area,
    triangle_angles_deg,
)


def rows(table: cs.Table) -> dict[tuple[str, str], tuple[float, str]]:
    return {(r["quantity"], r["region"]): (r["value"], r["unit"]) for r in table.rows()}


def test_triangle_angles_of_a_right_triangle() -> None:
    angles = triangle_angles_deg(np.array([[0, 0, 0], [3, 0, 0], [0, 4, 0.0]]), np.array([[0, 1, 2]]))
    np.testing.assert_allclose(sorted(angles[0]), [np.degrees(np.arctan2(3, 4)), np.degrees(np.arctan2(4, 3)), 90.0])


def test_cube_surface_area_volume_and_angles() -> None:
    cube = cube_surface(1000.0)
    assert surface_area(cube.vertices, cube.triangles) == pytest.approx(6e6)
    assert enclosed_volume(cube.vertices, cube.triangles) == pytest.approx(1e9)
    table = cs.method("analyze.summary")(surface=cube)["table"]
    r = rows(table)
    assert r[("area", "cube")] == (pytest.approx(6.0), "um^2")
    assert r[("enclosed volume", "cube")] == (pytest.approx(1.0), "um^3")
    assert r[("min triangle angle", "cube")][0] == pytest.approx(45.0)
    assert r[("max triangle angle", "cube")][0] == pytest.approx(90.0)
    assert r[("share of angles < 15 deg", "cube")][0] == 0.0


def test_label_volumes_are_exact() -> None:
    data = np.zeros((10, 10, 10), np.uint8)
    data[:2] = 1
    data[5:, :5] = 4
    labels = cs.Labels(data, {1: "nucleus"}, (100.0, 50.0, 50.0))
    r = rows(cs.method("analyze.summary")(labels=labels)["table"])
    assert r[("voxels", "nucleus")][0] == 200
    assert r[("volume", "nucleus")] == (pytest.approx(200 * 100 * 50 * 50 / 1e9), "um^3")
    assert r[("voxels", "label_4")][0] == 250
    assert r[("labels", "all")][0] == 2


def test_region_volumes_and_concentrations_of_a_split_cube() -> None:
    mesh = cube_mesh(4, 1000.0, regions_split=True)
    assert region_volumes(mesh) == {1: pytest.approx(0.5e9), 2: pytest.approx(0.5e9)}
    values = np.stack([np.full(len(mesh.points), 2.0), np.full(len(mesh.points), 3.0)])
    fields = cs.Fields(mesh, [0.0, 1.5], {"atp": values})
    means = mean_concentration_by_region(fields)
    np.testing.assert_allclose(means[("atp", 1)], [2.0, 3.0])
    out = cs.method("analyze.summary")(mesh=mesh, fields=fields)
    r = rows(out["table"])
    assert r[("region volume", "left")] == (pytest.approx(0.5), "um^3")
    assert r[("atp amount at t=0", "right")][0] == pytest.approx(1.0)  # 2 µM × 0.5 µm³
    assert r[("atp mean at t=1.5 s", "left")][0] == pytest.approx(3.0)
    course = out["timecourse"]
    np.testing.assert_array_equal(course.columns["time_s"], [0.0, 1.5])
    np.testing.assert_allclose(course.columns["atp in right"], [2.0, 3.0])
    assert course.units["atp in right"] == "uM"


def test_no_fields_gives_an_empty_timecourse_and_no_input_is_an_error() -> None:
    out = cs.method("analyze.summary")(surface=cube_surface(1.0))
    assert out["timecourse"].n_rows == 0
    with pytest.raises(cs.InputError, match="needs at least one input"):
        cs.method("analyze.summary")()


def test_sparse_instance_numbers_are_counted() -> None:
    data = np.zeros((4, 4, 4), np.uint64)
    data[0] = 3_000_000_000  # instance numbers from a large volume need not be small or dense
    data[1, :2] = 7
    r = rows(cs.method("analyze.summary")(labels=cs.Labels(data, voxel_size_nm=10.0))["table"])
    assert r[("voxels", "label_3000000000")][0] == 16
    assert r[("voxels", "label_7")][0] == 8
    assert r[("volume", "label_7")][0] == pytest.approx(8 * 1000 / 1e9)
