"""Chunk-wise processing of volumes with halos: the same result as the whole array, in bounded memory.

A method is *chunk-safe* when each output voxel depends only on input voxels
within a fixed distance (its *halo*): filters, per-voxel classifiers, tiled
network inference. It says so with two class members::

    class Gaussian(cs.Filter):
        chunk_port = "volume"                      # the input that may be cut into chunks

        def chunk_halo(self, voxel_size_nm):       # voxels of context needed per axis (z, y, x)
            return tuple(math.ceil(self.params.truncate * s) for s in self.sigmas(voxel_size_nm))

A step asks for chunked processing with ``chunks: 128`` (or ``[z, y, x]``) in
the spec. The runner then opens that input lazily (OME-Zarr read chunk by
chunk, MRC memory-mapped) and cuts the volume into a grid of chunks. Each
chunk is one task: it reads the chunk grown by the halo on every side that has
a neighbour (at the volume's own faces the method's own edge handling
applies, as it would on the whole array: what ``dask.array.map_overlap``
calls ``boundary="none"``), runs the method on that block and trims the halo
off its outputs. A task reads its own halo from storage, so no task waits for
a neighbour's data and tasks run in any order.

The driver (the process running the step) keeps a bounded number of tasks in
flight, about two per worker, so every worker has its next chunk queued while
the finished ones are written, and writes each finished chunk into a
memory-mapped ``.npy`` file per output as it arrives. Memory is bounded by the
chunks in flight (each: the block grown by its halo, the method's working
set, the trimmed outputs), not by the volume: a volume larger than the memory
given to the process is processed chunk by chunk. The first chunk back sets
the result files' dtypes (every other chunk must give the same); the first
chunk of the grid also hands back the outputs' metadata (class names) and
every non-array output (e.g. the model that was applied, which must not depend
on the chunk). It runs as one task among the others, so no worker waits for it.

With the local executor the chunks run on threads of this process. With the
Dask executor they run on the cluster's workers: the method and its other
inputs (e.g. a trained model) are sent to every worker once
(``Client.scatter``), not with each chunk; a worker reads its chunks straight
from the OME-Zarr or MRC file (a file every worker sees, like the run's
store) and sends the trimmed outputs back to the driver, which alone writes
the result files. An input held in memory (an upstream step's output) is
scattered once as well.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import mmap
import os
import threading
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ._data import Artefact, Labels, Volume
from ._errors import InputError

__all__ = ["chunk_shape", "lazy_volume", "run_chunked"]

Region = tuple[slice, slice, slice]

#: written bytes after which the result files' resident pages are handed back to the page cache
_RELEASE_BYTES = 64 * 2**20


def chunk_shape(chunks: int | tuple[int, ...] | list[int], shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Chunk edge lengths (z, y, x) from the spec's ``chunks`` (one number for all axes), clipped to the volume."""
    values = (chunks,) * 3 if isinstance(chunks, int) else tuple(chunks)
    if len(values) != 3 or any(int(c) < 1 for c in values):
        raise InputError(f"chunks must be a positive integer or three of them (z, y, x), got {chunks!r}")
    return tuple(min(int(c), int(n)) for c, n in zip(values, shape, strict=True))  # type: ignore[return-value]


# -- readers: a block of voxels from wherever the volume lives (picklable, so a Dask worker reads its own blocks) ----

class _ArrayReader:
    """A volume already in memory (an artefact): blocks are slices of it."""

    def __init__(self, array: np.ndarray):
        self.array = array
        self.shape = tuple(int(n) for n in array.shape)
        self.in_memory = True

    def read(self, region: Region) -> np.ndarray:
        return np.asarray(self.array[region])


class _FileReader:
    """A volume in a file, opened once per process on the first read; pickled as its path (a Dask worker opens
    the file itself)."""

    in_memory = False

    def __init__(self, path: Path, shape: tuple[int, ...], *extra: Any):
        self.path, self.shape, self.extra = Path(path), shape, extra
        self._handle: Any = None
        self._lock = threading.Lock()

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.path, self.shape, *self.extra)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.__init__(*state)  # type: ignore[misc]

    def _opened(self) -> Any:
        with self._lock:
            if self._handle is None:
                self._handle = self._open()
        return self._handle

    def _open(self) -> Any:
        raise NotImplementedError


