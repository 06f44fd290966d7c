"""``analyze.summary``: sizes of compartments and surfaces, and concentrations over time.

Units: volumes in µm³, areas in µm², concentrations in µM, amounts in
µM·µm³ (1 µM·µm³ ≈ 602 molecules).
"""

from __future__ import annotations

import numpy as np

import cellscape as cs

from .._trimesh import enclosed_volume, triangle_areas

NM3_PER_UM3 = 1e9
NM2_PER_UM2 = 1e6


def triangle_angles_deg(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Interior angles of each triangle.

    Parameters
    ----------
    vertices : ndarray, shape (n, 3), float
        Vertex positions (any length unit).
    triangles : ndarray, shape (m, 3), int
        Vertex indices of each triangle.

    Returns
    -------
    ndarray, shape (m, 3), float64
        Angle at each corner in degrees, in the order of ``triangles``' columns (each row sums to 180).
    """
    corners = vertices[triangles]
    angles = np.empty(triangles.shape)
    for i in range(3):
        a = corners[:, (i + 1) % 3] - corners[:, i]
        b = corners[:, (i + 2) % 3] - corners[:, i]
        cos = np.einsum("ij,ij->i", a, b) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        angles[:, i] = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    return angles


def surface_area(vertices: np.ndarray, triangles: np.ndarray) -> float:
    """Total area of the triangles.

    Parameters
    ----------
    vertices : ndarray, shape (n, 3), float
        Vertex positions, nm for cellscape meshes.
    triangles : ndarray, shape (m, 3), int
        Vertex indices of each triangle.

    Returns
    -------
    float
        Area in the vertices' unit squared (nm²; divide by 1e6 for µm²).
    """
    return float(triangle_areas(vertices, triangles).sum())


def tet_volumes(points: np.ndarray, tets: np.ndarray) -> np.ndarray:
    """Unsigned volume of each tetrahedron, shape (k,), in the points' unit cubed."""
    a, b, c, d = (points[tets[:, i]] for i in range(4))
    return np.abs(np.einsum("ij,ij->i", b - a, np.cross(c - a, d - a))) / 6.0


def region_volumes(mesh: cs.TetMesh) -> dict[int, float]:
    """Volume of each region of a tet mesh.

    Returns
    -------
    dict[int, float]
        Region marker -> summed tetrahedron volume in nm³ (divide by 1e9 for µm³).
    """
    volumes = tet_volumes(mesh.points, mesh.tetrahedra)
    return {int(r): float(volumes[mesh.region_markers == r].sum()) for r in np.unique(mesh.region_markers)}


def node_weights_by_region(mesh: cs.TetMesh) -> dict[int, np.ndarray]:
    """Lumped P1 mass of each node within each region.

    Returns
    -------
    dict[int, ndarray of shape (n_points,)]
        Region marker -> a quarter of the summed volume (nm³) of the node's tetrahedra in that region
        (zero for nodes outside it). Each array sums to the region's volume.
    """
    volumes = tet_volumes(mesh.points, mesh.tetrahedra)
    weights = {}
    for region in np.unique(mesh.region_markers):
        chosen = mesh.region_markers == region
        weights[int(region)] = np.bincount(mesh.tetrahedra[chosen].ravel(), weights=np.repeat(volumes[chosen] / 4, 4),
                                           minlength=len(mesh.points))
    return weights


def mean_concentration_by_region(fields: cs.Fields) -> dict[tuple[str, int], np.ndarray]:
    """Volume-weighted mean of each species in each region at each output time.

    Each node is weighted by its lumped P1 mass in the region (see :func:`node_weights_by_region`),
    so a field constant in a region has exactly that constant as its mean.

    Returns
    -------
    dict[tuple[str, int], ndarray of shape (n_times,)]
        (species, region marker) -> mean concentration in the species' unit (µM).
    """
    result = {}
    for region, weights in node_weights_by_region(fields.mesh).items():
        total = weights.sum()
        for species, values in fields.values.items():
            result[(species, region)] = values @ weights / total
    return result


def _region_name(names: dict[int, str], marker: int) -> str:
    return names.get(marker, f"region_{marker}")


class Summary(cs.Analyzer):
    """Volumes, areas, triangle quality, amounts and mean concentrations per region over time.

    Every input is optional, but at least one is needed.

    Outputs
    -------
    table : Table
        Long format, columns ``quantity``, ``region``, ``value``, ``unit``: per label value its voxel
        count and volume (µm³); per surface marker its area (µm²), enclosed volume (µm³, meaningful
        for closed surfaces), triangle count, min/max triangle angle (deg) and share of angles below
        15°; per tet region its volume (µm³) and tetrahedron count; per species and region the amount
        (µM·µm³) at the first and last time and the mean concentration at the last time.
    timecourse : Table
        ``time_s`` plus one column ``"<species> in <region>"`` per species and region holding the
        volume-weighted mean concentration; only ``time_s`` (0 rows) without fields.
    """

    name = "analyze.summary"
    inputs = {
        "labels": cs.Port(cs.Labels, optional=True, help="label volumes"),
        "surface": cs.Port(cs.SurfaceMesh, optional=True, help="surface areas and triangle quality"),
        "mesh": cs.Port(cs.TetMesh, optional=True, help="region volumes"),
        "fields": cs.Port(cs.Fields, optional=True, help="amounts and concentrations over time"),
    }
    outputs = {"table": cs.Table, "timecourse": cs.Table}

    def analyze(self, labels: cs.Labels | None = None, surface: cs.SurfaceMesh | None = None,
                mesh: cs.TetMesh | None = None, fields: cs.Fields | None = None) -> dict[str, cs.Table]:
        if labels is None and surface is None and mesh is None and fields is None:
            raise cs.InputError("analyze.summary needs at least one input: labels, surface, mesh or fields")
        rows: list[tuple[str, str, float, str]] = []
        if labels is not None:
            voxel_um3 = float(np.prod(labels.voxel_size_nm)) / NM3_PER_UM3
            values, counts = np.unique(labels.data, return_counts=True)
            present = [(int(v), int(n)) for v, n in zip(values, counts, strict=True) if v != 0]
            for value, count in present:
                name = labels.class_names.get(value, f"label_{value}")
                rows.append(("voxels", name, float(count), ""))
                rows.append(("volume", name, count * voxel_um3, "um^3"))
            rows.append(("labels", "all", float(len(present)), ""))
        if surface is not None:
            angles = triangle_angles_deg(surface.vertices, surface.triangles)
            for marker in np.unique(surface.markers):
                chosen = surface.triangles[surface.markers == marker]
                name = _region_name(surface.marker_names, int(marker))
                here = angles[surface.markers == marker]
                rows += [
                    ("area", name, surface_area(surface.vertices, chosen) / NM2_PER_UM2, "um^2"),
                    ("enclosed volume", name, enclosed_volume(surface.vertices, chosen) / NM3_PER_UM3, "um^3"),
                    ("triangles", name, float(len(chosen)), ""),
                    ("min triangle angle", name, float(here.min()), "deg"),
                    ("max triangle angle", name, float(here.max()), "deg"),
                    ("share of angles < 15 deg", name, float((here < 15).mean()), ""),
                ]
        if mesh is not None:
            for region, volume in region_volumes(mesh).items():
                name = _region_name(mesh.region_names, region)
                rows.append(("region volume", name, volume / NM3_PER_UM3, "um^3"))
                rows.append(("tetrahedra", name, float((mesh.region_markers == region).sum()), ""))
        timecourse: dict[str, np.ndarray] = {"time_s": np.zeros(0)}
        units = {"time_s": "s"}
        if fields is not None:
            timecourse = {"time_s": fields.times_s}
            weights = node_weights_by_region(fields.mesh)
            for (species, region), mean in mean_concentration_by_region(fields).items():
                name = _region_name(fields.mesh.region_names, region)
                column = f"{species} in {name}"
                timecourse[column] = mean
                units[column] = fields.units[species]
                amount = fields.values[species] @ weights[region] / NM3_PER_UM3
                rows += [
                    (f"{species} amount at t=0", name, float(amount[0]), "uM*um^3"),
                    (f"{species} amount at t={fields.times_s[-1]:g} s", name, float(amount[-1]), "uM*um^3"),
                    (f"{species} mean at t={fields.times_s[-1]:g} s", name, float(mean[-1]), fields.units[species]),
                ]
        table = cs.Table(
            {"quantity": np.array([r[0] for r in rows]), "region": np.array([r[1] for r in rows]),
             "value": np.array([r[2] for r in rows], float), "unit": np.array([r[3] for r in rows])},
            {}, "summary",
        )
        return {"table": table, "timecourse": cs.Table(timecourse, units, "mean concentration per region")}
