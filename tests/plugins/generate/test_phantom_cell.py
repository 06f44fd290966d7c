"""generate.phantom_cell: deterministic, nested compartments, EM-like density."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import cellscape as cs


@pytest.fixture(scope="module")
def phantom() -> dict[str, cs.Artefact]:
    return cs.method("generate.phantom_cell", shape=48, voxel_size_nm=15.0, n_mitochondria=3, seed=5)()


def test_same_seed_same_cell_other_seed_other_cell(phantom) -> None:
    again = cs.method("generate.phantom_cell", shape=48, voxel_size_nm=15.0, n_mitochondria=3, seed=5)()
    other = cs.method("generate.phantom_cell", shape=48, voxel_size_nm=15.0, n_mitochondria=3, seed=6)()
    assert cs.content_hash(again["labels"]) == cs.content_hash(phantom["labels"])
    assert cs.content_hash(again["density"]) == cs.content_hash(phantom["density"])
    assert cs.content_hash(other["labels"]) != cs.content_hash(phantom["labels"])


def test_compartments_nest_and_do_not_touch(phantom) -> None:
    labels = phantom["labels"]
    data = labels.data
    assert labels.class_names == {1: "cytosol", 2: "nucleus", 3: "mitochondrion"}
    assert labels.voxel_size_nm == (15.0, 15.0, 15.0)
    mito_components = ndimage.label(data == 3)[1]
    assert mito_components == 3
    # mitochondria never touch the nucleus or the outside: a 1-voxel dilation stays in the cytosol
    grown = ndimage.binary_dilation(data == 3, iterations=1)
    assert set(np.unique(data[grown])) <= {1, 3}
    # the cell does not touch the grid border (it meshes as a closed surface)
    border = np.concatenate([data[[0, -1]].ravel(), data[:, [0, -1]].ravel(), data[:, :, [0, -1]].ravel()])
    assert (border == 0).all()
    assert (data == 2).sum() > 500 and (data == 1).sum() > (data == 2).sum()


def test_density_levels(phantom) -> None:
    density, labels = phantom["density"].data, phantom["labels"].data
    assert density[labels == 0].max() == 0.0
    deep_nucleus = ndimage.binary_erosion(labels == 2, iterations=3)
    assert np.allclose(density[deep_nucleus], 0.5)
    assert (density == 1.0).sum() > 0.1 * (labels > 0).sum() * 0.2  # membranes exist


def test_too_many_mitochondria_is_a_clear_error() -> None:
    with pytest.raises(cs.InputError, match="could only place .* of 50 mitochondria"):
        cs.method("generate.phantom_cell", shape=24, n_mitochondria=50)()
    with pytest.raises(cs.InputError, match="too small"):
        cs.method("generate.phantom_cell", shape=16)()
