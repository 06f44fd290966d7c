"""segment.threshold on phantoms with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import cellscape as cs


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


def noisy_ball(n: int = 40, radius: float = 12.0, noise: float = 0.3, seed: int = 0, dark: bool = False):
    z, y, x = np.mgrid[:n, :n, :n] - (n - 1) / 2
    truth = x**2 + y**2 + z**2 <= radius**2
    rng = np.random.default_rng(seed)
    data = np.where(truth, 0.0 if dark else 1.0, 1.0 if dark else 0.0) + rng.normal(0, noise, truth.shape)
    return cs.Volume(data.astype(np.float32), 4.0), truth


@pytest.mark.parametrize("method", ["otsu", "li"])
def test_noisy_ball_dice(method: str) -> None:
    volume, truth = noisy_ball()
    labels = cs.method("segment.threshold", method=method, sigma_voxels=1.0)(volume)
    assert labels.class_names == {1: "foreground"}
    assert labels.voxel_size_nm == (4.0, 4.0, 4.0)
    assert dice(labels.data == 1, truth) >= 0.95


@pytest.mark.parametrize("method", ["mean", "yen", "triangle"])
def test_other_rules_threshold_where_their_definition_says(method: str) -> None:
    from skimage import filters

    volume, _ = noisy_ball(noise=0.1)
    labels = cs.method("segment.threshold", method=method, sigma_voxels=0, fill_holes=False)(volume)
    level = {"mean": filters.threshold_mean, "yen": filters.threshold_yen,
             "triangle": filters.threshold_triangle}[method](volume.data)
    np.testing.assert_array_equal(labels.data, (volume.data > level).astype(np.uint8))


def test_invert_segments_dark_objects() -> None:
    volume, truth = noisy_ball(dark=True)
    labels = cs.method("segment.threshold", invert=True, class_name="vesicle")(volume)
    assert dice(labels.data == 1, truth) >= 0.95
    assert labels.class_names == {1: "vesicle"}


def test_min_size_and_keep_largest() -> None:
    data = np.zeros((30, 30, 30), np.float32)
    data[5:15, 5:15, 5:15] = 1.0
    data[20:23, 20:23, 20:23] = 1.0  # 27 voxels
    data[25, 2, 2] = 1.0  # 1 voxel
    volume = cs.Volume(data)
    count = lambda labels: ndimage.label(labels.data)[1]
    assert count(cs.method("segment.threshold", sigma_voxels=0)(volume)) == 3
    assert count(cs.method("segment.threshold", sigma_voxels=0, min_size_voxels=10)(volume)) == 2
    largest = cs.method("segment.threshold", sigma_voxels=0, keep_largest=True)(volume)
    assert count(largest) == 1 and largest.data.sum() == 1000


def test_holes_are_filled() -> None:
    data = np.zeros((20, 20, 20), np.float32)
    data[4:16, 4:16, 4:16] = 1.0
    data[8:12, 8:12, 8:12] = 0.0
    volume = cs.Volume(data)
    assert cs.method("segment.threshold", sigma_voxels=0)(volume).data.sum() == 12**3
    assert cs.method("segment.threshold", sigma_voxels=0, fill_holes=False)(volume).data.sum() == 12**3 - 4**3


def test_anisotropic_smoothing_is_scaled_by_voxel_size() -> None:
    from cellscape_plugins.segment.threshold import physical_sigma

    assert physical_sigma(2.0, (50.0, 5.0, 5.0)) == pytest.approx((0.2, 2.0, 2.0))
    data = np.zeros((9, 40, 40), np.float32)
    data[4, 10:30, 10:30] = 1.0  # one thin section: survives only if z is barely smoothed
    labels = cs.method("segment.threshold", method="value", value=0.5, sigma_voxels=1.0)(cs.Volume(data, (50.0, 5.0, 5.0)))
    assert labels.data[4].sum() > 300


def test_mask_restricts_and_sets_the_threshold() -> None:
    z, y, x = np.mgrid[:40, :40, :40] - 19.5
    cell = x**2 + y**2 + z**2 <= 18**2
    organelle = (x - 6) ** 2 + y**2 + z**2 <= 5**2
    data = np.where(organelle, 0.6, np.where(cell, 0.3, 0.0)).astype(np.float32)
    data[cell & ~ndimage.binary_erosion(cell, iterations=2)] = 1.0  # a bright membrane
    volume = cs.Volume(data)
    whole = cs.method("segment.threshold", sigma_voxels=0)(volume)
    assert whole.data.sum() == cell.sum()  # without a mask Otsu finds the cell
    inside = cs.method("segment.threshold", sigma_voxels=0, mask_erosion_voxels=3)(volume, mask=cs.Labels(cell.astype(np.uint8)))
    assert dice(inside.data == 1, organelle) == 1.0
    with pytest.raises(cs.InputError, match=r"mask is empty \(after erosion\)"):
        cs.method("segment.threshold", mask_erosion_voxels=30)(volume, mask=cs.Labels(cell.astype(np.uint8)))
    with pytest.raises(cs.InputError, match="input 'mask' has shape"):
        cs.method("segment.threshold")(volume, mask=cs.Labels(np.ones((2, 2, 2), np.uint8)))


def test_bad_input() -> None:
    with pytest.raises(cs.InputError, match="volume is constant"):
        cs.method("segment.threshold")(cs.Volume(np.ones((8, 8, 8))))
    with pytest.raises(cs.InputError, match="method 'value' needs the parameter 'value'"):
        cs.method("segment.threshold", method="value")(noisy_ball(n=12, radius=3)[0])
    with pytest.raises(cs.InputError, match="'kmeans' is not one of"):
        cs.method("segment.threshold", method="kmeans")
    with pytest.raises(cs.InputError, match="sigma_voxels': -1 is out of range"):
        cs.method("segment.threshold", sigma_voxels=-1)
