"""What every tomographic reconstruction shares: preparing the tilt series and working slab by slab.

Single-axis geometry makes every Y slice of the tomogram an independent 2D
problem with the same system matrix, so a method solves a *slab* of slices
at once as one matrix problem (pixels x slices): the arithmetic is
vectorized across slices and angles. On NumPy arrays the projectors are
compiled kernels (:mod:`._kernels`) that use every worker thread inside one
slab, so slabs follow one another and only one is in memory; on other array
libraries (CuPy, array-API) the sparse-matrix products run one slab per
worker thread, at most two slabs per worker in memory, and so do methods
that launch many small kernels (ordered subsets), each thread running its
kernels on itself alone. The input
projections may be a memory-mapped file and the output any array with NumPy
slicing (``np.memmap``, a Zarr array), so a tomogram larger than memory is
reconstructed with memory for a few slabs only
(:meth:`SlabReconstructor.reconstruct_into`); a NumPy output (a memmap
included) is written in place, slab by slab, without a copy of the tomogram.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import attrs
import numpy as np

import cellscape as cs

from ._backend import device_namespace, is_numpy, to_numpy
from ._geometry import Geometry

log = logging.getLogger("cellscape.reconstruct")

DEVICES = ("auto", "cpu", "gpu")


@attrs.frozen
class SlabParams:
    """Parameters every reconstruction method has."""

    thickness_voxels: int | None = cs.param(None, ge=1, unit="voxel", help="output thickness (z); default: image width")
    z_offset_voxels: float = cs.param(0.0, unit="voxel", help="shift of the reconstructed slab along z")
    binning: int = cs.param(1, ge=1, le=16, help="average b x b detector pixels first (voxel size x b)")
    exclude_tilts: list[int] | None = cs.param(None, help="0-based indices of tilt images to leave out (bad tilts)")
    slab_slices: int | None = cs.param(None, ge=1, unit="slice", help="Y slices per slab; default: from 'memory_mb'")
    memory_mb: float | None = cs.param(None, gt=0, unit="MB",
                                       help="working memory for slabs; default: the output's size, within 64 MB-1 GB")
    workers: int | None = cs.param(None, ge=1, help="threads working on slabs; default: the CPU count (at most 4)")
    device: str = cs.param("auto", choices=DEVICES, help="cpu (NumPy), gpu (CuPy), auto: the GPU when there is one")


def prepared_angles(tilts: cs.TiltSeries, exclude: list[int] | None, name: str) -> np.ndarray:
    """Indices of the tilts to use, after exclusion and checks."""
    n = tilts.projections.shape[0]
    keep = np.ones(n, bool)
    for index in exclude or []:
        if not -n <= index < n:
            raise cs.InputError(f"{name}: parameter 'exclude_tilts': index {index} is out of range for {n} tilt images "
                                f"(0..{n - 1})")
        keep[index] = False
    chosen = np.flatnonzero(keep)
    if len(chosen) < 2:
        raise cs.InputError(f"{name}: only {len(chosen)} tilt image(s) left after 'exclude_tilts'; need at least 2")
    angles = tilts.tilt_angles_deg[chosen]
    if len(np.unique(angles)) != len(angles):
        raise cs.InputError(f"{name}: tilt angles repeat ({_repeats(angles)}); exclude duplicate images with "
                            "'exclude_tilts'")
    return chosen


def _repeats(angles: np.ndarray) -> str:
    values, counts = np.unique(angles, return_counts=True)
    return ", ".join(f"{v:g}°" for v in values[counts > 1])


def _axis_on_y(tilts: cs.TiltSeries) -> np.ndarray:
    """Projections rotated so the tilt axis runs along Y (IMOD's axis angle is counter-clockwise from Y)."""
    from scipy import ndimage

    angle = tilts.tilt_axis_angle_deg
    if abs(angle) < 1e-9:
        return tilts.projections
    rotated = np.empty(tilts.projections.shape, np.float32)
    for i, image in enumerate(tilts.projections):
        rotated[i] = ndimage.rotate(np.asarray(image, np.float32), -angle, reshape=False, order=1, mode="nearest")
    return rotated


def _even_slabs(ny: int, largest: int) -> int:
    """Slices per slab, at most ``largest``: slabs of about equal size, a multiple of 8 slices where possible.

    The compiled kernels' innermost loop runs over the slices of a slab in
    steps of 8 (one AVX register of float32); a remainder is done one by one.
    """
    if largest >= 8:
        largest -= largest % 8
    size = math.ceil(ny / math.ceil(ny / largest))
    rounded = size + (-size) % 8
    return rounded if rounded <= largest else size


class SlabReconstructor(cs.Reconstructor):
    """A reconstruction method that solves slabs of Y slices independently.

    Subclasses implement :meth:`setup` (once per geometry: operators,
    normalisations) and :meth:`solve_slab` (rays (n_rays, s) -> pixels
    (n_pixels, s), in the array library ``xp``); they may override
    :meth:`solve_slab_into` to write a NumPy slab of the tomogram directly.
    """

    Params = SlabParams
    #: extra memory per slice in units of (rays + pixels) float32 arrays, for the automatic slab size
    working_arrays: ClassVar[int] = 6
    #: True for methods that launch many small kernels (ordered subsets): with the compiled kernels their slabs
    #: run on worker threads, each thread's kernels on that thread alone, instead of one slab at a time on all
    small_kernels: ClassVar[bool] = False

    def setup(self, geometry: Geometry, xp: Any, context: dict[str, Any]) -> Any:
        raise NotImplementedError

    def solve_slab(self, state: Any, rays: Any, xp: Any) -> Any:
        raise NotImplementedError

    def solve_slab_into(self, state: Any, rays: Any, xp: Any, out: np.ndarray) -> None:
        """Solve a slab into ``out``, the tomogram's slab (nz, s, nx) as a NumPy view (default: solve, then copy)."""
        nz, s, nx = out.shape
        out[...] = to_numpy(self.solve_slab(state, rays, xp)).reshape(nz, nx, s).transpose(0, 2, 1)

    # -- the shared driver ---------------------------------------------------------------------------------------

    def output_shape(self, tilts: cs.TiltSeries) -> tuple[int, int, int]:
        """Shape (z, y, x) of the tomogram this method makes from ``tilts``."""
        _, ny, nu = tilts.projections.shape
        b = self.params.binning
        nx = nu // b
        return (self.params.thickness_voxels or nx), ny // b, nx

    def reconstruct(self, tilts: cs.TiltSeries) -> cs.Volume:
        return self.reconstruct_into(tilts, np.zeros(self.output_shape(tilts), np.float32))

    def reconstruct_into(self, tilts: cs.TiltSeries, out: Any) -> cs.Volume:
        """Reconstruct into ``out`` (any array of :meth:`output_shape` with NumPy slicing, e.g. np.memmap, zarr).

        Returns a Volume over ``out`` when it is a NumPy array (a memmap
        included), else over a NumPy copy of it.
        """
        p = self.params
        expected = self.output_shape(tilts)
        if tuple(out.shape) != expected:
            raise cs.InputError(f"{self.name}: output array has shape {tuple(out.shape)}, expected {expected} (z, y, x)")
        b = p.binning
        _, ny_full, nu_full = tilts.projections.shape
        if nu_full // b < 2 or ny_full // b < 1:
            raise cs.InputError(f"{self.name}: parameter 'binning': {b} leaves no image ({ny_full}x{nu_full} pixels)")
        chosen = prepared_angles(tilts, p.exclude_tilts, self.name)
        angles = tilts.tilt_angles_deg[chosen]
        projections = _axis_on_y(tilts)
        nz, ny, nx = expected
        geometry = Geometry(nu=nx, nx=nx, nz=nz, angles_deg=tuple(float(a) for a in angles), z_offset=p.z_offset_voxels)
        xp = device_namespace(p.device)

        def load(y0: int, y1: int) -> np.ndarray:
            block = np.asarray(projections[chosen, y0 * b:y1 * b, : nx * b], np.float32)
            if b > 1:
                # b x b pixels averaged; line integrals counted in the new, b times larger pixels
                block = block.reshape(len(chosen), y1 - y0, b, nx, b).mean(axis=(2, 4)) / b
            # (angle, y, u) -> (angle * u, y): one column per slice
            return np.ascontiguousarray(block.transpose(0, 2, 1)).reshape(len(chosen) * nx, y1 - y0)

        workers = p.workers or min(4, os.cpu_count() or 1)
        compiled = is_numpy(xp)
        within = compiled and not self.small_kernels  # compiled kernels on all workers, one slab at a time
        context = {"load": load, "ny": ny, "threads": workers}
        state = self.setup(geometry, xp, context)
        per_slice = 4 * (geometry.n_rays + geometry.n_pixels) * self.working_arrays
        budget = p.memory_mb * 2**20 if p.memory_mb else min(max(4 * nz * ny * nx, 64 << 20), 1 << 30)
        in_flight = 1 if within else workers
        slab = p.slab_slices or max(1, min(ny, int(budget // (in_flight * per_slice)),
                                           ny if within else math.ceil(ny / workers)))
        if compiled and not p.slab_slices:
            slab = _even_slabs(ny, slab)
        bounds = [(y0, min(ny, y0 + slab)) for y0 in range(0, ny, slab)]

        log.info("%s: %d slices of %dx%d in %d slab(s) on %d thread(s)", self.name, ny, nz, nx, len(bounds), workers)
        if within:
            self._solve_in_turn(state, xp, load, bounds, out, workers)
        else:
            self._solve_on_threads(state, xp, load, bounds, out, workers, (nz, nx), serial_kernels=compiled)
        size = tilts.pixel_size_nm * b
        data = out if isinstance(out, np.ndarray) else np.asarray(out[...])
        if data is out and out.base is None:
            out.setflags(write=False)  # our own array: handed to the Volume without a copy
        # voxel [k, j, i] of a slab of the projected volume's size is that volume's voxel [k, j, i]
        shift = (b - 1) / 2 * tilts.pixel_size_nm  # a binned pixel sits at the centre of the b pixels it averages
        return cs.Volume(data, (size, size, size), (p.z_offset_voxels * size, shift, shift))

    def _solve_in_turn(self, state: Any, xp: Any, load: Any, bounds: list[tuple[int, int]], out: Any,
                       workers: int) -> None:
        """One slab after the other, the compiled kernels on ``workers`` threads; float32 NumPy outputs written in place."""
        from ._kernels import threads

        with threads(workers):
            for y0, y1 in self.progress(bounds, total=len(bounds), description="slabs"):
                rays = load(y0, y1)
                if isinstance(out, np.ndarray) and out.dtype == np.float32:
                    self.solve_slab_into(state, rays, xp, out[:, y0:y1, :])
                else:
                    block = np.empty((out.shape[0], y1 - y0, out.shape[2]), np.float32)
                    self.solve_slab_into(state, rays, xp, block)
                    out[:, y0:y1, :] = block
                del rays

    def _solve_on_threads(self, state: Any, xp: Any, load: Any, bounds: list[tuple[int, int]], out: Any,
                          workers: int, plane: tuple[int, int], serial_kernels: bool = False) -> None:
        """Slabs on ``workers`` threads (matrix products and kernels release the GIL), at most two per worker in flight.

        ``serial_kernels``: each thread runs the compiled kernels it launches on itself alone.
        """
        nz, nx = plane
        if serial_kernels:
            from ._kernels import serial
        else:
            serial = contextlib.nullcontext

        def work(bound: tuple[int, int]) -> np.ndarray:
            y0, y1 = bound
            with serial():
                result = self.solve_slab(state, xp.asarray(load(y0, y1)), xp)
            return to_numpy(result).reshape(nz, nx, y1 - y0).transpose(0, 2, 1)

        if workers == 1 or len(bounds) == 1:
            results = map(work, bounds)
            for bound, block in self.progress(zip(bounds, results, strict=True), total=len(bounds),
                                              description="slabs"):
                out[:, bound[0]:bound[1], :] = block
            return
        with ThreadPoolExecutor(workers) as pool:
            pending: list[Any] = []
            queue = iter(bounds)
            for bound in queue:
                pending.append((bound, pool.submit(work, bound)))
                if len(pending) >= 2 * workers:
                    break
            for _ in self.progress(range(len(bounds)), description="slabs"):
                bound, future = pending.pop(0)
                out[:, bound[0]:bound[1], :] = future.result()
                nxt = next(queue, None)
                if nxt is not None:
                    pending.append((nxt, pool.submit(work, nxt)))