class _ZarrReader(_FileReader):
    """An OME-Zarr image's first resolution level (``leading`` singleton axes before z, y, x), read block by block."""

    def __init__(self, path: Path, shape: tuple[int, ...], leading: int):
        super().__init__(path, shape, leading)
        self.leading = leading

    def _open(self) -> Any:
        from .io._zarr import open_zarr_image

        return open_zarr_image(self.path)[0]

    def read(self, region: Region) -> np.ndarray:
        array = self._opened()
        # one stored chunk at a time: zarr otherwise decodes every stored chunk the block touches at once, which
        # holds several times the block (a 48³ block across eight 64³ float32 chunks: 16 MiB for 0.4 MiB of voxels)
        stored = tuple(array.chunks[-3:])
        block = np.empty(tuple(s.stop - s.start for s in region), array.dtype)
        pieces = [[slice(max(s.start, c), min(s.stop, c + size)) for c in range(s.start - s.start % size, s.stop, size)]
                  for s, size in zip(region, stored, strict=True)]
        try:
            for part in itertools.product(*pieces):
                inside = tuple(slice(p.start - s.start, p.stop - s.start) for p, s in zip(part, region, strict=True))
                block[inside] = array[(0,) * self.leading + part]
            return block
        except Exception as exc:  # a damaged or missing chunk file
            raise InputError(f"{self.path}: unreadable OME-Zarr block {region} ({type(exc).__name__}: {exc})") from exc


class _MrcReader(_FileReader):
    """An MRC file, memory-mapped once per process."""

    def _open(self) -> Any:
        import mrcfile

        return mrcfile.mmap(str(self.path), mode="r", permissive=False).data

    def read(self, region: Region) -> np.ndarray:
        return np.array(self._opened()[region])  # a copy: the block must not keep the file's pages mapped


class LazyVolume:
    """A volume whose voxels are read block by block, and the grid it lives on.

    ``read(region)`` gives the voxels of a (z, y, x) tuple of slices as a numpy array.
    """

    def __init__(self, reader: Any, voxel_size_nm: tuple[float, ...], origin_nm: tuple[float, ...],
                 class_names: Mapping[int, str] | None = None, source: str = ""):
        self.reader = reader
        self.voxel_size_nm = tuple(voxel_size_nm)
        self.origin_nm = tuple(origin_nm)
        self.class_names = dict(class_names) if class_names is not None else None
        self.source = source

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.reader.shape)

    def read(self, region: Region) -> np.ndarray:
        return self.reader.read(region)


def lazy_volume(source: Artefact | str | os.PathLike[str]) -> LazyVolume:
    """Open a Volume/Labels artefact, an OME-Zarr folder or an MRC file as a :class:`LazyVolume`.

    OME-Zarr is read block by block, MRC memory-mapped; other formats are read whole.
    """
    if isinstance(source, (Volume, Labels)):
        names = source.class_names if isinstance(source, Labels) else None
        return LazyVolume(_ArrayReader(source.data), source.voxel_size_nm, source.origin_nm, names, "artefact")
    path = Path(source)
    suffix = "".join(path.suffixes[-2:]).lower()
    if path.suffix.lower() == ".zarr" or suffix == ".ome.zarr":
        from .io._zarr import open_zarr_image

        array, voxel, origin, meta = open_zarr_image(path)  # checks the shape: three axes after leading singletons
        shape = tuple(int(n) for n in array.shape)
        names = ({int(k): v for k, v in meta.get("class_names", {}).items()} if meta.get("kind") == "labels" else None)
        return LazyVolume(_ZarrReader(path, shape[-3:], len(shape) - 3), voxel, origin, names, str(path))
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
        shape = tuple(int(n) for n in data.shape)
        handle.close()
        return LazyVolume(_MrcReader(path, shape), voxel, (0.0, 0.0, 0.0), None, str(path))
    from .io import read

    return lazy_volume(read(path))


# -- one chunk ---------------------------------------------------------------------------------------------------------

class _ChunkJob:
    """What every chunk needs besides its position: the method, its other inputs, the grid, the array outputs' names.

    Sent to each Dask worker once; chunks then refer to it.
    """

    def __init__(self, method: Any, port: str, others: Mapping[str, Artefact], voxel_size_nm: tuple[float, ...],
                 origin_nm: tuple[float, ...], class_names: Mapping[int, str] | None, arrays: list[str]):
        self.method, self.port, self.others = method, port, dict(others)
        self.grid = (tuple(voxel_size_nm), tuple(origin_nm))
        self.class_names = class_names
        self.arrays = list(arrays)

    def run_block(self, block: np.ndarray) -> dict[str, Artefact]:
        piece = (Labels(block, self.class_names or {}, *self.grid) if self.class_names is not None
                 else Volume(block, *self.grid))
        return self.method._check_outputs(self.method.run(**self.others, **{self.port: piece}))


