"""TIFF and OME-TIFF (tifffile): 3D volumes and labels, [z, y, x].

Physical sizes: OME-TIFF carries them in its OME-XML (PhysicalSizeX/Y/Z with
units); plain TIFF in ImageJ metadata (spacing, unit) and resolution tags.
cellscape also writes a JSON note (kind, class names, voxel size, origin) in
a private tag, so its own files read back exactly.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np

from .._data import Artefact, Labels, Volume
from .._errors import InputError

NOTE_TAG = 65010  # private TIFF tag holding cellscape's JSON note
_TO_NM = {"nm": 1.0, "nanometer": 1.0, "µm": 1e3, "um": 1e3, "micron": 1e3, "micrometer": 1e3, "\\u00B5m": 1e3,
          "mm": 1e6, "å": 0.1, "a": 0.1, "angstrom": 0.1, "pixel": 1.0, "": 1.0}


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


def read_tiff(path: Path, kind: type[Artefact] | None) -> Artefact:
    import tifffile

    complaints = _Complaints()
    logger = logging.getLogger("tifffile")
    logger.addHandler(complaints)
    try:
        with tifffile.TiffFile(path) as tif:
            data = tif.asarray()
            page = tif.pages[0]
            tag = page.tags.get(NOTE_TAG)
            note = json.loads(tag.value) if tag is not None else {}
            ome = tif.ome_metadata
            imagej = tif.imagej_metadata or {}
            resolution = page.tags.get("XResolution")
    except (tifffile.TiffFileError, ValueError, OSError, EOFError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: corrupt or truncated TIFF file ({exc})") from exc
    finally:
        logger.removeHandler(complaints)
    if complaints.messages:
        raise InputError(f"{path}: corrupt or truncated TIFF file ({complaints.messages[0]})")
    if note and list(data.shape) != list(note.get("shape", data.shape)):
        raise InputError(f"{path}: truncated TIFF file (shape {data.shape}, written as {tuple(note['shape'])})")
    data = np.squeeze(data) if data.ndim > 3 else data
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise InputError(f"{path}: expected a 2D or 3D image, got shape {data.shape}")
    voxel: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin = (0.0, 0.0, 0.0)
    if note:
        voxel, origin = tuple(note["voxel_size_nm"]), tuple(note["origin_nm"])  # type: ignore[assignment]
    elif ome and _ome_sizes(ome):
        voxel = _ome_sizes(ome)  # type: ignore[assignment]
    elif imagej or resolution is not None:
        factor = _TO_NM.get(str(imagej.get("unit", "")).lower(), 1.0)
        xy = 1.0
        if resolution is not None:
            numerator, denominator = resolution.value
            xy = denominator / numerator * factor if numerator else 1.0
        voxel = (float(imagej.get("spacing", xy / factor)) * factor, xy, xy)
    wanted = kind.kind if kind is not None else note.get("kind", "volume")
    try:
        if wanted == "labels":
            names = {int(k): v for k, v in note.get("class_names", {}).items()}
            return Labels(data, names, voxel, origin)
        return Volume(data, voxel, origin)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from exc


def write_tiff(obj: Artefact, path: Path) -> None:
    import tifffile

    if not isinstance(obj, (Volume, Labels)):
        raise InputError(f"{path}: TIFF files hold volumes and labels, not {type(obj).__name__}")
    note = {"kind": obj.kind, "shape": list(obj.data.shape), "voxel_size_nm": list(obj.voxel_size_nm),
            "origin_nm": list(obj.origin_nm)}
    if isinstance(obj, Labels):
        note["class_names"] = {str(k): v for k, v in obj.class_names.items()}
    extratags = [(NOTE_TAG, "s", 0, json.dumps(note), True)]
    ome = path.name.lower().endswith((".ome.tif", ".ome.tiff"))
    tmp = path.with_name(f".{path.name}.tmp")
    vz, vy, vx = obj.voxel_size_nm
    if ome:
        metadata = {"axes": "ZYX", "PhysicalSizeX": vx, "PhysicalSizeXUnit": "nm", "PhysicalSizeY": vy,
                    "PhysicalSizeYUnit": "nm", "PhysicalSizeZ": vz, "PhysicalSizeZUnit": "nm"}
        tifffile.imwrite(tmp, obj.data, ome=True, metadata=metadata, extratags=extratags, photometric="minisblack")
    else:
        tifffile.imwrite(tmp, obj.data, extratags=extratags, photometric="minisblack", metadata=None,
                         resolution=(1.0 / vx, 1.0 / vy))
    tmp.replace(path)
