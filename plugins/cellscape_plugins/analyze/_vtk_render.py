"""Off-screen VTK renders of triangle scenes, in a child process.

A failing off-screen OpenGL context does not raise in VTK: with no usable EGL
device ``vtkEGLRenderWindow.Render()`` logs "Failed to initialize OpenGL
functions" and then the process dies of SIGSEGV. So every render runs in a
fresh interpreter (:func:`cellscape_plugins._isolated.isolated`); the caller
gets images or ``RenderUnavailable`` with the reason, and its own process
lives on. Scenes go to the child and images come back as arrays (``.npz``),
the rest as JSON: nothing is pickled.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._isolated import ChildDied, isolated

# Isometric view from +x, -y, +z with z up: x runs to the lower right, y to the upper right.
VIEW_DIRECTION = np.array([1.0, -1.0, 1.0]) / np.sqrt(3.0)
VIEW_UP = np.array([0.0, 0.0, 1.0])
# Window classes tried in order; each is an off-screen context that needs no X server.
WINDOW_CLASSES = ("vtkEGLRenderWindow", "vtkOSOpenGLRenderWindow")
# Extra environment for the child (tests set variables here that make EGL fail for real).
CHILD_ENVIRONMENT: dict[str, str] = {}
# A child that crashed (not one that ran out of time) means no context on this host: later figures skip VTK.
_broken: str | None = None


class RenderUnavailable(Exception):
    """No off-screen VTK render was possible (no GL context, VTK missing, crash or timeout); the message says why."""


def timeout_for(n_triangles: int) -> float:
    """Seconds a child may take: start-up and a margin, plus 60 s per million triangles (software GL is ~1 s)."""
    return 90.0 + 60.0 * n_triangles / 1e6


def render_scenes(scenes: list[dict[str, np.ndarray]], *, size_px: int = 720,
                  timeout_s: float | None = None) -> tuple[list[tuple[np.ndarray, dict[str, Any]]], str]:
    """Render each scene off-screen with VTK.

    Parameters
    ----------
    scenes : list of dict
        ``vertices`` (n, 3) float64 in nm, ``triangles`` (m, 3) int, ``colours`` (m, 3) uint8 RGB per triangle.
    size_px : int
        Width and height of each image in pixels.
    timeout_s : float, optional
        Limit for the child process (default ``timeout_for`` the total triangle count).

    Returns
    -------
    images : list of (ndarray (size_px, size_px, 3) uint8, camera dict)
        The camera has ``parallel_scale_nm`` (half the image height in nm), ``right`` and ``up`` (unit vectors of
        the image axes in model coordinates).
    renderer : str
        What drew them, e.g. ``"VTK 9.7.2 off-screen (vtkEGLRenderWindow, llvmpipe ...)"``.

    Raises
    ------
    RenderUnavailable
        When no window class produced the images; the message gives each attempt's reason.
    """
    global _broken
    if _broken is not None:
        raise RenderUnavailable(_broken)
    total = sum(len(s["triangles"]) for s in scenes)
    limit = timeout_for(total) if timeout_s is None else timeout_s
    packed = [{"vertices": np.asarray(s["vertices"], np.float64), "triangles": np.asarray(s["triangles"], np.int64),
               "colours": np.asarray(s["colours"], np.uint8)} for s in scenes]
    reasons = []
    crashed_every_time = True
    for window in WINDOW_CLASSES:
        job = {"window": window, "size_px": int(size_px), "direction": VIEW_DIRECTION.tolist(), "up": VIEW_UP.tolist()}
        try:
            images, cameras, renderer = isolated(render_in_child, (packed, job), limit,
                                                 env={"VTK_DEFAULT_OPENGL_WINDOW": window, **CHILD_ENVIRONMENT})
        except ChildDied as exc:
            reasons.append(f"{window}: the render process {exc.reason}")
            crashed_every_time &= not exc.timed_out
            continue
        except RuntimeError as exc:  # the child ran but could not render (VTK missing, no OSMesa library)
            reasons.append(f"{window}: {exc}")
            crashed_every_time = False
            continue
        return list(zip(images, cameras, strict=True)), renderer
    reason = "; ".join(reasons)
    if crashed_every_time:
        _broken = reason
    raise RenderUnavailable(reason)


def render_in_child(scenes: tuple[dict[str, np.ndarray], ...], job: dict[str, Any]
                    ) -> tuple[list[np.ndarray], list[dict[str, Any]], str]:
    """The child's work (see :func:`render_scenes`): every scene rendered in one window of ``job["window"]``.

    Returns the images (size_px, size_px, 3) uint8, the cameras and the renderer's description; a window that
    cannot be made without crashing (VTK missing, no OSMesa library) is a RuntimeError naming why.
    """
    try:
        import vtkmodules
        import vtkmodules.vtkRenderingOpenGL2 as opengl
    except ImportError as exc:
        raise RuntimeError(f"VTK is not importable: {exc}") from exc
    if job["window"] == "vtkOSOpenGLRenderWindow":
        import ctypes.util

        if ctypes.util.find_library("OSMesa") is None:  # VTK would only warn and then fail to draw
            raise RuntimeError("libOSMesa is not installed")
    window = getattr(opengl, job["window"])()
    window.SetOffScreenRendering(1)
    size = int(job["size_px"])
    window.SetSize(size, size)
    window.SetMultiSamples(8)  # smooth edges (FXAA reads back black on Mesa's EGL)
    images, cameras = [], []
    for scene in scenes:
        image, camera = _render_one(window, scene["vertices"], scene["triangles"], scene["colours"],
                                    np.array(job["direction"]), np.array(job["up"]))
        images.append(image)
        cameras.append(camera)
    gl = next((line.split(":", 1)[1].strip() for line in window.ReportCapabilities().splitlines()
               if line.startswith("OpenGL renderer string")), "unknown GL")
    version = getattr(vtkmodules, "__version__", "")
    renderer = f"VTK {version} off-screen ({job['window']}, {gl})".replace("  ", " ")
    window.Finalize()
    return images, cameras, renderer


def _render_one(window: Any, vertices: np.ndarray, triangles: np.ndarray, colours: np.ndarray,
                direction: np.ndarray, up: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """One scene: triangles coloured per cell, smooth-shaded under a light kit, isometric parallel view fitting
    the bounds. Returns the image (rows from the top) and the camera (see ``render_scenes``)."""
    from vtkmodules.util.numpy_support import numpy_to_vtk, numpy_to_vtkIdTypeArray, vtk_to_numpy
    from vtkmodules.vtkCommonCore import vtkPoints
    from vtkmodules.vtkCommonDataModel import vtkCellArray, vtkPolyData
    from vtkmodules.vtkFiltersCore import vtkPolyDataNormals
    from vtkmodules.vtkRenderingCore import (
        vtkActor,
        vtkLightKit,
        vtkPolyDataMapper,
        vtkRenderer,
        vtkWindowToImageFilter,
    )

    renderers = window.GetRenderers()
    renderers.InitTraversal()
    for _ in range(renderers.GetNumberOfItems()):
        window.RemoveRenderer(renderers.GetNextItem())
    points = vtkPoints()
    points.SetData(numpy_to_vtk(np.ascontiguousarray(vertices, np.float64), deep=True))
    cells = vtkCellArray()
    offsets = np.arange(0, 3 * len(triangles) + 1, 3, dtype=np.int64)
    cells.SetData(numpy_to_vtkIdTypeArray(offsets, deep=True),
                  numpy_to_vtkIdTypeArray(np.ascontiguousarray(triangles, np.int64).ravel(), deep=True))
    surface = vtkPolyData()
    surface.SetPoints(points)
    surface.SetPolys(cells)
    rgb = numpy_to_vtk(np.ascontiguousarray(colours, np.uint8), deep=True)
    rgb.SetName("colour")
    surface.GetCellData().SetScalars(rgb)
    normals = vtkPolyDataNormals()  # smooth shading, but creases (cut faces, cube edges) stay sharp
    normals.SetInputData(surface)
    normals.SetFeatureAngle(50.0)
    normals.SplittingOn()
    normals.ConsistencyOff()  # two-sided lighting makes the winding irrelevant; consistency costs time on 1e6
    mapper = vtkPolyDataMapper()
    mapper.SetInputConnection(normals.GetOutputPort())
    mapper.SetScalarModeToUseCellData()
    mapper.SetColorModeToDirectScalars()
    actor = vtkActor()
    actor.SetMapper(mapper)
    prop = actor.GetProperty()
    prop.SetAmbient(0.2)
    prop.SetDiffuse(0.8)
    prop.SetSpecular(0.15)
    prop.SetSpecularPower(20.0)
    renderer = vtkRenderer()
    renderer.SetBackground(1.0, 1.0, 1.0)
    renderer.AddActor(actor)
    renderer.TwoSidedLightingOn()
    lights = vtkLightKit()
    lights.SetKeyLightIntensity(1.0)
    lights.AddLightsToRenderer(renderer)
    window.AddRenderer(renderer)

    low, high = vertices.min(axis=0), vertices.max(axis=0)
    centre = (low + high) / 2
    diagonal = max(float(np.linalg.norm(high - low)), 1e-9)
    forward = -direction / np.linalg.norm(direction)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    true_up = np.cross(right, forward)
    # parallel projection fitted to the vertices' own projection (6 % margin): half the image height in nm
    along_right, along_up = (vertices - centre) @ right, (vertices - centre) @ true_up
    centre = centre + right * (along_right.max() + along_right.min()) / 2 + true_up * (along_up.max() + along_up.min()) / 2
    parallel_scale = 0.53 * max(float(np.ptp(along_right)), float(np.ptp(along_up)), 1e-9)
    camera = renderer.GetActiveCamera()
    camera.ParallelProjectionOn()
    camera.SetFocalPoint(*centre)
    camera.SetPosition(*(centre - forward * 2.0 * diagonal))
    camera.SetViewUp(*true_up)
    camera.SetParallelScale(parallel_scale)
    renderer.ResetCameraClippingRange()
    window.Render()
    grab = vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.SetInputBufferTypeToRGB()
    grab.ReadFrontBufferOff()
    grab.Update()
    frame = grab.GetOutput()
    width, height, _ = frame.GetDimensions()
    pixels = vtk_to_numpy(frame.GetPointData().GetScalars()).reshape(height, width, -1)[::-1, :, :3]  # bottom row first
    return (np.ascontiguousarray(pixels, np.uint8),
            {"parallel_scale_nm": parallel_scale, "right": right.tolist(), "up": true_up.tolist()})