Chunk = tuple[Region, Region, Region, bool]  # chunk region, block region, chunk within block, is the first chunk
Finished = tuple[Region, dict[str, np.ndarray], dict[str, Artefact] | None]


def _compute_chunk(job: _ChunkJob, reader: Any, outer: Region, crop: Region, first: bool
                   ) -> tuple[dict[str, np.ndarray], dict[str, Artefact] | None]:
    """Run the method on one block (the chunk grown by its halo): its array outputs trimmed to the chunk, and for
    the first chunk every output as metadata (arrays shrunk to one voxel: their class names, the grid)."""
    block = reader.read(outer)
    outputs = job.run_block(block)
    trimmed = {}
    for name in job.arrays:
        data = outputs[name].data
        if data.shape != block.shape:
            raise InputError(f"{job.method.name}: output '{name}' is not on the grid of input '{job.port}' "
                             f"({data.shape} from a block of {block.shape}); it cannot be chunked")
        trimmed[name] = np.ascontiguousarray(data[crop])
    if not first:
        return trimmed, None
    return trimmed, {name: _metadata_only(value) if name in job.arrays else value for name, value in outputs.items()}


def _chunk_grid(shape: tuple[int, ...], sizes: tuple[int, ...], depth: tuple[int, ...]) -> list[Chunk]:
    """Every chunk: its region, its block (the chunk grown by the halo, inside the volume), the chunk within the
    block, and whether it is the first (z, y, x = 0: its task also hands back the outputs' metadata)."""
    axes = []
    for n, s, d in zip(shape, sizes, depth, strict=True):
        spans = []
        for start in range(0, n, s):
            stop = min(n, start + s)
            low, high = max(0, start - d), min(n, stop + d)
            spans.append((slice(start, stop), slice(low, high), slice(start - low, stop - low)))
        axes.append(spans)
    grid = [(tuple(a[0] for a in spans), tuple(a[1] for a in spans), tuple(a[2] for a in spans))
            for spans in ((z, y, x) for z in axes[0] for y in axes[1] for x in axes[2])]
    return [(region, outer, crop, n == 0) for n, (region, outer, crop) in enumerate(grid)]  # type: ignore[misc]


# -- schedulers: run the chunks, hand back each one's trimmed outputs as it finishes -----------------------------------

def _on_threads(job: _ChunkJob, reader: Any, chunks: list[Chunk], workers: int) -> Iterator[Finished]:
    in_flight = 2 * workers
    todo = iter(chunks)
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="cellscape-chunk") as pool:
        running: dict[concurrent.futures.Future, Region] = {}

        def fill() -> None:
            for region, outer, crop, first in todo:
                running[pool.submit(_compute_chunk, job, reader, outer, crop, first)] = region
                if len(running) >= in_flight:
                    return

        try:
            fill()
            while running:
                done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in done:
                    region = running.pop(future)
                    yield (region, *future.result())
                fill()
        finally:
            for future in running:
                future.cancel()


