"""segment.threshold's local and hysteresis rules and its opening, on phantoms with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import cellscape as cs


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


def rods_on_a_ramp(noise: float = 0.1, seed: int = 0):
    """4 × 4 short rods (radius 4 voxels, 9 sections) 0.6 brighter than a background ramping 0 → 3 along x.

    The ramp is five times the objects' contrast, so no single level separates them.
    """
    n = 64
    z, y, x = np.mgrid[:16, :n, :n]
    truth = np.zeros(z.shape, bool)
    for cy in range(8, n, 16):
        for cx in range(8, n, 16):
            truth |= ((y - cy) ** 2 + (x - cx) ** 2 <= 16) & (abs(z - 7.5) <= 4)
    data = 3.0 * x / n + 0.6 * truth + np.random.default_rng(seed).normal(0, noise, truth.shape)
    return cs.Volume(data.astype(np.float32), 2.0), truth


def test_local_threshold_follows_an_illumination_gradient_where_otsu_fails() -> None:
    volume, truth = rods_on_a_ramp()
    otsu = cs.method("segment.threshold", method="otsu", sigma_voxels=0.5)(volume)
    assert dice(otsu.data == 1, truth) < 0.4
    local = cs.method("segment.threshold", method="local", block_size_voxels=21, local_offset=0.2, sigma_voxels=0.5)(volume)
    assert dice(local.data == 1, truth) > 0.99
    dark = cs.Volume(-volume.data, 2.0)
    inverted = cs.method("segment.threshold", method="local", block_size_voxels=21, local_offset=0.2, sigma_voxels=0.5,
                         invert=True)(dark)
    np.testing.assert_array_equal(inverted.data, local.data)


def test_local_per_slice_thresholds_each_section_on_its_own() -> None:
    """With local_per_slice the result is exactly skimage's 2D threshold_local applied to each z-section."""
    from skimage import filters

    volume, truth = rods_on_a_ramp()
    labels = cs.method("segment.threshold", method="local", local_per_slice=True, block_size_voxels=21,
                       local_offset=0.2, sigma_voxels=0, fill_holes=False)(volume)
    expected = np.stack([s > filters.threshold_local(s, 21, offset=-0.2) for s in volume.data])
    np.testing.assert_array_equal(labels.data, expected.astype(np.uint8))
    smoothed = cs.method("segment.threshold", method="local", local_per_slice=True, block_size_voxels=21,
                         local_offset=0.2, sigma_voxels=0.5)(volume)
    assert dice(smoothed.data == 1, truth) > 0.97


def faint_and_bright():
    """Background 0; a bright cube (1.0) with a faint (0.5) cube touching it; an isolated faint cube elsewhere."""
    data = np.zeros((20, 20, 40), np.float32)
    data[5:15, 5:15, 2:10] = 1.0  # bright
    data[5:15, 5:15, 10:18] = 0.5  # faint, touching the bright one
    data[5:15, 5:15, 28:36] = 0.5  # faint, alone
    data += np.random.default_rng(1).normal(0, 0.03, data.shape).astype(np.float32)
    kept = np.zeros(data.shape, bool)
    kept[5:15, 5:15, 2:18] = True
    return cs.Volume(data), kept


def test_hysteresis_keeps_faint_parts_connected_to_bright_ones() -> None:
    volume, kept = faint_and_bright()
    derived = cs.method("segment.threshold", method="hysteresis", sigma_voxels=0)(volume)
    np.testing.assert_array_equal(derived.data == 1, kept)  # levels from a 3-class Otsu: ~0.25 and ~0.75
    given = cs.method("segment.threshold", method="hysteresis", low=0.25, high=0.75, sigma_voxels=0)(volume)
    np.testing.assert_array_equal(given.data == 1, kept)
    single = cs.method("segment.threshold", method="value", value=0.25, sigma_voxels=0)(volume)
    assert ndimage.label(single.data)[1] == 2  # one level keeps the isolated faint cube too
    dark = cs.Volume(-volume.data)
    inverted = cs.method("segment.threshold", method="hysteresis", low=-0.75, high=-0.25, invert=True,
                         sigma_voxels=0)(dark)
    np.testing.assert_array_equal(inverted.data == 1, kept)
    inverted_derived = cs.method("segment.threshold", method="hysteresis", invert=True, sigma_voxels=0)(dark)
    np.testing.assert_array_equal(inverted_derived.data == 1, kept)


