"""mesh.tetrahedralize: volumes, regions, boundary markers, quality, bad surfaces."""

from __future__ import annotations

import numpy as np
import pytest

import cellscape as cs
from cellscape_plugins.mesh.marching_cubes import signed_volume
from cellscape_plugins.mesh.tetrahedralize import tet_volumes


def ball_surface(radii=(14.0,), n: int = 40) -> cs.SurfaceMesh:
    z, y, x = np.mgrid[:n, :n, :n] - (n - 1) / 2
    data = np.zeros(z.shape, np.uint8)
    for label, radius in enumerate(radii, start=1):
        data[x**2 + y**2 + z**2 <= radius**2] = label
    names = {1: "cytosol", 2: "nucleus"}
    return cs.method("mesh.marching_cubes")(cs.Labels(data, {k: names[k] for k in range(1, len(radii) + 1)}, 10.0))


def min_dihedral_deg(points: np.ndarray, tets: np.ndarray) -> np.ndarray:
    """Smallest dihedral angle of each tetrahedron, in degrees."""
    worst = np.full(len(tets), 180.0)
    for i, j in [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]:
        k, m = [v for v in range(4) if v not in (i, j)]
        a, b = points[tets[:, i]], points[tets[:, j]]
        e = (b - a) / np.linalg.norm(b - a, axis=1)[:, None]
        n1 = np.cross(e, points[tets[:, k]] - a)
        n2 = np.cross(e, points[tets[:, m]] - a)
        cos = np.einsum("ij,ij->i", n1, n2) / np.linalg.norm(n1, axis=1) / np.linalg.norm(n2, axis=1)
        worst = np.minimum(worst, np.degrees(np.arccos(np.clip(cos, -1, 1))))
    return worst


def test_ball_volume_boundary_and_quality() -> None:
    surface = ball_surface()
    mesh = cs.method("mesh.tetrahedralize")(surface)
    volumes = tet_volumes(mesh.points, mesh.tetrahedra)
    assert volumes.min() > 0
    assert volumes.sum() == pytest.approx(signed_volume(surface.vertices, surface.triangles), rel=1e-9)
    np.testing.assert_array_equal(mesh.boundary_triangles, surface.triangles)
    np.testing.assert_array_equal(mesh.boundary_markers, surface.markers)
    assert set(np.unique(mesh.region_markers)) == {1}
    assert mesh.region_names == {1: "cytosol"}
    # the surface is kept as marching cubes made it (improving it is mesh.improve's job), so a few slivers
    # remain where its skinny triangles are; the bulk meets TetGen's bound
    dihedral = min_dihedral_deg(mesh.points, mesh.tetrahedra)
    assert (dihedral < 5.0).mean() < 0.05
    assert np.median(dihedral) > 30.0


def test_nested_surfaces_give_two_regions() -> None:
    surface = ball_surface(radii=(15.0, 7.0))
    mesh = cs.method("mesh.tetrahedralize")(surface)
    volumes = tet_volumes(mesh.points, mesh.tetrahedra)
    inner = signed_volume(surface.vertices, surface.triangles[surface.markers == 2])
    outer = signed_volume(surface.vertices, surface.triangles[surface.markers == 1])
    assert volumes[mesh.region_markers == 2].sum() == pytest.approx(inner, rel=1e-9)
    assert volumes[mesh.region_markers == 1].sum() == pytest.approx(outer - inner, rel=1e-9)
    assert mesh.region_names == {1: "cytosol", 2: "nucleus"}


def test_max_volume_refines() -> None:
    surface = ball_surface()
    coarse = cs.method("mesh.tetrahedralize")(surface)
    bound = 0.5 * float(tet_volumes(coarse.points, coarse.tetrahedra).mean())
    fine = cs.method("mesh.tetrahedralize", max_volume_nm3=bound)(surface)
    assert len(fine.tetrahedra) > 2 * len(coarse.tetrahedra)
    # boundary tetrahedra cannot be split without changing the kept surface: the bound holds for the bulk
    assert np.quantile(tet_volumes(fine.points, fine.tetrahedra), 0.99) <= bound


def test_open_surface_is_rejected_with_the_region_named() -> None:
    surface = ball_surface()
    holed = cs.SurfaceMesh(surface.vertices, surface.triangles[5:], surface.markers[5:], surface.marker_names)
    with pytest.raises(cs.InputError, match="region 1 \\(cytosol\\) is not closed \\(not watertight\\)"):
        cs.method("mesh.tetrahedralize")(holed)


def test_quality_bounds_are_validated() -> None:
    with pytest.raises(cs.InputError, match="radius_edge_ratio': 1 is out of range"):
        cs.method("mesh.tetrahedralize", radius_edge_ratio=1.0)


def test_a_crash_or_hang_in_the_child_becomes_an_error() -> None:
    """TetGen aborts the process on some inputs: run in a child, that is an error message, not our death."""
    import os
    import time

    from cellscape_plugins.mesh.tetrahedralize import _Crashed, isolated

    with pytest.raises(_Crashed, match="crashed"):
        isolated(os.abort, (), 60)
    start = time.perf_counter()
    with pytest.raises(_Crashed, match="did not finish within timeout_s=1 s"):
        isolated(time.sleep, (30,), 1)
    assert time.perf_counter() - start < 20
    assert isolated(divmod, (7, 2), 60) == (3, 1)