def _on_dask(job: _ChunkJob, reader: Any, chunks: list[Chunk], client: Any) -> Iterator[Finished]:
    from distributed import as_completed

    workers = max(1, len(client.scheduler_info().get("workers", {})))
    in_flight = 2 * workers
    # the method and its model travel to each worker once, not inside every task
    [shared_job] = client.scatter([job], broadcast=True, hash=False)
    shared_reader = client.scatter([reader], broadcast=True, hash=False)[0] if reader.in_memory else reader
    todo = iter(chunks)
    outstanding: dict[Any, Region] = {}

    def fill() -> list[Any]:
        submitted = []
        for region, outer, crop, first in todo:
            future = client.submit(_compute_chunk, shared_job, shared_reader, outer, crop, first, pure=False,
                                   retries=2)
            outstanding[future] = region
            submitted.append(future)
            if len(outstanding) >= in_flight:
                break
        return submitted

    try:
        first = fill()
        if not first:
            return
        pending = as_completed(first, loop=client.loop)  # our client is not the default one
        for future in pending:
            value = future.result()
            region = outstanding.pop(future)
            future.release()  # the worker may drop the chunk now
            yield (region, *value)
            for more in fill():
                pending.add(more)
    finally:
        if outstanding:
            client.cancel(list(outstanding))
        client.cancel([shared_job, shared_reader] if reader.in_memory else [shared_job])


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
    port = getattr(method, "chunk_port", None)
    if port is None:
        raise InputError(f"{method.name} is not chunk-safe (it needs the whole volume at once); remove 'chunks:' "
                         "from its step or use a method that declares chunk_port and chunk_halo")
    arrays = [name for name, p in method.output_ports().items() if issubclass(p.kind, (Volume, Labels))]
    if not arrays:
        raise InputError(f"{method.name}: chunked processing needs a Volume or Labels output")
    lazy = inputs[port] if isinstance(inputs[port], LazyVolume) else lazy_volume(inputs[port])
    others = {k: v for k, v in inputs.items() if k != port}
    shape = lazy.shape
    sizes = chunk_shape(chunks, shape)
    halo = tuple(int(h) for h in method.chunk_halo(lazy.voxel_size_nm))
    if len(halo) != 3 or any(h < 0 for h in halo):
        raise InputError(f"{method.name}: chunk_halo must give three non-negative voxel counts, got {halo}")
    # a chunk lends at most itself to a neighbour (as with dask's map_overlap): a halo beyond that needs larger chunks
    if any(h > s for h, s, n in zip(halo, sizes, shape, strict=True) if s < n):
        raise InputError(f"{method.name}: chunks {sizes} are smaller than the halo {halo} the method needs; "
                         f"use chunks of at least {max(halo)} voxels")
    depth = tuple(h if s < n else 0 for h, s, n in zip(halo, sizes, shape, strict=True))
    job = _ChunkJob(method, port, others, lazy.voxel_size_nm, lazy.origin_nm, lazy.class_names, arrays)
    scratch = Path(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    run_id = uuid.uuid4().hex
    targets = {name: scratch / f"chunked-{run_id}-{name}.npy" for name in arrays}
    results: dict[str, Any] = {}
    probe: dict[str, Artefact] | None = None
    finished: Iterator[Finished] | None = None
    try:
        grid = _chunk_grid(shape, sizes, depth)
        if scheduler == "threads":
            finished = _on_threads(job, lazy.reader, grid, workers or os.cpu_count() or 1)
        else:
            finished = _on_dask(job, lazy.reader, grid, scheduler)
        written = 0
        for region, values, metadata in finished:
            if metadata is not None:
                probe = metadata
            if not results:  # the first chunk back sets the result files' dtypes
                for name in arrays:
                    results[name] = np.lib.format.open_memmap(targets[name], mode="w+", dtype=values[name].dtype,
                                                              shape=shape)
            for name in arrays:
                if values[name].dtype != results[name].dtype:
                    raise InputError(f"{method.name}: chunks gave different dtypes for output '{name}' "
                                     f"({values[name].dtype} and {results[name].dtype})")
                results[name][region] = values[name]
                written += values[name].nbytes
            if written >= _RELEASE_BYTES:  # written pages belong to the files, not to this process's memory
                for result in results.values():
                    result.flush()
                    _release(result)
                written = 0
        for result in results.values():
            result.flush()
            _release(result)
    except BaseException:
        if finished is not None:
            finished.close()  # cancels the chunks still queued or running
        results.clear()
        for target in targets.values():
            target.unlink(missing_ok=True)
        raise
    results.clear()
    assert probe is not None  # the first chunk is among the finished ones
    outputs: dict[str, Artefact] = {name: value for name, value in probe.items() if name not in arrays}
    grid_nm = (lazy.voxel_size_nm, lazy.origin_nm)
    for name in arrays:
        data = np.load(targets[name], mmap_mode="r")
        outputs[name] = (Labels(data, probe[name].class_names, *grid_nm) if isinstance(probe[name], Labels)
                         else Volume(data, *grid_nm))
    return {name: outputs[name] for name in probe}  # in the method's order


def _metadata_only(artefact: Artefact) -> Artefact:
    """The first chunk's Volume/Labels shrunk to one voxel: its class names are kept, its block is let go."""
    one = np.asarray(artefact.data)[:1, :1, :1].copy()
    if isinstance(artefact, Labels):
        return Labels(one, artefact.class_names, artefact.voxel_size_nm, artefact.origin_nm)
    return Volume(one, artefact.voxel_size_nm, artefact.origin_nm)


def _release(array: np.memmap) -> None:
    """Drop a flushed memory map's resident pages (they stay in the file)."""
    handle = getattr(array, "_mmap", None)
    if handle is not None and hasattr(handle, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        handle.madvise(mmap.MADV_DONTNEED)
