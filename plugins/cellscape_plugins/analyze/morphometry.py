"""``analyze.morphometry``: per-object volume, area, shape, curvature and distances from labels or a surface mesh.

Objects are the label values (one object per class) or, with ``instances``,
the connected components of each class (face connectivity); or the markers
of a surface mesh, each a closed surface (its volume and volume centroid by
the divergence theorem, its area and curvature from its own triangles).

Volume
    voxel count × voxel volume (exact for the voxel object).
Area, curvature
    of a marching-cubes surface of the object's mask, smoothed with a Gaussian
    of ``smoothing_voxels`` first (0: the raw mask, whose staircase inflates
    the area by ~5–10 % and makes curvature meaningless). The mean curvature
    H at each surface vertex is half the norm of the cotangent Laplace–Beltrami
    of the position (positive where the surface bulges outwards; a sphere of
    radius R has H = 1/R); the table gives its area-weighted mean (within
    ~1–2 % of 1/R on spheres of 10 voxels) and SD. The SD includes the
    triangulation's noise: about half of H on a sphere of 10 voxels, so
    compare it between objects of similar size, not with zero.
Shape
    equivalent-sphere radius (3V / 4π)^⅓ of the voxel volume, and sphericity
    π^⅓ (6V_s)^⅔ / A with V_s the volume inside the measured surface (1 for
    a sphere, < 1 otherwise).
Distances
    between objects: their centroids, and their surfaces — the shortest
    distance between the vertices of the two (smoothed) surfaces; to the
    membrane: the same, to the surface of the ``membrane`` class with
    everything it encloses (its holes filled: organelles inside the cytosol).
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import numpy as np

import cellscape as cs

from .._trimesh import enclosed_volume, mean_curvature, signed_volumes, triangle_areas, vertex_areas

__all__ = ["Morphometry", "MorphometryParams"]

NM3_PER_UM3 = 1e9
NM2_PER_UM2 = 1e6
NM_PER_UM = 1e3


@attrs.frozen
class MorphometryParams:
    instances: bool = cs.param(False, help="split every class into connected components (one object each)")
    membrane: str | None = cs.param(
        None, help="class name or label value whose outer boundary is the membrane (distances to it are reported)")
    smoothing_voxels: float = cs.param(1.0, ge=0, unit="voxel",
                                       help="Gaussian smoothing of each mask before its surface is measured")
    distances: bool = cs.param(True, help="report centroid and surface distances between every pair of objects")
    min_voxels: int = cs.param(1, ge=1, unit="voxel", help="ignore objects smaller than this")


class Morphometry(cs.Analyzer):
    """Per-object volume, surface area, sphericity, mean curvature and distances between objects and to the membrane.

    Outputs
    -------
    table : Table
        One row per object: ``object`` (class name, ``_<k>`` per component with ``instances``; for a surface
        the marker's name), ``label`` (label value or marker), ``voxels`` (or ``triangles``), ``volume`` (µm³),
        ``area`` (µm²), ``equivalent_radius`` (nm), ``sphericity``, ``centroid_x``/``_y``/``_z`` (nm),
        ``mean_curvature`` and ``curvature_sd`` (1/µm), ``membrane_distance`` (nm; NaN without ``membrane``
        and for the membrane class itself), ``smoothed`` (1 when the surface was measured after smoothing; 0 for
        surface meshes, ``smoothing_voxels: 0``, and objects too thin to survive it, measured on raw voxels).
    distances : Table
        One row per pair of objects: ``object_a``, ``object_b``, ``centroid_distance`` and ``surface_distance`` (nm).
    """

    name = "analyze.morphometry"
    Params = MorphometryParams
    inputs = {
        "labels": cs.Port(cs.Labels, optional=True, help="a label image (classes or instances)"),
        "surface": cs.Port(cs.SurfaceMesh, optional=True, help="closed surfaces, one object per marker"),
    }
    outputs = {"table": cs.Table, "distances": cs.Table}

    def _membrane_value(self, labels: cs.Labels) -> int | None:
        token = self.params.membrane
        if token is None:
            return None
        by_name = {name: value for value, name in labels.class_names.items()}
        value = by_name.get(token, int(token) if token.isdigit() else None)
        present = labels.label_values()
        if value is None or value not in present:
            known = ", ".join(f"{v} ({labels.class_names[v]})" if v in labels.class_names else str(v) for v in present)
            raise cs.InputError(f"{self.name}: membrane '{token}' is not a class of the labels; label values: "
                                f"{known or 'none'}")
        return value

    def _objects(self, labels: cs.Labels) -> list[tuple[str, int, np.ndarray]]:
        from scipy import ndimage

        objects = []
        for value in labels.label_values():
            name = labels.class_names.get(value, f"label_{value}")
            mask = labels.data == value
            if self.params.instances:
                components, count = ndimage.label(mask)
                objects += [(f"{name}_{k}", value, components == k) for k in range(1, count + 1)]
            else:
                objects.append((name, value, mask))
        return [o for o in objects if int(o[2].sum()) >= self.params.min_voxels]

    def _surface(self, mask: np.ndarray, voxel: np.ndarray,
                 origin: np.ndarray) -> tuple[float, float, float, np.ndarray, float, bool]:
        """Area (nm²), area-weighted mean and SD of the mean curvature (1/nm) of the mask's smoothed surface,
        its vertices (x, y, z) in nm, the volume it encloses (nm³), and whether it was smoothed (an object
        too thin to keep a value above ½ after smoothing is measured on its raw voxels)."""
        from scipy import ndimage
        from skimage import measure

        sigma = self.params.smoothing_voxels
        pad = math.ceil(3 * sigma) + 2
        where = np.argwhere(mask)
        low, high = where.min(axis=0), where.max(axis=0) + 1
        crop = np.pad(mask[tuple(slice(a, b) for a, b in zip(low, high, strict=True))].astype(np.float64), pad)
        smoothed = ndimage.gaussian_filter(crop, sigma) if sigma > 0 else crop
        was_smoothed = sigma > 0 and float(smoothed.max()) > 0.5
        verts, faces, _, _ = measure.marching_cubes(smoothed if was_smoothed else crop, 0.5, spacing=tuple(voxel))
        verts = (verts + (low - pad) * voxel + origin)[:, ::-1]  # crop (z, y, x) → physical (x, y, z)
        if enclosed_volume(verts, faces) < 0:
            faces = faces[:, ::-1]  # turn the triangles outwards, so convex parts have H > 0
        area = float(measure.mesh_surface_area(verts, faces))
        curvature, weights = mean_curvature(verts, faces), vertex_areas(verts, faces)
        mean = float(np.dot(curvature, weights) / weights.sum())
        sd = float(np.sqrt(np.dot((curvature - mean) ** 2, weights) / weights.sum()))
        return area, mean, sd, verts, enclosed_volume(verts, faces), was_smoothed

    def _measure_labels(self, labels: cs.Labels) -> tuple[list[dict[str, Any]], list[np.ndarray], np.ndarray | None]:
        """Records of every object of a label image, their surface vertices (nm), the membrane's vertices."""
        from scipy import ndimage

        p = self.params
        voxel = np.asarray(labels.voxel_size_nm, float)  # (z, y, x)
        origin = np.asarray(labels.origin_nm, float)
        membrane_value = self._membrane_value(labels)
        objects = self._objects(labels)
        if not objects:
            raise cs.InputError(f"{self.name}: the labels hold no object of at least {p.min_voxels} voxel(s)")
        membrane = None
        if membrane_value is not None:
            membrane = self._surface(ndimage.binary_fill_holes(labels.data == membrane_value), voxel, origin)[3]
        records, surfaces = [], []
        for name, value, mask in self.progress(objects, total=len(objects), description="objects"):
            area, curvature, curvature_sd, surface, enclosed, smoothed = self._surface(mask, voxel, origin)
            records.append({"object": name, "label": value, "voxels": int(mask.sum()),
                            "volume_nm3": int(mask.sum()) * float(np.prod(voxel)), "area_nm2": area,
                            "surface_volume_nm3": enclosed, "smoothed": int(smoothed),
                            "centroid": (origin + np.argwhere(mask).mean(axis=0) * voxel)[::-1],
                            "curvature": curvature, "curvature_sd": curvature_sd, "is_membrane": value == membrane_value})
            surfaces.append(surface)
        return records, surfaces, membrane

    def _measure_surface(self, mesh: cs.SurfaceMesh) -> tuple[list[dict[str, Any]], list[np.ndarray], np.ndarray | None]:
        """Records of every marker of a closed surface mesh, their vertices (nm), the membrane marker's vertices."""
        markers = [int(m) for m in np.unique(mesh.markers)]
        token = self.params.membrane
        membrane_marker = None
        if token is not None:
            by_name = {name: marker for marker, name in mesh.marker_names.items()}
            membrane_marker = by_name.get(token, int(token) if token.isdigit() else None)
            if membrane_marker not in markers:
                known = ", ".join(f"{m} ({mesh.marker_names[m]})" if m in mesh.marker_names else str(m) for m in markers)
                raise cs.InputError(f"{self.name}: membrane '{token}' is not a marker of the surface; markers: {known}")
        records, surfaces, membrane = [], [], None
        for marker in markers:
            triangles = mesh.triangles[mesh.markers == marker]
            used, local = np.unique(triangles, return_inverse=True)
            vertices, local = mesh.vertices[used], local.reshape(-1, 3)
            a, b, c = (vertices[local[:, i]] for i in range(3))
            signed = signed_volumes(vertices, local)  # tetrahedra with the origin
            if signed.sum() < 0:
                local, signed = local[:, ::-1], -signed  # turn the triangles outwards
            volume = float(signed.sum())
            centroid = (signed[:, None] * (a + b + c) / 4).sum(axis=0) / volume if volume > 0 else vertices.mean(axis=0)
            curvature, weights = mean_curvature(vertices, local), vertex_areas(vertices, local)
            mean = float(np.dot(curvature, weights) / weights.sum())
            records.append({"object": mesh.marker_names.get(marker, f"marker_{marker}"), "label": marker,
                            "triangles": len(local), "volume_nm3": volume, "surface_volume_nm3": volume, "smoothed": 0,
                            "area_nm2": float(triangle_areas(vertices, local).sum()),
                            "centroid": centroid, "curvature": mean,
                            "curvature_sd": float(np.sqrt(np.dot((curvature - mean) ** 2, weights) / weights.sum())),
                            "is_membrane": marker == membrane_marker})
            surfaces.append(vertices)
            if marker == membrane_marker:
                membrane = vertices
        return records, surfaces, membrane

    def analyze(self, labels: cs.Labels | None = None,  # type: ignore[override]
                surface: cs.SurfaceMesh | None = None) -> dict[str, cs.Table]:
        from scipy import spatial

        if (labels is None) == (surface is None):
            raise cs.InputError(f"{self.name} needs exactly one input: 'labels' or 'surface' (closed surfaces, one per "
                                f"marker); got {'both' if labels is not None else 'neither'}")
        if labels is not None:
            records, surfaces, membrane = self._measure_labels(labels)
            count = "voxels"
        else:
            assert surface is not None
            records, surfaces, membrane = self._measure_surface(surface)
            count = "triangles"
        membrane_tree = spatial.cKDTree(membrane) if membrane is not None else None
        trees = [spatial.cKDTree(vertices) for vertices in surfaces]
        rows: list[dict[str, Any]] = []
        for record, tree in zip(records, trees, strict=True):
            volume, area = record["volume_nm3"], record["area_nm2"]
            distance = math.nan
            if membrane_tree is not None and not record["is_membrane"]:
                distance = float(membrane_tree.query(tree.data, k=1)[0].min())
            rows.append({
                "object": record["object"], "label": record["label"], count: record[count],
                "volume": volume / NM3_PER_UM3, "area": area / NM2_PER_UM2,
                "equivalent_radius": (3 * volume / (4 * math.pi)) ** (1 / 3),
                # area and volume of the same surface: ≤ 1 (isoperimetric), even where smoothing rounds small objects
                "sphericity": (math.pi ** (1 / 3) * (6 * record["surface_volume_nm3"]) ** (2 / 3) / area
                               if area > 0 else math.nan),
                "centroid_x": record["centroid"][0], "centroid_y": record["centroid"][1],
                "centroid_z": record["centroid"][2], "mean_curvature": record["curvature"] * NM_PER_UM,
                "curvature_sd": record["curvature_sd"] * NM_PER_UM, "membrane_distance": distance,
                "smoothed": record["smoothed"],
            })
        units = {count: "voxel" if count == "voxels" else "", "volume": "um^3", "area": "um^2",
                 "equivalent_radius": "nm", "sphericity": "", "centroid_x": "nm", "centroid_y": "nm", "centroid_z": "nm",
                 "mean_curvature": "1/um", "curvature_sd": "1/um", "membrane_distance": "nm", "smoothed": ""}
        columns = {key: np.array([r[key] for r in rows]) for key in rows[0]}
        pairs: dict[str, list[Any]] = {"object_a": [], "object_b": [], "centroid_distance": [], "surface_distance": []}
        if self.params.distances:
            for i in range(len(records)):
                for j in range(i + 1, len(records)):
                    pairs["object_a"].append(records[i]["object"])
                    pairs["object_b"].append(records[j]["object"])
                    pairs["centroid_distance"].append(float(np.linalg.norm(records[i]["centroid"] - records[j]["centroid"])))
                    pairs["surface_distance"].append(float(trees[j].query(trees[i].data, k=1)[0].min()))
        distances = cs.Table({"object_a": np.array(pairs["object_a"], dtype=str),
                              "object_b": np.array(pairs["object_b"], dtype=str),
                              "centroid_distance": np.array(pairs["centroid_distance"], float),
                              "surface_distance": np.array(pairs["surface_distance"], float)},
                             {"centroid_distance": "nm", "surface_distance": "nm"}, "distances between objects")
        return {"table": cs.Table(columns, units, "morphometry per object"), "distances": distances}
