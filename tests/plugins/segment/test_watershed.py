"""segment.watershed splits touching objects."""

from __future__ import annotations

import numpy as np
import pytest

import cellscape as cs


def two_touching_balls(n: int = 48, radius: float = 10.0):
    z, y, x = np.mgrid[:n, :n, :n] - (n - 1) / 2
    a = (x + 8.5) ** 2 + y**2 + z**2 <= radius**2
    b = (x - 8.5) ** 2 + y**2 + z**2 <= radius**2
    data = (a | b).astype(np.float32)
    return cs.Volume(data, 5.0), cs.Labels((a | b).astype(np.uint8)), a, b


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_distance_watershed_splits_two_balls() -> None:
    volume, mask, a, b = two_touching_balls()
    instances = cs.method("segment.watershed", min_distance_voxels=6)(volume, mask=mask)
    assert sorted(np.unique(instances.data)) == [0, 1, 2]
    for truth in (a, b):
        best = max(dice(instances.data == k, truth) for k in (1, 2))
        assert best >= 0.9


def test_without_mask_uses_otsu_foreground() -> None:
    volume, _, _a, _b = two_touching_balls()
    instances = cs.method("segment.watershed", min_distance_voxels=6)(volume)
    assert instances.data.max() == 2


def test_markers_fix_the_instance_count() -> None:
    volume, mask, _a, _b = two_touching_balls()
    markers = np.zeros(volume.shape, np.uint8)
    markers[24, 24, 10] = 1
    markers[24, 24, 24] = 2
    markers[24, 24, 38] = 3
    instances = cs.method("segment.watershed", mode="intensity")(volume, mask=mask, markers=cs.Labels(markers))
    assert instances.data.max() == 3


def test_min_size_drops_small_instances_and_renumbers() -> None:
    volume, mask, _a, _b = two_touching_balls()
    data = mask.data.copy()
    data[2:4, 2:4, 2:4] = 1
    instances = cs.method("segment.watershed", min_distance_voxels=6, min_size_voxels=50)(volume, mask=cs.Labels(data))
    assert sorted(np.unique(instances.data)) == [0, 1, 2]


def test_bad_input() -> None:
    volume, _mask, _, _ = two_touching_balls()
    with pytest.raises(cs.InputError, match="input 'mask' has shape \\(4, 4, 4\\)"):
        cs.method("segment.watershed")(volume, mask=cs.Labels(np.ones((4, 4, 4), np.uint8)))
    with pytest.raises(cs.InputError, match="the mask is empty"):
        cs.method("segment.watershed")(volume, mask=cs.Labels(np.zeros(volume.shape, np.uint8)))
    with pytest.raises(cs.InputError, match="volume is constant"):
        cs.method("segment.watershed")(cs.Volume(np.zeros((8, 8, 8))))
