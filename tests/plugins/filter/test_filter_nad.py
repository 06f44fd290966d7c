"""filter.nad: edge-preserving denoising, compared with a Gaussian that removes as much noise."""

from __future__ import annotations

import numpy as np
import pytest

import cellscape as cs

SHAPE = (16, 24, 48)
X = np.arange(SHAPE[2])
FLAT = np.abs(X - 23.5) > 8  # columns far from the edge
NEAR_EDGE = np.abs(X - 23.5) < 3


def noisy_step(noise: float = 0.2, seed: int = 0) -> tuple[cs.Volume, np.ndarray]:
    clean = np.broadcast_to((X >= 24).astype(np.float32), SHAPE).copy()
    noisy = clean + np.random.default_rng(seed).normal(0, noise, SHAPE).astype(np.float32)
    return cs.Volume(noisy, (2.0, 1.0, 1.0), (5.0, 0.0, 0.0)), clean


def rms(error: np.ndarray) -> float:
    return float(np.sqrt(np.mean(error**2)))


def gaussian_matching_flat_noise(volume: cs.Volume, clean: np.ndarray, target: float) -> np.ndarray:
    """The Gaussian-smoothed volume whose flat-region error equals ``target`` (bisection on sigma in nm)."""
    low, high = 0.1, 6.0
    for _ in range(30):
        sigma = (low + high) / 2
        smoothed = cs.method("filter.gaussian", sigma_nm=sigma)(volume).data
        if rms((smoothed - clean)[..., FLAT]) > target:
            low = sigma
        else:
            high = sigma
    return smoothed


def test_nad_keeps_the_edge_better_than_an_equally_smoothing_gaussian() -> None:
    volume, clean = noisy_step()
    diffused = cs.method("filter.nad", iterations=10, time_step=1 / 6)(volume)
    assert diffused.data.dtype == np.float32
    assert diffused.voxel_size_nm == (2.0, 1.0, 1.0) and diffused.origin_nm == (5.0, 0.0, 0.0)
    flat_noise = rms((diffused.data - clean)[..., FLAT])
    assert flat_noise < 0.2 / 5  # noise in flat regions falls at least 5x
    gaussian = gaussian_matching_flat_noise(volume, clean, flat_noise)
    assert rms((gaussian - clean)[..., FLAT]) == pytest.approx(flat_noise, rel=0.02)
    nad_edge_error = rms((diffused.data - clean)[..., NEAR_EDGE])
    gaussian_edge_error = rms((gaussian - clean)[..., NEAR_EDGE])
    assert nad_edge_error * 4 < gaussian_edge_error


@pytest.mark.parametrize("conductance", ["exponential", "quadratic"])
def test_mean_is_preserved_and_no_new_extrema(conductance: str) -> None:
    volume, _ = noisy_step(noise=0.3, seed=3)
    diffused = cs.method("filter.nad", iterations=5, conductance=conductance)(volume).data
    assert diffused.mean(dtype=np.float64) == pytest.approx(volume.data.mean(dtype=np.float64), abs=1e-5)
    assert diffused.min() >= volume.data.min() - 1e-5
    assert diffused.max() <= volume.data.max() + 1e-5
    assert diffused.std() < volume.data.std()


def test_explicit_kappa_is_in_units_per_nm() -> None:
    volume, _ = noisy_step(noise=0.05)
    # voxels of 1 nm: a jump of 1 is a difference of 1/nm; kappa far below stops all flow across the edge
    # and far above makes it plain (linear) diffusion, which blurs it
    sharp = cs.method("filter.nad", iterations=10, kappa=0.05)(volume).data
    blurred = cs.method("filter.nad", iterations=10, kappa=100.0)(volume).data
    jump = lambda data: float(np.mean(data[..., 24] - data[..., 23]))
    assert jump(sharp) > 0.95
    assert jump(blurred) < 0.6


def test_bad_input() -> None:
    with pytest.raises(cs.InputError, match=r"parameter 'time_step': 0.2 is out of range: must be <= 0.166667"):
        cs.method("filter.nad", time_step=0.2)
    with pytest.raises(cs.InputError, match="'linear' is not one of 'exponential', 'quadratic'"):
        cs.method("filter.nad", conductance="linear")
    with pytest.raises(cs.InputError, match="parameter 'iterations': 0 is out of range"):
        cs.method("filter.nad", iterations=0)
    with pytest.raises(cs.InputError, match="filter.nad: cannot estimate kappa automatically.*give 'kappa'"):
        cs.method("filter.nad")(cs.Volume(np.ones((6, 6, 6), np.float32)))


def test_automatic_kappa_ignores_flat_clipped_regions() -> None:
    """A reconstruction clipped at zero (positivity) has large flat regions: they must not hide the noise."""
    rng = np.random.default_rng(4)
    noisy = (1.0 + rng.normal(0, 0.1, (24, 24, 24))).astype(np.float32)
    clipped = noisy.copy()
    clipped[:, :, :16] = 0.0  # two thirds of the volume flat
    nad = cs.method("filter.nad")
    full = nad.kappa(noisy, (1.0, 1.0, 1.0))
    assert nad.kappa(clipped, (1.0, 1.0, 1.0)) == pytest.approx(full, rel=0.1)
