"""``mesh.quality``: element quality, topology and surface distance of surface and tetrahedral meshes.

All functions take plain numpy arrays (vertices in any length unit; cellscape meshes use nm) and are
vectorized over elements. Angles are in degrees.

Surface measures
    :func:`triangle_angles`, :func:`triangle_aspect_ratios` (circumradius / (2 · inradius), 1 for an
    equilateral triangle), :func:`edge_lengths`, :func:`surface_area`, :func:`enclosed_volume`,
    :func:`euler_characteristic`, :func:`genus`, :func:`manifold_report`, :func:`hausdorff_distance`.
Volume measures
    :func:`tet_volumes`, :func:`dihedral_angles`, :func:`radius_ratios` (3 · inradius / circumradius,
    1 for a regular tetrahedron).
Per-region tables and a figure
    :func:`surface_quality`, :func:`volume_quality`, :func:`quality_figure`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import cellscape as cs

from .._tetmesh import TET_FACES
from .._trimesh import point_to_surface, triangle_areas
from ._edges import unique_edges
from .marching_cubes import signed_volume

__all__ = [
    "Quality",
    "dihedral_angles",
    "edge_lengths",
    "enclosed_volume",
    "euler_characteristic",
    "genus",
    "hausdorff_distance",
    "manifold_report",
    "quality_figure",
    "radius_ratios",
    "surface_area",
    "surface_quality",
    "tet_volumes",
    "triangle_angles",
    "triangle_aspect_ratios",
    "volume_quality",
]

SMALL_ANGLE_DEG = 15.0
LARGE_ANGLE_DEG = 150.0
SMALL_DIHEDRAL_DEG = 10.0

# the six edges (i, j) of a tetrahedron and, per edge, the two corners (k, l) off it
_TET_EDGES = np.array([[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]])
_TET_OFF_EDGE = np.array([[2, 3], [1, 3], [1, 2], [0, 3], [0, 2], [0, 1]])


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("...i,...i->...", a, b)


# -- triangles ----------------------------------------------------------------------------------


def edge_lengths(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Length of each triangle edge.

    Parameters
    ----------
    vertices : ndarray, shape (n, 3), float
        Vertex positions (nm for cellscape meshes).
    triangles : ndarray, shape (m, 3), int
        Vertex indices of each triangle.

    Returns
    -------
    ndarray, shape (m, 3), float64
        Column ``i`` is the length of the edge from corner ``i`` to corner ``(i + 1) % 3``, in the
        vertices' unit. Edges shared by two triangles appear twice.
    """
    corners = np.asarray(vertices, float)[triangles]
    return np.linalg.norm(np.roll(corners, -1, axis=1) - corners, axis=2)


