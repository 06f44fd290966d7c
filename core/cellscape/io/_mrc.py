"""MRC/CCP4 files (mrcfile): volumes, labels and tilt series with their angle file.

MRC stores sizes in Ångström; cellscape uses nm (÷ 10). Files cellscape
writes carry a JSON note in the header labels (kind and class names), so
they read back as what they were; other files read as a Volume, or as a
TiltSeries when a .tlt/.rawtlt file lies beside them.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from .._data import Artefact, Labels, TiltSeries, Volume
from .._errors import InputError
from ._angles import angle_file_beside, read_tilt_angles, write_tilt_angles

_TAG = "cellscape:"


def _note(header_labels: list[bytes]) -> dict:
    for raw in header_labels:
        text = raw.decode("ascii", "replace").strip()
        if text.startswith(_TAG):
            try:
                return json.loads(text[len(_TAG):])
            except json.JSONDecodeError:
                return {}
    return {}


def read_mrc(path: Path, kind: type[Artefact] | None) -> Artefact:
    import mrcfile

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mrcfile.open(path, mode="r", permissive=True) as mrc:
                if mrc.data is None:
                    raise InputError(f"{path}: corrupt or truncated MRC file (no readable data)")
                data = np.array(mrc.data)
                voxel = mrc.voxel_size
                origin = mrc.header.origin
                labels = [bytes(lbl) for lbl in mrc.header.label[: int(mrc.header.nlabl)]]
                expected = int(mrc.header.nx) * int(mrc.header.ny) * int(mrc.header.nz)
    except InputError:
        raise
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path}: corrupt or truncated MRC file ({exc})") from exc
    if data.size != expected:
        raise InputError(f"{path}: truncated MRC file ({data.size} values, header says {expected})")
    if data.ndim == 2:
        data = data[None]
    note = _note(labels)
    size_nm = tuple(float(voxel[axis]) / 10.0 for axis in ("z", "y", "x"))
    origin_nm = tuple(float(origin[axis]) / 10.0 for axis in ("z", "y", "x"))
    size_nm = tuple(s if s > 0 else 1.0 for s in size_nm)
    wanted = kind.kind if kind is not None else None
    angles_path = angle_file_beside(path)
    if wanted == "tilt_series" or (wanted is None and angles_path is not None and note.get("kind") != "labels"):
        if angles_path is None:
            raise InputError(f"{path}: a tilt series needs its angles in {path.with_suffix('.tlt').name} beside it")
        angles = read_tilt_angles(angles_path)
        if len(angles) != data.shape[0]:
            raise InputError(f"{path}: {data.shape[0]} images but {len(angles)} angles in {angles_path.name}; "
                             "give exactly one angle per image")
        try:
            return TiltSeries(data.astype(np.float32, copy=False), angles, size_nm[2],
                              float(note.get("tilt_axis_angle_deg", 0.0)))
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from exc
    try:
        if wanted == "labels" or (wanted is None and note.get("kind") == "labels"):
            names = {int(k): v for k, v in note.get("class_names", {}).items()}
            return Labels(data, names, size_nm, origin_nm)
        return Volume(data, size_nm, origin_nm)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from exc


def write_mrc(obj: Artefact, path: Path) -> None:
    import mrcfile

    if isinstance(obj, TiltSeries):
        data = np.asarray(obj.projections, np.float32)
        voxel = (obj.pixel_size_nm * 10.0,) * 3
        origin = (0.0, 0.0, 0.0)
        note = {"kind": "tilt_series", "tilt_axis_angle_deg": obj.tilt_axis_angle_deg}
    elif isinstance(obj, Labels):
        top = int(obj.data.max())
        if top > 65535:
            raise InputError(f"{path}: MRC holds labels up to 65535, these go to {top}; write .tif or .zarr instead")
        data = obj.data.astype(np.uint16 if top > 32767 else np.int16)
        voxel = tuple(v * 10.0 for v in obj.voxel_size_nm)
        origin = tuple(o * 10.0 for o in obj.origin_nm)
        note = {"kind": "labels", "class_names": {str(k): v for k, v in obj.class_names.items()}}
    elif isinstance(obj, Volume):
        data = obj.data if obj.data.dtype in (np.float32, np.int8, np.int16, np.uint16, np.uint8) else obj.data.astype(np.float32)
        voxel = tuple(v * 10.0 for v in obj.voxel_size_nm)
        origin = tuple(o * 10.0 for o in obj.origin_nm)
        note = {"kind": "volume"}
    else:
        raise InputError(f"{path}: MRC files hold volumes, labels and tilt series, not {type(obj).__name__}")
    text = _TAG + json.dumps(note, separators=(",", ":"))
    if len(text) > 80:
        text = _TAG + json.dumps({"kind": note["kind"]}, separators=(",", ":"))  # class names do not fit: dropped
    tmp = path.with_name(f".{path.name}.tmp")
    with mrcfile.new(tmp, overwrite=True) as mrc:
        mrc.set_data(np.ascontiguousarray(data))
        mrc.voxel_size = voxel[::-1]  # mrcfile takes (x, y, z)
        mrc.header.origin = origin[::-1]
        mrc.header.label[1] = text.encode("ascii", "replace")
        mrc.header.nlabl = 2
        mrc.header.label[0] = b"written by cellscape"
    if isinstance(obj, TiltSeries):
        write_tilt_angles(path.with_suffix(".tlt"), obj.tilt_angles_deg)
    tmp.replace(path)
