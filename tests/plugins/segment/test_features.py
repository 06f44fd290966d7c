"""The multi-scale feature bank against scipy, analytic fields and resampled volumes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import cellscape as cs
from cellscape_plugins.segment import features as ft
from cellscape_plugins.segment.features import FEATURE_GROUPS, FeatureBank


@pytest.fixture(scope="module")
def noise() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(24, 28, 32)).astype(np.float32)


def test_gaussian_feature_is_scipy_gaussian_filter(noise: np.ndarray) -> None:
    bank = FeatureBank(["gaussian"], [0.7, 3.5])
    features = bank.compute(noise)
    assert bank.names == ["gaussian_s0.7", "gaussian_s3.5"]
    assert features.shape == (2, *noise.shape) and features.dtype == np.float32
    for channel, sigma in enumerate(bank.scales):
        np.testing.assert_allclose(features[channel], ndimage.gaussian_filter(noise, sigma), atol=1e-6)
    np.testing.assert_allclose(ft.gaussian_smoothing(noise, 1.6), ndimage.gaussian_filter(noise, 1.6), atol=1e-6)


def test_derivative_features_match_scipy_filters(noise: np.ndarray) -> None:
    sigma = 1.6
    np.testing.assert_allclose(ft.laplacian_of_gaussian(noise, sigma), ndimage.gaussian_laplace(noise, sigma), atol=1e-5)
    np.testing.assert_allclose(ft.gradient_magnitude(noise, sigma),
                               ndimage.gaussian_gradient_magnitude(noise, sigma), atol=1e-5)
    np.testing.assert_allclose(ft.difference_of_gaussians(noise, sigma),
                               ndimage.gaussian_filter(noise, sigma) - ndimage.gaussian_filter(noise, 0.66 * sigma),
                               atol=1e-6)
    bank = FeatureBank(FEATURE_GROUPS, [sigma])
    features = dict(zip(bank.names, bank.compute(noise), strict=True))
    np.testing.assert_allclose(features["laplacian_of_gaussian_s1.6"], ndimage.gaussian_laplace(noise, sigma), atol=1e-5)
    np.testing.assert_allclose(features["hessian_eigenvalues_0_s1.6"], ft.hessian_eigenvalues(noise, sigma)[0], atol=1e-6)
    np.testing.assert_allclose(features["structure_tensor_eigenvalues_2_s1.6"],
                               ft.structure_tensor_eigenvalues(noise, sigma)[2], atol=1e-6)


def test_structure_tensor_is_outer_smoothed_gradient_product(noise: np.ndarray) -> None:
    sigma = 2.0
    gradient = [ndimage.gaussian_filter(noise, sigma, order=o) for o in ((1, 0, 0), (0, 1, 0), (0, 0, 1))]
    tensor = np.empty((*noise.shape, 3, 3))
    for a in range(3):
        for b in range(3):
            tensor[..., a, b] = ndimage.gaussian_filter(gradient[a] * gradient[b], sigma / 2)
    expected = np.moveaxis(np.linalg.eigvalsh(tensor), -1, 0)
    np.testing.assert_allclose(ft.structure_tensor_eigenvalues(noise, sigma), expected, rtol=1e-4, atol=1e-6)


def test_closed_form_eigenvalues_match_lapack() -> None:
    rng = np.random.default_rng(1)
    matrices = rng.normal(size=(2000, 3, 3))
    matrices = matrices + np.swapaxes(matrices, 1, 2)
    matrices[:3] = [np.eye(3) * 2.5, np.diag([1.0, 1.0, -3.0]), np.zeros((3, 3))]  # degenerate cases
    entries = [matrices[:, a, b] for a, b in ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))]
    eigenvalues = ft.symmetric_eigenvalues(*entries)
    assert eigenvalues.shape == (3, 2000) and eigenvalues.dtype == np.float32
    np.testing.assert_allclose(eigenvalues.T, np.linalg.eigvalsh(matrices), atol=2e-5)


@pytest.mark.parametrize("voxel_size_nm", [(1.0, 1.0, 1.0), (2.0, 1.0, 1.0)])
def test_hessian_eigenvalues_of_a_quadratic(voxel_size_nm: tuple[float, float, float]) -> None:
    a, b, c = 0.5, -1.25, 2.0
    n = 40
    k, j, i = np.mgrid[:n, :n, :n].astype(np.float64) - n // 2
    z = k * voxel_size_nm[0] / min(voxel_size_nm)  # coordinates in finest-axis voxels
    field = (a * i**2 + b * j**2 + c * z**2).astype(np.float32)
    # scipy truncates kernels at 4σ: the second-derivative kernel then loses ~1% of its x² moment, and a
    # small bias that grows with the distance from 0 squared, so compare near the centre to 1.5%
    centre = (slice(None), *[slice(n // 2 - 3, n // 2 + 4)] * 3)
    interior = ft.hessian_eigenvalues(field, 2.0, voxel_size_nm)[centre].reshape(3, -1)
    expected = np.sort([2 * a, 2 * b, 2 * c])
    np.testing.assert_allclose(interior, np.repeat(expected[:, None], interior.shape[1], 1), rtol=1.5e-2)
    laplacian = ft.laplacian_of_gaussian(field, 2.0, voxel_size_nm)[centre[1:]]
    np.testing.assert_allclose(laplacian, 2 * (a + b + c), rtol=1.5e-2)


def test_anisotropic_voxels_give_the_same_physical_features() -> None:
    rng = np.random.default_rng(2)
    fine = ndimage.gaussian_filter(rng.normal(size=(64, 40, 40)), 3.0, mode="wrap")
    fine = (fine / fine.std()).astype(np.float32)  # smooth, unit-variance image on a 1 nm grid
    coarse = fine[::2]  # the same object sampled every 2 nm in z
    groups = ["gaussian", "gradient_magnitude", "hessian_eigenvalues"]
    iso = FeatureBank(groups, [2.0], (1.0, 1.0, 1.0)).compute(fine)[:, ::2]
    aniso = FeatureBank(groups, [2.0], (2.0, 1.0, 1.0)).compute(coarse)
    naive = FeatureBank(groups, [2.0], (1.0, 1.0, 1.0)).compute(coarse)  # ignores the z spacing
    inner = (slice(None), slice(8, -8), slice(10, -10), slice(10, -10))

    def relative_error(features: np.ndarray) -> np.ndarray:
        difference = np.abs(features[inner] - iso[inner]).reshape(len(features), -1).max(1)
        return difference / np.abs(iso[inner]).reshape(len(features), -1).max(1)

    assert relative_error(aniso).max() < 0.03
    assert relative_error(naive).max() > 0.15


def test_features_of_a_region_equal_the_whole_volume_features(noise: np.ndarray) -> None:
    bank = FeatureBank(FEATURE_GROUPS, [0.7, 2.0], (2.0, 1.0, 1.0))
    whole = bank.compute(noise)
    for region in [(slice(0, 8), slice(10, 20), slice(25, 32)), (slice(5, 19), slice(0, 28), slice(3, 4))]:
        np.testing.assert_array_equal(bank.compute(noise, region), whole[(slice(None), *region)])


def test_halo_is_the_largest_kernel_radius_per_axis() -> None:
    assert FeatureBank(["gaussian"], [1.0, 2.0]).halo == (8, 8, 8)
    assert FeatureBank(["gaussian"], [1.0, 2.0], (2.0, 1.0, 1.0)).halo == (4, 8, 8)
    # the structure tensor averages the gradient again at σ/2: radius 8 + 4
    assert FeatureBank(["structure_tensor_eigenvalues"], [2.0]).halo == (12, 12, 12)
    assert FeatureBank(FEATURE_GROUPS, ft.DEFAULT_SCALES).n_features == 60


def test_bad_feature_choices_are_rejected() -> None:
    with pytest.raises(cs.InputError, match="unknown: 'sobel'"):
        FeatureBank(["gaussian", "sobel"], [1.0])
    with pytest.raises(cs.InputError, match="scales"):
        FeatureBank(["gaussian"], [1.0, -2.0])


def test_short_axes_are_mirrored_as_scipy_does() -> None:
    # kernels far longer than the axes (radius 40 on 9 voxels): the mirror repeats with period 2n, as in scipy
    image = np.random.default_rng(3).normal(size=(9, 30, 17)).astype(np.float32)
    np.testing.assert_allclose(ft.gaussian_smoothing(image, 10.0), ndimage.gaussian_filter(image, 10.0), atol=1e-6)
    np.testing.assert_allclose(ft.gradient_magnitude(image, 5.0), ndimage.gaussian_gradient_magnitude(image, 5.0),
                               atol=1e-6)
    bank = FeatureBank(FEATURE_GROUPS, [1.0, 10.0], (2.0, 1.0, 1.0))
    whole = bank.compute(image)
    for region in [(slice(0, 4), slice(3, 20), slice(10, 17)), (slice(2, 9), slice(0, 30), slice(0, 1))]:
        np.testing.assert_array_equal(bank.compute(image, region), whole[(slice(None), *region)])


def test_valid_correlation_pairs_symmetric_taps() -> None:
    from cellscape_plugins.segment._forest_kernels import correlate_valid

    block = np.random.default_rng(5).normal(size=(12, 11, 13)).astype(np.float32)
    for order in (0, 1, 2):
        weights = ft.correlation_weights(1.0, order)  # radius 4
        radius = (weights.size - 1) // 2
        expected = ndimage.correlate1d(block.astype(np.float64), weights.astype(np.float64), axis=1)
        result = correlate_valid(block, weights, 1)
        assert result.shape == (12, 11 - 2 * radius, 13)
        np.testing.assert_allclose(result, expected[:, radius:-radius], atol=1e-6)
    with pytest.raises(ValueError, match="symmetric or antisymmetric"):
        correlate_valid(block, np.array([0.2, 0.5, 0.3], np.float32), 0)
    with pytest.raises(ValueError, match="no longer than axis 1"):
        correlate_valid(block, np.ones(13, np.float32), 1)
