"""Matrix-free projector and backprojectors, compiled with numba, for NumPy slabs on the CPU.

The geometry is the one of :mod:`._geometry` (detector and slab coordinates
centred, a point at (x, z) seen at ``u = x cos θ + z sin θ``), and the
operators equal its sparse matrices to rounding, without storing them:

- :func:`project` — Joseph's ray-driven projector A (``projection_matrix``):
  each ray steps through the slab one row (or column) at a time and
  interpolates linearly between the two nearest pixels, weighted by the step
  length ``1 / max(|cos θ|, |sin θ|)``.
- :func:`backproject` — a pixel-driven gather: every pixel reads the
  detector at its own position ``t = x cos θ + z sin θ`` through a triangle
  of half-width ``h`` (per angle) and height ``1 / h``. With ``h = 1`` this
  is linear interpolation along the detector, the backprojector of weighted
  backprojection (``backprojection_matrix``); with ``h = max(|cos θ|, |sin θ|)``
  it is the exact transpose Aᵀ of Joseph's projector (ray u meets pixel
  (x, z) at a distance ``|u - t| / h`` from its centre along the stepping
  axis, so Aᵀ's entry is ``(1 - |u - t| / h) / h``), the matched pair the
  iterative methods need.

Arrays are float32 with the slices last: images ``(nz, nx, s)``, rays
``(n_angles, n_rows, s)`` (``n_rows >= nu``: a padded, filtered sinogram is
read in place). The innermost loop runs over the s slices of a slab, which
lie next to each other in memory, so it vectorises; the outer loop runs in
parallel over image rows (backprojection) or rays (projection) with
``numba.prange`` on :func:`threads` threads, or, inside :func:`serial`,
on the calling thread alone (a second compilation of each kernel). Positions
and weights are computed in float64, products summed in float32.

Compiled code is cached on disk next to this module (or in numba's
user-wide cache when that directory is read-only), so only the first call
after an install compiles; when no cache location is writable the kernels
compile in memory, once per process. This module imports numba: import it
only when a reconstruction runs on NumPy arrays.
"""

from __future__ import annotations

import contextlib
import math
import threading
import types
from collections.abc import Callable, Iterator
from typing import Any

import numba
import numpy as np

from ._geometry import Geometry

_OPTIONS = {"nogil": True, "error_model": "numpy", "boundscheck": False}

# one compiled specialisation per kernel: images and rays C-contiguous, the output of a
# backprojection any strided view (a slab of the final tomogram, seen as (z, x, slice))
_F4_C3 = numba.float32[:, :, ::1]
_F4_A3 = numba.float32[:, :, :]
_F8_C1 = numba.float64[::1]


def compile_kernel(function: Callable[..., Any], signature: Any, parallel: bool = True) -> Any:
    """``numba.njit`` of ``function`` for ``signature`` with an on-disk cache, or in memory when no cache is writable."""
    try:
        return numba.njit(signature, cache=True, parallel=parallel, **_OPTIONS)(function)
    except RuntimeError:  # numba found no writable cache location: compile in memory instead
        return numba.njit(signature, cache=False, parallel=parallel, **_OPTIONS)(function)


# Work is split so that what one thread reads stays in cache: a backprojection item is a few image rows
# (neighbouring rows read the same detector band at every angle), a projection item a block of rays of a
# few neighbouring angles (they cross the same strip of the image).
_ROW_BLOCK = 4
_RAY_BLOCK = 32
_ANGLE_GROUP = 8


@numba.njit(inline="always", **_OPTIONS)
def _detector_weights(start: float, cos_a: float, inverse_width: float, x_axis: np.ndarray, nu: int,
                      lower: np.ndarray, upper: np.ndarray, w0: np.ndarray,
                      w1: np.ndarray) -> None:  # pragma: no cover - compiled
    """The two detector pixels around each pixel of an image row, and their weights (a loop that vectorises).

    Pixel j sits at ``t = start + x_j cos θ`` on the detector; rays ``floor(t)`` and ``floor(t) + 1``
    get ``(1 - d / h) / h`` for their distance d < h (0 off the detector, index clipped to it).
    """
    for j in range(x_axis.shape[0]):
        t = start + x_axis[j] * cos_a
        i = math.floor(t)
        fraction = t - i
        v0 = max(0.0, 1.0 - fraction * inverse_width) * inverse_width
        v1 = max(0.0, 1.0 - (1.0 - fraction) * inverse_width) * inverse_width
        w0[j] = v0 if 0 <= i < nu else 0.0
        w1[j] = v1 if -1 <= i < nu - 1 else 0.0
        lower[j] = min(max(i, 0), nu - 1)
        upper[j] = min(max(i + 1, 0), nu - 1)


