"""Chunk-wise processing of volumes with halos: the same result as the whole array, in bounded memory.

A method is *chunk-safe* when each output voxel depends only on input voxels
within a fixed distance (its *halo*): filters, per-voxel classifiers, tiled
network inference. It says so with two class members::

    class Gaussian(cs.Filter):
        chunk_port = "volume"                      # the input that may be cut into chunks

        def chunk_halo(self, voxel_size_nm):       # voxels of context needed per axis (z, y, x)
            return tuple(math.ceil(self.params.truncate * s) for s in self.sigmas(voxel_size_nm))

A step asks for chunked processing with ``chunks: 128`` (or ``[z, y, x]``) in
the spec. The runner then reads that input lazily (OME-Zarr chunk by chunk,
MRC memory-mapped), and ``dask.array.map_overlap`` runs the method on each
chunk grown by the halo on every side that has a neighbour (``boundary="none"``:
at the volume's own faces the method's own edge handling applies, as it would
on the whole array), trims the halo, and the result is written into a
memory-mapped file one slab of chunks (along z) at a time. Peak memory is set
by one slab (its chunks grown by their halos), not by the volume's depth. Other
inputs (e.g. a trained model) are given whole to every chunk.

Every Volume/Labels output on the input's grid is assembled from the chunks
(a classifier's labels and probabilities: one pass computes both). Any other
output (e.g. the model that was applied) must not depend on the chunk; it is
taken from the first chunk computed.

With the local executor the chunks run on threads of this process; with the
Dask executor on the cluster's workers, which send each slab's chunks back to
the process that runs the step, where they are written (no file is written by
two processes, and the workers need no shared scratch space for the result).
"""

from __future__ import annotations

import mmap
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ._data import Artefact, Labels, Volume
from ._errors import InputError

__all__ = ["chunk_shape", "lazy_volume", "run_chunked"]


def chunk_shape(chunks: int | tuple[int, ...] | list[int], shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Chunk edge lengths (z, y, x) from the spec's ``chunks`` (one number for all axes), clipped to the volume."""
    values = (chunks,) * 3 if isinstance(chunks, int) else tuple(chunks)
    if len(values) != 3 or any(int(c) < 1 for c in values):
        raise InputError(f"chunks must be a positive integer or three of them (z, y, x), got {chunks!r}")
    return tuple(min(int(c), int(n)) for c, n in zip(values, shape, strict=True))  # type: ignore[return-value]


class LazyVolume:
    """A volume whose voxels are read chunk by chunk: a dask array and the grid it lives on."""

    def __init__(self, array: Any, voxel_size_nm: tuple[float, ...], origin_nm: tuple[float, ...],
                 class_names: Mapping[int, str] | None = None, source: str = ""):
        self.array = array
        self.voxel_size_nm = tuple(voxel_size_nm)
        self.origin_nm = tuple(origin_nm)
        self.class_names = dict(class_names) if class_names is not None else None
        self.source = source

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)


def lazy_volume(source: Artefact | str | os.PathLike[str], chunks: Any = 64) -> LazyVolume:
    """Open a Volume/Labels artefact, an OME-Zarr folder or an MRC file as a :class:`LazyVolume`.

    OME-Zarr is read with its own chunking (aligned to ``chunks`` when they
    differ), MRC memory-mapped; other formats are read whole.
    """
    import dask.array as da

    if isinstance(source, (Volume, Labels)):
        names = source.class_names if isinstance(source, Labels) else None
        shape = chunk_shape(chunks, source.data.shape)
        return LazyVolume(da.from_array(source.data, chunks=shape), source.voxel_size_nm, source.origin_nm, names,
                          "artefact")
    path = Path(source)
    suffix = "".join(path.suffixes[-2:]).lower()
    if path.suffix.lower() == ".zarr" or suffix == ".ome.zarr":
        from .io._zarr import open_zarr_image

        array, voxel, origin, meta = open_zarr_image(path)
        data = da.from_zarr(array)
        while data.ndim > 3 and data.shape[0] == 1:
            data = data[0]
        data = data.rechunk(chunk_shape(chunks, data.shape))
        names = ({int(k): v for k, v in meta.get("class_names", {}).items()} if meta.get("kind") == "labels" else None)
        return LazyVolume(data, voxel, origin, names, str(path))
    if path.suffix.lower() in (".mrc", ".rec", ".map"):
        import mrcfile

        try:
            handle = mrcfile.mmap(str(path), mode="r", permissive=False)
        except (ValueError, OSError) as exc:
            raise InputError(f"{path}: unreadable MRC ({exc})") from exc
        data = handle.data
        if data is None or data.ndim != 3:
            raise InputError(f"{path}: expected a 3D MRC volume")
        voxel = tuple(float(handle.voxel_size[a]) / 10.0 for a in ("z", "y", "x"))  # Å -> nm
        voxel = tuple(v if v > 0 else 1.0 for v in voxel)
        return LazyVolume(da.from_array(data, chunks=chunk_shape(chunks, data.shape)), voxel, (0.0, 0.0, 0.0), None,
                          str(path))
    from .io import read

    return lazy_volume(read(path), chunks)


