"""Shape data for the generative models: closed surfaces, their normalization and descriptors.

A *shape* is one closed, outward-oriented triangle surface in nm: one object
of a :class:`cellscape.Labels` volume (one object per label value, or per
connected piece of a label) or one marker region of a
:class:`cellscape.SurfaceMesh`. From it this module computes

- the solid's exact moments (volume, centroid, second moments) by the
  divergence theorem, so normalization does not depend on how densely the
  surface is meshed;
- a normalization: centre on the centroid, rotate onto the principal axes
  (longest along x, shortest along z, signs fixed by the solid's third
  moments, right-handed), optionally scale to unit equivalent-sphere radius;

Descriptors and surface distances are in :mod:`._descriptors`.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any

import attrs
import numpy as np

import cellscape as cs

from .._trimesh import cross

BORDER_CHOICES = ("error", "skip", "keep")


@attrs.frozen(eq=False, slots=False)
class Shape:
    """One closed surface.

    Attributes
    ----------
    label : int
        Label value (from a Labels volume) or marker (from a SurfaceMesh).
    name : str
        How messages name it, e.g. ``"label 3 (mitochondrion), piece 2"``.
    vertices : ndarray, shape (n, 3), float64
        ``(x, y, z)`` in nm; every vertex is used by a triangle.
    triangles : ndarray, shape (m, 3), int64
        Counter-clockwise seen from outside.
    """

    label: int
    name: str
    vertices: np.ndarray
    triangles: np.ndarray

    @functools.cached_property
    def moments(self) -> tuple[float, np.ndarray, np.ndarray]:
        """Volume (nm³), centroid (nm) and covariance (nm²) of the solid; see :func:`solid_moments`."""
        return solid_moments(self.vertices, self.triangles)


def outward_shape(label: int, name: str, vertices: np.ndarray, triangles: np.ndarray) -> Shape:
    """A Shape whose triangles face outwards (reversed if they enclose a negative volume)."""
    volume, centroid, covariance = solid_moments(vertices, triangles)
    flip = volume < 0
    shape = Shape(label, name, vertices, np.ascontiguousarray(triangles[:, ::-1]) if flip else triangles)
    shape.__dict__["moments"] = (abs(volume), centroid, covariance)  # reversing every triangle negates V only
    return shape


@attrs.frozen
class Normalization:
    """Maps a shape into its normalized frame: ``x_normalized = rotation @ (x - center_nm) / scale``.

    Attributes
    ----------
    center_nm : ndarray, shape (3,)
        Centroid of the solid, ``(x, y, z)`` in nm.
    rotation : ndarray, shape (3, 3)
        Rows are the principal axes (longest first), a proper rotation.
    scale : float
        Divisor: 1 (sizes kept, in nm) or the equivalent-sphere radius in nm.
    """

    center_nm: np.ndarray
    rotation: np.ndarray
    scale: float

    def apply(self, points_nm: np.ndarray) -> np.ndarray:
        """Points ``(n, 3)`` in nm → normalized frame."""
        return (np.asarray(points_nm) - self.center_nm) @ self.rotation.T / self.scale

    def invert(self, points: np.ndarray) -> np.ndarray:
        """Points ``(n, 3)`` in the normalized frame → nm in the original frame."""
        return np.asarray(points) * self.scale @ self.rotation + self.center_nm


# ---------------------------------------------------------------------------------------------- surfaces


def check_closed(triangles: np.ndarray, n_vertices: int, who: str, name: str) -> None:
    """Raise InputError unless the triangles form a closed, consistently oriented 2-manifold.

    Every undirected edge must be shared by exactly two triangles that run
    through it in opposite directions.
    """
    directed = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]])
    lo, hi = directed.min(axis=1), directed.max(axis=1)
    _, counts = np.unique(lo * np.int64(n_vertices) + hi, return_counts=True)
    open_edges, shared = int((counts == 1).sum()), int((counts > 2).sum())
    if open_edges or shared:
        raise cs.InputError(
            f"{who}: {name} is not a closed surface ({open_edges} boundary edge(s), {shared} edge(s) shared by more "
            "than two triangles); give closed surfaces, e.g. from mesh.marching_cubes, or close the holes with "
            "mesh.improve (repair)"
        )
    codes = directed[:, 0] * np.int64(n_vertices) + directed[:, 1]
    if len(np.unique(codes)) != len(codes):
        raise cs.InputError(
            f"{who}: {name} has inconsistently oriented triangles (two neighbours run through an edge in the same "
            "direction); orient every triangle counter-clockwise seen from outside"
        )


def _solid_integrals(vertices: np.ndarray, triangles: np.ndarray, origin: np.ndarray, axes: np.ndarray,
                     out: np.ndarray) -> None:  # pragma: no cover - compiled by numba
    """Integrals of 1, u, u uᵀ and u_k³ over the solid, u = axes @ (x - origin) (compiled by numba).

    Sums over the tetrahedra (origin, triangle) the exact polynomial
    integrals: volume V = a·(b×c)/6, ∫u = V s/4, ∫u uᵀ = V/20 (a aᵀ + b bᵀ +
    c cᵀ + s sᵀ) with s = a + b + c, and ∫u³ = V/20 · h3(0, a, b, c) with h3
    the complete homogeneous symmetric polynomial of degree 3. ``out``
    (16,) receives V, ∫u (3), ∫u uᵀ (9, row-major), ∫u_k³ (3).
    """
    for k in range(16):
        out[k] = 0.0
    corner = np.empty((3, 3))
    for f in range(triangles.shape[0]):
        for i in range(3):
            v = triangles[f, i]
            for k in range(3):
                corner[i, k] = (axes[k, 0] * (vertices[v, 0] - origin[0]) + axes[k, 1] * (vertices[v, 1] - origin[1])
                                + axes[k, 2] * (vertices[v, 2] - origin[2]))
        a0, a1, a2 = corner[0, 0], corner[0, 1], corner[0, 2]
        b0, b1, b2 = corner[1, 0], corner[1, 1], corner[1, 2]
        c0, c1, c2 = corner[2, 0], corner[2, 1], corner[2, 2]
        volume = (a0 * (b1 * c2 - b2 * c1) + a1 * (b2 * c0 - b0 * c2) + a2 * (b0 * c1 - b1 * c0)) / 6.0
        out[0] += volume
        for k in range(3):
            s_k = corner[0, k] + corner[1, k] + corner[2, k]
            out[1 + k] += volume * s_k / 4.0
            for m in range(3):
                s_m = corner[0, m] + corner[1, m] + corner[2, m]
                out[4 + 3 * k + m] += volume * (corner[0, k] * corner[0, m] + corner[1, k] * corner[1, m]
                                                + corner[2, k] * corner[2, m] + s_k * s_m) / 20.0
            p2 = corner[0, k] ** 2 + corner[1, k] ** 2 + corner[2, k] ** 2
            p3 = corner[0, k] ** 3 + corner[1, k] ** 3 + corner[2, k] ** 3
            out[13 + k] += volume * (s_k**3 + 3.0 * s_k * p2 + 2.0 * p3) / 120.0


@functools.lru_cache(maxsize=1)
def _compiled_solid_integrals() -> Any:
    """:func:`_solid_integrals` compiled by numba (cached on disk when a cache location is writable)."""
    import numba

    signature = numba.void(numba.float64[:, ::1], numba.int64[:, ::1], numba.float64[::1], numba.float64[:, ::1],
                           numba.float64[::1])
    options = {"nogil": True, "error_model": "numpy", "boundscheck": False}
    try:
        return numba.njit(signature, cache=True, **options)(_solid_integrals)
    except RuntimeError:  # no writable cache location: compile in memory
        return numba.njit(signature, cache=False, **options)(_solid_integrals)


def solid_integrals(vertices: np.ndarray, triangles: np.ndarray, origin: np.ndarray,
                    axes: np.ndarray | None = None) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Exact integrals over the polyhedron bounded by a closed surface, in coordinates u = axes @ (x - origin).

    Returns
    -------
    volume : float
        nm³, negative when the triangles face inwards (so are the other integrals).
    first : ndarray, shape (3,)
        ∫ u dV.
    second : ndarray, shape (3, 3)
        ∫ u uᵀ dV.
    third : ndarray, shape (3,)
        ∫ u_k³ dV.
    """
    out = np.empty(16)
    _compiled_solid_integrals()(np.require(vertices, np.float64, ["C", "W"]), np.require(triangles, np.int64, ["C", "W"]),
                                np.array(origin, np.float64), np.array(np.eye(3) if axes is None else axes, np.float64),
                                out)
    return float(out[0]), out[1:4].copy(), out[4:13].reshape(3, 3).copy(), out[13:16].copy()


