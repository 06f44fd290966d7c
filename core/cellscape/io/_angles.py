"""Tilt-angle files (.tlt / .rawtlt, IMOD): one angle in degrees per line, in image order; and the artefact an image
stack (MRC, TIFF) stands for: a tilt series with the angle file beside it, labels or a volume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .._data import Labels, TiltSeries, Volume
from .._errors import InputError
from .._payload import atomic_write


def read_tilt_angles(path: str | Path) -> np.ndarray:
    """Angles (degrees) from a .tlt/.rawtlt file; blank lines are ignored."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read tilt angles ({exc})") from exc
    angles = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        try:
            angle = float(text.split()[0])
        except ValueError:
            raise InputError(f"{path}: line {number} is not an angle: {text!r}") from None
        if not np.isfinite(angle) or abs(angle) > 90:
            raise InputError(f"{path}: line {number}: tilt angle {angle} is outside ±90°")
        angles.append(angle)
    if not angles:
        raise InputError(f"{path}: no tilt angles in the file")
    return np.array(angles)


def write_tilt_angles(path: str | Path, angles: np.ndarray) -> None:
    """Write angles one per line with two decimals more than IMOD's usual precision."""
    text = "".join(f"{float(a):.4f}\n" for a in angles)
    atomic_write(Path(path), lambda tmp: tmp.write_text(text))


def stack_stem(path: Path) -> str:
    """The name of ``path`` without its image suffix: ``stack`` for stack.mrc, stack.tif and stack.ome.tif."""
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def angle_file_beside(path: Path) -> Path | None:
    """``<stem>.tlt`` (preferred) or ``<stem>.rawtlt`` next to an image stack, if one exists."""
    for suffix in (".tlt", ".rawtlt"):
        candidate = path.with_name(stack_stem(path) + suffix)
        if candidate.exists():
            return candidate
    return None


def tilt_series_from_stack(data: np.ndarray, angles_path: Path | None, expected_name: str, pixel_size_nm: float,
                           tilt_axis_angle_deg: float) -> TiltSeries:
    """A TiltSeries of an image stack and the angle file beside it; errors say which file is missing or wrong."""
    if angles_path is None:
        raise InputError(f"a tilt series needs its angles in {expected_name} beside it")
    angles = read_tilt_angles(angles_path)
    if len(angles) != data.shape[0]:
        raise InputError(f"{data.shape[0]} images but {len(angles)} angles in {angles_path.name}; "
                         "give exactly one angle per image")
    return TiltSeries(data, angles, pixel_size_nm, tilt_axis_angle_deg)


def artefact_from_stack(path: Path, data: np.ndarray, wanted: str, note: dict[str, Any], voxel_size_nm: tuple[float, ...],
                        origin_nm: tuple[float, ...], angles_path: Path | None) -> TiltSeries | Labels | Volume:
    """The artefact of kind ``wanted`` made of an image stack read from ``path``; errors name the file.

    ``note`` is the metadata cellscape writes beside the pixels (class names, the tilt axis); a tilt
    series takes its pixel size from it or from the stack's in-plane voxel size.
    """
    try:
        if wanted == "tilt_series":
            return tilt_series_from_stack(data, angles_path, f"{stack_stem(path)}.tlt",
                                          float(note.get("pixel_size_nm", voxel_size_nm[2])),
                                          float(note.get("tilt_axis_angle_deg", 0.0)))
        if wanted == "labels":
            names = {int(k): v for k, v in note.get("class_names", {}).items()}
            return Labels(data, names, voxel_size_nm, origin_nm)
        return Volume(data, voxel_size_nm, origin_nm)
    except InputError as exc:
        message = str(exc)
        raise InputError(message if message.startswith(str(path)) else f"{path}: {message}") from exc
