"""reconstruct.sirt / sart / cgls / tv and the shared projector: adjointness, convergence, accuracy, backends."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import needed_modules

import cellscape as cs
from cellscape_plugins.reconstruct._backend import namespace
from cellscape_plugins.reconstruct._geometry import Geometry, backprojection_matrix, projection_matrix

N = 40


def phantom() -> np.ndarray:
    """An ellipsoid with a denser sphere inside and a small dense bead: sharp edges, known densities."""
    z, y, x = np.mgrid[:N, :N, :N] - (N - 1) / 2
    body = (x - 2) ** 2 / 15**2 + y**2 / 14**2 + z**2 / 9**2 <= 1
    inner = (x + 5) ** 2 + (y - 3) ** 2 + (z - 1) ** 2 <= 4**2
    bead = (x - 9) ** 2 + (y + 4) ** 2 + (z + 3) ** 2 <= 1.5**2
    return (1.0 * body + 0.5 * inner + 2.0 * bead).astype(np.float32)


@pytest.fixture(scope="module")
def truth() -> np.ndarray:
    return phantom()


@pytest.fixture(scope="module")
def wedge(truth: np.ndarray) -> cs.TiltSeries:
    """±60° every 2°, noisy, as in the field."""
    return cs.method("generate.tilt_series", min_angle_deg=-60, max_angle_deg=60, step_deg=2, noise_snr=6,
                     seed=1)(cs.Volume(truth, 2.0))


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


@pytest.mark.parametrize("angles", [(-60.0, -13.0, 0.0, 37.0, 75.0, 90.0), (-89.5, -45.0, 44.9, 45.1)])
def test_projector_and_backprojector_are_adjoint(angles) -> None:
    geometry = Geometry(nu=37, nx=33, nz=21, angles_deg=angles, z_offset=1.5)
    a = projection_matrix(geometry)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal(geometry.n_pixels), rng.standard_normal(geometry.n_rays)
    # the operators in use: forward A and the transpose built by the backend
    from cellscape_plugins.reconstruct._backend import Operator

    op = Operator(a, namespace(x))
    forward = op.forward(x[:, None].astype(np.float32))[:, 0].astype(np.float64)
    adjoint = op.adjoint(y[:, None].astype(np.float32))[:, 0].astype(np.float64)
    assert forward @ y == pytest.approx(x @ adjoint, rel=1e-5)


def test_projector_gives_line_integrals() -> None:
    """A uniform slab of thickness T (pixels) projects to T / cos θ in the middle of the detector."""
    nz, nx = 12, 64
    angles = (-60.0, -30.0, 0.0, 20.0, 50.0)
    a = projection_matrix(Geometry(nu=nx, nx=nx, nz=nz, angles_deg=angles))
    rays = (a @ np.ones(nz * nx)).reshape(len(angles), nx)
    expected = nz / np.cos(np.radians(angles))
    # exact where rays step through rows (|θ| <= 45°); at steeper angles the slab's top and bottom half-pixels are
    # sampled by interpolation between columns (Joseph), within half a percent
    np.testing.assert_allclose(rays[1:4, nx // 2], expected[1:4], rtol=1e-6)
    np.testing.assert_allclose(rays[[0, 4], nx // 2], expected[[0, 4]], rtol=5e-3)


def test_backprojection_matrix_interpolates_the_detector() -> None:
    b = backprojection_matrix(Geometry(nu=16, nx=16, nz=4, angles_deg=(0.0, 30.0)))
    rows = b.sum(axis=1)
    assert np.asarray(rows).max() == pytest.approx(2.0)  # each inner pixel reads weights summing to 1 per angle


def test_sirt_residual_decreases_and_beats_wbp_under_the_wedge(truth, wedge) -> None:
    sirt = cs.method("reconstruct.sirt", iterations=40, workers=1)
    rec = sirt(wedge)
    for history in sirt.history.residuals:
        assert all(b <= a + 1e-6 for a, b in itertools.pairwise(history))
        assert history[-1] < 0.5 * history[0]
    wbp = cs.method("reconstruct.wbp")(wedge)
    assert rmse(rec.data, truth) < rmse(wbp.data, truth)
    assert rec.data.mean() == pytest.approx(truth.mean(), rel=0.1)


def test_sirt_stops_at_the_tolerance(wedge) -> None:
    sirt = cs.method("reconstruct.sirt", iterations=500, tolerance=0.2)
    sirt(wedge)
    for history in sirt.history.residuals:
        assert history[-1] < 0.2 and len(history) < 500
        assert history[-2] >= 0.2


def test_sart_converges_faster_per_pass_than_sirt(truth, wedge) -> None:
    sart = cs.method("reconstruct.sart", iterations=3, positivity=True)(wedge)
    sirt = cs.method("reconstruct.sirt", iterations=3, positivity=True)(wedge)
    assert rmse(sart.data, truth) < 0.8 * rmse(sirt.data, truth)
    assert sart.data.min() >= 0


def test_cgls_reduces_the_residual_fastest(wedge) -> None:
    cgls = cs.method("reconstruct.cgls", iterations=10)
    cgls(wedge)
    sirt = cs.method("reconstruct.sirt", iterations=10)
    sirt(wedge)
    assert max(h[-1] for h in cgls.history.residuals) < min(h[-1] for h in sirt.history.residuals)


def test_tv_reduces_wedge_artefacts(truth, wedge) -> None:
    tv = cs.method("reconstruct.tv", iterations=80, weight=0.1, positivity=True)(wedge)
    sirt = cs.method("reconstruct.sirt", iterations=80, positivity=True)(wedge)
    assert rmse(tv.data, truth) < 0.7 * rmse(sirt.data, truth)
    # the elongation along z of the missing wedge: density above and below the body, outside it
    z, y, x = np.mgrid[:N, :N, :N] - (N - 1) / 2
    caps = ((x - 2) ** 2 / 15**2 + y**2 / 14**2 <= 0.5) & (np.abs(z) > 11) & (np.abs(z) < 16)
    assert tv.data[caps].mean() < 0.8 * sirt.data[caps].mean()


def test_tv_without_weight_is_least_squares(wedge) -> None:
    tv = cs.method("reconstruct.tv", iterations=60, weight=0.0)
    tv(wedge)
    sirt = cs.method("reconstruct.sirt", iterations=60)
    sirt(wedge)
    assert max(h[-1] for h in tv.history.residuals) < 1.1 * max(h[-1] for h in sirt.history.residuals)


def test_sirt_like_filter_mimics_sirt(truth, wedge) -> None:
    """Few iterations: the filtered WBP is closer to SIRT than plain WBP (SIRT's low-frequency fill-in of the
    wedge, which comes from the slab's finite support, is beyond any filter, so many iterations stay apart)."""
    tilts = cs.method("generate.tilt_series", min_angle_deg=-60, max_angle_deg=60, step_deg=3)(cs.Volume(truth, 2.0))
    plain = cs.method("reconstruct.wbp")(tilts).data
    for k in (3, 5):
        sirt = cs.method("reconstruct.sirt", iterations=k)(tilts).data
        mimic = cs.method("reconstruct.wbp", sirt_like_iterations=k)(tilts).data
        assert np.corrcoef(sirt.ravel(), mimic.ravel())[0, 1] > 0.97
        assert np.corrcoef(sirt.ravel(), mimic.ravel())[0, 1] > np.corrcoef(sirt.ravel(), plain.ravel())[0, 1] + 0.02
        assert rmse(mimic, sirt) < 0.92 * rmse(plain, sirt)
    # and, as SIRT does, it damps noise: the empty corner of a noisy tomogram is quieter
    noisy_plain = cs.method("reconstruct.wbp")(wedge).data[:8, :, :8]
    noisy_mimic = cs.method("reconstruct.wbp", sirt_like_iterations=10)(wedge).data[:8, :, :8]
    assert noisy_mimic.std() < 0.75 * noisy_plain.std()


def test_slabs_and_threads_do_not_change_the_result(wedge) -> None:
    one = cs.method("reconstruct.sirt", iterations=5, workers=1, slab_slices=N)(wedge).data
    many = cs.method("reconstruct.sirt", iterations=5, workers=2, slab_slices=3)(wedge).data
    np.testing.assert_allclose(many, one, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["reconstruct.sirt", "reconstruct.sart", "reconstruct.cgls", "reconstruct.tv",
                                  "reconstruct.wbp"])
def test_array_api_strict_equals_numpy(name) -> None:
    strict = needed_modules("array_api_strict")
    geometry = Geometry(nu=24, nx=24, nz=12, angles_deg=tuple(np.arange(-60.0, 61.0, 10.0)))
    rng = np.random.default_rng(3)
    slab = rng.random((geometry.n_pixels, 3)).astype(np.float32)
    rays = (projection_matrix(geometry) @ slab).astype(np.float32)
    context = {"load": lambda y0, y1: rays[:, : y1 - y0], "ny": 3}
    method = cs.method(name, **({} if name == "reconstruct.wbp" else {"iterations": 4}))
    xp_np = namespace(rays)
    expected = method.solve_slab(method.setup(geometry, xp_np, context), rays, xp_np)
    result = method.solve_slab(method.setup(geometry, strict, context), strict.asarray(rays), strict)
    assert type(result).__module__.startswith("array_api_strict")
    np.testing.assert_allclose(np.from_dlpack(result), expected, rtol=2e-4, atol=2e-4 * float(np.abs(expected).max()))


def test_memory_mapped_input_and_output(tmp_path, wedge) -> None:
    """Slab by slab from a memmap to a memmap: peak Python-side memory stays far below input + output."""
    import tracemalloc

    tall = cs.TiltSeries(np.tile(wedge.projections, (1, 8, 1)), wedge.tilt_angles_deg, wedge.pixel_size_nm)  # 320 slices
    stack = np.lib.format.open_memmap(tmp_path / "tilts.npy", mode="w+", dtype=np.float32, shape=tall.projections.shape)
    stack[...] = tall.projections
    stack.flush()
    mapped = cs.TiltSeries(np.load(tmp_path / "tilts.npy", mmap_mode="r"), wedge.tilt_angles_deg, wedge.pixel_size_nm)
    method = cs.method("reconstruct.sirt", iterations=3, slab_slices=4, workers=1)
    expected = cs.method("reconstruct.sirt", iterations=3)(tall).data  # also builds (and caches) the matrices
    out = np.lib.format.open_memmap(tmp_path / "tomo.npy", mode="w+", dtype=np.float32, shape=method.output_shape(mapped))
    tracemalloc.start()
    volume = method.reconstruct_into(mapped, out)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 0.25 * (tall.projections.nbytes + out.nbytes)
    np.testing.assert_allclose(np.load(tmp_path / "tomo.npy"), expected, rtol=1e-5, atol=1e-5)
    assert volume.data.shape == expected.shape


def test_zarr_output(tmp_path, wedge) -> None:
    zarr = needed_modules("zarr")
    method = cs.method("reconstruct.wbp", slab_slices=8)
    shape = method.output_shape(wedge)
    out = zarr.open(str(tmp_path / "tomo.zarr"), mode="w", shape=shape, chunks=(shape[0], 8, shape[2]), dtype="f4")
    method.reconstruct_into(wedge, out)
    np.testing.assert_allclose(out[...], cs.method("reconstruct.wbp")(wedge).data, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("params", "message"), [
    ({"iterations": 0}, "iterations"),
    ({"relaxation": 2.5}, "relaxation"),
    ({"tolerance": 1.5}, "tolerance"),
    ({"device": "tpu"}, "'tpu' is not one of"),
])
def test_bad_parameters(params, message) -> None:
    with pytest.raises(cs.InputError, match=message):
        cs.method("reconstruct.sirt", **params)


def test_wrong_output_shape(wedge) -> None:
    with pytest.raises(cs.InputError, match=r"output array has shape \(2, 2, 2\), expected"):
        cs.method("reconstruct.sirt").reconstruct_into(wedge, np.zeros((2, 2, 2), np.float32))


def test_gpu_device(wedge) -> None:
    """Without a GPU, asking for one is an error; with one, the GPU result equals the CPU result."""
    from cellscape_plugins.reconstruct._backend import gpu_available

    if not gpu_available():
        with pytest.raises(cs.InputError, match="CuPy sees no CUDA device"):
            cs.method("reconstruct.sirt", device="gpu", iterations=1)(wedge)
        return
    on_gpu = cs.method("reconstruct.sirt", device="gpu", iterations=5)(wedge).data
    on_cpu = cs.method("reconstruct.sirt", device="cpu", iterations=5)(wedge).data
    np.testing.assert_allclose(on_gpu, on_cpu, rtol=1e-4, atol=1e-4 * float(np.abs(on_cpu).max()))


@pytest.mark.parametrize("name", ["reconstruct.sirt", "reconstruct.sart", "reconstruct.cgls", "reconstruct.tv"])
def test_ball_density_position_and_radius(name) -> None:
    """A uniform ball of density 2 off-centre, full tilt range: every iterative method puts it back."""
    z, y, x = np.mgrid[:N, :N, :N] - (N - 1) / 2
    centre = (-4.0, 3.0, 6.0)
    r2 = (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2
    truth = cs.Volume((2.0 * (r2 <= 8.0**2)).astype(np.float32), 1.5)
    tilts = cs.method("generate.tilt_series", min_angle_deg=-90, max_angle_deg=88, step_deg=2)(truth)
    params = {"iterations": {"reconstruct.sirt": 150, "reconstruct.sart": 10, "reconstruct.cgls": 30,
                             "reconstruct.tv": 200}[name]}
    if name == "reconstruct.tv":
        params["weight"] = 0.01
    rec = cs.method(name, **params)(tilts).data
    assert rec[r2 <= 5.0**2].mean() == pytest.approx(2.0, rel=0.03)
    assert abs(rec[r2 >= 11.0**2].mean()) < 0.03
    mass = np.clip(rec, 0, None) * (rec > 1.0)
    centroid = [float((mass * g).sum() / mass.sum()) for g in (z, y, x)]
    np.testing.assert_allclose(centroid, centre, atol=0.15)
    assert (3 * (rec > 1.0).sum() / (4 * np.pi)) ** (1 / 3) == pytest.approx(8.0, abs=0.4)


def test_point_reappears_at_its_voxel() -> None:
    data = np.zeros((N, N, N), np.float32)
    data[13, 22, 29] = 1.0
    tilts = cs.method("generate.tilt_series", min_angle_deg=-60, max_angle_deg=60, step_deg=2)(cs.Volume(data, 1.0))
    rec = cs.method("reconstruct.sirt", iterations=30)(tilts).data
    assert np.unravel_index(np.argmax(rec), rec.shape) == (13, 22, 29)
