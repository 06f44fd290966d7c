"""segment.components: counts, sizes and numbering of connected components with known answers."""

from __future__ import annotations

import numpy as np
import pytest

import cellscape as cs
from cellscape_plugins.segment.components import Components


def cubes() -> tuple[np.ndarray, list[tuple[slice, ...]]]:
    """Five separate cubes of 1, 8, 27, 64 and 125 voxels, smallest first along x."""
    data = np.zeros((8, 8, 40), np.float32)
    places = []
    x = 1
    for edge in (1, 2, 3, 4, 5):
        place = (slice(1, 1 + edge), slice(1, 1 + edge), slice(x, x + edge))
        data[place] = 1.0
        places.append(place)
        x += edge + 2
    return data, places


def sizes(labels: cs.Labels) -> list[int]:
    return np.bincount(labels.data.ravel())[1:].tolist()


def test_components_are_numbered_largest_first() -> None:
    data, places = cubes()
    labels = Components()(cs.Volume(data, 2.0, origin_nm=(1.0, 2.0, 3.0)))
    assert sizes(labels) == [125, 64, 27, 8, 1]
    assert labels.data[places[4]].min() == 1 and labels.data[places[0]].max() == 5
    assert labels.data.dtype == np.uint16 and labels.class_names == {}
    assert labels.voxel_size_nm == (2.0, 2.0, 2.0) and labels.origin_nm == (1.0, 2.0, 3.0)


def test_size_filters_in_voxels_and_nm3() -> None:
    """Voxels of 2 nm: 8 nm³ each, so the cubes are 8, 64, 216, 512 and 1000 nm³."""
    volume = cs.Volume(cubes()[0], 2.0)
    assert sizes(Components(min_size_voxels=8)(volume)) == [125, 64, 27, 8]
    assert sizes(Components(max_size_voxels=64)(volume)) == [64, 27, 8, 1]
    assert sizes(Components(min_size_voxels=2, max_size_voxels=27)(volume)) == [27, 8]
    assert sizes(Components(min_volume_nm3=216)(volume)) == [125, 64, 27]  # a limit equal to a size keeps it
    assert sizes(Components(max_volume_nm3=512, min_size_voxels=27)(volume)) == [64, 27]
    assert sizes(Components(min_volume_nm3=2000)(volume)) == []


def test_connectivity() -> None:
    """Three voxels: b shares an edge with a, c only a corner with b."""
    data = np.zeros((5, 5, 5), np.float32)
    data[1, 1, 1] = data[1, 2, 2] = data[2, 3, 3] = 1.0  # a, b (edge neighbour of a), c (corner neighbour of b)
    volume = cs.Volume(data)
    assert sizes(Components(connectivity=1)(volume)) == [1, 1, 1]
    assert sizes(Components(connectivity=2)(volume)) == [2, 1]
    assert sizes(Components(connectivity=3)(volume)) == [3]


def test_threshold_sets_the_foreground() -> None:
    data, places = cubes()
    data[places[4]] = 0.3  # the largest cube is faint
    assert sizes(Components(threshold=0.5)(cs.Volume(data))) == [64, 27, 8, 1]


def test_labels_input_keeps_touching_classes_apart() -> None:
    data = np.zeros((4, 4, 10), np.uint8)
    data[:, :, 1:4] = 1
    data[:, :, 4:9] = 2  # touches class 1
    labels = cs.Labels(data, {1: "a", 2: "b"}, (3.0, 1.0, 1.0))
    result = Components()(labels=labels)
    assert sizes(result) == [80, 48]
    assert result.voxel_size_nm == (3.0, 1.0, 1.0)
    np.testing.assert_array_equal(result.data == 1, data == 2)
    assert sizes(Components()(cs.Volume(data))) == [128]  # as a foreground they are one object
    assert sizes(Components().run(labels=labels)["labels"]) == [80, 48]  # the runner's call


def test_bad_input() -> None:
    volume = cs.Volume(cubes()[0])
    with pytest.raises(cs.InputError, match="exactly one input, 'volume' or 'labels'; got neither"):
        Components()()
    with pytest.raises(cs.InputError, match="got both"):
        Components()(volume, labels=cs.Labels(np.ones(volume.shape, np.uint8)))
    with pytest.raises(cs.InputError, match=r"max_size_voxels \(5\) is below min_size_voxels \(10\)"):
        Components(min_size_voxels=10, max_size_voxels=5)(volume)
    with pytest.raises(cs.InputError, match=r"max_volume_nm3 \(5\) is below min_volume_nm3 \(10\)"):
        Components(min_volume_nm3=10, max_volume_nm3=5)(volume)
    with pytest.raises(cs.InputError, match="'connectivity': 4 is not one of"):
        Components(connectivity=4)
    with pytest.raises(cs.InputError, match="input 'labels' must be a Labels, got Volume"):
        Components()(labels=volume)
