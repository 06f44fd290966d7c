"""generate.scribbles: sparse labels that agree with the truth, balanced per class, strokes that are strokes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import cellscape as cs


@pytest.fixture(scope="module")
def truth() -> cs.Labels:
    return cs.method("generate.phantom_cell", shape=48, seed=2)()["labels"]


@pytest.mark.parametrize("mode", ["strokes", "points"])
def test_scribbles_agree_with_truth_and_balance_classes(truth: cs.Labels, mode: str) -> None:
    sparse = cs.method("generate.scribbles", fraction=0.01, mode=mode, background_value=9)(truth)
    labeled = sparse.data > 0
    dense = np.where(truth.data == 0, 9, truth.data)
    np.testing.assert_array_equal(sparse.data[labeled], dense[labeled])
    classes = [int(v) for v in np.unique(dense)]
    counts = np.array([(sparse.data == v).sum() for v in classes])
    budget = round(0.01 * truth.data.size / len(classes))
    assert counts.min() >= min(budget, min((dense == v).sum() for v in classes)) - 1
    assert counts.max() <= budget
    assert sparse.class_names[9] == "background"


def test_strokes_are_connected_runs_and_points_are_not(truth: cs.Labels) -> None:
    def mean_run(sparse: cs.Labels) -> float:
        in_plane = np.zeros((3, 3, 3), bool)
        in_plane[1] = True  # strokes run within a Y-X slice
        _, n = ndimage.label(sparse.data > 0, structure=in_plane)
        return (sparse.data > 0).sum() / n

    strokes = cs.method("generate.scribbles", fraction=0.01, stroke_voxels=20)(truth)
    points = cs.method("generate.scribbles", fraction=0.01, mode="points")(truth)
    assert mean_run(strokes) > 4 * mean_run(points)


def test_seeded(truth: cs.Labels) -> None:
    a = cs.method("generate.scribbles", seed=3)(truth).data
    b = cs.method("generate.scribbles", seed=3)(truth).data
    c = cs.method("generate.scribbles", seed=4)(truth).data
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_bad_input(truth: cs.Labels) -> None:
    with pytest.raises(cs.InputError, match="'background_value': 1 is already a class"):
        cs.method("generate.scribbles", background_value=1)(truth)
    with pytest.raises(cs.InputError, match="hold no class"):
        cs.method("generate.scribbles")(cs.Labels(np.zeros((4, 4, 4), np.uint16)))
