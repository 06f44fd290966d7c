"""The data model: one frozen attrs class per kind of artefact.

Conventions (they hold everywhere in cellscape):

- Image arrays are indexed ``[z, y, x]`` (``[image, y, x]`` for tilt series);
  per-axis sizes (``voxel_size_nm``, ``origin_nm``) are given in the same
  ``(z, y, x)`` order.
- Mesh coordinates are columns ``(x, y, z)`` in nanometres, so a vertex at
  voxel ``[k, j, i]`` lies at ``origin_nm[::-1] + (i, j, k) * voxel_size_nm[::-1]``.
- Time is in seconds, concentrations in µM, diffusion coefficients in µm²/s.

Arrays are validated on construction (shape, dtype, finiteness) and made
read-only, so an artefact cannot change after it was hashed into the store.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

import attrs
import numpy as np

from ._errors import InputError

__all__ = [
    "Artefact",
    "Fields",
    "Labels",
    "SurfaceMesh",
    "Table",
    "TetMesh",
    "TiltSeries",
    "Volume",
    "artefact_kinds",
]


def _frozen_array(value: Any, dtype: Any = None) -> np.ndarray:
    """A read-only array of ``value``: a copy, except where a copy protects nothing.

    Used in place: a memory-mapped file, and an array that owns its memory
    and is already read-only (a method marks its finished output so, to
    hand it over without doubling the memory).

    Keeping a memmap unread is what lets a tilt series or tomogram larger
    than memory flow through slab-wise methods; its file must not change
    while the artefact is in use.
    """
    same_type = isinstance(value, np.ndarray) and (dtype is None or value.dtype == np.dtype(dtype))
    if same_type and isinstance(value, np.memmap):
        array = value.view()
    elif same_type and value.base is None and not value.flags.writeable and value.flags.c_contiguous:
        return value  # already frozen and owning its memory (a method's finished output): no copy
    else:
        array = np.array(value, dtype=dtype, copy=True)
    array.setflags(write=False)
    return array


def _require(condition: bool, kind: str, message: str) -> None:
    if not condition:
        raise InputError(f"{kind}: {message}")


def _check_finite(kind: str, name: str, array: np.ndarray) -> None:
    if array.dtype.kind not in "fc" or array.size == 0:
        return
    # block by block along the first axis, so a memory-mapped array is checked without loading it whole
    step = max(1, (8 << 20) // max(1, array[:1].nbytes)) if array.ndim > 1 else array.shape[0]
    bad = sum(int(block.size - np.count_nonzero(np.isfinite(block)))
              for block in (array[i:i + step] for i in range(0, array.shape[0], step)))
    if bad:
        raise InputError(f"{kind}: {name} holds {bad} NaN or infinite value(s); clean or mask them first")


def _triple(kind: str, name: str, value: Any, positive: bool) -> tuple[float, float, float]:
    array = np.broadcast_to(np.asarray(value, dtype=float), (3,)) if np.ndim(value) == 0 else np.asarray(value, dtype=float)
    _require(array.shape == (3,), kind, f"{name} must be one number or three (z, y, x), got {value!r}")
    _require(bool(np.isfinite(array).all()), kind, f"{name} must be finite, got {value!r}")
    if positive:
        _require(bool((array > 0).all()), kind, f"{name} must be > 0 nm on every axis, got {value!r}")
    return (float(array[0]), float(array[1]), float(array[2]))


def _names(kind: str, value: Mapping[Any, Any] | None) -> dict[int, str]:
    names = {int(k): str(v) for k, v in (value or {}).items()}
    _require(all(k >= 0 for k in names), kind, "marker and label numbers must be >= 0")
    return names


class Artefact:
    """Mixin of every data-model class: a stable kind name and a lossless payload.

    ``to_payload`` returns ``(arrays, meta)``: named numpy arrays plus a JSON-able
    dict; ``from_payload`` inverts it exactly. The artefact store, the ``.npz``
    format and content hashing all go through this pair.
    """

    kind: ClassVar[str]

    def to_payload(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        raise NotImplementedError

    @classmethod
    def from_payload(cls, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Any:
        raise NotImplementedError


def _voxel_grid_payload(obj: Any) -> dict[str, Any]:
    return {"voxel_size_nm": list(obj.voxel_size_nm), "origin_nm": list(obj.origin_nm)}


@attrs.frozen(eq=False)
class Volume(Artefact):
    """A 3D image: density of a tomogram, a filtered volume, a synthetic image.

    Parameters
    ----------
    data : ndarray, shape (nz, ny, nx), real dtype
        Voxel values; float or integer, finite.
    voxel_size_nm : float or (3,) floats
        Voxel edge lengths in nm, ``(z, y, x)``; all > 0.
    origin_nm : (3,) floats
        Physical position of voxel ``[0, 0, 0]`` in nm, ``(z, y, x)``.
    """

    kind: ClassVar[str] = "volume"

    data: np.ndarray = attrs.field(converter=_frozen_array)
    voxel_size_nm: tuple[float, float, float] = attrs.field(default=(1.0, 1.0, 1.0))
    origin_nm: tuple[float, float, float] = attrs.field(default=(0.0, 0.0, 0.0))

    def __attrs_post_init__(self) -> None:
        _require(self.data.ndim == 3, "Volume", f"data must be 3D (z, y, x), got shape {self.data.shape}")
        _require(self.data.size > 0, "Volume", "data is empty")
        _require(self.data.dtype.kind in "fiub", "Volume", f"data must be real numbers, got dtype {self.data.dtype}")
        _check_finite("Volume", "data", self.data)
        object.__setattr__(self, "voxel_size_nm", _triple("Volume", "voxel_size_nm", self.voxel_size_nm, True))
        object.__setattr__(self, "origin_nm", _triple("Volume", "origin_nm", self.origin_nm, False))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape)  # type: ignore[return-value]

    def to_payload(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return {"data": self.data}, _voxel_grid_payload(self)

    @classmethod
    def from_payload(cls, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Volume:
        return cls(arrays["data"], tuple(meta["voxel_size_nm"]), tuple(meta["origin_nm"]))


@attrs.frozen(eq=False)
class Labels(Artefact):
    """An integer label image: 0 is background, 1..K classes or instances.

    ``class_names`` maps label values to names (e.g. ``{1: "cytosol",
    2: "nucleus"}``); labels without a name are allowed (instances).
    """

    kind: ClassVar[str] = "labels"

    data: np.ndarray = attrs.field(converter=_frozen_array)
    class_names: dict[int, str] = attrs.field(factory=dict)
    voxel_size_nm: tuple[float, float, float] = attrs.field(default=(1.0, 1.0, 1.0))
    origin_nm: tuple[float, float, float] = attrs.field(default=(0.0, 0.0, 0.0))

    def __attrs_post_init__(self) -> None:
        _require(self.data.ndim == 3, "Labels", f"data must be 3D (z, y, x), got shape {self.data.shape}")
        _require(self.data.size > 0, "Labels", "data is empty")
        _require(self.data.dtype.kind in "iub", "Labels", f"data must be integers, got dtype {self.data.dtype}")
        _require(self.data.dtype.kind == "u" or int(self.data.min()) >= 0, "Labels", "label values must be >= 0")
        object.__setattr__(self, "class_names", _names("Labels", self.class_names))
        object.__setattr__(self, "voxel_size_nm", _triple("Labels", "voxel_size_nm", self.voxel_size_nm, True))
        object.__setattr__(self, "origin_nm", _triple("Labels", "origin_nm", self.origin_nm, False))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape)  # type: ignore[return-value]

    def label_values(self) -> list[int]:
        """Sorted label values present in the image, background (0) excluded."""
        return [int(v) for v in np.unique(self.data) if v != 0]

    def to_payload(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        meta = _voxel_grid_payload(self)
        meta["class_names"] = {str(k): v for k, v in sorted(self.class_names.items())}
        return {"data": self.data}, meta

    @classmethod
    def from_payload(cls, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Labels:
        return cls(arrays["data"], meta.get("class_names", {}), tuple(meta["voxel_size_nm"]), tuple(meta["origin_nm"]))


@attrs.frozen(eq=False)
class TiltSeries(Artefact):
    """Single-axis tilt series: one projection image per tilt angle.

    Parameters
    ----------
    projections : ndarray, shape (n_tilts, ny, nx), float
        Projection images, finite.
    tilt_angles_deg : (n_tilts,) floats
        Tilt angle of each image in degrees, each within [-90, 90].
    pixel_size_nm : float
        Pixel size of the images in nm (> 0).
    tilt_axis_angle_deg : float
        Angle of the tilt axis from the image Y axis, counter-clockwise, in
        degrees (IMOD convention; 0 = tilt axis along Y).
    """

    kind: ClassVar[str] = "tilt_series"

    projections: np.ndarray = attrs.field(converter=_frozen_array)
    tilt_angles_deg: np.ndarray = attrs.field(converter=lambda v: _frozen_array(v, float))
    pixel_size_nm: float = attrs.field(default=1.0, converter=float)
    tilt_axis_angle_deg: float = attrs.field(default=0.0, converter=float)

    def __attrs_post_init__(self) -> None:
        p, a = self.projections, self.tilt_angles_deg
        _require(p.ndim == 3, "TiltSeries", f"projections must be 3D (tilt, y, x), got shape {p.shape}")
        _require(p.dtype.kind in "fiu", "TiltSeries", f"projections must be real numbers, got dtype {p.dtype}")
        _require(a.ndim == 1, "TiltSeries", f"tilt_angles_deg must be 1D, got shape {a.shape}")
        _require(p.shape[0] >= 2, "TiltSeries", f"need at least 2 tilt images, got {p.shape[0]}")
        _require(
            a.shape[0] == p.shape[0], "TiltSeries",
            f"{a.shape[0]} tilt angles for {p.shape[0]} images; give exactly one angle per image",
        )
        _require(p.shape[1] > 0 and p.shape[2] > 0, "TiltSeries", "projection images are empty")
        _check_finite("TiltSeries", "projections", p)
        _check_finite("TiltSeries", "tilt_angles_deg", a)
        _require(
            bool((np.abs(a) <= 90.0).all()), "TiltSeries",
            f"tilt angles must lie within ±90°, got min {a.min():g}°, max {a.max():g}°",
        )
        _require(np.isfinite(self.pixel_size_nm) and self.pixel_size_nm > 0, "TiltSeries",
                 f"pixel_size_nm must be > 0, got {self.pixel_size_nm}")
        _require(bool(np.isfinite(self.tilt_axis_angle_deg)), "TiltSeries", "tilt_axis_angle_deg must be finite")

    def to_payload(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        meta = {"pixel_size_nm": self.pixel_size_nm, "tilt_axis_angle_deg": self.tilt_axis_angle_deg}
        return {"projections": self.projections, "tilt_angles_deg": self.tilt_angles_deg}, meta

    @classmethod
    def from_payload(cls, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> TiltSeries:
        return cls(arrays["projections"], arrays["tilt_angles_deg"], meta["pixel_size_nm"], meta["tilt_axis_angle_deg"])


def _check_cells(kind: str, name: str, cells: np.ndarray, width: int, n_points: int) -> None:
    _require(cells.ndim == 2 and cells.shape[1] == width, kind, f"{name} must have shape (n, {width}), got {cells.shape}")
    _require(cells.dtype.kind in "iu", kind, f"{name} must be integer indices, got dtype {cells.dtype}")
    if cells.size:
        lo, hi = int(cells.min()), int(cells.max())
        _require(
            lo >= 0 and hi < n_points, kind,
            f"{name} index vertices 0..{n_points - 1} but hold values {lo}..{hi} (out of range)",
        )


def _check_points(kind: str, name: str, points: np.ndarray) -> None:
    _require(points.ndim == 2 and points.shape[1] == 3, kind, f"{name} must have shape (n, 3), got {points.shape}")
    _require(points.shape[0] > 0, kind, f"{name} is empty")
    _check_finite(kind, name, points)


def _markers(cells: np.ndarray, markers: Any) -> np.ndarray:
    if markers is None:
        return _frozen_array(np.ones(len(cells), dtype=np.int32))
    return _frozen_array(markers, np.int32)


@attrs.frozen(eq=False)
class SurfaceMesh(Artefact):
    """A triangle surface mesh with one region marker per triangle.

    Parameters
    ----------
    vertices : ndarray, shape (n, 3), float64
        Vertex positions ``(x, y, z)`` in nm.
    triangles : ndarray, shape (m, 3), integer
        Vertex indices of each triangle, counter-clockwise seen from outside.
    markers : ndarray, shape (m,), int32, optional
        Surface region of each triangle (default all 1).
    marker_names : dict[int, str]
        Names of the markers (e.g. ``{1: "plasma_membrane"}``).
    """

    kind: ClassVar[str] = "surface_mesh"

    vertices: np.ndarray = attrs.field(converter=lambda v: _frozen_array(v, np.float64))
    triangles: np.ndarray = attrs.field(converter=lambda v: _frozen_array(v, np.int64))
    markers: np.ndarray = attrs.field(default=None)
    marker_names: dict[int, str] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        _check_points("SurfaceMesh", "vertices", self.vertices)
        _check_cells("SurfaceMesh", "triangles", self.triangles, 3, len(self.vertices))
        _require(len(self.triangles) > 0, "SurfaceMesh", "mesh has no triangles")
        object.__setattr__(self, "markers", _markers(self.triangles, self.markers))
        _require(self.markers.shape == (len(self.triangles),), "SurfaceMesh",
                 f"need one marker per triangle ({len(self.triangles)}), got shape {self.markers.shape}")
        object.__setattr__(self, "marker_names", _names("SurfaceMesh", self.marker_names))

    def to_payload(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {"vertices": self.vertices, "triangles": self.triangles, "markers": self.markers}
        return arrays, {"marker_names": {str(k): v for k, v in sorted(self.marker_names.items())}}

    @classmethod
    def from_payload(cls, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> SurfaceMesh:
        return cls(arrays["vertices"], arrays["triangles"], arrays["markers"], meta.get("marker_names", {}))


@attrs.frozen(eq=False)
class TetMesh(Artefact):
    """A tetrahedral volume mesh with region and boundary markers.

    Parameters
    ----------
    points : ndarray, shape (n, 3), float64
        Node positions ``(x, y, z)`` in nm.
    tetrahedra : ndarray, shape (k, 4), integer
        Node indices of each tetrahedron.
    region_markers : ndarray, shape (k,), int32
        Compartment of each tetrahedron (e.g. 1 = cytosol, 2 = nucleus).
    boundary_triangles : ndarray, shape (b, 3), integer
        Marked surface triangles (outer boundary and interfaces).
    boundary_markers : ndarray, shape (b,), int32
        Surface region of each boundary triangle.
    region_names, boundary_names : dict[int, str]
        Names of region and boundary markers.
    """

    kind: ClassVar[str] = "tet_mesh"

    points: np.ndarray = attrs.field(converter=lambda v: _frozen_array(v, np.float64))
    tetrahedra: np.ndarray = attrs.field(converter=lambda v: _frozen_array(v, np.int64))
    region_markers: np.ndarray = attrs.field(default=None)
    boundary_triangles: np.ndarray = attrs.field(default=np.zeros((0, 3), np.int64),
                                                 converter=lambda v: _frozen_array(v, np.int64))
    boundary_markers: np.ndarray = attrs.field(default=None)
    region_names: dict[int, str] = attrs.field(factory=dict)
    boundary_names: dict[int, str] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        _check_points("TetMesh", "points", self.points)
        _check_cells("TetMesh", "tetrahedra", self.tetrahedra, 4, len(self.points))
        _require(len(self.tetrahedra) > 0, "TetMesh", "mesh has no tetrahedra")
        _check_cells("TetMesh", "boundary_triangles", self.boundary_triangles.reshape(-1, 3), 3, len(self.points))
        object.__setattr__(self, "boundary_triangles", self.boundary_triangles.reshape(-1, 3))
        object.__setattr__(self, "region_markers", _markers(self.tetrahedra, self.region_markers))
        object.__setattr__(self, "boundary_markers", _markers(self.boundary_triangles, self.boundary_markers))
        _require(self.region_markers.shape == (len(self.tetrahedra),), "TetMesh", "need one region marker per tetrahedron")
        _require(self.boundary_markers.shape == (len(self.boundary_triangles),), "TetMesh",
                 "need one boundary marker per boundary triangle")
        object.__setattr__(self, "region_names", _names("TetMesh", self.region_names))
        object.__setattr__(self, "boundary_names", _names("TetMesh", self.boundary_names))

    def to_payload(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {
            "points": self.points, "tetrahedra": self.tetrahedra, "region_markers": self.region_markers,
            "boundary_triangles": self.boundary_triangles, "boundary_markers": self.boundary_markers,
        }
        meta = {
            "region_names": {str(k): v for k, v in sorted(self.region_names.items())},
            "boundary_names": {str(k): v for k, v in sorted(self.boundary_names.items())},
        }
        return arrays, meta

    @classmethod
    def from_payload(cls, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> TetMesh:
        return cls(
            arrays["points"], arrays["tetrahedra"], arrays["region_markers"], arrays["boundary_triangles"],
            arrays["boundary_markers"], meta.get("region_names", {}), meta.get("boundary_names", {}),
        )


@attrs.frozen(eq=False)
class Fields(Artefact):
    """Species values at the nodes of a TetMesh over time.

    Parameters
    ----------
    mesh : TetMesh
        The mesh the values live on.
    times_s : (n_times,) floats
        Output times in seconds, strictly increasing.
    values : dict[str, ndarray of shape (n_times, n_points)]
        Concentration of each species at each node and time (µM).
    units : dict[str, str]
        Unit of each species (default "uM").
    """

    kind: ClassVar[str] = "fields"

    mesh: TetMesh = attrs.field(validator=attrs.validators.instance_of(TetMesh))
    times_s: np.ndarray = attrs.field(converter=lambda v: _frozen_array(v, np.float64))
    values: dict[str, np.ndarray] = attrs.field(converter=lambda d: {str(k): _frozen_array(v, np.float64) for k, v in d.items()})
    units: dict[str, str] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        t = self.times_s
        _require(t.ndim == 1 and t.size >= 1, "Fields", "times_s must be a non-empty 1D array")
        _check_finite("Fields", "times_s", t)
        _require(bool((np.diff(t) > 0).all()), "Fields", "times_s must be strictly increasing")
        _require(len(self.values) > 0, "Fields", "no species values given")
        expected = (t.size, len(self.mesh.points))
        for name, array in self.values.items():
            _require(array.shape == expected, "Fields", f"species '{name}' has shape {array.shape}, expected {expected}")
            _check_finite("Fields", f"species '{name}'", array)
        object.__setattr__(self, "units", {name: str(self.units.get(name, "uM")) for name in self.values})

    def to_payload(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        mesh_arrays, mesh_meta = self.mesh.to_payload()
        arrays = {f"mesh/{k}": v for k, v in mesh_arrays.items()}
        arrays["times_s"] = self.times_s
        arrays.update({f"values/{name}": v for name, v in self.values.items()})
        return arrays, {"mesh": mesh_meta, "units": self.units, "species": list(self.values)}

    @classmethod
    def from_payload(cls, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Fields:
        mesh = TetMesh.from_payload({k[5:]: v for k, v in arrays.items() if k.startswith("mesh/")}, meta["mesh"])
        values = {name: arrays[f"values/{name}"] for name in meta["species"]}
        return cls(mesh, arrays["times_s"], values, meta.get("units", {}))


@attrs.frozen(eq=False)
class Table(Artefact):
    """Named columns of equal length, with a unit per column.

    Parameters
    ----------
    columns : dict[str, 1D array]
        Column values; numbers or strings, all columns the same length.
    units : dict[str, str]
        Unit of each numeric column ("" when dimensionless).
    title : str
        A short caption used in reports.
    """

    kind: ClassVar[str] = "table"

    columns: dict[str, np.ndarray] = attrs.field(converter=lambda d: {str(k): _frozen_array(v) for k, v in d.items()})
    units: dict[str, str] = attrs.field(factory=dict)
    title: str = ""

    def __attrs_post_init__(self) -> None:
        lengths = {name: col.shape for name, col in self.columns.items()}
        _require(all(len(s) == 1 for s in lengths.values()), "Table", f"columns must be 1D, got shapes {lengths}")
        _require(len({s[0] for s in lengths.values()}) <= 1, "Table", f"columns differ in length: {lengths}")
        for name, col in self.columns.items():
            _require(col.dtype.kind in "fiubU", "Table", f"column '{name}' has unsupported dtype {col.dtype}")
        object.__setattr__(self, "units", {k: str(v) for k, v in self.units.items()})

    @property
    def n_rows(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def rows(self) -> list[dict[str, Any]]:
        """The table as a list of ``{column: python value}`` dicts."""
        return [{k: v[i].item() for k, v in self.columns.items()} for i in range(self.n_rows)]

    def to_payload(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {f"col{i}": col for i, col in enumerate(self.columns.values())}
        return arrays, {"names": list(self.columns), "units": self.units, "title": self.title}

    @classmethod
    def from_payload(cls, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Table:
        columns = {name: arrays[f"col{i}"] for i, name in enumerate(meta["names"])}
        return cls(columns, meta.get("units", {}), meta.get("title", ""))


@attrs.frozen(eq=False)
class Model(Artefact):
    """A trained model: the method that made it, its numbers as named arrays, and JSON metadata.

    Stored like every artefact (``.npz`` arrays + JSON, never pickle), so a
    model is a step output that can be saved, cached, hashed and fed to a
    later step or run: random-forest tree tables, network weights (a state
    dict as arrays), fitted shape-model parameters.

    Parameters
    ----------
    method : str
        Name of the method that made it and can use it (``segment.random_forest``).
    arrays : dict[str, ndarray]
        Every learned number.
    meta : dict
        JSON-able settings: class names, architecture, training parameters, versions.
    """

    kind: ClassVar[str] = "model"

    method: str
    arrays: dict[str, np.ndarray] = attrs.field(converter=lambda d: {str(k): _frozen_array(v) for k, v in d.items()})
    meta: dict[str, Any] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        _require(bool(self.method), "Model", "method must name the method that made the model")
        try:
            canonical_meta(self.meta)
        except (TypeError, ValueError) as exc:
            raise InputError(f"Model: meta must be JSON-able ({exc})") from exc

    def require(self, method: str) -> Model:
        """This model, or an InputError when it was made by another method."""
        if self.method != method:
            raise InputError(f"{method}: the model was made by {self.method}, not by {method}")
        return self

    def to_payload(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return dict(self.arrays), {"method": self.method, "meta": self.meta}

    @classmethod
    def from_payload(cls, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Model:
        return cls(meta["method"], dict(arrays), dict(meta.get("meta", {})))


_KINDS: dict[str, type[Artefact]] = {
    cls.kind: cls for cls in (Volume, Labels, TiltSeries, SurfaceMesh, TetMesh, Fields, Table, Model)
}


def artefact_kinds() -> dict[str, type[Artefact]]:
    """Every artefact class by its kind name (``"volume"``, ``"labels"``, ...)."""
    return dict(_KINDS)


def register_artefact_kind(cls: type[Artefact]) -> None:
    """Make a plugin's own artefact class storable (it needs ``kind`` and the payload pair)."""
    existing = _KINDS.get(cls.kind)
    if existing is not None and existing is not cls:
        raise InputError(f"artefact kind '{cls.kind}' is already taken by {existing.__qualname__}")
    _KINDS[cls.kind] = cls


def canonical_meta(meta: Mapping[str, Any]) -> bytes:
    """JSON bytes of a payload's metadata, identical for equal metadata."""
    return json.dumps(meta, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
