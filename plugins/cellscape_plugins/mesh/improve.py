"""``mesh.improve``: repair, remesh, smooth and improve the angles of a surface mesh, keeping its markers.

Each marker's closed surfaces are processed on their own and concatenated
again, so region markers and their names come out exactly as they went in.
For each marker, in order (every step can be switched off):

1. repair: merge duplicate vertices, drop degenerate and duplicate triangles,
   remove fins on non-manifold edges, split non-manifold vertices, close
   small holes, wind every piece consistently and outward;
2. remesh: isotropic remeshing or quadric decimation to a target edge length
   or triangle count (pymeshlab);
3. smooth: Taubin λ/μ or HC Laplacian smoothing (pymeshlab);
4. improve angles as GAMer does: tangential, angle-based vertex relocation
   and Delaunay-style edge flips between nearly coplanar triangles, until no
   angle is below ``min_angle_deg`` or above ``max_angle_deg``;
5. restore each marker's repaired volume by a uniform offset along the
   normals, and check the result (watertight, manifold, outward, no
   self-intersection, volume change, Hausdorff distance to the input).

The measures are kept on ``Improve.report`` and returned by
:func:`improvement_report`.
"""

from __future__ import annotations

import warnings
from typing import Any

import attrs
import numpy as np

import cellscape as cs


class _LazyOps:
    """The surface operations module, imported on first use: listing methods must not import SciPy."""

    def __getattr__(self, name: str) -> Any:
        from . import _surface_ops

        return getattr(_surface_ops, name)


ops = _LazyOps()

__all__ = ["Improve", "ImproveParams", "improvement_report"]


@attrs.frozen
class ImproveParams:
    repair: bool = cs.param(True, help="merge duplicate vertices, remove degenerate faces and non-manifold "
                                       "elements, close small holes, orient outward")
    merge_tolerance: float = cs.param(1e-3, ge=0, le=0.5,
                                      help="vertices closer than this fraction of the mean edge length are merged")
    max_hole_edges: int = cs.param(30, ge=0, help="close holes bounded by at most this many edges")
    remesh: str = cs.param("isotropic", choices=("isotropic", "decimate", "none"),
                           help="'isotropic': explicit isotropic remeshing (best angles); "
                                "'decimate': quadric edge collapse; 'none': keep the triangles")
    target_edge_nm: float | None = cs.param(None, gt=0, unit="nm",
                                            help="target edge length; default: the input's mean edge length")
    target_faces: int | None = cs.param(None, ge=4,
                                        help="triangle count per marker for 'decimate' (overrides target_edge_nm)")
    remesh_iterations: int = cs.param(10, ge=1, le=100, help="iterations of isotropic remeshing")
    smoothing: str = cs.param("taubin", choices=("taubin", "hc", "none"),
                              help="volume-preserving smoothing: Taubin lambda/mu or HC Laplacian")
    smoothing_iterations: int = cs.param(10, ge=0, le=500, help="smoothing steps")
    taubin_lambda: float = cs.param(0.5, gt=0, lt=1, help="Taubin shrinking factor")
    taubin_mu: float = cs.param(-0.53, gt=-1, lt=0, help="Taubin inflating factor (|mu| slightly above lambda)")
    improve_angles: bool = cs.param(True, help="tangential vertex relocation and edge flips to remove bad angles")
    min_angle_deg: float = cs.param(15.0, ge=0, lt=60, unit="deg", help="smallest triangle angle wanted")
    max_angle_deg: float = cs.param(150.0, gt=60, le=180, unit="deg", help="largest triangle angle wanted")
    angle_iterations: int = cs.param(30, ge=0, le=1000, help="rounds of relocation and flips at most")
    flip_max_dihedral_deg: float = cs.param(10.0, ge=0, le=90, unit="deg",
                                            help="flip an edge only if its two triangles bend by less than this")
    preserve_volume: bool = cs.param(True, help="restore each marker's volume by a uniform normal offset")
    max_volume_change_percent: float = cs.param(1.0, ge=0, unit="%", help="warn when a marker's volume changes more")
    max_hausdorff_nm: float | None = cs.param(None, gt=0, unit="nm",
                                              help="warn when the Hausdorff distance to the input is larger "
                                                   "(e.g. the labels' voxel size)")
    check_self_intersections: bool = cs.param(True, help="count self-intersecting triangles in the result")


