"""The compiled matrix-free projectors (numba): equal to the sparse matrices, adjoint, in-place, thread-independent."""

from __future__ import annotations

import attrs
import numpy as np
import pytest

import cellscape as cs
from cellscape_plugins.reconstruct import _kernels
from cellscape_plugins.reconstruct._geometry import Geometry, backprojection_matrix, projection_matrix

GEOMETRIES = [
    Geometry(nu=37, nx=33, nz=21, angles_deg=(-60.0, -13.0, 0.0, 37.0, 75.0, 90.0), z_offset=1.5),
    Geometry(nu=37, nx=33, nz=21, angles_deg=(-89.5, -45.0, 44.9, 45.1)),
    Geometry(nu=24, nx=24, nz=1, angles_deg=tuple(np.arange(-60.0, 61.0, 7.5))),  # a one-voxel-thick slab
    Geometry(nu=40, nx=40, nz=40, angles_deg=tuple(np.arange(-90.0, 90.0, 3.7)), z_offset=-2.25),
]


def close(result: np.ndarray, expected: np.ndarray, tolerance: float = 1e-5) -> None:
    """Equal to ``tolerance`` relative to the largest value (float32 sums in a different order)."""
    np.testing.assert_allclose(result, expected, rtol=tolerance, atol=tolerance * float(np.abs(expected).max()))