def test_hysteresis_does_not_grow_outside_the_mask() -> None:
    volume, _ = faint_and_bright()
    mask = np.ones(volume.shape, np.uint8)
    mask[:, :, 10:18] = 0  # cut the faint cube off
    labels = cs.method("segment.threshold", method="hysteresis", low=0.25, high=0.75, sigma_voxels=0)(
        volume, mask=cs.Labels(mask))
    assert labels.data.sum() == 10 * 10 * 8  # the bright cube only


def test_opening_removes_specks_and_thin_spurs() -> None:
    data = np.zeros((30, 30, 30), np.float32)
    z, y, x = np.mgrid[:30, :30, :30] - 14
    ball = x**2 + y**2 + z**2 <= 8**2
    data[ball] = 1.0
    data[14, 14, 22:29] = 1.0  # a one-voxel-thin spur sticking out of the ball
    data[2, 2, 2] = data[27, 3, 25] = 1.0  # specks
    volume = cs.Volume(data)
    plain = cs.method("segment.threshold", method="value", value=0.5, sigma_voxels=0)(volume)
    assert plain.data.sum() == ball.sum() + 6 + 2  # default: unchanged (the spur's first voxel is in the ball)
    opened = cs.method("segment.threshold", method="value", value=0.5, sigma_voxels=0, opening_radius_voxels=1)(volume)
    assert ndimage.label(opened.data)[1] == 1
    assert opened.data[14, 14, 23:29].sum() == 0 and opened.data[2, 2, 2] == 0
    assert dice(opened.data == 1, ball) > 0.97


def test_opening_keeps_objects_cut_by_the_volume_edge() -> None:
    data = np.zeros((10, 10, 10), np.float32)
    data[:, :, :3] = 1.0  # a slab against the x = 0 face
    labels = cs.method("segment.threshold", method="value", value=0.5, sigma_voxels=0, opening_radius_voxels=1)(
        cs.Volume(data))
    np.testing.assert_array_equal(labels.data, data.astype(np.uint8))


def test_bad_input() -> None:
    volume, _ = faint_and_bright()
    with pytest.raises(cs.InputError, match="block_size_voxels must be odd, got 20; use 21"):
        cs.method("segment.threshold", method="local", block_size_voxels=20)(volume)
    with pytest.raises(cs.InputError, match="block_size_voxels': 1 is out of range"):
        cs.method("segment.threshold", method="local", block_size_voxels=1)
    with pytest.raises(cs.InputError, match="needs both 'low' and 'high', or neither"):
        cs.method("segment.threshold", method="hysteresis", low=0.2)(volume)
    with pytest.raises(cs.InputError, match="hysteresis needs low < high, got low=0.8, high=0.3"):
        cs.method("segment.threshold", method="hysteresis", low=0.8, high=0.3)(volume)
    two_levels = np.zeros((8, 8, 8), np.float32)
    two_levels[2:5] = 1.0
    with pytest.raises(cs.InputError, match="fewer than three distinct intensity levels"):
        cs.method("segment.threshold", method="hysteresis", sigma_voxels=0)(cs.Volume(two_levels))
    with pytest.raises(cs.InputError, match="volume is constant"):
        cs.method("segment.threshold", method="hysteresis")(cs.Volume(np.ones((8, 8, 8))))
    with pytest.raises(cs.InputError, match="opening_radius_voxels': -1 is out of range"):
        cs.method("segment.threshold", opening_radius_voxels=-1)
