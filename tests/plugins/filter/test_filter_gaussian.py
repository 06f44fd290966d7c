"""filter.gaussian: the smoothed delta's variance is sigma² in nm on every axis, also for anisotropic voxels."""

from __future__ import annotations

import numpy as np
import pytest

import cellscape as cs


def delta(shape: tuple[int, int, int], voxel_size_nm: tuple[float, float, float]) -> cs.Volume:
    data = np.zeros(shape, np.float32)
    data[tuple(n // 2 for n in shape)] = 1.0
    return cs.Volume(data, voxel_size_nm, origin_nm=(10.0, 20.0, 30.0))


def variances_nm2(volume: cs.Volume) -> list[float]:
    data = volume.data.astype(np.float64)
    result = []
    for axis in range(3):
        coords = (np.arange(data.shape[axis]) - data.shape[axis] // 2) * volume.voxel_size_nm[axis]
        marginal = data.sum(axis=tuple(a for a in range(3) if a != axis))
        result.append(float((marginal * coords**2).sum() / marginal.sum()))
    return result


def test_variance_of_smoothed_delta_is_sigma_squared_in_nm_per_axis() -> None:
    volume = delta((41, 61, 81), (4.0, 2.0, 1.0))
    smoothed = cs.method("filter.gaussian", sigma_nm=6.0)(volume)
    assert smoothed.data.dtype == np.float32
    assert smoothed.voxel_size_nm == (4.0, 2.0, 1.0) and smoothed.origin_nm == (10.0, 20.0, 30.0)
    assert smoothed.data.sum() == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(variances_nm2(smoothed), [36.0] * 3, rtol=1e-2)


def test_sigma_voxels_is_in_voxels_of_the_finest_axis() -> None:
    volume = delta((31, 41, 61), (3.0, 1.5, 1.5))
    smoothed = cs.method("filter.gaussian", sigma_voxels=2)(volume)
    np.testing.assert_allclose(variances_nm2(smoothed), [(2 * 1.5) ** 2] * 3, rtol=1e-2)


def test_mean_is_preserved_and_noise_reduced() -> None:
    rng = np.random.default_rng(1)
    data = (5.0 + rng.normal(0, 1.0, (40, 40, 40))).astype(np.float32)
    smoothed = cs.method("filter.gaussian", sigma_voxels=2.0)(cs.Volume(data))
    assert smoothed.data.mean() == pytest.approx(data.mean(), abs=1e-4)
    # white noise through a 3D Gaussian of sigma s voxels: std falls by (2 sqrt(pi) s)^(3/2) = 18.9 for s = 2
    interior = smoothed.data[8:-8, 8:-8, 8:-8]
    assert interior.std() == pytest.approx((2 * np.sqrt(np.pi) * 2.0) ** -1.5, rel=0.1)


def test_integer_input_gives_float32() -> None:
    data = np.zeros((8, 8, 8), np.uint8)
    data[4, 4, 4] = 200
    smoothed = cs.method("filter.gaussian", sigma_voxels=1.0)(cs.Volume(data))
    assert smoothed.data.dtype == np.float32
    assert smoothed.data.sum() == pytest.approx(200.0, rel=1e-4)


def test_bad_params() -> None:
    with pytest.raises(cs.InputError, match=r"filter.gaussian: parameter 'sigma_nm': 0 is out of range: must be > 0"):
        cs.method("filter.gaussian", sigma_nm=0)
    with pytest.raises(cs.InputError, match=r"parameter 'sigma_voxels': -1 is out of range"):
        cs.method("filter.gaussian", sigma_voxels=-1)
    with pytest.raises(cs.InputError, match="unknown parameter 'sigma'"):
        cs.method("filter.gaussian", sigma=2)