def random(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_projector_equals_josephs_matrix_and_its_transpose(geometry: Geometry) -> None:
    a = projection_matrix(geometry)
    projector = _kernels.Projector(geometry)
    x, y = random((geometry.n_pixels, 5), 1), random((geometry.n_rays, 5), 2)
    close(projector.forward(x), a @ x)
    close(projector.adjoint(y), a.T @ y)
    close(projector.row_sums(), np.asarray(a.sum(axis=1)).ravel())
    close(projector.column_sums(), np.asarray(a.sum(axis=0)).ravel())


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_pixel_driven_backprojector_equals_the_wbp_matrix(geometry: Geometry) -> None:
    y = random((geometry.n_rays, 3), 3)
    out = np.full((geometry.nz, geometry.nx, 3), np.nan, np.float32)  # every voxel is written
    _kernels.backproject(y.reshape(len(geometry.angles_deg), geometry.nu, 3), geometry.nu, geometry, out)
    close(out.reshape(geometry.n_pixels, 3), backprojection_matrix(geometry) @ y)


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_kernel_pair_is_adjoint(geometry: Geometry) -> None:
    """⟨A x, y⟩ = ⟨x, Aᵀ y⟩ to 1e-5 for the pair the iterative methods use, and for a subset of its angles."""
    projector = _kernels.Projector(geometry)
    subset = projector.subset(np.arange(len(geometry.angles_deg))[1::2])
    for operator in (projector, subset):
        x, y = random((geometry.n_pixels, 1), 4), random((operator.shape[0], 1), 5)
        forward = operator.forward(x)[:, 0].astype(np.float64)
        adjoint = operator.adjoint(y)[:, 0].astype(np.float64)
        assert forward @ y[:, 0] == pytest.approx(x[:, 0] @ adjoint, rel=1e-5)


def test_subset_projects_its_angles_only() -> None:
    geometry = GEOMETRIES[0]
    angles = np.array([4, 0, 2])
    x = random((geometry.n_pixels, 2), 6)
    full = _kernels.Projector(geometry).forward(x).reshape(len(geometry.angles_deg), geometry.nu, 2)
    part = _kernels.Projector(geometry).subset(angles).forward(x).reshape(3, geometry.nu, 2)
    np.testing.assert_array_equal(part, full[angles])


@pytest.mark.parametrize("nonnegative", [False, True])
def test_update_is_sirts_step_in_place(nonnegative: bool) -> None:
    """x += λ C Aᵀ r with C = 1 / column sums of the operator's own rows (a subset's), 0 for pixels no ray sees."""
    geometry = attrs.evolve(GEOMETRIES[0], nu=20)  # a detector narrower than the slab
    angles = np.array([1, 2, 4])
    rows = (angles[:, None] * geometry.nu + np.arange(geometry.nu)).ravel()
    a = projection_matrix(geometry)[rows]
    columns = np.asarray(a.sum(axis=0)).ravel()
    assert (columns == 0).any()  # corners outside every ray: they must stay as they are
    x, r = random((geometry.n_pixels, 4), 7), random((len(rows), 4), 8)
    expected = x + 0.7 * np.divide(1.0, columns, out=np.zeros_like(columns), where=columns > 0)[:, None] * (a.T @ r)
    if nonnegative:
        expected = np.maximum(expected, 0)
    result = x.copy()
    assert _kernels.Projector(geometry).subset(angles).update(result, r, 0.7, nonnegative) is result
    close(result, expected)
    np.testing.assert_array_equal(result[columns == 0], np.maximum(x, 0)[columns == 0] if nonnegative else x[columns == 0])


def test_backprojection_writes_into_a_strided_tomogram_slab() -> None:
    """WBP writes a slab straight into tomogram[:, y0:y1, :] seen as (z, x, slice): same values as a fresh array."""
    geometry = GEOMETRIES[3]
    y = random((len(geometry.angles_deg), geometry.nu, 6), 9)
    fresh = np.empty((geometry.nz, geometry.nx, 6), np.float32)
    _kernels.backproject(y, geometry.nu, geometry, fresh)
    tomogram = np.zeros((geometry.nz, 10, geometry.nx), np.float32)
    _kernels.backproject(y, geometry.nu, geometry, tomogram[:, 2:8, :].transpose(0, 2, 1))
    np.testing.assert_array_equal(tomogram[:, 2:8, :], fresh.transpose(0, 2, 1))
    assert not tomogram[:, :2].any() and not tomogram[:, 8:].any()


def test_padded_rows_are_not_read() -> None:
    """A filtered sinogram padded for the FFT is read in place: rows past nu do not matter."""
    geometry = GEOMETRIES[0]
    y = random((len(geometry.angles_deg), geometry.nu, 2), 10)
    padded = np.concatenate([y, np.full((len(geometry.angles_deg), 27, 2), 1e6, np.float32)], axis=1)
    expected, result = (np.empty((geometry.nz, geometry.nx, 2), np.float32) for _ in range(2))
    _kernels.backproject(y, geometry.nu, geometry, expected)
    _kernels.backproject(padded, geometry.nu, geometry, result)
    np.testing.assert_array_equal(result, expected)


def test_thread_count_does_not_change_results() -> None:
    geometry = GEOMETRIES[3]
    projector = _kernels.Projector(geometry)
    x, y = random((geometry.n_pixels, 9), 11), random((geometry.n_rays, 9), 12)
    results = []
    for count in (1, 2):
        with _kernels.threads(count):
            results.append((projector.forward(x), projector.adjoint(y)))
    for one, many in zip(*results, strict=True):
        np.testing.assert_array_equal(one, many)


def test_serial_kernels_run_side_by_side_and_match_the_parallel_ones() -> None:
    """Inside ``serial()`` each thread runs its own compilation of the kernels, filed apart in numba's cache."""
    from concurrent.futures import ThreadPoolExecutor

    geometry = GEOMETRIES[3]
    projector = _kernels.Projector(geometry)
    inputs = [(random((geometry.n_pixels, 5), 13 + k), random((geometry.n_rays, 5), 20 + k)) for k in range(4)]
    expected = [(projector.forward(x), projector.adjoint(y)) for x, y in inputs]

    def serial_pair(pair: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        with _kernels.serial():
            return projector.forward(pair[0]), projector.adjoint(pair[1])

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(serial_pair, inputs))
    for (forward, adjoint), (forward_expected, adjoint_expected) in zip(results, expected, strict=True):
        close(forward, forward_expected, 1e-6)
        close(adjoint, adjoint_expected, 1e-6)
    serial, parallel = _kernels._compiled(_kernels._project, True), _kernels._compiled(_kernels._project, False)
    assert serial is not parallel
    assert serial.py_func.__qualname__ == "_project_serial" and parallel.py_func.__qualname__ == "_project"


def test_uncacheable_kernels_compile_in_memory(monkeypatch) -> None:
    """No writable cache directory (numba raises RuntimeError for cache=True): compile without a cache, quietly."""
    import numba

    real_njit = numba.njit
    calls = []

    def njit(*args, cache=False, **options):
        calls.append(cache)
        if cache:
            raise RuntimeError("cannot cache function '_backproject': no locator available for file")
        return real_njit(*args, cache=cache, **options)

    monkeypatch.setattr(numba, "njit", njit)

    def add_one(values):  # pragma: no cover - compiled
        for i in range(values.shape[0]):
            values[i] += 1.0

    compiled = _kernels.compile_kernel(add_one, numba.void(numba.float64[::1]), parallel=False)
    values = np.zeros(3)
    compiled(values)
    assert calls == [True, False]
    np.testing.assert_array_equal(values, [1.0, 1.0, 1.0])


def small_tilts() -> cs.TiltSeries:
    z, y, x = np.mgrid[:24, :10, :24] - np.array([11.5, 4.5, 11.5])[:, None, None, None]
    volume = ((x - 3) ** 2 + y**2 + (z + 2) ** 2 <= 36).astype(np.float32) + ((x + 5) ** 2 + (z - 4) ** 2 <= 9)
    return cs.method("generate.tilt_series", min_angle_deg=-60, max_angle_deg=60, step_deg=4)(cs.Volume(volume, 1.0))


@pytest.mark.parametrize(("name", "params"), [
    ("reconstruct.wbp", {"filter": "hann", "thickness_voxels": 16, "z_offset_voxels": 1.5}),
    ("reconstruct.wbp", {"sirt_like_iterations": 5}),
    ("reconstruct.sirt", {"iterations": 6, "positivity": True}),
    ("reconstruct.sart", {"iterations": 2, "subsets": 5}),
    ("reconstruct.cgls", {"iterations": 5}),
    ("reconstruct.tv", {"iterations": 10, "weight": 0.05}),
])
def test_compiled_path_equals_the_matrix_path(monkeypatch, name: str, params: dict) -> None:
    """The whole method on NumPy arrays (compiled kernels, in-place slabs) against its sparse-matrix path."""
    from cellscape_plugins.reconstruct import _backend, _slab, wbp

    tilts = small_tilts()
    compiled = cs.method(name, slab_slices=4, **params)(tilts).data
    for module in (_backend, _slab, wbp):
        monkeypatch.setattr(module, "is_numpy", lambda xp: False)
    matrices = cs.method(name, slab_slices=4, **params)(tilts).data
    close(compiled, matrices, 1e-4 if name == "reconstruct.tv" else 1e-5)


def test_float64_and_zarr_like_outputs_get_the_same_tomogram() -> None:
    """Outputs the kernels cannot write in place (float64, non-NumPy arrays) go through a slab buffer."""
    tilts = small_tilts()
    method = cs.method("reconstruct.wbp", slab_slices=3)
    expected = method(tilts).data
    as_float64 = np.zeros(method.output_shape(tilts), np.float64)
    method.reconstruct_into(tilts, as_float64)
    close(as_float64, expected)

    class Store:  # an array with NumPy slicing that is not an ndarray (like a Zarr array)
        def __init__(self, shape):
            self.values = np.zeros(shape, np.float32)
            self.shape = shape

        def __setitem__(self, key, value):
            self.values[key] = value

        def __getitem__(self, key):
            return self.values[key]

    store = Store(method.output_shape(tilts))
    method.reconstruct_into(tilts, store)
    np.testing.assert_array_equal(store.values, expected)