def _edge_lengths(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    edges, _, _ = ops.unique_edges(triangles)
    return np.linalg.norm(vertices[edges[:, 0]] - vertices[edges[:, 1]], axis=1)


def _area(vertices: np.ndarray, triangles: np.ndarray) -> float:
    p = vertices[triangles]
    return float(np.linalg.norm(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), axis=1).sum() / 2)


def _marker_surface(mesh: cs.SurfaceMesh, marker: int) -> tuple[np.ndarray, np.ndarray]:
    return ops.compact(mesh.vertices, mesh.triangles[mesh.markers == marker])


def surface_measures(vertices: np.ndarray, triangles: np.ndarray, min_angle_deg: float = 15.0,
                     self_intersections: bool = True) -> dict[str, Any]:
    """Quality and topology of one closed surface.

    Returns
    -------
    dict
        ``faces``, ``vertices``, ``area_nm2``, ``volume_nm3`` (signed, positive
        when outward), ``min_angle_deg``, ``max_angle_deg``,
        ``share_below_min_angle`` (fraction of triangles with an angle below
        ``min_angle_deg``), ``open_edges``, ``non_manifold_edges``,
        ``non_manifold_vertices``, ``euler_characteristic``,
        ``self_intersecting_faces`` (None when not checked).
    """
    angles = ops.triangle_angles_deg(vertices, triangles)
    _, _, counts = ops.unique_edges(triangles)
    return {
        "faces": len(triangles),
        "vertices": len(np.unique(triangles)),
        "area_nm2": _area(vertices, triangles),
        "volume_nm3": ops.signed_volume(vertices, triangles),
        "min_angle_deg": float(angles.min()),
        "max_angle_deg": float(angles.max()),
        "share_below_min_angle": float((angles.min(axis=1) < min_angle_deg).mean()),
        "open_edges": int((counts == 1).sum()),
        "non_manifold_edges": int((counts > 2).sum()),
        "non_manifold_vertices": ops.non_manifold_vertex_count(triangles),
        "euler_characteristic": ops.euler_characteristic(triangles),
        "self_intersecting_faces": ops.self_intersecting_faces(vertices, triangles) if self_intersections else None,
    }


def improvement_report(before: cs.SurfaceMesh, after: cs.SurfaceMesh, min_angle_deg: float = 15.0,
                       self_intersections: bool = True) -> dict[int, dict[str, Any]]:
    """Compare a surface before and after improvement, marker by marker.

    Parameters
    ----------
    before, after : SurfaceMesh
        Input and result; markers missing from ``after`` raise InputError.
    min_angle_deg : float
        Threshold of ``share_below_min_angle``, in degrees.
    self_intersections : bool
        Also count self-intersecting triangles of ``after`` (pymeshlab).

    Returns
    -------
    dict[int, dict]
        Per marker: ``name``, every :func:`surface_measures` entry of the
        result, ``min_angle_before_deg``, ``max_angle_before_deg``,
        ``faces_before``, ``volume_before_nm3`` (signed), ``volume_change_percent``
        (relative to the magnitude of the input's volume, so an inside-out
        input turned outward counts as unchanged), ``area_change_percent`` and
        ``hausdorff_nm``: the symmetric Hausdorff distance between the two
        surfaces, sampled at vertices and ~4 points per triangle and measured
        to the other *surface* (pymeshlab ``get_hausdorff_distance``).
    """
    report: dict[int, dict[str, Any]] = {}
    for marker in np.unique(before.markers).tolist():
        if not (after.markers == marker).any():
            raise cs.InputError(f"mesh.improve: marker {marker} of the input is missing from the result")
        v0, t0 = _marker_surface(before, marker)
        v1, t1 = _marker_surface(after, marker)
        angles0 = ops.triangle_angles_deg(v0, t0)
        measures = surface_measures(v1, t1, min_angle_deg, self_intersections)
        volume0 = ops.signed_volume(v0, t0)
        area0 = _area(v0, t0)
        report[int(marker)] = {
            "name": after.marker_names.get(marker, before.marker_names.get(marker, f"marker_{marker}")),
            **measures,
            "faces_before": len(t0),
            "min_angle_before_deg": float(angles0.min()),
            "max_angle_before_deg": float(angles0.max()),
            "volume_before_nm3": volume0,
            "volume_change_percent": (100.0 * (measures["volume_nm3"] - abs(volume0)) / abs(volume0)
                                      if volume0 else float("nan")),
            "area_change_percent": 100.0 * (measures["area_nm2"] - area0) / area0 if area0 else float("nan"),
            "hausdorff_nm": ops.hausdorff_distance((v0, t0), (v1, t1)),
        }
    return report


