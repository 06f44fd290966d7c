"""TIFF and OME-TIFF (tifffile): 3D volumes and labels, [z, y, x].

Physical sizes, in the order they are looked for: cellscape's own JSON note
(kind, class names, exact voxel size and origin in nm); OME-XML
PhysicalSizeX/Y/Z with their units (OME-TIFF); ImageJ metadata (``spacing``
and ``unit`` in the description, XY from the resolution tags); the resolution
tags with ResolutionUnit centimetre. Resolutions in inches (scanner "dpi")
are ignored: such files read with 1 nm voxels. The origin is only kept by
the note.

cellscape writes its note as the JSON image description of a plain TIFF and
in a private tag (65010) of an OME-TIFF, whose description is the OME-XML;
it also writes the standard resolution tags (pixels per cm) so other tools
see the pixel size. A 2D image reads as a Volume with one z slice.

A tilt series is a TIFF stack (one image per tilt) with its angles in
``<stem>.tlt`` or ``<stem>.rawtlt`` beside it (IMOD's one-angle-per-line
files; for ``stack.ome.tif`` the stem is ``stack``); the pixel size comes
from the same metadata as a volume's XY size. Writing a TiltSeries writes the
``.tlt`` file too.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from .._data import Artefact, Labels, TiltSeries, Volume
from .._errors import InputError
from ._angles import angle_file_beside, artefact_from_stack, stack_stem, write_tilt_angles

NOTE_TAG = 65010  # private TIFF tag holding cellscape's JSON note
_TO_NM = {"nm": 1.0, "nanometer": 1.0, "\u00b5m": 1e3, "\u03bcm": 1e3, "um": 1e3, "micron": 1e3, "micrometer": 1e3,
          "\\u00b5m": 1e3, "mm": 1e6, "millimeter": 1e6, "cm": 1e7, "\u00e5": 0.1, "a": 0.1, "angstrom": 0.1}
_CENTIMETER = 3  # TIFF ResolutionUnit


def _ome_sizes(xml: str) -> tuple[float, float, float] | None:
    sizes = []
    for axis in ("Z", "Y", "X"):
        value = re.search(rf'PhysicalSize{axis}="([^"]+)"', xml)
        unit = re.search(rf'PhysicalSize{axis}Unit="([^"]+)"', xml)
        if value is None:
            sizes.append(None)
            continue
        factor = _TO_NM.get((unit.group(1) if unit else "µm").lower(), None)
        if factor is None:
            return None
        sizes.append(float(value.group(1)) * factor)
    if all(s is None for s in sizes):
        return None
    known = [s for s in sizes if s is not None]
    return tuple(s if s is not None else known[0] for s in sizes)  # type: ignore[return-value]


class _Complaints(logging.Handler):
    """Collects what tifffile logs about a damaged file (it logs instead of raising)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _own_note(page: object) -> dict[str, Any]:
    """cellscape's note from the private tag, or a JSON description carrying a voxel size ({} if none)."""
    tag = page.tags.get(NOTE_TAG)  # type: ignore[attr-defined]
    text = tag.value if tag is not None else page.description  # type: ignore[attr-defined]
    try:
        note = json.loads(text) if text and text.lstrip().startswith("{") else {}
    except json.JSONDecodeError:
        if tag is not None:
            raise
        return {}
    return note if isinstance(note, dict) and (tag is not None or "voxel_size_nm" in note) else {}


def _resolution_nm(page: object, unit_nm: float | None) -> float | None:
    """XY pixel size from the resolution tags: per ImageJ unit, or per cm; None if unknown."""
    tags = page.tags  # type: ignore[attr-defined]
    resolution, res_unit = tags.get("XResolution"), tags.get("ResolutionUnit")
    if resolution is None:
        return None
    numerator, denominator = resolution.value
    if not numerator or not denominator:
        return None
    if unit_nm is None:
        if res_unit is None or int(res_unit.value) != _CENTIMETER:
            return None
        unit_nm = _TO_NM["cm"]
    return denominator / numerator * unit_nm


