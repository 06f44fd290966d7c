"""MRC/CCP4 files (mrcfile): volumes, labels and tilt series with their angle file.

Sizes: MRC headers hold the voxel size and origin in Ångström as float32;
cellscape uses nm (Å ÷ 10).

What is kept:

- Volume: data of MRC modes int8, int16, uint16, float16 and float32 as they
  are. Other dtypes are converted when the values survive exactly (bool →
  int8; wider integers → int16/uint16, else float32 when all values are
  below 2**24); float64 is stored as float32 (MRC has no 64-bit mode), the
  one lossy case. Integer values that float32 cannot hold raise InputError.
- Labels: int16 (or uint16 above 32767); values above 65535 raise InputError.
- TiltSeries: the projections, plus the angles in ``<name>.tlt`` beside the
  file (IMOD: one angle in ° per line; tilt axis along Y of each image).

cellscape writes a compact JSON note into header labels 2..10 (80 ASCII
characters each): the kind, the exact voxel size and origin in nm (float32
Å cannot hold every value) and, for Labels, the class names. When the note
does not fit in those 9 labels the class names are dropped first (the file
still reads back as Labels), then the exact sizes (the header's float32
sizes are used). Reading without a kind: a file with such a note reads as
what it was; a file without one reads as a TiltSeries when ``.tlt`` or
``.rawtlt`` lies beside it, else as a Volume.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .._data import Artefact, Labels, TiltSeries, Volume
from .._errors import InputError
from ._angles import angle_file_beside, artefact_from_stack, write_tilt_angles

_TAG = "cellscape:"
_MORE = "cellscape+"
_LABEL_CHARS = 80
_NOTE_LABELS = 9  # header labels 2..10; label 1 says who wrote the file
_MRC_DTYPES = (np.int8, np.int16, np.uint16, np.float16, np.float32)
_FLOAT32_EXACT = 2**24


def _note(header_labels: list[bytes]) -> dict[str, Any]:
    """The JSON note cellscape spread over the header labels ({} if none)."""
    texts = [raw.decode("ascii", "replace").rstrip("\0 ") for raw in header_labels]
    chunks: list[str] = []
    for text in texts:
        if text.startswith(_TAG) and not chunks:
            chunks.append(text[len(_TAG):])
        elif text.startswith(_MORE) and chunks:
            chunks.append(text[len(_MORE):])
    try:
        note = json.loads("".join(chunks)) if chunks else {}
    except json.JSONDecodeError:
        return {}
    return note if isinstance(note, dict) else {}


def _note_labels(note: dict[str, Any]) -> list[bytes] | None:
    """Split a note into header labels, or None when it does not fit."""
    text = json.dumps(note, separators=(",", ":"))  # ensure_ascii: names stay 7-bit
    first, rest = _LABEL_CHARS - len(_TAG), _LABEL_CHARS - len(_MORE)
    chunks = [text[:first]] + [text[i:i + rest] for i in range(first, len(text), rest)]
    if len(chunks) > _NOTE_LABELS:
        return None
    return [(_TAG if i == 0 else _MORE).encode() + chunk.encode() for i, chunk in enumerate(chunks)]


def _fitting_labels(note: dict[str, Any]) -> list[bytes]:
    for drop in ((), ("class_names",), ("class_names", "voxel_size_nm", "origin_nm")):
        labels = _note_labels({k: v for k, v in note.items() if k not in drop})
        if labels is not None:
            return labels
    raise AssertionError("the kind alone always fits")  # pragma: no cover


def _exact_or_header(note: dict[str, Any], key: str, header_nm: tuple[float, ...]) -> tuple[float, ...]:
    """The note's exact nm values when they agree with the float32 header (else the file was edited)."""
    exact = note.get(key)
    if exact is None or len(exact) != 3:
        return header_nm
    as_header = tuple(float(np.float32(float(v) * 10.0)) / 10.0 for v in exact)
    return tuple(float(v) for v in exact) if np.allclose(as_header, header_nm, rtol=1e-6, atol=1e-6) else header_nm


#: MRC data at least this large is memory-mapped (read-only) instead of loaded, so slab-wise methods
#: (reconstruction, filters) can work on stacks and tomograms larger than memory
MMAP_BYTES = 512 << 20


def _memory_map(path: Path, mrc: Any) -> np.ndarray:
    """A read-only np.memmap of the open MRC's data (its header fixes offset, dtype and shape)."""
    offset = int(mrc.header.nbytes) + int(mrc.header.nsymbt)
    return np.memmap(path, dtype=mrc.data.dtype, mode="r", offset=offset, shape=mrc.data.shape)