def solid_moments(vertices: np.ndarray, triangles: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Volume, centroid and covariance of the solid bounded by a closed, outward-oriented surface.

    Exact for the polyhedron (divergence theorem over tetrahedra).

    Parameters
    ----------
    vertices : ndarray, shape (n, 3), float
        Coordinates in nm.
    triangles : ndarray, shape (m, 3), int

    Returns
    -------
    volume : float
        nm³ (negative if the triangles face inwards).
    centroid : ndarray, shape (3,)
        nm.
    covariance : ndarray, shape (3, 3)
        ``∫ (x - c)(x - c)ᵀ dV / V`` in nm²; a solid ellipsoid of semi-axes
        ``a`` has eigenvalues ``a² / 5``.
    """
    origin = vertices.mean(axis=0)  # integrate about a nearby point: no cancellation of large numbers
    volume, first, second, _ = solid_integrals(vertices, triangles, origin)
    if abs(volume) < 1e-300:
        raise cs.InputError("shape encloses no volume")
    centroid = first / volume
    return volume, centroid + origin, second / volume - np.outer(centroid, centroid)


def normalization(shape: Shape, align: bool = True, scale: str = "none") -> Normalization:
    """The transform that centres a shape, turns it onto its principal axes and optionally scales it.

    Parameters
    ----------
    shape : Shape
    align : bool
        Rotate onto the principal axes of the solid (x longest, z shortest).
        Each axis points towards the side where the solid's third moment is
        positive (the longer tail: an egg's pointed end), and the frame is
        right-handed; with ``False`` the rotation is the identity.
    scale : {"none", "volume"}
        ``"volume"``: divide by the equivalent-sphere radius ``(3V / 4π)^(1/3)``.
    """
    if scale not in ("none", "volume"):
        raise cs.InputError(f"scale must be 'none' or 'volume', got {scale!r}")
    volume, center, covariance = shape.moments
    rotation = np.eye(3)
    if align:
        _, vectors = np.linalg.eigh(covariance)
        axes = np.ascontiguousarray(vectors[:, ::-1].T)  # rows, longest axis first
        skew = solid_integrals(shape.vertices, shape.triangles, center, axes)[3]
        axes *= np.where(skew < 0, -1.0, 1.0)[:, None]
        if np.linalg.det(axes) < 0:
            # the least skewed axis has the least meaningful sign: it gives way to handedness
            axes[int(np.argmin(np.abs(skew)))] *= -1.0
        rotation = axes
    factor = (3.0 * abs(volume) / (4.0 * math.pi)) ** (1.0 / 3.0) if scale == "volume" else 1.0
    return Normalization(center, rotation, float(factor))


def largest_piece(vertices: np.ndarray, triangles: np.ndarray, who: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The largest connected closed surface of a mesh (by enclosed volume); warns when others are dropped."""
    from scipy import sparse
    from scipy.sparse import csgraph

    n = len(vertices)
    rows = triangles[:, [0, 1, 2]].ravel()
    cols = triangles[:, [1, 2, 0]].ravel()
    graph = sparse.coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(n, n))
    n_pieces, piece_of_vertex = csgraph.connected_components(graph, directed=False)
    if n_pieces == 1:
        return vertices, triangles
    piece_of_triangle = piece_of_vertex[triangles[:, 0]]
    a, b, c = (vertices[triangles[:, i]] - vertices.mean(axis=0) for i in range(3))
    tet = np.einsum("ij,ij->i", a, cross(b, c)) / 6.0
    volumes = np.bincount(piece_of_triangle, weights=tet, minlength=n_pieces)
    keep = int(np.argmax(np.abs(volumes)))
    dropped = 1.0 - abs(volumes[keep]) / max(float(np.abs(volumes).sum()), 1e-300)
    warnings.warn(
        f"{who}: the surface of {name} falls into {n_pieces} separate pieces; keeping the largest and dropping "
        f"{100 * dropped:.1f}% of its volume. Lower sigma_voxels, or split the object into its pieces",
        UserWarning, stacklevel=3,
    )
    kept = triangles[piece_of_triangle == keep]
    used = np.unique(kept)
    remap = np.full(n, -1, np.int64)
    remap[used] = np.arange(len(used))
    return vertices[used], remap[kept]


# ------------------------------------------------------------------------------------------ shape sources


def _mask_surface(mask: np.ndarray, voxel_size_nm: tuple[float, float, float], corner_nm: np.ndarray,
                  sigma_voxels: float, label: int, who: str, name: str) -> Shape:
    """The closed 0.5 iso-surface of a smoothed boolean mask (its largest piece), in nm.

    ``corner_nm`` is the position ``(z, y, x)`` of ``mask[0, 0, 0]``. The
    surface is VTK's flying-edges marching cubes (several times faster than
    scikit-image's here; vtk is a core dependency).
    """
    import vtk
    from scipy import ndimage
    from vtk.util import numpy_support

    pad = 2 + math.ceil(3 * sigma_voxels)
    field = np.pad(mask.astype(np.float32), pad)
    if sigma_voxels > 0:
        field = ndimage.gaussian_filter(field, sigma_voxels, truncate=3.0)
    if field.max() <= 0.5:
        raise cs.InputError(f"{who}: {name} ({int(mask.sum())} voxels) vanished after smoothing with sigma_voxels="
                            f"{sigma_voxels}; lower sigma_voxels")
    spacing_xyz = np.asarray(voxel_size_nm, float)[::-1]
    image = vtk.vtkImageData()
    image.SetDimensions(field.shape[2], field.shape[1], field.shape[0])  # x varies fastest, as in a C-order (z, y, x)
    image.SetSpacing(*spacing_xyz)
    image.SetOrigin(*(np.asarray(corner_nm, float)[::-1] - pad * spacing_xyz))
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(field.ravel(), deep=True, array_type=vtk.VTK_FLOAT))
    contour = vtk.vtkFlyingEdges3D()
    contour.SetInputData(image)
    contour.SetValue(0, 0.5)
    contour.ComputeNormalsOff()
    contour.ComputeGradientsOff()
    contour.ComputeScalarsOff()
    contour.Update()
    surface = contour.GetOutput()
    vertices = numpy_support.vtk_to_numpy(surface.GetPoints().GetData()).astype(np.float64)
    triangles = numpy_support.vtk_to_numpy(surface.GetPolys().GetConnectivityArray()).astype(np.int64).reshape(-1, 3)
    if len(vertices) - len(triangles) // 2 != 2:
        # Euler characteristic V - E + F = V - F/2 of a closed surface is 2 for one sphere-like piece; anything
        # else means smoothing cut a thin neck (several pieces) or closed a handle
        vertices, triangles = largest_piece(vertices, triangles, who, name)
    return outward_shape(label, name, vertices, triangles)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` with every background region that does not reach the array border filled."""
    from scipy import ndimage

    background, n = ndimage.label(~mask)
    if n <= 1:
        return mask
    faces = [background[0], background[-1], background[:, 0], background[:, -1], background[:, :, 0],
             background[:, :, -1]]
    outside = np.unique(np.concatenate([f.ravel() for f in faces]))
    return mask | ~np.isin(background, outside)


def shapes_from_labels(labels: cs.Labels, values: list[int] | None = None, *, sigma_voxels: float = 0.5,
                       on_border: str = "error", split_components: bool = False,
                       who: str = "generate") -> list[Shape]:
    """One closed surface per object of a label volume, in nm.

    Parameters
    ----------
    labels : cellscape.Labels
        Objects; the voxel size and origin (nm) place the surfaces.
    values : list of int, optional
        Label values to use; default every non-zero label.
    sigma_voxels : float
        Gaussian smoothing of each mask (voxels) before contouring at 0.5;
        it flattens the voxel staircase but also pulls convex surfaces in by
        about σ² × mean curvature, which matters for small objects (0.5
        measured best against the true surfaces in
        benchmarks/bench_generate.py; raise it for noisy segmentations).
        Holes enclosed by an object are filled.
    on_border : {"error", "skip", "keep"}
        What to do with an object touching the volume border (its shape is cut
        off there): raise, leave it out with a warning, or keep it (closed
        along the border) with a warning.
    split_components : bool
        Treat each connected piece (26-connectivity) of a label as its own
        shape; otherwise a label made of several pieces is an error.
    who : str
        Method name used in messages.

    Returns
    -------
    list of Shape
        In order of label value (then piece).
    """
    from scipy import ndimage

    if on_border not in BORDER_CHOICES:
        raise cs.InputError(f"{who}: on_border must be one of {BORDER_CHOICES}, got {on_border!r}")
    boxes = ndimage.find_objects(labels.data)
    present = [value for value, box in enumerate(boxes, start=1) if box is not None]
    if values is None:
        chosen = present
        if not chosen:
            raise cs.InputError(f"{who}: the labels image is empty (no non-zero voxel); there are no shapes")
    else:
        chosen = sorted({int(v) for v in values})
        missing = [v for v in chosen if v not in present]
        if 0 in chosen or missing:
            raise cs.InputError(f"{who}: no object has label(s) {[v for v in chosen if v == 0 or v in missing]}; "
                                f"labels present: {present or 'none'}")
    data = labels.data
    spacing = np.asarray(labels.voxel_size_nm, float)
    origin = np.asarray(labels.origin_nm, float)
    structure = np.ones((3, 3, 3), bool)
    shapes: list[Shape] = []
    touching: list[str] = []
    for value in chosen:
        box = boxes[value - 1]
        mask = data[box] == value
        class_name = labels.class_names.get(value)
        base = f"label {value}" + (f" ({class_name})" if class_name else "")
        pieces, n_pieces = ndimage.label(mask, structure)
        if n_pieces > 1 and not split_components:
            raise cs.InputError(
                f"{who}: {base} consists of {n_pieces} separate pieces, but one object per label is expected; "
                "give instance labels (e.g. segment.components) or set split_components: true"
            )
        piece_boxes = ndimage.find_objects(pieces) if n_pieces > 1 else [tuple(slice(0, n) for n in mask.shape)]
        for index, piece_box in enumerate(piece_boxes, start=1):
            name = base if n_pieces == 1 else f"{base}, piece {index}"
            full = tuple(slice(b.start + p.start, b.start + p.stop) for b, p in zip(box, piece_box, strict=True))
            if any(s.start == 0 or s.stop == n for s, n in zip(full, data.shape, strict=True)):
                touching.append(name)
                if on_border == "skip":
                    continue
            piece = _fill_holes(pieces[piece_box] == (index if n_pieces > 1 else 1))
            corner = origin + spacing * np.array([s.start for s in full], float)
            shapes.append(_mask_surface(piece, labels.voxel_size_nm, corner, sigma_voxels, value, who, name))
    if touching:
        listed = ", ".join(touching[:5]) + (f" and {len(touching) - 5} more" if len(touching) > 5 else "")
        if on_border == "error":
            raise cs.InputError(
                f"{who}: {listed} touch(es) the volume border, so the shape is cut off; crop a larger volume, "
                "leave them out (on_border: skip) or accept the cut shapes (on_border: keep)"
            )
        action = "left out" if on_border == "skip" else "kept, closed flat along the border"
        warnings.warn(f"{who}: {listed} touch(es) the volume border (cut-off shapes); {action}", UserWarning,
                      stacklevel=2)
    if not shapes:
        raise cs.InputError(f"{who}: no shape left after leaving out the objects that touch the border")
    return shapes


def shapes_from_surface(surface: cs.SurfaceMesh, who: str = "generate") -> list[Shape]:
    """One shape per marker region of a surface mesh; each must be closed and consistently oriented.

    Parameters
    ----------
    surface : cellscape.SurfaceMesh
        Closed surfaces in nm, one per marker (``mesh.marching_cubes`` makes
        one marker per label).

    Returns
    -------
    list of Shape
        In order of marker value; triangles facing outwards.
    """
    shapes = []
    for marker in np.unique(surface.markers):
        triangles = surface.triangles[surface.markers == marker]
        used = np.unique(triangles)
        remap = np.full(len(surface.vertices), -1, np.int64)
        remap[used] = np.arange(len(used))
        vertices, triangles = surface.vertices[used], remap[triangles]
        name = f"marker {int(marker)}" + (f" ({surface.marker_names[int(marker)]})"
                                          if int(marker) in surface.marker_names else "")
        check_closed(triangles, len(vertices), who, name)
        vertices, triangles = largest_piece(vertices, triangles, who, name)
        shapes.append(outward_shape(int(marker), name, vertices, triangles))
    return shapes