def read_tiff(path: Path, kind: type[Artefact] | None) -> Artefact:
    """Read a (OME-)TIFF as a Volume or Labels, [z, y, x]; see the module docstring for the sizes."""
    import tifffile

    complaints = _Complaints()
    logger = logging.getLogger("tifffile")
    logger.addHandler(complaints)
    try:
        with tifffile.TiffFile(path) as tif:
            data = _stack(tif, path)
            page = tif.pages[0]
            note = _own_note(page)
            ome = tif.ome_metadata
            imagej = tif.imagej_metadata or {}
            xy_nm = _resolution_nm(page, _TO_NM.get(str(imagej.get("unit", "")).lower()) if imagej else None)
    except (tifffile.TiffFileError, ValueError, OSError, EOFError, KeyError, IndexError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: corrupt or truncated TIFF file ({exc})") from exc
    finally:
        logger.removeHandler(complaints)
    if complaints.messages:
        raise InputError(f"{path}: corrupt or truncated TIFF file ({complaints.messages[0]})")
    if "shape" in note and list(data.shape) != list(note["shape"]):
        raise InputError(f"{path}: truncated TIFF file (shape {data.shape}, written as {tuple(note['shape'])})")
    if data.ndim > 3:
        data = np.squeeze(data)
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise InputError(f"{path}: expected a 2D or 3D single-channel image, got shape {data.shape}")
    voxel: tuple[float, ...] = (1.0, 1.0, 1.0)
    origin: tuple[float, ...] = (0.0, 0.0, 0.0)
    ome_sizes = _ome_sizes(ome) if ome else None
    if "voxel_size_nm" in note:
        voxel = tuple(float(v) for v in note["voxel_size_nm"])
        origin = tuple(float(v) for v in note.get("origin_nm", origin))
    elif ome_sizes is not None:
        voxel = ome_sizes
    elif imagej and (xy_nm is not None or "spacing" in imagej):
        unit_nm = _TO_NM.get(str(imagej.get("unit", "")).lower(), 1.0)
        xy = xy_nm if xy_nm is not None else 1.0
        voxel = (float(imagej["spacing"]) * unit_nm if "spacing" in imagej else xy, xy, xy)
    elif xy_nm is not None:
        voxel = (xy_nm, xy_nm, xy_nm)
    angles_path = angle_file_beside(path)
    wanted = kind.kind if kind is not None else note.get("kind", "tilt_series" if angles_path else "volume")
    return artefact_from_stack(path, data, wanted, note, voxel, origin, angles_path)


def _stack(tif: Any, path: Path) -> np.ndarray:
    """The image data: one series, or several series of one shape stacked (pages written one by one)."""
    series = tif.series
    if len(series) <= 1:
        return tif.asarray()
    shapes = {tuple(s.shape) for s in series}
    if len(shapes) > 1:
        listed = ", ".join("x".join(map(str, shape)) for shape in sorted(shapes))
        raise InputError(f"{path}: the file holds images of different sizes ({listed}); a stack needs images of one "
                         "size")
    return np.stack([s.asarray() for s in series])


def write_tiff(obj: Artefact, path: Path) -> None:
    """Write a Volume, Labels or TiltSeries (with ``<stem>.tlt``) as TIFF, or OME-TIFF when named .ome.tif(f)."""
    if isinstance(obj, TiltSeries):
        size = obj.pixel_size_nm
        note: dict[str, Any] = {"kind": obj.kind, "shape": list(obj.projections.shape), "pixel_size_nm": size,
                                "tilt_axis_angle_deg": obj.tilt_axis_angle_deg, "voxel_size_nm": [1.0, size, size]}
        _write_tiff_data(obj.projections, (1.0, size, size), note, path)
        write_tilt_angles(path.with_name(stack_stem(path) + ".tlt"), obj.tilt_angles_deg)
        return
    if not isinstance(obj, (Volume, Labels)):
        raise InputError(f"{path}: TIFF files hold volumes, labels and tilt series, not {type(obj).__name__}")
    note = {"kind": obj.kind, "shape": list(obj.data.shape), "voxel_size_nm": list(obj.voxel_size_nm),
            "origin_nm": list(obj.origin_nm)}
    if isinstance(obj, Labels):
        note["class_names"] = {str(k): v for k, v in sorted(obj.class_names.items())}
    data = obj.data.astype(np.uint8) if obj.data.dtype.kind == "b" else obj.data
    _write_tiff_data(data, obj.voxel_size_nm, note, path)


def _write_tiff_data(data: np.ndarray, voxel_size_nm: tuple[float, float, float], note: dict[str, Any],
                     path: Path) -> None:
    import tifffile

    vz, vy, vx = voxel_size_nm
    per_cm = (_TO_NM["cm"] / vx, _TO_NM["cm"] / vy)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        if path.name.lower().endswith((".ome.tif", ".ome.tiff")):
            metadata = {"axes": "ZYX", "PhysicalSizeX": vx, "PhysicalSizeXUnit": "nm", "PhysicalSizeY": vy,
                        "PhysicalSizeYUnit": "nm", "PhysicalSizeZ": vz, "PhysicalSizeZUnit": "nm"}
            tifffile.imwrite(tmp, data, ome=True, metadata=metadata, photometric="minisblack",
                             extratags=[(NOTE_TAG, "s", 0, json.dumps(note), True)],
                             resolution=per_cm, resolutionunit=_CENTIMETER)
        else:
            tifffile.imwrite(tmp, data, description=json.dumps(note), metadata=None, photometric="minisblack",
                             resolution=per_cm, resolutionunit=_CENTIMETER)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
