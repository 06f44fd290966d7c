"""mesh.marching_cubes against analytic areas, volumes and topology."""

from __future__ import annotations

import numpy as np
import pytest

import cellscape as cs
from cellscape_plugins.mesh._edges import unique_edges
from cellscape_plugins.mesh.marching_cubes import signed_volume


def area(mesh: cs.SurfaceMesh, marker: int | None = None) -> float:
    t = mesh.triangles if marker is None else mesh.triangles[mesh.markers == marker]
    a, b, c = (mesh.vertices[t[:, i]] for i in range(3))
    return float(np.linalg.norm(np.cross(b - a, c - a), axis=1).sum() / 2)


def euler(mesh: cs.SurfaceMesh) -> int:
    t = mesh.triangles
    edges = np.unique(np.sort(np.concatenate([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]]), axis=1), axis=0)
    return len(np.unique(t)) - len(edges) + len(t)


def grid(n: int):
    return np.mgrid[:n, :n, :n] - (n - 1) / 2


def test_ball_area_volume_topology_orientation() -> None:
    z, y, x = grid(56)
    radius, voxel = 20.0, 10.0
    labels = cs.Labels((x**2 + y**2 + z**2 <= radius**2).astype(np.uint8), {1: "cell"}, voxel)
    mesh = cs.method("mesh.marching_cubes")(labels)
    r_nm = radius * voxel
    assert area(mesh) == pytest.approx(4 * np.pi * r_nm**2, rel=0.03)
    assert signed_volume(mesh.vertices, mesh.triangles) == pytest.approx(4 / 3 * np.pi * r_nm**3, rel=0.03)
    assert euler(mesh) == 2
    assert (unique_edges(mesh.triangles)[2] == 2).all()  # closed: every edge on two triangles
    assert mesh.marker_names == {1: "cell"}
    centre = mesh.vertices.mean(axis=0)
    np.testing.assert_allclose(centre, [275.0, 275.0, 275.0], atol=2.0)  # (n-1)/2 voxels * 10 nm, in (x, y, z)


def test_two_labels_two_markers_and_anisotropic_voxels() -> None:
    z, y, x = grid(40)
    data = np.zeros(z.shape, np.uint8)
    data[(x + 9) ** 2 + y**2 + z**2 <= 49] = 2
    data[(x - 9) ** 2 + y**2 + z**2 <= 49] = 5
    labels = cs.Labels(data, {2: "mito", 5: "vesicle"}, (40.0, 4.0, 4.0))
    mesh = cs.method("mesh.marching_cubes", sigma_voxels=0.5)(labels)
    assert set(np.unique(mesh.markers)) == {2, 5}
    assert mesh.marker_names == {2: "mito", 5: "vesicle"}
    extent = np.ptp(mesh.vertices[np.unique(mesh.triangles[mesh.markers == 2])], axis=0)
    assert extent[2] / extent[0] == pytest.approx(10.0, rel=0.2)  # z voxels are 10x longer
    only = cs.method("mesh.marching_cubes", labels=[5])(labels)
    assert set(np.unique(only.markers)) == {5}
    union = cs.method("mesh.marching_cubes", mode="union")(labels)
    assert set(np.unique(union.markers)) == {1}


def test_torus_has_genus_one() -> None:
    z, y, x = grid(60)
    big, small = 16.0, 6.0
    torus = (np.sqrt(x**2 + y**2) - big) ** 2 + z**2 <= small**2
    mesh = cs.method("mesh.marching_cubes")(cs.Labels(torus.astype(np.uint8), {}, 1.0))
    assert euler(mesh) == 0
    assert signed_volume(mesh.vertices, mesh.triangles) == pytest.approx(2 * np.pi**2 * big * small**2, rel=0.05)


def test_label_touching_border_is_closed_with_a_warning() -> None:
    data = np.zeros((20, 20, 20), np.uint8)
    data[:8, 5:15, 5:15] = 1
    with pytest.warns(UserWarning, match="touch the volume border"):
        mesh = cs.method("mesh.marching_cubes")(cs.Labels(data))
    assert (unique_edges(mesh.triangles)[2] == 2).all()  # closed: every edge on two triangles


