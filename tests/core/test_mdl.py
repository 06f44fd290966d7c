"""MCell3 MDL geometry: exact round trips of our own files, foreign files parsed, bad files named with a line."""

from __future__ import annotations

import numpy as np
import pytest

import cellscape as cs
from cellscape.io._mdl import mdl_text, read_mdl


def two_region_mesh() -> cs.SurfaceMesh:
    rng = np.random.default_rng(3)
    vertices = rng.normal(scale=437.123456789, size=(5, 3))
    triangles = np.array([[0, 1, 2], [0, 2, 3], [0, 3, 1], [1, 3, 2], [1, 4, 2], [2, 4, 3]])
    return cs.SurfaceMesh(vertices, triangles, [7, 7, 2, 7, 2, 0],
                          {7: "plasma membrane", 2: "ALL", 9: "unused / name */ here"})


def test_round_trip_is_exact(tmp_path) -> None:
    mesh = two_region_mesh()
    path = cs.io.write(mesh, tmp_path / "cell.mdl")
    back = cs.io.read(path)
    assert isinstance(back, cs.SurfaceMesh)
    np.testing.assert_allclose(back.vertices, mesh.vertices, rtol=1e-9, atol=0)
    np.testing.assert_array_equal(back.triangles, mesh.triangles)
    np.testing.assert_array_equal(back.markers, mesh.markers)
    assert back.marker_names == mesh.marker_names
    text = path.read_text()
    assert "cell POLYGON_LIST" in text
    # names become MDL identifiers; an all-caps name (an MDL keyword) gets its marker number
    assert "    plasma_membrane\n" in text and "    ALL_2\n" in text
    assert "[0, 1, 3]" in text  # plasma membrane's elements
    assert not list(tmp_path.glob(".*tmp"))


def test_written_coordinates_are_micrometres() -> None:
    mesh = cs.SurfaceMesh([[1000, 2000, 3500], [0, 0, 0], [1500, 0, 0]], [[0, 1, 2]])
    text = mdl_text(mesh)
    assert "[1.0, 2.0, 3.5]" in text and "[1.5, 0.0, 0.0]" in text


def test_large_mesh_round_trip(tmp_path) -> None:
    rng = np.random.default_rng(0)
    vertices = rng.random((400, 3)) * 1e4
    triangles = rng.integers(0, 400, (700, 3))
    markers = rng.integers(0, 4, 700)
    mesh = cs.SurfaceMesh(vertices, triangles, markers, {0: "outside", 1: "a", 2: "b"})
    back = cs.io.read(cs.io.write(mesh, tmp_path / "big.mdl"))
    np.testing.assert_allclose(back.vertices, vertices, rtol=1e-12)
    np.testing.assert_array_equal(back.markers, markers)
    assert back.marker_names == {0: "outside", 1: "a", 2: "b"}


FOREIGN = """\
/* exported by CellBlender */
// a line comment with { an unbalanced brace inside a comment
ITERATIONS = 1000
TIME_STEP = 1e-6
DEFINE_MOLECULES { vm { DIFFUSION_CONSTANT_3D = 1e-6 } }

Cube POLYGON_LIST
{
  VERTEX_LIST
  {
    [ -0.25, -0.25, -0.25 ]
    [ -0.25, -0.25,  0.25 ]
    [ -0.25,  0.25, -0.25 ]
    [ -0.25,  0.25,  0.25 ]
    [  0.25, -0.25, -0.25 ]
    [  0.25, -0.25,  0.25 ]
    [  0.25,  0.25, -0.25 ]
    [  0.25,  0.25,  2.5e-1 ]
  }
  ELEMENT_CONNECTIONS
  {
    [ 1, 2, 0 ]
    [ 3, 6, 2 ]
    [ 7, 4, 6 ]
    [ 5, 0, 4 ]
    [ 6, 0, 2 ]
    [ 3, 5, 7 ]
    [ 1, 3, 2 ]
    [ 3, 7, 6 ]
    [ 7, 5, 4 ]
    [ 5, 1, 0 ]
    [ 6, 4, 0 ]
    [ 3, 1, 5 ]
  }
  DEFINE_SURFACE_REGIONS
  {
    left_side
    {
      ELEMENT_LIST = [3, 9]
      SURFACE_CLASS = absorptive
    }
    top /* comment */ { ELEMENT_LIST = [5, 11] }
    band
    {
      INCLUDE_ELEMENTS = [0 TO 2, [6 TO 8 STEP 2]]
      EXCLUDE_ELEMENTS = [1]
    }
  }
}

INSTANTIATE Scene OBJECT
{
  Cube OBJECT Cube {}
  Tip OBJECT
  {
    tip POLYGON_LIST
    {
      VERTEX_LIST { [0, 0, 1] [1, 0, 1] [0, 1, 1] }
      ELEMENT_CONNECTIONS { [0, 1, 2] }
      DEFINE_SURFACE_REGIONS { top { ELEMENT_LIST = [0] } }
    }
  }
}
"""


