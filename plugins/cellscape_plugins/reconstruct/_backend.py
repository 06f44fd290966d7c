"""Array backends: the iterative solvers are written against the array API.

:func:`namespace` picks the array library of the data (numpy by default,
CuPy on a GPU, or any array-API library such as array-api-strict in tests).
:func:`joseph_operator` gives the projector pair a method works with in that
library: for NumPy arrays the matrix-free compiled kernels of
:mod:`._kernels`; otherwise :class:`Operator`, a sparse system matrix and
its transpose applied with cupyx.scipy.sparse for CuPy, and for any other
array-API library with a gather followed by a cumulative sum per row (only
standard functions, so the generic path is exercised on the CPU).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import scipy.sparse as sp

    from ._geometry import Geometry

import cellscape as cs


def namespace(*arrays: Any) -> Any:
    """The array-API namespace of ``arrays`` (numpy's for numpy arrays)."""
    compat = cs.require("array_api_compat", package="array-api-compat", who="reconstruct")
    return compat.array_namespace(*arrays)


def gpu_available() -> bool:
    """True when CuPy is installed and sees a CUDA device."""
    try:
        import cupy
    except ImportError:
        return False
    try:
        return bool(cupy.cuda.is_available())
    except Exception:  # a broken driver install counts as no GPU
        return False


def device_namespace(device: str) -> Any:
    """numpy for ``cpu``; CuPy for ``gpu`` (error without one); ``auto``: CuPy when a GPU is there."""
    if device == "gpu" or (device == "auto" and gpu_available()):
        if not gpu_available():
            raise cs.InputError("device 'gpu' was asked for, but CuPy sees no CUDA device; use device: cpu or auto")
        import cupy

        return cupy
    return namespace(np.zeros(1))


def is_numpy(xp: Any) -> bool:
    """True for NumPy's namespace: the arrays live in host memory, where the compiled kernels run."""
    compat = cs.require("array_api_compat", package="array-api-compat", who="reconstruct")
    return bool(compat.is_numpy_namespace(xp))


def joseph_operator(geometry: Geometry, xp: Any) -> Any:
    """Joseph's projector and its exact transpose for arrays of ``xp``.

    NumPy: the matrix-free :class:`._kernels.Projector` (compiled, no matrix
    stored); any other library: :class:`Operator` over the sparse matrices.
    Both take and return (n, s) arrays and offer ``forward``, ``adjoint``,
    ``update``, ``row_sums``, ``column_sums`` and ``subset``.
    """
    if is_numpy(xp):
        from ._kernels import Projector

        return Projector(geometry)
    from ._geometry import projection_matrix, projection_matrix_transpose

    return Operator(projection_matrix(geometry), xp, projection_matrix_transpose(geometry), geometry=geometry)


def to_numpy(array: Any) -> np.ndarray:
    """A NumPy array of any backend's array: as is for NumPy, copied from a GPU for CuPy, via DLPack otherwise."""
    if isinstance(array, (np.ndarray, np.generic)):  # xp.sum of a NumPy array gives a NumPy scalar
        return np.asarray(array)
    if hasattr(array, "get"):  # CuPy
        return array.get()
    return np.from_dlpack(array)


def _row_sums_operator(matrix: sp.csr_matrix, xp: Any) -> tuple[Any, Any, Any, Any]:
    """Arrays for the generic path: column index and value of every entry, and each row's [start, stop) range."""
    return (xp.asarray(matrix.indices.astype(np.int64)), xp.asarray(matrix.data.astype(np.float64)),
            xp.asarray(matrix.indptr[:-1].astype(np.int64)), xp.asarray(matrix.indptr[1:].astype(np.int64)))


class Operator:
    """A sparse matrix (rays x pixels) and its transpose, applied to (n, slices) arrays of one array library."""

    def __init__(self, matrix: sp.csr_matrix, xp: Any, transpose: sp.csr_matrix | bool = True,
                 geometry: Geometry | None = None):
        """``transpose``: the transpose's CSR if already built, True to build it, False when only forward is used.

        ``geometry``: the geometry of ``matrix`` when it is Joseph's projector
        (rays numbered ``angle * nu + u``), needed by :meth:`subset` only.
        """
        self.xp = xp
        self.shape = matrix.shape
        self._matrix = matrix if geometry is not None else None
        self._geometry = geometry
        if transpose is True:
            transpose = matrix.T.tocsr()
        compat = cs.require("array_api_compat", package="array-api-compat", who="reconstruct")
        self._kind = ("numpy" if compat.is_numpy_namespace(xp) else "cupy" if compat.is_cupy_namespace(xp) else "generic")
        if self._kind == "numpy":
            pack = lambda m: m
        elif self._kind == "cupy":
            import cupyx.scipy.sparse as cusp

            pack = cusp.csr_matrix
        else:
            pack = lambda m: _row_sums_operator(m, xp)
        self._forward = pack(matrix)
        self._adjoint = pack(transpose) if transpose is not False else None
        self._row_sum = xp.asarray(np.asarray(matrix.sum(axis=1)).ravel().astype(np.float32))
        self._col_sum = xp.asarray(np.asarray(matrix.sum(axis=0)).ravel().astype(np.float32))

    def row_sums(self) -> Any:
        """Sum of each row (a ray's path length through the slab), shape (n_rays,)."""
        return self._row_sum

    def column_sums(self) -> Any:
        """Sum of each column (how much each pixel is seen over all rays), shape (n_pixels,)."""
        return self._col_sum

    def _apply(self, packed: Any, values: Any) -> Any:
        if self._kind != "generic":
            return packed @ values
        xp = self.xp
        columns, weights, starts, stops = packed
        dtype = values.dtype
        gathered = xp.take(xp.astype(values, xp.float64), columns, axis=0) * weights[:, None]
        running = xp.concat([xp.zeros((1, values.shape[1]), dtype=xp.float64), xp.cumulative_sum(gathered, axis=0)])
        return xp.astype(xp.take(running, stops, axis=0) - xp.take(running, starts, axis=0), dtype)

    def forward(self, slab: Any) -> Any:
        """Project: (n_pixels, s) -> (n_rays, s)."""
        return self._apply(self._forward, slab)

    def adjoint(self, rays: Any) -> Any:
        """Backproject with the exact transpose: (n_rays, s) -> (n_pixels, s)."""
        if self._adjoint is None:
            raise TypeError("this operator was built without its transpose")
        return self._apply(self._adjoint, rays)

    def update(self, x: Any, rays: Any, relaxation: float, nonnegative: bool) -> Any:
        """SIRT's step: ``x + relaxation * C Aᵀ rays`` (C: 1 / column sums; 0 for unseen pixels), clipped at 0 if asked.

        Returns a new array (``x`` is not changed).
        """
        xp = self.xp
        columns = self._col_sum[:, None]
        seen = columns > 0
        step = xp.where(seen, relaxation / xp.where(seen, columns, xp.ones_like(columns)), xp.zeros_like(columns))
        x = x + step * self.adjoint(rays)
        return xp.maximum(x, xp.zeros_like(x)) if nonnegative else x

    def subset(self, angles: np.ndarray) -> Operator:
        """The operator of some of the geometry's angles (indices into ``geometry.angles_deg``), rays in that order."""
        if self._matrix is None or self._geometry is None:
            raise TypeError("this operator was built without its geometry")
        nu = self._geometry.nu
        rows = (np.asarray(angles)[:, None] * nu + np.arange(nu)[None, :]).ravel()
        return Operator(self._matrix[rows], self.xp)