class Improve(cs.Method):
    """Repair, remesh, smooth and improve the angles of a surface mesh, keeping region markers exactly.

    Input and output: a :class:`cellscape.SurfaceMesh` (vertices (x, y, z) in
    nm, closed outward-facing surfaces, one marker per region). Each marker is
    processed separately; after the call ``self.report`` holds, per marker,
    the measures of :func:`improvement_report` plus ``repairs`` (counts of
    what the repair step fixed) and ``angle_rounds``.
    """

    name = "mesh.improve"
    stage = "mesh"
    Params = ImproveParams
    inputs = {"surface": cs.SurfaceMesh}
    outputs = {"surface": cs.SurfaceMesh}

    def __init__(self, params: Any = None, **values: Any):
        super().__init__(params, **values)
        p = self.params
        if 2 * p.min_angle_deg + p.max_angle_deg > 180.0:
            raise cs.InputError(f"mesh.improve: no triangle has min angle >= {p.min_angle_deg} and max angle <= "
                                f"{p.max_angle_deg} (need 2 * min_angle_deg + max_angle_deg <= 180)")
        self.report: dict[int, dict[str, Any]] = {}

    def run(self, **inputs: cs.Artefact) -> dict[str, cs.Artefact]:
        return {"surface": self.improve(inputs["surface"])}  # type: ignore[arg-type]

    def improve(self, surface: cs.SurfaceMesh) -> cs.SurfaceMesh:
        """Return the improved surface; the measures are left in ``self.report``."""
        if not isinstance(surface, cs.SurfaceMesh):
            raise cs.InputError(f"mesh.improve: input must be a SurfaceMesh, got {type(surface).__name__}")
        if len(surface.triangles) == 0 or len(surface.vertices) == 0:
            raise cs.InputError("mesh.improve: the surface mesh is empty; mesh some labels first")
        if not np.isfinite(surface.vertices).all():
            raise cs.InputError("mesh.improve: vertices contain NaN or infinite coordinates")
        markers = np.unique(surface.markers).tolist()
        all_vertices, all_triangles, all_markers, extras = [], [], [], {}
        offset = 0
        for marker in self.progress(markers, description="improving surfaces"):
            vertices, triangles = _marker_surface(surface, marker)
            vertices, triangles, extra = self._improve_one(vertices, triangles, marker)
            extras[int(marker)] = extra
            all_vertices.append(vertices)
            all_triangles.append(triangles + offset)
            all_markers.append(np.full(len(triangles), marker, np.int32))
            offset += len(vertices)
        result = cs.SurfaceMesh(np.concatenate(all_vertices), np.concatenate(all_triangles),
                                np.concatenate(all_markers), dict(surface.marker_names))
        self.report = improvement_report(surface, result, self.params.min_angle_deg,
                                         self.params.check_self_intersections)
        for marker, extra in extras.items():
            self.report[marker].update(extra)
        if self.params.check_self_intersections and len(markers) > 1:
            crossing = ops.self_intersecting_faces(result.vertices, result.triangles)
            for entry in self.report.values():
                entry["self_intersecting_faces_all_markers"] = crossing
        self._warn(self.report)
        return result

    # -- one marker ----------------------------------------------------------
    def _improve_one(self, vertices: np.ndarray, triangles: np.ndarray, marker: int
                     ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        p = self.params
        extra: dict[str, Any] = {"repairs": {}}
        if p.repair:
            vertices, triangles, extra["repairs"] = repair_surface(vertices, triangles, p.merge_tolerance,
                                                                   p.max_hole_edges)
        if len(triangles) == 0:
            raise cs.InputError(f"mesh.improve: marker {marker} has no triangle left after repair")
        reference_volume = ops.signed_volume(vertices, triangles)
        if p.remesh != "none":
            vertices, triangles = self._remesh(vertices, triangles)
        if p.smoothing != "none" and p.smoothing_iterations > 0:
            vertices, triangles = self._smooth(vertices, triangles)
        rounds = 0
        if p.improve_angles:
            vertices, triangles, rounds = ops.improve_angles(vertices, triangles, p.min_angle_deg, p.max_angle_deg,
                                                         p.angle_iterations, p.flip_max_dihedral_deg)
        if p.preserve_volume and reference_volume > 0:
            vertices = ops.offset_to_volume(vertices, triangles, reference_volume)
        extra["angle_rounds"] = rounds
        return vertices, triangles, extra

    def _remesh(self, vertices: np.ndarray, triangles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import pymeshlab

        p = self.params
        target = p.target_edge_nm if p.target_edge_nm is not None else float(_edge_lengths(vertices, triangles).mean())
        ms = ops._meshset((vertices, triangles))
        if p.remesh == "isotropic":
            ms.meshing_isotropic_explicit_remeshing(iterations=p.remesh_iterations, targetlen=pymeshlab.PureValue(target),
                                                    featuredeg=60.0, checksurfdist=True,
                                                    maxsurfdist=pymeshlab.PureValue(0.25 * target))
        else:
            faces = p.target_faces
            if faces is None:
                faces = max(4, round(_area(vertices, triangles) / (np.sqrt(3) / 4 * target**2)))
            if faces < len(triangles):
                ms.meshing_decimation_quadric_edge_collapse(targetfacenum=int(faces), preservenormal=True,
                                                            preservetopology=True, planarquadric=True,
                                                            optimalplacement=True, autoclean=True)
        return _arrays(ms)

    def _smooth(self, vertices: np.ndarray, triangles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = self.params
        ms = ops._meshset((vertices, triangles))
        if p.smoothing == "taubin":
            ms.apply_coord_taubin_smoothing(lambda_=p.taubin_lambda, mu=p.taubin_mu, stepsmoothnum=p.smoothing_iterations)
        else:
            for _ in range(p.smoothing_iterations):
                ms.apply_coord_hc_laplacian_smoothing()
        return _arrays(ms)

    def _warn(self, report: dict[int, dict[str, Any]]) -> None:
        p = self.params
        for marker, r in report.items():
            where = f"mesh.improve: marker {marker} ({r['name']})"
            problems = []
            if p.improve_angles and (r["min_angle_deg"] < p.min_angle_deg - 1e-9
                                     or r["max_angle_deg"] > p.max_angle_deg + 1e-9):
                problems.append(f"angles {r['min_angle_deg']:.1f}°–{r['max_angle_deg']:.1f}° outside "
                                f"[{p.min_angle_deg}°, {p.max_angle_deg}°]; raise angle_iterations or target_edge_nm")
            if abs(r["volume_change_percent"]) > p.max_volume_change_percent:
                problems.append(f"volume changed by {r['volume_change_percent']:.2f}%")
            if p.max_hausdorff_nm is not None and r["hausdorff_nm"] > p.max_hausdorff_nm:
                problems.append(f"Hausdorff distance to the input {r['hausdorff_nm']:.2f} nm > "
                                f"max_hausdorff_nm={p.max_hausdorff_nm}")
            if r["open_edges"] or r["non_manifold_edges"] or r["non_manifold_vertices"]:
                problems.append(f"{r['open_edges']} open edge(s), {r['non_manifold_edges']} non-manifold edge(s), "
                                f"{r['non_manifold_vertices']} non-manifold vertex(es) remain"
                                + ("; raise max_hole_edges to close larger holes" if r["open_edges"] else ""))
            if r.get("self_intersecting_faces"):
                problems.append(f"{r['self_intersecting_faces']} self-intersecting triangle(s); lower smoothing or "
                                "target_edge_nm")
            if problems:
                warnings.warn(f"{where}: " + "; ".join(problems), stacklevel=3)


def _arrays(ms: Any) -> tuple[np.ndarray, np.ndarray]:
    mesh = ms.current_mesh()
    vertices = np.asarray(mesh.vertex_matrix(), np.float64)
    triangles = np.asarray(mesh.face_matrix(), np.int64)
    return ops.compact(vertices, triangles)


def repair_surface(vertices: np.ndarray, triangles: np.ndarray, merge_tolerance: float = 1e-3,
                   max_hole_edges: int = 30) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Make one marker's surface closed, manifold and outward.

    Parameters
    ----------
    vertices : ndarray, shape (n, 3), float64, nm
    triangles : ndarray, shape (m, 3), int64
    merge_tolerance : float
        Vertices closer than this fraction of the mean edge length are merged.
    max_hole_edges : int
        Holes bounded by at most this many edges are filled (pymeshlab ``meshing_close_holes``).

    Returns
    -------
    vertices, triangles
        The repaired surface (unused vertices dropped).
    repairs : dict[str, int]
        ``merged_vertices``, ``degenerate_faces``, ``duplicate_faces``,
        ``fin_faces`` (removed at non-manifold edges), ``non_manifold_vertices``
        (split), ``holes_closed``, ``holes_left``, ``flipped_faces``.
    """
    repairs: dict[str, int] = {}
    vertices, triangles = ops.compact(vertices, triangles)
    mean_edge = float(_edge_lengths(vertices, triangles).mean())
    vertices, triangles, repairs["merged_vertices"] = ops.merge_close_vertices(
        vertices, triangles, merge_tolerance * mean_edge)
    triangles, repairs["degenerate_faces"], repairs["duplicate_faces"] = ops.remove_degenerate_and_duplicate_faces(
        vertices, triangles)
    triangles, repairs["fin_faces"] = ops.remove_fins(triangles)
    if len(triangles) == 0:
        return vertices[:0], triangles, repairs
    vertices, triangles = ops.compact(vertices, triangles)
    repairs["non_manifold_vertices"] = ops.non_manifold_vertex_count(triangles)
    if repairs["non_manifold_vertices"]:
        ms = ops._meshset((vertices, triangles))
        # move the split copies a little apart, or a later pymeshlab step would weld them again
        ms.meshing_repair_non_manifold_vertices(vertdispratio=0.1)
        vertices, triangles = _arrays(ms)
    # pymeshlab closes the holes of coherently wound surfaces only
    triangles, repairs["flipped_faces"] = ops.orient_outward(vertices, triangles)
    holes = ops.boundary_loops(triangles)
    if holes and max_hole_edges > 0:
        ms = ops._meshset((vertices, triangles))
        ms.meshing_close_holes(maxholesize=max_hole_edges, newfaceselected=False, selfintersection=True)
        vertices, triangles = _arrays(ms)
    repairs["holes_left"] = ops.boundary_loops(triangles)
    repairs["holes_closed"] = holes - repairs["holes_left"]
    if holes:
        triangles, flipped = ops.orient_outward(vertices, triangles)
        repairs["flipped_faces"] += flipped
    return vertices, triangles, repairs