def test_foreign_file_with_two_objects(tmp_path) -> None:
    path = tmp_path / "scene.mdl"
    path.write_text(FOREIGN)
    mesh = cs.io.read(path, "surface_mesh")
    assert mesh.vertices.shape == (11, 3)
    np.testing.assert_allclose(mesh.vertices[7], [250, 250, 250])
    np.testing.assert_allclose(mesh.vertices[8:], [[0, 0, 1000], [1000, 0, 1000], [0, 1000, 1000]])
    assert mesh.triangles[0].tolist() == [1, 2, 0]
    assert mesh.triangles[-1].tolist() == [8, 9, 10]  # second object's indices are offset
    assert mesh.markers.tolist() == [3, 0, 3, 1, 0, 2, 3, 0, 3, 1, 0, 2, 4]
    assert mesh.marker_names == {1: "Cube_left_side", 2: "Cube_top", 3: "Cube_band", 4: "tip_top"}


def test_single_foreign_object_keeps_region_names_and_ranges(tmp_path) -> None:
    path = tmp_path / "cube.mdl"
    path.write_text(FOREIGN.split("INSTANTIATE")[0])
    mesh = read_mdl(path)
    assert mesh.marker_names == {1: "left_side", 2: "top", 3: "band"}
    assert np.flatnonzero(mesh.markers == 3).tolist() == [0, 2, 6, 8]
    assert (mesh.markers == 0).sum() == 4


BAD = [
    ("Cube POLYGON_LIST {\n VERTEX_LIST {\n [0, 0, 0]\n }\n", "line 1: '{' is never closed"),
    ("x = 1 }\n", "line 1: unbalanced '}'"),
    ("Cube POLYGON_LIST {\n VERTEX_LIST {\n [0, 0, 0]\n [1, 0, zero]\n [0, 1, 0] }\n"
     " ELEMENT_CONNECTIONS { [0, 1, 2] } }\n", "line 4: vertex entry is not a number: 'zero'"),
    ("Cube POLYGON_LIST {\n VERTEX_LIST { [0, 0, 0] [1, 0, 0] [0, 1, 0] }\n"
     " ELEMENT_CONNECTIONS {\n [0, 1, 2]\n [0, 1, 3] } }\n", "line 5: element 1 of 'Cube' refers to vertex"),
    ("Cube POLYGON_LIST {\n VERTEX_LIST { [0, 0, 0] [1, 0, 0] [0, 1, 0] }\n ELEMENT_CONNECTIONS { [0, 1, 2] }\n"
     " DEFINE_SURFACE_REGIONS {\n r { ELEMENT_LIST = [0, 4] } } }\n", "line 5: region 'r' of 'Cube' lists element 4"),
    ("Cube POLYGON_LIST {\n VERTEX_LIST { [0, 0] }\n ELEMENT_CONNECTIONS { [0, 0, 0] } }\n",
     "line 2: a vertex needs 3 numbers, got 2"),
    ("Cube POLYGON_LIST {\n VERTEX_LIST { [0, 0, 0] [1, 0, 0] [0, 1, 0] }\n ELEMENT_CONNECTIONS { [0, 1, 2] }\n"
     " TRANSLATE = [1, 0, 0] }\n", "line 4: TRANSLATE in POLYGON_LIST 'Cube' is not supported"),
    ("ITERATIONS = 10\n", "no 'NAME POLYGON_LIST"),
    ("/* open comment\n Cube POLYGON_LIST {}", "line 1: comment '/\\*' is never closed"),
    ("Cube POLYGON_LIST {\n VERTEX_LIST { [0, 0, 0] }\n}\n", "line 1: POLYGON_LIST 'Cube' has no ELEMENT_CONNECTIONS"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_files_name_the_file_and_line(tmp_path, text, message) -> None:
    path = tmp_path / "broken.mdl"
    path.write_text(text)
    with pytest.raises(cs.InputError, match=f"broken.mdl: {message}"):
        cs.io.read(path)


def test_only_surface_meshes_are_written(tmp_path) -> None:
    table = cs.Table({"a": np.zeros(2)})
    with pytest.raises(cs.InputError, match="cannot hold a Table"):
        cs.io.write(table, tmp_path / "t.mdl")