def read_mrc(path: Path, kind: type[Artefact] | None) -> Artefact:
    """Read an MRC file as a Volume, Labels or TiltSeries (see the module docstring for the rules)."""
    import mrcfile

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mrcfile.mmap(path, mode="r", permissive=True) as mrc:
                if mrc.data is None:
                    raise InputError(f"{path}: corrupt or truncated MRC file (no readable data)")
                data = _memory_map(path, mrc) if mrc.data.nbytes >= MMAP_BYTES else np.array(mrc.data)
                voxel = mrc.voxel_size
                origin = mrc.header.origin
                labels = [bytes(lbl) for lbl in mrc.header.label[: min(10, max(0, int(mrc.header.nlabl)))]]
                expected = int(mrc.header.nx) * int(mrc.header.ny) * int(mrc.header.nz)
    except InputError:
        raise
    except (ValueError, OSError, EOFError, TypeError, MemoryError) as exc:
        raise InputError(f"{path}: corrupt or truncated MRC file ({exc})") from exc
    if data.size != expected:
        raise InputError(f"{path}: truncated MRC file ({data.size} values, header says {expected})")
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise InputError(f"{path}: expected a 2D or 3D MRC image, got shape {data.shape}")
    note = _note(labels)
    header_size = tuple(float(voxel[axis]) / 10.0 for axis in ("z", "y", "x"))
    header_size = tuple(s if s > 0 and np.isfinite(s) else 1.0 for s in header_size)
    header_origin = tuple(float(origin[axis]) / 10.0 for axis in ("z", "y", "x"))
    header_origin = tuple(o if np.isfinite(o) else 0.0 for o in header_origin)
    size_nm = _exact_or_header(note, "voxel_size_nm", header_size)
    origin_nm = _exact_or_header(note, "origin_nm", header_origin)
    written_as = note.get("kind")
    angles_path = angle_file_beside(path)
    if kind is not None:
        wanted = kind.kind
    elif written_as in ("volume", "labels", "tilt_series"):
        wanted = written_as
    else:
        wanted = "tilt_series" if angles_path is not None else "volume"
    return artefact_from_stack(path, data, wanted, note, size_nm, origin_nm, angles_path)


def _mrc_data(data: np.ndarray, path: Path, what: str) -> np.ndarray:
    """``data`` in an MRC mode, converted only where the values survive (float64 → float32 aside)."""
    if data.dtype.type in _MRC_DTYPES:
        return data
    if data.dtype.kind == "b":
        return data.astype(np.int8)
    if data.dtype.kind == "f":
        return data.astype(np.float32)
    low, high = int(data.min()), int(data.max())
    if low >= -32768 and high <= 32767:
        return data.astype(np.int16)
    if low >= 0 and high <= 65535:
        return data.astype(np.uint16)
    if max(-low, high) <= _FLOAT32_EXACT:
        return data.astype(np.float32)
    raise InputError(f"{path}: {what} values {low}..{high} do not fit an MRC mode without loss; "
                     "write .tif or .zarr instead")


def write_mrc(obj: Artefact, path: Path) -> None:
    """Write a Volume, Labels or TiltSeries (with ``<name>.tlt`` beside it) as MRC."""
    import mrcfile

    if isinstance(obj, TiltSeries):
        data = _mrc_data(obj.projections, path, "projection")
        voxel = (obj.pixel_size_nm * 10.0,) * 3
        origin = (0.0, 0.0, 0.0)
        note: dict[str, Any] = {"kind": "tilt_series", "pixel_size_nm": obj.pixel_size_nm,
                                "tilt_axis_angle_deg": obj.tilt_axis_angle_deg}
    elif isinstance(obj, (Labels, Volume)):
        if isinstance(obj, Labels):
            top = int(obj.data.max())
            if top > 65535:
                raise InputError(f"{path}: MRC holds labels up to 65535, these go to {top}; write .tif or .zarr instead")
            data = obj.data.astype(np.uint16 if top > 32767 else np.int16)
        else:
            data = _mrc_data(obj.data, path, "voxel")
        voxel = tuple(v * 10.0 for v in obj.voxel_size_nm)
        origin = tuple(o * 10.0 for o in obj.origin_nm)
        note = {"kind": obj.kind, "voxel_size_nm": list(obj.voxel_size_nm), "origin_nm": list(obj.origin_nm)}
        if isinstance(obj, Labels) and obj.class_names:
            note["class_names"] = {str(k): v for k, v in sorted(obj.class_names.items())}
    else:
        raise InputError(f"{path}: MRC files hold volumes, labels and tilt series, not {type(obj).__name__}")
    header_labels = [b"written by cellscape", *_fitting_labels(note)]
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(np.ascontiguousarray(data))
            mrc.voxel_size = voxel[::-1]  # mrcfile takes (x, y, z)
            mrc.header.origin = origin[::-1]
            for index, text in enumerate(header_labels):
                mrc.header.label[index] = text
            mrc.header.nlabl = len(header_labels)
        if isinstance(obj, TiltSeries):
            write_tilt_angles(path.with_suffix(".tlt"), obj.tilt_angles_deg)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