def _run_block(method: Any, port: str, others: Mapping[str, Artefact], lazy: LazyVolume,
               block: np.ndarray) -> dict[str, Artefact]:
    grid = (lazy.voxel_size_nm, lazy.origin_nm)
    piece = Labels(block, lazy.class_names or {}, *grid) if lazy.class_names is not None else Volume(block, *grid)
    return method._check_outputs(method.run(**others, **{port: piece}))


def run_chunked(method: Any, inputs: Mapping[str, Any], chunks: Any, scratch: str | os.PathLike[str],
                scheduler: Any = "threads", workers: int | None = None) -> dict[str, Artefact]:
    """Run a chunk-safe method chunk by chunk; see the module docstring.

    Parameters
    ----------
    method : cellscape.Method
        An instance of a method with ``chunk_port`` and ``chunk_halo``.
    inputs : dict
        Its inputs; the chunked one may be a :class:`LazyVolume` (others are artefacts).
    chunks : int or (int, int, int)
        Chunk edge lengths in voxels (z, y, x).
    scratch : path
        Folder for the memory-mapped result (the caller removes the file when done with it).
    scheduler : str or dask.distributed.Client
        Where the chunks run: "threads" (this process) or a Dask client.
    workers : int, optional
        Threads for the "threads" scheduler (default: every CPU).

    Returns
    -------
    dict
        The method's outputs: each Volume or Labels backed by a read-only memory-mapped ``.npy`` in ``scratch``,
        any other output as the first chunk gave it.
    """
    import dask.array as da

    port = getattr(method, "chunk_port", None)
    if port is None:
        raise InputError(f"{method.name} is not chunk-safe (it needs the whole volume at once); remove 'chunks:' "
                         "from its step or use a method that declares chunk_port and chunk_halo")
    arrays = [name for name, p in method.output_ports().items() if issubclass(p.kind, (Volume, Labels))]
    if not arrays:
        raise InputError(f"{method.name}: chunked processing needs a Volume or Labels output")
    lazy = inputs[port] if isinstance(inputs[port], LazyVolume) else lazy_volume(inputs[port], chunks)
    others = {k: v for k, v in inputs.items() if k != port}
    shape = lazy.shape
    sizes = chunk_shape(chunks, shape)
    array = lazy.array.rechunk(sizes)
    halo = tuple(int(h) for h in method.chunk_halo(lazy.voxel_size_nm))
    if len(halo) != 3 or any(h < 0 for h in halo):
        raise InputError(f"{method.name}: chunk_halo must give three non-negative voxel counts, got {halo}")
    # dask needs every chunk at least as large as the halo it lends to a neighbour
    depth = tuple(min(h, s) if s < n else 0 for h, s, n in zip(halo, sizes, shape, strict=True))
    if any(h > s for h, s, n in zip(halo, sizes, shape, strict=True) if s < n):
        raise InputError(f"{method.name}: chunks {sizes} are smaller than the halo {halo} the method needs; "
                         f"use chunks of at least {max(halo)} voxels")
    # one probe chunk gives the outputs' dtypes and metadata (class names, voxel size) and the other outputs
    probe_region = tuple(slice(0, min(n, s + h)) for n, s, h in zip(shape, sizes, depth, strict=True))
    probe_block = np.asarray(array[probe_region].compute(scheduler="sync"))
    probe = _run_block(method, port, others, lazy, probe_block)
    for name in arrays:
        if probe[name].data.shape != probe_block.shape:
            raise InputError(f"{method.name}: output '{name}' is not on the grid of input '{port}' "
                             f"({probe[name].data.shape} from a chunk of {probe_block.shape}); it cannot be chunked")
    # the chunks of all outputs travel together as one structured array: each chunk is computed once
    packed = np.dtype([(name, probe[name].data.dtype) for name in arrays])

    def block(values: np.ndarray) -> np.ndarray:
        result = _run_block(method, port, others, lazy, np.asarray(values))
        out = np.empty(values.shape, packed)
        for name in arrays:
            if result[name].data.dtype != packed[name]:
                raise InputError(f"{method.name}: chunks gave different dtypes for output '{name}' "
                                 f"({result[name].data.dtype} and {packed[name]})")
            out[name] = result[name].data
        return out

    def slab(start: int, stop: int) -> Any:
        """Output rows start:stop, from input rows grown by the z halo (trimmed again here)."""
        low, high = max(0, start - depth[0]), min(shape[0], stop + depth[0])
        piece = array[low:high].rechunk((high - low, sizes[1], sizes[2]))
        mapped = da.map_overlap(block, piece, depth=(0, depth[1], depth[2]), boundary="none", trim=True, dtype=packed,
                                meta=np.empty((0, 0, 0), packed))[start - low:stop - low]
        return [mapped[name] for name in arrays]

    scratch = Path(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    run_id = uuid.uuid4().hex
    targets = {name: scratch / f"chunked-{run_id}-{name}.npy" for name in arrays}
    results: dict[str, Any] = {}
    slabs = [(start, min(shape[0], start + sizes[0])) for start in range(0, shape[0], sizes[0])]
    try:
        for name in arrays:
            results[name] = np.lib.format.open_memmap(targets[name], mode="w+", dtype=packed[name], shape=shape)
        if scheduler == "threads":
            # one slab of chunks (along z) at a time, each chunk written into the files as soon as it is computed:
            # memory holds one slab's chunks and their halos, whatever the depth of the volume
            for start, stop in slabs:
                da.store(slab(start, stop), [results[name][start:stop] for name in arrays], lock=False,
                         scheduler="threads", num_workers=workers or os.cpu_count() or 1)
                for result in results.values():
                    result.flush()
                    _release(result)
        else:
            # a cluster's workers compute a slab's chunks in parallel and send them here, where they are written into
            # the results: one slab in this process's memory at a time, and nothing written by two processes
            import dask

            for start, stop in slabs:
                values = dask.compute(*slab(start, stop), scheduler=scheduler)
                for name, value in zip(arrays, values, strict=True):
                    results[name][start:stop] = value
                    results[name].flush()
                    _release(results[name])
        for result in results.values():
            _release(result)  # written pages go to the file, not the process's memory
    except BaseException:
        results.clear()
        for target in targets.values():
            target.unlink(missing_ok=True)
        raise
    results.clear()
    outputs: dict[str, Artefact] = {name: value for name, value in probe.items() if name not in arrays}
    for name in arrays:
        data = np.load(targets[name], mmap_mode="r")
        grid = (lazy.voxel_size_nm, lazy.origin_nm)
        outputs[name] = (Labels(data, probe[name].class_names, *grid) if isinstance(probe[name], Labels)
                         else Volume(data, *grid))
    return {name: outputs[name] for name in probe}  # in the method's order


def _release(array: np.memmap) -> None:
    """Drop a flushed memory map's resident pages (they stay in the file)."""
    handle = getattr(array, "_mmap", None)
    if handle is not None and hasattr(handle, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        handle.madvise(mmap.MADV_DONTNEED)