def _backproject(rays: np.ndarray, nu: int, cos: np.ndarray, sin: np.ndarray, half_width: np.ndarray,
                 x_axis: np.ndarray, z_axis: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    n_angles = cos.shape[0]
    nz, nx, ns = out.shape
    centre = (nu - 1) / 2
    for block in numba.prange((nz + _ROW_BLOCK - 1) // _ROW_BLOCK):
        first = block * _ROW_BLOCK
        count = min(nz, first + _ROW_BLOCK) - first
        sums = np.zeros((count, nx, ns), np.float32)
        lower = np.empty(nx, np.int64)
        upper = np.empty(nx, np.int64)
        w0 = np.empty(nx, np.float32)
        w1 = np.empty(nx, np.float32)
        for a in range(n_angles):
            for r in range(count):
                _detector_weights(z_axis[first + r] * sin[a] + centre, cos[a], 1.0 / half_width[a], x_axis, nu,
                                  lower, upper, w0, w1)
                for j in range(nx):
                    f0, f1, i0, i1 = w0[j], w1[j], lower[j], upper[j]
                    if f0 == 0.0 and f1 == 0.0:
                        continue
                    for q in range(ns):
                        sums[r, j, q] += f0 * rays[a, i0, q] + f1 * rays[a, i1, q]
        for r in range(count):
            for j in range(nx):
                for q in range(ns):
                    out[first + r, j, q] = sums[r, j, q]


def _backproject_update(rays: np.ndarray, nu: int, cos: np.ndarray, sin: np.ndarray, half_width: np.ndarray,
                        x_axis: np.ndarray, z_axis: np.ndarray, image: np.ndarray, relaxation: float,
                        nonnegative: bool) -> None:  # pragma: no cover - compiled
    n_angles = cos.shape[0]
    nz, nx, ns = image.shape
    centre = (nu - 1) / 2
    for block in numba.prange((nz + _ROW_BLOCK - 1) // _ROW_BLOCK):
        first = block * _ROW_BLOCK
        count = min(nz, first + _ROW_BLOCK) - first
        lower = np.empty(nx, np.int64)
        upper = np.empty(nx, np.int64)
        w0 = np.empty(nx, np.float32)
        w1 = np.empty(nx, np.float32)
        # the column sums of these pixels first, then each angle's share added to the image in place
        steps = np.zeros((count, nx))
        for a in range(n_angles):
            for r in range(count):
                _detector_weights(z_axis[first + r] * sin[a] + centre, cos[a], 1.0 / half_width[a], x_axis, nu,
                                  lower, upper, w0, w1)
                for j in range(nx):
                    steps[r, j] += w0[j] + w1[j]
        for r in range(count):
            for j in range(nx):
                steps[r, j] = relaxation / steps[r, j] if steps[r, j] > 0.0 else 0.0  # unseen pixels stay
        for a in range(n_angles):
            for r in range(count):
                k = first + r
                _detector_weights(z_axis[k] * sin[a] + centre, cos[a], 1.0 / half_width[a], x_axis, nu,
                                  lower, upper, w0, w1)
                for j in range(nx):
                    f0, f1, i0, i1 = w0[j] * steps[r, j], w1[j] * steps[r, j], lower[j], upper[j]
                    if f0 == 0.0 and f1 == 0.0:
                        continue
                    g0, g1 = np.float32(f0), np.float32(f1)
                    for q in range(ns):
                        image[k, j, q] += g0 * rays[a, i0, q] + g1 * rays[a, i1, q]
        if nonnegative:
            for r in range(count):
                for j in range(nx):
                    for q in range(ns):
                        image[first + r, j, q] = max(image[first + r, j, q], np.float32(0.0))


def _project(image: np.ndarray, cos: np.ndarray, sin: np.ndarray, x_axis: np.ndarray, z_axis: np.ndarray,
             order: np.ndarray, group_bounds: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    nz, nx, ns = image.shape
    nu = out.shape[1]
    centre = (nu - 1) / 2
    n_blocks = (nu + _RAY_BLOCK - 1) // _RAY_BLOCK
    for item in numba.prange((group_bounds.shape[0] - 1) * n_blocks):
        group = item // n_blocks
        first = (item - group * n_blocks) * _RAY_BLOCK
        count = min(nu, first + _RAY_BLOCK) - first
        g0, n_group = group_bounds[group], group_bounds[group + 1] - group_bounds[group]
        sums = np.zeros((n_group, count, ns), np.float32)
        size = max(count, nx)
        lower = np.empty(size, np.int64)
        upper = np.empty(size, np.int64)
        w0 = np.empty(size, np.float32)
        w1 = np.empty(size, np.float32)
        if abs(cos[order[g0]]) >= abs(sin[order[g0]]):
            # the group's rays step through the rows z and interpolate along x; row by row, the block's
            # rays read neighbouring pixels of one image row
            for m in range(nz):
                for g in range(n_group):
                    a = order[g0 + g]
                    step_length = 1.0 / abs(cos[a])
                    crossing = z_axis[m] * sin[a]
                    for r in range(count):
                        position = (first + r - centre - crossing) / cos[a] - x_axis[0]
                        i = math.floor(position)
                        fraction = position - i
                        w0[r] = (1.0 - fraction) * step_length if 0 <= i < nx else 0.0
                        w1[r] = fraction * step_length if -1 <= i < nx - 1 else 0.0
                        lower[r] = min(max(i, 0), nx - 1)  # clipped to the slab, where the weight is 0
                        upper[r] = min(max(i + 1, 0), nx - 1)
                    for r in range(count):
                        f0, f1, i0, i1 = w0[r], w1[r], lower[r], upper[r]
                        if f0 == 0.0 and f1 == 0.0:
                            continue
                        for q in range(ns):
                            sums[g, r, q] += f0 * image[m, i0, q] + f1 * image[m, i1, q]
        else:
            # the group's rays step through the columns x and interpolate along z; ray by ray, each read
            # moves on to the next pixel of a row (or two)
            for r in range(count):
                for g in range(n_group):
                    a = order[g0 + g]
                    step_length = 1.0 / abs(sin[a])
                    for m in range(nx):
                        position = (first + r - centre - x_axis[m] * cos[a]) / sin[a] - z_axis[0]
                        i = math.floor(position)
                        fraction = position - i
                        w0[m] = (1.0 - fraction) * step_length if 0 <= i < nz else 0.0
                        w1[m] = fraction * step_length if -1 <= i < nz - 1 else 0.0
                        lower[m] = min(max(i, 0), nz - 1)
                        upper[m] = min(max(i + 1, 0), nz - 1)
                    for m in range(nx):
                        f0, f1, i0, i1 = w0[m], w1[m], lower[m], upper[m]
                        if f0 == 0.0 and f1 == 0.0:
                            continue
                        for q in range(ns):
                            sums[g, r, q] += f0 * image[i0, m, q] + f1 * image[i1, m, q]
        for g in range(n_group):
            out[order[g0 + g], first:first + count, :] = sums[g]


_SIGNATURES = {
    _backproject: numba.void(_F4_C3, numba.int64, _F8_C1, _F8_C1, _F8_C1, _F8_C1, _F8_C1, _F4_A3),
    _backproject_update: numba.void(_F4_C3, numba.int64, _F8_C1, _F8_C1, _F8_C1, _F8_C1, _F8_C1, _F4_C3,
                                    numba.float64, numba.boolean),
    _project: numba.void(_F4_C3, _F8_C1, _F8_C1, _F8_C1, _F8_C1, numba.int64[::1], numba.int64[::1], _F4_C3),
}
_COMPILED: dict[tuple[Callable[..., Any], bool], Any] = {}
_COMPILE_LOCK = threading.Lock()
_LAUNCH_LOCK = threading.Lock()
_THIS_THREAD = threading.local()  # .serial: kernels launched from this thread run on it alone


def _serial_twin(function: Callable[..., Any]) -> Callable[..., Any]:
    """A copy of ``function`` under another name, for its serial compilation.

    numba's on-disk cache files a function under its name and signature but
    not its options (numba issue 6845): compiled with and without
    ``parallel`` under one name, one would load the other's machine code.
    """
    twin = types.FunctionType(function.__code__, function.__globals__, function.__name__ + "_serial",
                              function.__defaults__, function.__closure__)
    twin.__qualname__ = function.__qualname__ + "_serial"
    return twin


def _compiled(kernel: Callable[..., Any], serial: bool) -> Any:
    """The kernel compiled (or loaded from the cache) on its first use in the process: parallel, or serial."""
    with _COMPILE_LOCK:
        key = (kernel, serial)
        if key not in _COMPILED:
            _COMPILED[key] = compile_kernel(_serial_twin(kernel) if serial else kernel, _SIGNATURES[kernel],
                                            parallel=not serial)
        return _COMPILED[key]


def _launch(kernel: Callable[..., Any], *args: Any) -> None:
    """Run a kernel: on this thread alone inside :func:`serial`, else on the thread pool of :func:`threads`.

    Parallel launches are serialised: numba's fallback threading layer
    (workqueue) allows one parallel region at a time, and each uses every
    thread anyway. Serial launches hold no lock (the kernels release the
    GIL), so several threads run theirs side by side.
    """
    if getattr(_THIS_THREAD, "serial", False):
        _compiled(kernel, True)(*args)
        return
    with _LAUNCH_LOCK:
        _compiled(kernel, False)(*args)


@contextlib.contextmanager
def threads(count: int) -> Iterator[None]:
    """Run the kernels launched from this thread on ``count`` threads (at most numba's pool size) inside the block."""
    previous = numba.get_num_threads()
    numba.set_num_threads(max(1, min(count, numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(previous)


@contextlib.contextmanager
def serial() -> Iterator[None]:
    """Run the kernels launched from this thread on this thread alone, beside other threads' kernels, inside the block.

    For methods that launch many small kernels (ordered subsets): every
    parallel launch ends on a barrier that waits for all its threads, which
    on a busy machine costs more than a small kernel's work; slabs solved on
    worker threads, each with serial kernels, never wait for one another.
    """
    previous = getattr(_THIS_THREAD, "serial", False)
    _THIS_THREAD.serial = True
    try:
        yield
    finally:
        _THIS_THREAD.serial = previous


def backproject(rays: np.ndarray, nu: int, geometry: Geometry, out: np.ndarray, *, angles: np.ndarray | None = None,
                joseph: bool = False) -> None:
    """Pixel-driven backprojection of ``rays`` (n_angles, n_rows >= nu, s) into ``out`` (nz, nx, s), float32.

    Parameters
    ----------
    rays : ndarray, float32, C-contiguous, shape (n_angles, n_rows, s)
        Detector values (line integrals in pixel units, or filtered ones);
        only the first ``nu`` rows of each angle are read.
    nu : int
        Detector width in pixels.
    geometry : Geometry
        Slab size, z offset (voxels) and tilt angles (degrees).
    out : ndarray, float32, shape (nz, nx, s)
        Written, not accumulated; any strides (e.g. a slab of the tomogram
        ``tomogram[:, y0:y1, :].transpose(0, 2, 1)``).
    angles : ndarray of int, optional
        Indices into ``geometry.angles_deg`` of the rays' angles; default all.
    joseph : bool
        False: linear interpolation (WBP's backprojector); True: the exact
        transpose of Joseph's projector.
    """
    cos, sin, width, x_axis, z_axis = _angle_tables(geometry, angles, joseph)
    _launch(_backproject, rays, nu, cos, sin, width, x_axis, z_axis, out)


def _angle_groups(cos: np.ndarray, sin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Angles in groups of a few neighbours that step the same way: (angle order, group bounds in that order)."""
    by_rows = np.abs(cos) >= np.abs(sin)
    order = np.lexsort((np.arctan2(sin, cos), by_rows))
    kinds = by_rows[order]
    bounds = [0]
    for i in range(1, len(order) + 1):
        if i == len(order) or kinds[i] != kinds[bounds[-1]] or i - bounds[-1] == _ANGLE_GROUP:
            bounds.append(i)
    return np.ascontiguousarray(order, np.int64), np.asarray(bounds, np.int64)


def _float32_c(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32)


def _angle_tables(geometry: Geometry, angles: np.ndarray | None,
                  joseph: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """cos θ, sin θ, triangle half-width per angle, and the centred x and z axes (pixels), all float64."""
    theta = np.radians(np.asarray(geometry.angles_deg, float))
    if angles is not None:
        theta = theta[np.asarray(angles)]
    cos, sin = np.ascontiguousarray(np.cos(theta)), np.ascontiguousarray(np.sin(theta))
    width = np.maximum(np.abs(cos), np.abs(sin)) if joseph else np.ones_like(cos)
    x_axis, z_axis = geometry.centred_axes()
    return cos, sin, width, np.ascontiguousarray(x_axis, float), np.ascontiguousarray(z_axis, float)


class Projector:
    """Joseph's projector A (rays x pixels) and its exact transpose, matrix-free, on NumPy (n, s) float32 slabs.

    The same interface as the sparse-matrix :class:`._backend.Operator`:
    pixels are numbered ``z * nx + x``, rays ``angle * nu + u`` over the
    projector's own angles (a subset of the geometry's for ordered subsets).
    """

    def __init__(self, geometry: Geometry, angles: np.ndarray | None = None):
        self.geometry = geometry
        self.angles = np.arange(len(geometry.angles_deg)) if angles is None else np.asarray(angles)
        self.shape = (len(self.angles) * geometry.nu, geometry.n_pixels)
        self._tables = _angle_tables(geometry, self.angles, True)
        self._groups = _angle_groups(self._tables[0], self._tables[1])
        self._row_sums: np.ndarray | None = None
        self._column_sums: np.ndarray | None = None

    def subset(self, angles: np.ndarray) -> Projector:
        """The projector of some of this geometry's angles (indices into ``geometry.angles_deg``)."""
        return Projector(self.geometry, angles)

    def _image(self, slab: np.ndarray) -> np.ndarray:
        g = self.geometry
        return _float32_c(slab).reshape(g.nz, g.nx, -1)

    def _rays(self, rays: np.ndarray) -> np.ndarray:
        return _float32_c(rays).reshape(len(self.angles), self.geometry.nu, -1)

    def forward(self, slab: np.ndarray) -> np.ndarray:
        """Project: (n_pixels, s) -> (n_rays, s)."""
        cos, sin, _, x_axis, z_axis = self._tables
        image = self._image(slab)
        out = np.empty((len(self.angles), self.geometry.nu, image.shape[2]), np.float32)
        _launch(_project, image, cos, sin, x_axis, z_axis, *self._groups, out)
        return out.reshape(self.shape[0], -1)

    def adjoint(self, rays: np.ndarray) -> np.ndarray:
        """Backproject with the exact transpose: (n_rays, s) -> (n_pixels, s)."""
        cos, sin, width, x_axis, z_axis = self._tables
        values = self._rays(rays)
        out = np.empty((self.geometry.nz, self.geometry.nx, values.shape[2]), np.float32)
        _launch(_backproject, values, self.geometry.nu, cos, sin, width, x_axis, z_axis, out)
        return out.reshape(self.shape[1], -1)

    def update(self, x: np.ndarray, rays: np.ndarray, relaxation: float, nonnegative: bool) -> np.ndarray:
        """SIRT's step in place: ``x += relaxation * C Aᵀ rays`` (C: 1 / column sums of A), then clipped at 0 if asked.

        ``x`` (n_pixels, s) must be a C-contiguous float32 array; it is
        returned. The column sums are summed inside the kernel, so a subset's
        normalisation needs no stored array.
        """
        cos, sin, width, x_axis, z_axis = self._tables
        if x.dtype != np.float32 or not x.flags.c_contiguous:
            raise TypeError("Projector.update needs a C-contiguous float32 x")
        _launch(_backproject_update, self._rays(rays), self.geometry.nu, cos, sin, width, x_axis, z_axis,
                self._image(x), float(relaxation), bool(nonnegative))
        return x

    def row_sums(self) -> np.ndarray:
        """Sum of each row (a ray's path length through the slab, pixels), shape (n_rays,)."""
        if self._row_sums is None:
            g = self.geometry
            self._row_sums = self.forward(np.ones((g.n_pixels, 1), np.float32))[:, 0]
        return self._row_sums

    def column_sums(self) -> np.ndarray:
        """Sum of each column (how much each pixel is seen over all rays), shape (n_pixels,)."""
        if self._column_sums is None:
            self._column_sums = self.adjoint(np.ones((self.shape[0], 1), np.float32))[:, 0]
        return self._column_sums
