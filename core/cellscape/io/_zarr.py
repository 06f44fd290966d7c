"""OME-Zarr (zarr): volumes and labels as an OME-NGFF 0.4 image with one resolution level.

Axes z, y, x in nanometres; the ``scale`` transformation holds the voxel size
and ``translation`` the origin. Arrays are chunked (64³), so large volumes
can be read chunk by chunk. cellscape's kind and class names go into the
group attributes under ``cellscape``; the data keeps its dtype (bool as
uint8). Files are written in Zarr format 2, as NGFF 0.4 specifies; reading
also accepts NGFF 0.5 (Zarr 3, attributes under ``ome``), units of the
spatial axes in nm, µm or Å, and leading singleton axes (t, c).

Writing goes to a hidden sibling folder that is renamed into place, so a
reader sees the old image or the complete new one, never a partial write.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .._data import Artefact, Labels, Volume
from .._errors import InputError

_TO_NM = {"nanometer": 1.0, "micrometer": 1e3, "angstrom": 0.1, "millimeter": 1e6, None: 1.0}


def write_zarr(obj: Artefact, path: Path) -> None:
    """Write a Volume or Labels as an OME-Zarr image (a folder)."""
    import zarr

    if not isinstance(obj, (Volume, Labels)):
        raise InputError(f"{path}: OME-Zarr holds volumes and labels, not {type(obj).__name__}")
    tmp = path.with_name(f".{path.name}.tmp")
    old = path.with_name(f".{path.name}.old")
    for leftover in (tmp, old):
        if leftover.exists():
            shutil.rmtree(leftover)
    try:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=2)
        data = obj.data.astype(np.uint8) if obj.data.dtype.kind == "b" else obj.data
        chunks = tuple(min(64, n) for n in data.shape)
        array = group.create_array("0", shape=data.shape, dtype=data.dtype, chunks=chunks, fill_value=0)
        array[...] = data
        group.attrs["multiscales"] = [{
            "version": "0.4",
            "name": path.name,
            "axes": [{"name": a, "type": "space", "unit": "nanometer"} for a in ("z", "y", "x")],
            "datasets": [{"path": "0", "coordinateTransformations": [
                {"type": "scale", "scale": list(obj.voxel_size_nm)},
                {"type": "translation", "translation": list(obj.origin_nm)},
            ]}],
        }]
        meta: dict[str, Any] = {"kind": obj.kind}
        if isinstance(obj, Labels):
            meta["class_names"] = {str(k): v for k, v in sorted(obj.class_names.items())}
        group.attrs["cellscape"] = meta
        if path.exists():
            path.rename(old) if path.is_dir() else path.unlink()
        tmp.rename(path)
    finally:
        for leftover in (tmp, old):
            if leftover.exists():
                shutil.rmtree(leftover)


def open_zarr_image(path: Path) -> tuple[Any, tuple[float, ...], tuple[float, ...], dict[str, Any]]:
    """The first resolution level of an OME-Zarr image, unread: (zarr array, voxel size nm, origin nm, cellscape attrs).

    Leading singleton axes (t, c) are kept on the array; callers index them away.
    """
    import zarr

    try:
        group = zarr.open_group(str(path), mode="r")
        attrs = dict(group.attrs)
        multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
        if not multiscales:
            raise InputError(f"{path}: not an OME-Zarr image (no 'multiscales' attribute)")
        dataset = multiscales[0]["datasets"][0]
        array = group[dataset["path"]]
        axes = multiscales[0].get("axes", [])
        units = ([None] * 3 + [axis.get("unit") if isinstance(axis, dict) else None for axis in axes])[-3:]
        transforms = dataset.get("coordinateTransformations", [])
    except InputError:
        raise
    except Exception as exc:  # zarr and its stores raise many types for damaged folders
        raise InputError(f"{path}: unreadable OME-Zarr ({type(exc).__name__}: {exc})") from exc
    shape = tuple(array.shape)
    while len(shape) > 3 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 3:
        raise InputError(f"{path}: expected a 3D (z, y, x) image, got shape {tuple(array.shape)}")
    unknown = [u for u in units if u not in _TO_NM]
    if unknown:
        raise InputError(f"{path}: unsupported axis unit {unknown[0]!r}; use nanometer, micrometer or angstrom")
    factors = [_TO_NM[u] for u in units]
    voxel: tuple[float, ...] = (1.0, 1.0, 1.0)
    origin: tuple[float, ...] = (0.0, 0.0, 0.0)
    for transform in transforms:
        if transform.get("type") == "scale":
            voxel = tuple(float(s) * f for s, f in zip(transform["scale"][-3:], factors, strict=True))
        elif transform.get("type") == "translation":
            origin = tuple(float(t) * f for t, f in zip(transform["translation"][-3:], factors, strict=True))
    return array, voxel, origin, attrs.get("cellscape", {})


def read_zarr(path: Path, kind: type[Artefact] | None) -> Artefact:
    """Read the first resolution level of an OME-Zarr image as a Volume or Labels."""
    array, voxel, origin, meta = open_zarr_image(path)
    try:
        data = np.asarray(array[...])
    except Exception as exc:  # a damaged chunk
        raise InputError(f"{path}: unreadable OME-Zarr ({type(exc).__name__}: {exc})") from exc
    while data.ndim > 3 and data.shape[0] == 1:
        data = data[0]
    wanted = kind.kind if kind is not None else meta.get("kind", "volume")
    try:
        if wanted == "labels":
            return Labels(data, {int(k): v for k, v in meta.get("class_names", {}).items()}, voxel, origin)
        return Volume(data, voxel, origin)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from exc
