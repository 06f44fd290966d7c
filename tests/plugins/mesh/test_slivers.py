"""Sliver clean-up by flips: 2-3 and 3-2 flips fill the same space with better tetrahedra, and keep surfaces and
regions."""

from __future__ import annotations

import numpy as np
import pytest

from cellscape_plugins._tetmesh import exterior_faces
from cellscape_plugins.mesh._slivers import flip_slivers
from cellscape_plugins.mesh.quality import dihedral_angles, radius_ratios, tet_volumes


def bipyramid(height: float) -> np.ndarray:
    """A unit equilateral triangle (points 0-2) with apexes 3 and 4 at ``height`` above and below its centre."""
    a, b, c = np.array([0, 0, 0.0]), np.array([1, 0, 0.0]), np.array([0.5, np.sqrt(3) / 2, 0])
    centre = (a + b + c) / 3
    up = np.array([0, 0, height])
    return np.array([a, b, c, centre + up, centre - up])


TWO = np.array([[0, 1, 2, 3], [0, 2, 1, 4]])  # sharing the triangle 0-1-2
THREE = np.array([[3, 4, 0, 1], [3, 4, 1, 2], [3, 4, 2, 0]])  # around the edge 3-4


def oriented(points: np.ndarray, tets: np.ndarray) -> np.ndarray:
    negative = tet_volumes(points, tets, signed=True) < 0
    return np.where(negative[:, None], tets[:, [0, 2, 1, 3]], tets)


def min_dihedral(points: np.ndarray, tets: np.ndarray) -> float:
    return float(np.min(dihedral_angles(points, tets)))


def test_a_3_2_flip_turns_three_thin_tetrahedra_around_an_edge_into_two_good_ones() -> None:
    points = bipyramid(0.8)
    tets = oriented(points, THREE)
    assert min_dihedral(points, tets) == pytest.approx(35.5, abs=0.1)
    surface = exterior_faces(tets)[0]
    new, markers, flips = flip_slivers(points, tets, np.ones(3, np.int32), surface, 50.0, 0.5)
    assert flips == 1 and len(new) == 2 and (markers == 1).all()
    assert min_dihedral(points, new) == pytest.approx(70.5, abs=0.5) and radius_ratios(points, new).min() > 0.99
    assert (tet_volumes(points, new, signed=True) > 0).all()
    assert tet_volumes(points, new).sum() == pytest.approx(tet_volumes(points, tets).sum(), rel=1e-12)
    np.testing.assert_array_equal(np.sort(np.sort(exterior_faces(new)[0], axis=1), axis=0),
                                  np.sort(np.sort(surface, axis=1), axis=0))  # the same surface


def test_a_2_3_flip_turns_two_flat_tetrahedra_into_three() -> None:
    points = bipyramid(0.15)
    tets = oriented(points, TWO)
    assert min_dihedral(points, tets) == pytest.approx(27.5, abs=0.1)
    surface = exterior_faces(tets)[0]
    new, markers, flips = flip_slivers(points, tets, np.array([4, 4]), surface, 40.0, 0.3)
    assert flips == 1 and len(new) == 3 and (markers == 4).all()
    assert min_dihedral(points, new) == pytest.approx(54.9, abs=0.2) and radius_ratios(points, new).min() > 0.46
    assert tet_volumes(points, new).sum() == pytest.approx(tet_volumes(points, tets).sum(), rel=1e-12)


def test_flips_keep_interface_triangles_and_regions() -> None:
    points = bipyramid(0.15)
    tets = oriented(points, TWO)
    surface = exterior_faces(tets)[0]
    with_interface = np.concatenate([surface, [[0, 1, 2]]])  # the shared triangle is an interface
    same, _, flips = flip_slivers(points, tets, np.array([1, 1]), with_interface, 40.0, 0.3)
    assert flips == 0 and np.array_equal(same, tets)
    same, _, flips = flip_slivers(points, tets, np.array([1, 2]), surface, 40.0, 0.3)  # two regions
    assert flips == 0 and np.array_equal(same, tets)


def test_no_flip_when_it_would_not_help() -> None:
    points = bipyramid(0.3)  # here the three tetrahedra (min dihedral 51°) are better than the two (46°)
    tets = oriented(points, THREE)
    _, _, flips = flip_slivers(points, tets, np.ones(3), exterior_faces(tets)[0], 60.0, 0.9)
    assert flips == 0