def test_nested_labels_give_nested_surfaces() -> None:
    z, y, x = grid(40)
    data = np.zeros(z.shape, np.uint8)
    data[x**2 + y**2 + z**2 <= 15**2] = 1
    data[x**2 + y**2 + z**2 <= 6**2] = 2
    mesh = cs.method("mesh.marching_cubes")(cs.Labels(data, {1: "cytosol", 2: "nucleus"}))
    outer = signed_volume(mesh.vertices, mesh.triangles[mesh.markers == 1])
    inner = signed_volume(mesh.vertices, mesh.triangles[mesh.markers == 2])
    assert outer == pytest.approx(4 / 3 * np.pi * 15**3, rel=0.04)  # the cytosol's surface encloses the nucleus
    assert inner == pytest.approx(4 / 3 * np.pi * 6**3, rel=0.1)


def test_empty_selection_is_an_error() -> None:
    labels = cs.Labels(np.zeros((8, 8, 8), np.uint8))
    with pytest.raises(cs.InputError, match="no voxel has any non-zero label"):
        cs.method("mesh.marching_cubes")(labels)
    labels = cs.Labels(np.ones((8, 8, 8), np.uint8))
    with pytest.raises(cs.InputError, match="no voxel has labels \\[3\\]; labels present: \\[1\\]"):
        cs.method("mesh.marching_cubes", labels=[3])(labels)


def test_volume_is_matched_to_the_voxels_that_smoothing_shrinks() -> None:
    z, y, x = grid(28)
    radius = 8.0
    ball = x**2 + y**2 + z**2 <= radius**2
    labels = cs.Labels(ball.astype(np.uint8), {1: "vesicle"}, (12.0, 4.0, 4.0))  # anisotropic: 192 nm³ voxels
    voxels = float(ball.sum()) * 192.0
    shrunk = cs.method("mesh.marching_cubes", match_volume=False)(labels)
    matched = cs.method("mesh.marching_cubes")(labels)
    loss = 1 - signed_volume(shrunk.vertices, shrunk.triangles) / voxels
    # the 0.5 level of a blurred ball recedes by about sigma² / R (z is blurred over 12 nm, y and x over 4 nm)
    assert 0.01 < loss < 0.08
    assert signed_volume(matched.vertices, matched.triangles) == pytest.approx(voxels, rel=1e-6)
    np.testing.assert_array_equal(matched.triangles, shrunk.triangles)
    moved = np.linalg.norm(matched.vertices - shrunk.vertices, axis=1)
    assert moved.max() < 0.5 * 4.0 and moved.min() > 0  # a common offset of a fraction of the smallest voxel side


def test_thin_pierced_shell_keeps_its_volume_through_improve() -> None:
    z, y, x = grid(48)
    r = np.sqrt(x**2 + y**2 + z**2)
    shell = (r > 18.5) & (r < 21.5)
    for axis in range(3):  # six round holes, along ±x, ±y, ±z
        others = [c for i, c in enumerate((z, y, x)) if i != axis]
        shell &= others[0] ** 2 + others[1] ** 2 > 36
    labels = cs.Labels(shell.astype(np.uint8), {1: "envelope"}, 5.0)
    voxels = float(shell.sum()) * 125.0
    surface = cs.method("mesh.marching_cubes")(labels)
    improved = cs.method("mesh.improve")(surface)
    assert euler(improved) == 2 - 2 * 5  # six holes through one sphere: genus 5
    unmatched = cs.method("mesh.marching_cubes", match_volume=False)(labels)
    assert signed_volume(unmatched.vertices, unmatched.triangles) / voxels < 0.985  # rims recede: >1.5% lost
    assert signed_volume(improved.vertices, improved.triangles) == pytest.approx(voxels, rel=0.01)
