"""OME-Zarr (zarr): volumes and labels as an OME-NGFF 0.4 image with one resolution level.

Axes z, y, x in nanometres; the ``scale`` transformation holds the voxel size
and ``translation`` the origin. Arrays are chunked (64³), so large volumes
can be read chunk by chunk. cellscape's kind and class names go into the
group attributes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from .._data import Artefact, Labels, Volume
from .._errors import InputError


def write_zarr(obj: Artefact, path: Path) -> None:
    import zarr

    if not isinstance(obj, (Volume, Labels)):
        raise InputError(f"{path}: OME-Zarr holds volumes and labels, not {type(obj).__name__}")
    tmp = path.with_name(f".{path.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    group = zarr.open_group(str(tmp), mode="w", zarr_format=2)
    chunks = tuple(min(64, n) for n in obj.data.shape)
    array = group.create_array("0", shape=obj.data.shape, dtype=obj.data.dtype, chunks=chunks)
    array[...] = obj.data
    group.attrs["multiscales"] = [{
        "version": "0.4",
        "name": path.name,
        "axes": [{"name": a, "type": "space", "unit": "nanometer"} for a in ("z", "y", "x")],
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": list(obj.voxel_size_nm)},
            {"type": "translation", "translation": list(obj.origin_nm)},
        ]}],
    }]
    meta = {"kind": obj.kind}
    if isinstance(obj, Labels):
        meta["class_names"] = {str(k): v for k, v in obj.class_names.items()}
    group.attrs["cellscape"] = meta
    if path.exists():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    tmp.rename(path)


def read_zarr(path: Path, kind: type[Artefact] | None) -> Artefact:
    import zarr

    try:
        group = zarr.open_group(str(path), mode="r")
        attrs = dict(group.attrs)
        multiscales = attrs.get("multiscales")
        if not multiscales:
            raise InputError(f"{path}: not an OME-Zarr image (no 'multiscales' attribute)")
        dataset = multiscales[0]["datasets"][0]
        data = np.asarray(group[dataset["path"]][...])
    except InputError:
        raise
    except (KeyError, ValueError, OSError, TypeError) as exc:
        raise InputError(f"{path}: unreadable OME-Zarr ({type(exc).__name__}: {exc})") from exc
    voxel, origin = (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)
    units = [a.get("unit", "nanometer") for a in multiscales[0].get("axes", [])][-3:]
    factor = 1000.0 if units and units[0] == "micrometer" else 1.0
    for transform in dataset.get("coordinateTransformations", []):
        if transform["type"] == "scale":
            voxel = tuple(float(s) * factor for s in transform["scale"][-3:])
        elif transform["type"] == "translation":
            origin = tuple(float(t) * factor for t in transform["translation"][-3:])
    meta = attrs.get("cellscape", {})
    wanted = kind.kind if kind is not None else meta.get("kind", "volume")
    try:
        if wanted == "labels":
            return Labels(data, {int(k): v for k, v in meta.get("class_names", {}).items()}, voxel, origin)
        return Volume(data, voxel, origin)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from exc
