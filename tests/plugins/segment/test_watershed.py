"""segment.watershed splits touching objects into instances, on phantoms with known answers."""

from __future__ import annotations

import numpy as np
import pytest

import cellscape as cs

N = 48


def grid() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    z, y, x = np.mgrid[:N, :N, :N] - (N - 1) / 2
    return z, y, x


def two_touching_balls(noise: float = 0.2, dark: bool = False):
    """Two balls of radius 10 voxels, centres 17 apart (they overlap in a neck); noisy image, exact mask."""
    z, y, x = grid()
    a = (x + 8.5) ** 2 + y**2 + z**2 <= 10**2
    b = (x - 8.5) ** 2 + y**2 + z**2 <= 10**2
    data = (a | b).astype(np.float32) + np.random.default_rng(0).normal(0, noise, a.shape).astype(np.float32)
    return cs.Volume(-data if dark else data, 5.0), cs.Labels((a | b).astype(np.uint8)), a & ~b, b & ~a


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


def best_dice(instances: cs.Labels, truths: tuple[np.ndarray, ...]) -> list[float]:
    return [max(dice(instances.data == k, t) for k in instances.label_values()) for t in truths]


def test_distance_watershed_splits_two_balls() -> None:
    volume, mask, a, b = two_touching_balls()
    instances = cs.method("segment.watershed", min_distance_voxels=6)(volume, mask=mask)
    assert instances.label_values() == [1, 2]
    assert instances.class_names == {} and instances.voxel_size_nm == (5.0, 5.0, 5.0)
    assert min(best_dice(instances, (a, b))) >= 0.9


@pytest.mark.parametrize("dark", [False, True])
def test_without_mask_uses_otsu_foreground(dark: bool) -> None:
    volume, _, a, b = two_touching_balls(dark=dark)
    instances = cs.method("segment.watershed", min_distance_voxels=6, invert=dark)(volume)
    assert instances.label_values() == [1, 2]
    assert min(best_dice(instances, (a, b))) >= 0.9


def test_intensity_mode_splits_blobs_at_the_dark_valley() -> None:
    z, y, x = grid()
    image = np.exp(-((x + 8) ** 2 + y**2 + z**2) / 72) + np.exp(-((x - 8) ** 2 + y**2 + z**2) / 72)
    image += np.random.default_rng(1).normal(0, 0.05, image.shape)
    instances = cs.method("segment.watershed", mode="intensity")(cs.Volume(image.astype(np.float32)))
    assert instances.label_values() == [1, 2]
    for k in (1, 2):  # each instance is one blob: its x-centroid sits at -8 or +8
        assert abs(abs(float(x[instances.data == k].mean())) - 8) < 1.0
    left = instances.data[int(N / 2), int(N / 2), int(N / 2 - 8)]
    assert np.all(instances.data[(instances.data > 0) & (x < -2)] == left)


def test_gradient_mode_splits_regions_of_different_brightness() -> None:
    a = np.zeros((N, N, N), bool)
    b = np.zeros((N, N, N), bool)
    a[10:38, 10:38, 6:24] = True
    b[10:38, 10:38, 24:42] = True
    image = a * 1.0 + b * 2.0 + np.random.default_rng(2).normal(0, 0.15, a.shape)
    mask = cs.Labels((a | b).astype(np.uint8))
    instances = cs.method("segment.watershed", mode="gradient")(cs.Volume(image.astype(np.float32)), mask=mask)
    assert instances.label_values() == [1, 2]
    assert min(best_dice(instances, (a, b))) >= 0.98


def test_markers_fix_the_instance_count() -> None:
    volume, mask, a, b = two_touching_balls()
    markers = np.zeros(volume.shape, np.uint8)
    markers[24, 24, 10] = 1
    markers[24, 24, 24] = 2
    markers[24, 24, 38] = 3
    for mode in ("distance", "intensity", "gradient"):
        instances = cs.method("segment.watershed", mode=mode)(volume, mask=mask, markers=cs.Labels(markers))
        assert instances.label_values() == [1, 2, 3]
    # a binary marker image: one seed per connected component, placed in the ball centres
    binary = np.zeros(volume.shape, np.uint8)
    binary[22:26, 22:26, 13:17] = 1
    binary[22:26, 22:26, 30:34] = 1
    instances = cs.method("segment.watershed")(volume, mask=mask, markers=cs.Labels(binary))
    assert instances.label_values() == [1, 2]
    assert min(best_dice(instances, (a, b))) >= 0.9


def test_min_size_drops_small_instances_and_renumbers() -> None:
    volume, mask, _a, _b = two_touching_balls()
    data = mask.data.copy()
    data[2:4, 2:4, 2:4] = 1  # an 8-voxel speck, its own instance
    with_speck = cs.method("segment.watershed", min_distance_voxels=6)(volume, mask=cs.Labels(data))
    assert with_speck.label_values() == [1, 2, 3]
    instances = cs.method("segment.watershed", min_distance_voxels=6, min_size_voxels=50)(volume, mask=cs.Labels(data))
    assert instances.label_values() == [1, 2]
    assert instances.data[2:4, 2:4, 2:4].max() == 0


def test_bad_input() -> None:
    volume, mask, _, _ = two_touching_balls()
    small = cs.Labels(np.ones((4, 4, 4), np.uint8))
    with pytest.raises(cs.InputError, match=r"input 'mask' has shape \(4, 4, 4\)"):
        cs.method("segment.watershed")(volume, mask=small)
    with pytest.raises(cs.InputError, match=r"input 'markers' has shape \(4, 4, 4\)"):
        cs.method("segment.watershed")(volume, mask=mask, markers=small)
    with pytest.raises(cs.InputError, match="the mask is empty"):
        cs.method("segment.watershed")(volume, mask=cs.Labels(np.zeros(volume.shape, np.uint8)))
    with pytest.raises(cs.InputError, match="volume is constant and no mask"):
        cs.method("segment.watershed")(cs.Volume(np.zeros((8, 8, 8))))
    with pytest.raises(cs.InputError, match="'watershed' is not one of"):
        cs.method("segment.watershed", mode="watershed")
    with pytest.raises(cs.InputError, match="compactness': -1 is out of range"):
        cs.method("segment.watershed", compactness=-1)
