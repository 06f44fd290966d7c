"""Mesh renders: VTK off-screen in a child process, and the matplotlib fallback when no GL context can be made."""

from __future__ import annotations

import numpy as np
import pytest
from meshes import cube_mesh

import cellscape as cs
from cellscape_plugins._tetmesh import exterior_faces
from cellscape_plugins.analyze import _vtk_render, figures

UPPER, LOWER = np.array([214, 39, 40]), np.array([31, 119, 180])  # red and blue


def sphere(radius: float, n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    """A triangulated sphere: the convex hull of a Fibonacci point set."""
    from scipy.spatial import ConvexHull

    i = np.arange(n) + 0.5
    z = 1 - 2 * i / n
    phi = np.pi * (1 + 5**0.5) * i
    points = np.stack([np.sqrt(1 - z**2) * np.cos(phi), np.sqrt(1 - z**2) * np.sin(phi), z], axis=1)
    return points * radius, ConvexHull(points).simplices.astype(np.int64)


def two_marker_sphere() -> cs.SurfaceMesh:
    vertices, triangles = sphere(500.0)
    markers = np.where(vertices[triangles].mean(axis=1)[:, 2] > 0, 1, 2).astype(np.int32)
    return cs.SurfaceMesh(vertices, triangles, markers, {1: "upper", 2: "lower"})


@pytest.fixture
def fresh_vtk(monkeypatch):
    """Each test starts as if no render had failed in this process."""
    monkeypatch.setattr(_vtk_render, "_broken", None)
    return monkeypatch


def test_vtk_render_of_a_two_marker_sphere(fresh_vtk) -> None:
    surface = two_marker_sphere()
    colours = np.where((surface.markers == 1)[:, None], UPPER, LOWER).astype(np.uint8)
    [(image, camera)], renderer = _vtk_render.render_scenes(
        [{"vertices": surface.vertices, "triangles": surface.triangles, "colours": colours}], size_px=400)
    assert renderer.startswith("VTK ") and "off-screen" in renderer
    assert image.shape == (400, 400, 3) and image.dtype == np.uint8
    # the view fits the sphere with a 6 % margin: the disk covers pi / (4 * 1.06^2) of the square
    assert camera["parallel_scale_nm"] == pytest.approx(1.06 * 500.0, rel=0.01)
    foreground = (image < 245).any(axis=2)
    assert foreground.mean() == pytest.approx(np.pi / (4 * 1.06**2), abs=0.02)
    # shading scales the colour, so classify by chromaticity; the upper hemisphere seen from elevation
    # asin(1/sqrt(3)) covers (1 + sin e) / 2 of the disk
    pixels = image[foreground].astype(float)
    chroma = pixels / (pixels.sum(axis=1, keepdims=True) + 1e-9)
    refs = np.stack([UPPER / UPPER.sum(), LOWER / LOWER.sum()])
    nearest = np.argmin(((chroma[:, None, :] - refs[None]) ** 2).sum(axis=2), axis=1)
    assert (nearest == 0).mean() == pytest.approx((1 + 1 / np.sqrt(3)) / 2, abs=0.03)
    # the camera's image axes are orthonormal and z points up the picture
    right, up = np.array(camera["right"]), np.array(camera["up"])
    assert right @ up == pytest.approx(0, abs=1e-12) and up[2] > 0.8


def test_surface_figure_names_vtk_as_its_renderer(fresh_vtk, tmp_path) -> None:
    from PIL import Image

    paths = figures.surface_figures(two_marker_sphere(), tmp_path, title="s · mesh", inputs={})
    assert [p.name for p in paths] == ["s_mesh_render_vtk.png", "s_mesh_angles.png"]
    with Image.open(paths[0]) as picture:
        assert picture.text["Description"].startswith("rendered by VTK")
        assert picture.width > 600 and picture.height > 700


def test_failing_gl_context_falls_back_to_matplotlib(fresh_vtk, tmp_path) -> None:
    from PIL import Image

    # no EGL vendor library: VTK logs "Failed to initialize OpenGL functions" and its process dies of SIGSEGV
    fresh_vtk.setattr(_vtk_render, "CHILD_ENVIRONMENT", {"__EGL_VENDOR_LIBRARY_DIRS": "/nonexistent"})
    fresh_vtk.setattr(_vtk_render, "WINDOW_CLASSES", ("vtkEGLRenderWindow",))
    paths = figures.surface_figures(two_marker_sphere(), tmp_path, title="s · mesh", inputs={})
    assert paths[0].name == "s_mesh_render_matplotlib.png"
    with Image.open(paths[0]) as picture:
        note = picture.text["Description"]
        pixels = np.asarray(picture.convert("RGB"), float)
    assert note.startswith("rendered by matplotlib (fallback: VTK off-screen rendering unavailable")
    assert "vtkEGLRenderWindow: the render process died of SIGSEGV" in note
    assert pixels.std() > 10  # a real picture
    # the crash is remembered: the next mesh does not start another child
    assert "SIGSEGV" in _vtk_render._broken
    with pytest.raises(_vtk_render.RenderUnavailable, match="SIGSEGV"):
        _vtk_render.render_scenes([{"vertices": np.eye(3), "triangles": np.array([[0, 1, 2]]),
                                    "colours": np.zeros((1, 3), np.uint8)}])


def test_exterior_faces_of_a_cube_mesh_are_its_boundary() -> None:
    mesh = cube_mesh(3, 600.0, regions_split=True)
    faces, owner = exterior_faces(mesh.tetrahedra)
    assert len(faces) == 6 * 9 * 2
    assert {tuple(f) for f in np.sort(faces, axis=1)} == {tuple(f) for f in np.sort(mesh.boundary_triangles, axis=1)}
    assert (faces[:, :, None] == mesh.tetrahedra[owner][:, None, :]).any(axis=2).all()  # each face is its owner's
    assert set(np.unique(mesh.region_markers[owner])) == {1, 2}


def test_tet_cutaway_shows_both_regions(fresh_vtk, tmp_path) -> None:
    from PIL import Image

    mesh = cube_mesh(4, 600.0, regions_split=True)
    paths = figures.tet_mesh_figures(mesh, tmp_path, title="m", inputs={})
    assert [p.name for p in paths] == ["m_boundary_vtk.png", "m_cutaway_vtk.png", "m_dihedral.png"]
    with Image.open(paths[1]) as picture:
        pixels = np.asarray(picture.convert("RGB"), int)
    scene = pixels[: int(0.75 * len(pixels))]  # above the legend
    blue, orange = np.array([31, 119, 180]), np.array([255, 127, 14])  # tab10: region 1, region 2
    chroma = scene / (scene.sum(axis=2, keepdims=True) + 1e-9)
    for colour in (blue, orange):
        near = np.abs(chroma - colour / colour.sum()).sum(axis=2) < 0.06
        assert 0.05 < near.mean() < 0.6


def test_scale_bar_lengths_are_round() -> None:
    assert figures._scale_length_nm(1000.0) == 200.0
    assert figures._scale_length_nm(4000.0) == 1000.0 and figures._length_label(1000.0) == "1 µm"
    assert figures._scale_length_nm(30.0) == 5.0 and figures._length_label(5.0) == "5 nm"