def triangle_angles(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Interior angle at each triangle corner.

    Parameters
    ----------
    vertices : ndarray, shape (n, 3), float
    triangles : ndarray, shape (m, 3), int

    Returns
    -------
    ndarray, shape (m, 3), float64
        Angle at corner ``i`` in degrees (each row of a non-degenerate triangle sums to 180); NaN for
        a corner whose two edges include one of zero length.
    """
    corners = np.asarray(vertices, float)[triangles]
    to_next = np.roll(corners, -1, axis=1) - corners
    to_previous = np.roll(corners, 1, axis=1) - corners
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = _dot(to_next, to_previous) / (np.linalg.norm(to_next, axis=2) * np.linalg.norm(to_previous, axis=2))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def triangle_aspect_ratios(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Circumradius over twice the inradius of each triangle.

    With side lengths a, b, c, semi-perimeter s and area A: R = abc / (4A), r = A / s, so
    R / (2r) = abc · s / (8 A²).

    Returns
    -------
    ndarray, shape (m,), float64
        1 for an equilateral triangle, larger for worse shapes, ``inf`` for a degenerate triangle.
    """
    lengths = edge_lengths(vertices, triangles)
    area = triangle_areas(vertices, triangles)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = lengths.prod(axis=1) * lengths.sum(axis=1) / 2.0 / (8.0 * area**2)
    return np.where(area > 0, ratio, np.inf)


def surface_area(vertices: np.ndarray, triangles: np.ndarray) -> float:
    """Total triangle area in the vertices' unit squared (nm² for cellscape meshes)."""
    return float(triangle_areas(vertices, triangles).sum())


def enclosed_volume(vertices: np.ndarray, triangles: np.ndarray) -> float:
    """Volume enclosed by a closed surface, by the divergence theorem.

    The sum over triangles of the signed volumes of the tetrahedra each spans with the origin.
    Meaningful only for a closed surface; positive when the triangles turn counter-clockwise seen
    from outside, negative when they face inwards.

    Returns
    -------
    float
        Volume in the vertices' unit cubed (nm³ for cellscape meshes).
    """
    return signed_volume(np.asarray(vertices, float), triangles)


# -- topology -----------------------------------------------------------------------------------


def _components(n_nodes: int, pairs: np.ndarray) -> np.ndarray:
    """Connected-component label of each node of the graph with the given edges (shape (p, 2))."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n_nodes, n_nodes))
    return connected_components(graph, directed=False)[1]


def euler_characteristic(vertices: np.ndarray, triangles: np.ndarray) -> int:
    """V − E + F of the triangles, counting only vertices that some triangle uses.

    2 for a sphere-like closed surface, 0 for a torus, 1 for a disc; summed over connected components.
    """
    triangles = np.asarray(triangles, np.int64)
    edges = unique_edges(triangles)[0]
    return int(len(np.unique(triangles)) - len(edges) + len(triangles))


def _component_topology(triangles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Euler characteristic and number of boundary loops of each vertex-connected component."""
    triangles = np.asarray(triangles, np.int64)
    used, local = np.unique(triangles, return_inverse=True)
    local = local.reshape(-1, 3)
    edges, _, counts = unique_edges(local)
    label = _components(len(used), edges)
    n = int(label.max()) + 1
    chi = (np.bincount(label, minlength=n) - np.bincount(label[edges[:, 0]], minlength=n)
           + np.bincount(label[local[:, 0]], minlength=n))
    boundary = edges[counts == 1]
    on_boundary = np.unique(boundary)
    loops = np.zeros(n, np.int64)
    if len(boundary):
        # a boundary loop is a connected component of the graph of boundary edges
        loop_label = _components(len(used), boundary)[on_boundary]
        first_of_loop = np.unique(loop_label, return_index=True)[1]
        loops = np.bincount(label[on_boundary[first_of_loop]], minlength=n)
    return chi, loops


def genus(vertices: np.ndarray, triangles: np.ndarray) -> int:
    """Number of handles, summed over the connected components of the surface.

    Each vertex-connected component with Euler characteristic χ and b boundary loops has genus
    (2 − χ − b) / 2: 0 for a sphere or a disc, 1 for a torus. This holds for orientable manifold
    surfaces (see :func:`manifold_report`); for other meshes the number is rounded down and
    clipped at 0 per component.
    """
    if len(triangles) == 0:
        return 0
    chi, loops = _component_topology(triangles)
    return int(np.maximum((2 - chi - loops) // 2, 0).sum())


def manifold_report(triangles: np.ndarray) -> dict[str, Any]:
    """Edges and vertices where the triangles do not form a manifold surface.

    An edge is a boundary edge if one triangle uses it and non-manifold if more than two do. A
    vertex is non-manifold if its triangle fan is not a single disc: the link of the vertex (the
    edges opposite it in its triangles) must be one path or one cycle. This catches two cones
    touching at a tip ("bowtie") and the ends of non-manifold edges. An edge shared by two triangles
    that run along it in the same direction is inconsistently oriented.

    Parameters
    ----------
    triangles : ndarray, shape (m, 3), int

    Returns
    -------
    dict
        ``edges``, ``boundary_edges``, ``non_manifold_edges``, ``non_manifold_vertices``,
        ``inconsistently_oriented_edges`` (int counts); ``closed``, ``manifold``, ``oriented`` (bool);
        ``boundary_edge_list``, ``non_manifold_edge_list`` (ndarray (p, 2) of vertex pairs) and
        ``non_manifold_vertex_list`` (ndarray (q,) of vertex indices).
    """
    triangles = np.asarray(triangles, np.int64)
    edges, half_edge_to_edge, counts = unique_edges(triangles)
    # each 2-triangle edge should be walked once in each direction: once from its smaller to its larger vertex
    forward = (triangles < np.roll(triangles, -1, axis=1)).ravel()
    forward_count = np.bincount(half_edge_to_edge, weights=forward, minlength=len(edges))
    misoriented = int(((counts == 2) & (forward_count != 1)).sum())

    # link of vertex v: nodes are half-edges v -> u, one link edge (v->a, v->b) per triangle (v, a, b)
    centre = triangles.ravel()
    a = np.roll(triangles, -1, axis=1).ravel()
    b = np.roll(triangles, 1, axis=1).ravel()
    n = int(triangles.max()) + 1
    nodes, node_index = np.unique(np.concatenate([centre * n + a, centre * n + b]), return_inverse=True)
    link_edges = node_index.reshape(2, -1).T
    degree = np.bincount(link_edges.ravel(), minlength=len(nodes))
    label = _components(len(nodes), link_edges)
    node_centre = nodes // n
    fans = np.bincount(np.unique(np.stack([node_centre, label], axis=1), axis=0)[:, 0], minlength=n)
    branched = np.bincount(node_centre[degree > 2], minlength=n)
    bad_vertices = np.flatnonzero((fans > 1) | (branched > 0))

    boundary, non_manifold = edges[counts == 1], edges[counts > 2]
    return {
        "edges": len(edges),
        "boundary_edges": len(boundary),
        "non_manifold_edges": len(non_manifold),
        "non_manifold_vertices": len(bad_vertices),
        "inconsistently_oriented_edges": misoriented,
        "closed": len(boundary) == 0,
        "manifold": len(non_manifold) == 0 and len(bad_vertices) == 0,
        "oriented": misoriented == 0,
        "boundary_edge_list": boundary,
        "non_manifold_edge_list": non_manifold,
        "non_manifold_vertex_list": bad_vertices,
    }


# -- distance between surfaces ------------------------------------------------------------------


def _surface_samples(vertices: np.ndarray, triangles: np.ndarray, samples: int, seed: int) -> np.ndarray:
    """The vertices used by the triangles plus ``samples`` area-weighted uniform random surface points."""
    area = triangle_areas(vertices, triangles)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(triangles), size=samples, p=area / area.sum()) if area.sum() > 0 else np.zeros(0, int)
    u, v = rng.random((2, len(chosen)))
    flip = u + v > 1
    u, v = np.where(flip, 1 - u, u), np.where(flip, 1 - v, v)
    a, b, c = (vertices[triangles[chosen, i]] for i in range(3))
    inner = a + (b - a) * u[:, None] + (c - a) * v[:, None]
    return np.concatenate([vertices[np.unique(triangles)], inner])


def hausdorff_distance(a_vertices: np.ndarray, a_triangles: np.ndarray, b_vertices: np.ndarray,
                       b_triangles: np.ndarray, samples: int = 20000, seed: int = 0) -> float:
    """Symmetric Hausdorff distance between two triangle surfaces.

    Each surface is sampled at its vertices plus ``samples`` area-weighted random points; for every
    sample the exact point-to-triangle distance to the other surface is computed (candidate
    triangles found with a k-d tree of centroids, see :func:`cellscape_plugins._trimesh.point_to_surface`). The result is the
    larger of the two one-sided maxima, so it is a lower bound of the true Hausdorff distance that
    converges as ``samples`` grows (the same scheme as Metro / MeshLab's sampling filter).

    Parameters
    ----------
    a_vertices, b_vertices : ndarray, shape (n, 3), float
        Vertex positions in one length unit (nm for cellscape meshes).
    a_triangles, b_triangles : ndarray, shape (m, 3), int
    samples : int
        Random surface samples per surface, besides its vertices.
    seed : int
        Seed of the sampling, so results are reproducible.

    Returns
    -------
    float
        Distance in the vertices' unit.
    """
    a_vertices, b_vertices = np.asarray(a_vertices, float), np.asarray(b_vertices, float)
    a_triangles, b_triangles = np.asarray(a_triangles, np.int64), np.asarray(b_triangles, np.int64)
    a_to_b = point_to_surface(_surface_samples(a_vertices, a_triangles, samples, seed), b_vertices, b_triangles)
    b_to_a = point_to_surface(_surface_samples(b_vertices, b_triangles, samples, seed + 1), a_vertices, a_triangles)
    return float(max(a_to_b.max(), b_to_a.max()))


# -- tetrahedra ---------------------------------------------------------------------------------


def tet_volumes(points: np.ndarray, tets: np.ndarray, signed: bool = False) -> np.ndarray:
    """Volume of each tetrahedron, shape (k,), in the points' unit cubed.

    Signed volumes are positive when corners 1, 2, 3 turn counter-clockwise seen from corner 0's
    opposite side, i.e. (p1 − p0) · ((p2 − p0) × (p3 − p0)) > 0.
    """
    a, b, c, d = (np.asarray(points, float)[tets[:, i]] for i in range(4))
    volume = _dot(b - a, np.cross(c - a, d - a)) / 6.0
    return volume if signed else np.abs(volume)


def dihedral_angles(points: np.ndarray, tets: np.ndarray) -> np.ndarray:
    """Interior dihedral angle at each edge of each tetrahedron.

    Returns
    -------
    ndarray, shape (k, 6), float64
        Degrees, edges in the order (0,1), (0,2), (0,3), (1,2), (1,3), (2,3); arccos(1/3) ≈ 70.53°
        everywhere for a regular tetrahedron.
    """
    corners = np.asarray(points, float)[tets]
    p_i, p_j = corners[:, _TET_EDGES[:, 0]], corners[:, _TET_EDGES[:, 1]]
    p_k, p_l = corners[:, _TET_OFF_EDGE[:, 0]], corners[:, _TET_OFF_EDGE[:, 1]]
    edge = p_j - p_i
    edge = edge / np.linalg.norm(edge, axis=2, keepdims=True)
    # the off-edge corners projected onto the plane normal to the edge span the dihedral angle
    u = p_k - p_i
    w = p_l - p_i
    u = u - _dot(u, edge)[..., None] * edge
    w = w - _dot(w, edge)[..., None] * edge
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = _dot(u, w) / (np.linalg.norm(u, axis=2) * np.linalg.norm(w, axis=2))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def radius_ratios(points: np.ndarray, tets: np.ndarray) -> np.ndarray:
    """Three times the inradius over the circumradius of each tetrahedron.

    r = 3V / (total face area); the circumcentre lies at p0 + (|a|²(b×c) + |b|²(c×a) + |c|²(a×b)) /
    (2 a·(b×c)) with a, b, c the edges from p0.

    Returns
    -------
    ndarray, shape (k,), float64
        1 for a regular tetrahedron, towards 0 for slivers and needles, 0 for a flat one.
    """
    corners = np.asarray(points, float)[tets]
    a, b, c = (corners[:, i] - corners[:, 0] for i in (1, 2, 3))
    triple = _dot(a, np.cross(b, c))
    faces = corners[:, TET_FACES]
    face_area = np.linalg.norm(np.cross(faces[:, :, 1] - faces[:, :, 0], faces[:, :, 2] - faces[:, :, 0]), axis=2) / 2
    inradius = 3 * np.abs(triple) / 6.0 / face_area.sum(axis=1)
    offset = (_dot(a, a)[:, None] * np.cross(b, c) + _dot(b, b)[:, None] * np.cross(c, a)
              + _dot(c, c)[:, None] * np.cross(a, b))
    with np.errstate(divide="ignore", invalid="ignore"):
        circumradius = np.linalg.norm(offset, axis=1) / (2 * np.abs(triple))
        ratio = 3 * inradius / circumradius
    return np.where(np.abs(triple) > 0, ratio, 0.0)


# -- tables -------------------------------------------------------------------------------------

SURFACE_UNITS = {
    "min_angle": "deg", "max_angle": "deg", "min_edge": "nm", "mean_edge": "nm", "max_edge": "nm",
    "area": "nm^2", "volume": "nm^3",
}
VOLUME_UNITS = {"min_dihedral": "deg", "max_dihedral": "deg", "min_volume": "nm^3", "total_volume": "nm^3"}


def _surface_row(vertices: np.ndarray, triangles: np.ndarray) -> dict[str, float]:
    angles = triangle_angles(vertices, triangles)
    edges = unique_edges(triangles)[0]
    lengths = np.linalg.norm(vertices[edges[:, 1]] - vertices[edges[:, 0]], axis=1)
    report = manifold_report(triangles)
    return {
        "triangles": len(triangles),
        "vertices": len(np.unique(triangles)),
        "min_angle": float(np.nanmin(angles)),
        "max_angle": float(np.nanmax(angles)),
        "share_below_15deg": float((angles < SMALL_ANGLE_DEG).mean()),
        "share_above_150deg": float((angles > LARGE_ANGLE_DEG).mean()),
        "mean_aspect_ratio": float(triangle_aspect_ratios(vertices, triangles).mean()),
        "min_edge": float(lengths.min()),
        "mean_edge": float(lengths.mean()),
        "max_edge": float(lengths.max()),
        "area": surface_area(vertices, triangles),
        # a volume only exists for a closed piece of surface
        "volume": enclosed_volume(vertices, triangles) if report["closed"] else float("nan"),
        "euler_characteristic": euler_characteristic(vertices, triangles),
        "genus": genus(vertices, triangles),
        "non_manifold_edges": report["non_manifold_edges"],
        "non_manifold_vertices": report["non_manifold_vertices"],
        "boundary_edges": report["boundary_edges"],
    }


def _table(names: list[str], markers: list[int], rows: list[dict[str, float]], units: dict[str, str],
           title: str) -> cs.Table:
    columns: dict[str, np.ndarray] = {"region": np.array(names), "marker": np.array(markers, np.int64)}
    for key in rows[0]:
        values = [row[key] for row in rows]
        columns[key] = np.array(values, np.int64 if all(isinstance(v, int) for v in values) else np.float64)
    return cs.Table(columns, units, title)


def surface_quality(mesh: cs.SurfaceMesh) -> cs.Table:
    """Triangle quality and topology of each surface marker, then of the whole surface.

    Returns
    -------
    Table
        One row per marker (``region`` its name, ``marker`` its number) and a last row ``"all"``
        (marker −1). Columns: ``triangles``, ``vertices``, ``min_angle``/``max_angle`` [deg],
        ``share_below_15deg``/``share_above_150deg`` (share of all triangle angles),
        ``mean_aspect_ratio`` (see :func:`triangle_aspect_ratios`), ``min_edge``/``mean_edge``/``max_edge``
        [nm] over unique edges, ``area`` [nm^2], ``volume`` [nm^3] (enclosed, NaN unless that piece is
        closed), ``euler_characteristic``, ``genus``, ``non_manifold_edges``, ``non_manifold_vertices``,
        ``boundary_edges``.
    """
    rows = _rows_per_marker(mesh.vertices, mesh.triangles, mesh.markers, mesh.marker_names, "marker", _surface_row)
    return _table(*rows, SURFACE_UNITS, "surface mesh quality")


def _rows_per_marker(points: np.ndarray, cells: np.ndarray, markers: np.ndarray, marker_names: dict[int, str],
                     prefix: str, row: Any) -> tuple[list[str], list[int], list[dict[str, float]]]:
    """Names, marker numbers and ``row(points, cells)`` of each marker's cells, then of all cells (marker −1)."""
    names, numbers, rows = [], [], []
    for marker in np.unique(markers):
        names.append(marker_names.get(int(marker), f"{prefix}_{int(marker)}"))
        numbers.append(int(marker))
        rows.append(row(points, cells[markers == marker]))
    return [*names, "all"], [*numbers, -1], [*rows, row(points, cells)]


def _volume_row(points: np.ndarray, tets: np.ndarray) -> dict[str, float]:
    dihedral = dihedral_angles(points, tets)
    ratios = radius_ratios(points, tets)
    volumes = tet_volumes(points, tets)
    return {
        "tetrahedra": len(tets),
        "min_dihedral": float(np.nanmin(dihedral)),
        "max_dihedral": float(np.nanmax(dihedral)),
        "share_dihedrals_below_10deg": float((dihedral < SMALL_DIHEDRAL_DEG).mean()),
        "min_radius_ratio": float(ratios.min()),
        "mean_radius_ratio": float(ratios.mean()),
        "min_volume": float(volumes.min()),
        "total_volume": float(volumes.sum()),
    }


def volume_quality(mesh: cs.TetMesh) -> cs.Table:
    """Tetrahedron quality of each region, then of the whole mesh.

    Returns
    -------
    Table
        One row per region marker and a last row ``"all"`` (marker −1). Columns: ``tetrahedra``,
        ``min_dihedral``/``max_dihedral`` [deg], ``share_dihedrals_below_10deg``, ``min_radius_ratio``,
        ``mean_radius_ratio`` (see :func:`radius_ratios`), ``min_volume``/``total_volume`` [nm^3].
    """
    rows = _rows_per_marker(mesh.points, mesh.tetrahedra, mesh.region_markers, mesh.region_names, "region",
                            _volume_row)
    return _table(*rows, VOLUME_UNITS, "volume mesh quality")


class Quality(cs.Analyzer):
    """Element quality and topology of a surface mesh or a tetrahedral mesh, per marker.

    Give exactly one input. The table is :func:`surface_quality` for a surface and
    :func:`volume_quality` for a tetrahedral mesh.
    """

    name = "mesh.quality"
    stage = "mesh"
    inputs = {
        "surface": cs.Port(cs.SurfaceMesh, optional=True, help="triangle angles, aspect ratios, topology"),
        "mesh": cs.Port(cs.TetMesh, optional=True, help="dihedral angles, radius ratios, volumes"),
    }
    outputs = {"table": cs.Table}

    def analyze(self, surface: cs.SurfaceMesh | None = None, mesh: cs.TetMesh | None = None) -> cs.Table:
        if (surface is None) == (mesh is None):
            given = "both" if surface is not None else "neither"
            raise cs.InputError(f"mesh.quality needs exactly one input, 'surface' or 'mesh'; got {given}")
        return surface_quality(surface) if surface is not None else volume_quality(mesh)  # type: ignore[arg-type]


# -- figure -------------------------------------------------------------------------------------


def _histogram_with_density(ax: Any, angles: np.ndarray, colour: str, lines: tuple[float, ...]) -> None:
    """1° histogram of angles (counts) with a Gaussian kernel density scaled to counts per degree.

    The density is a Gaussian (Scott's bandwidth) convolved with a 0.1° histogram, which equals the
    kernel density estimate to within the fine bin width and costs the same for any number of angles.
    """
    flat = angles[np.isfinite(angles)].ravel()
    ax.hist(flat, bins=180, range=(0, 180), color=colour, edgecolor="none")
    if flat.size > 1 and np.ptp(flat) > 0:
        width = max(float(flat.std()) * flat.size ** (-1 / 5), 0.1)
        fine, edges = np.histogram(flat, bins=1800, range=(0, 180))
        offsets = np.arange(-np.ceil(4 * width / 0.1), np.ceil(4 * width / 0.1) + 1) * 0.1
        kernel = np.exp(-0.5 * (offsets / width) ** 2)
        density = np.convolve(fine, kernel / kernel.sum(), mode="same") * 10  # per 0.1° bin -> per 1°
        ax.plot((edges[:-1] + edges[1:]) / 2, density, color="#1f4e79", linewidth=1.2)
    for bound in lines:
        ax.axvline(bound, color="#c0392b", linestyle="--", linewidth=1)
    ax.set_xlim(0, 180)
    ax.set_ylabel("count per degree")


def quality_figure(mesh: cs.SurfaceMesh | cs.TetMesh) -> Any:
    """Histograms of triangle angles (and dihedral angles for a tetrahedral mesh), as in GAMer 2.

    The triangle panel has 180 one-degree bars with a kernel density curve and dashed lines at 15°
    and 150°; it shows the surface's triangles, or a tet mesh's boundary triangles (omitted when it
    has none). A tet mesh adds a panel of dihedral angles with a line at 10°.

    Returns
    -------
    matplotlib.figure.Figure
        Not attached to pyplot; save it with ``fig.savefig(path)``.
    """
    from matplotlib.figure import Figure

    if isinstance(mesh, cs.SurfaceMesh):
        triangles, vertices, dihedral = mesh.triangles, mesh.vertices, None
    elif isinstance(mesh, cs.TetMesh):
        triangles, vertices = mesh.boundary_triangles, mesh.points
        dihedral = dihedral_angles(mesh.points, mesh.tetrahedra)
    else:
        raise cs.InputError(f"quality_figure draws a SurfaceMesh or a TetMesh, not {type(mesh).__name__}")
    panels = int(len(triangles) > 0) + int(dihedral is not None)
    fig = Figure(figsize=(6 * panels, 4), layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    if len(triangles):
        angles = triangle_angles(vertices, triangles)
        _histogram_with_density(axes[0], angles, "#8fb3d9", (SMALL_ANGLE_DEG, LARGE_ANGLE_DEG))
        axes[0].set_xlabel("triangle angle (deg)")
        axes[0].set_title(f"{len(triangles)} triangles: min {np.nanmin(angles):.1f}°, max {np.nanmax(angles):.1f}°, "
                          f"<15°: {100 * (angles < SMALL_ANGLE_DEG).mean():.2f}%", fontsize=9)
    if dihedral is not None:
        _histogram_with_density(axes[-1], dihedral, "#9fc5a8", (SMALL_DIHEDRAL_DEG,))
        axes[-1].set_xlabel("dihedral angle (deg)")
        axes[-1].set_title(f"{len(dihedral)} tetrahedra: min {np.nanmin(dihedral):.1f}°, "
                           f"max {np.nanmax(dihedral):.1f}°", fontsize=9)
    return fig
