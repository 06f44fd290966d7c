"""filter.median: removes salt-and-pepper noise, keeps a step edge exactly."""

from __future__ import annotations

import numpy as np
import pytest

import cellscape as cs


def step(shape: tuple[int, int, int] = (16, 20, 24)) -> np.ndarray:
    data = np.zeros(shape, np.float32)
    data[..., shape[2] // 2:] = 1.0
    return data


def test_step_edge_is_preserved_exactly() -> None:
    clean = step()
    filtered = cs.method("filter.median")(cs.Volume(clean, (3.0, 1.0, 1.0), (1.0, 2.0, 3.0)))
    np.testing.assert_array_equal(filtered.data, clean)
    assert filtered.data.dtype == np.float32
    assert filtered.voxel_size_nm == (3.0, 1.0, 1.0) and filtered.origin_nm == (1.0, 2.0, 3.0)


@pytest.mark.parametrize("size", [3, 5])
def test_salt_and_pepper_is_removed(size: int) -> None:
    rng = np.random.default_rng(0)
    clean = step()
    noisy = clean.copy()
    hit = rng.random(clean.shape) < 0.05
    noisy[hit] = rng.choice([-4.0, 5.0], size=int(hit.sum()))
    before = np.abs(noisy - clean).mean()
    after = np.abs(cs.method("filter.median", size_voxels=size)(cs.Volume(noisy)).data - clean).mean()
    assert after * 5 <= before


def test_bad_params() -> None:
    with pytest.raises(cs.InputError, match="filter.median: size_voxels must be odd .* got 4; use 3 or 5"):
        cs.method("filter.median", size_voxels=4)(cs.Volume(step()))
    with pytest.raises(cs.InputError, match="parameter 'size_voxels': 1 is out of range: must be >= 3"):
        cs.method("filter.median", size_voxels=1)
    with pytest.raises(cs.InputError, match="parameter 'size_voxels': expected an integer"):
        cs.method("filter.median", size_voxels=3.5)
