"""filter.normalize: z-score, robust z-score, min-max and percentile rescaling."""

from __future__ import annotations

import numpy as np
import pytest

import cellscape as cs


def gaussian_volume(seed: int = 0) -> cs.Volume:
    data = np.random.default_rng(seed).normal(7.0, 3.0, (20, 20, 20)).astype(np.float32)
    return cs.Volume(data, (2.0, 1.0, 1.0), (1.0, 1.0, 1.0))


def test_zscore() -> None:
    volume = gaussian_volume()
    normalized = cs.method("filter.normalize")(volume)
    assert normalized.data.dtype == np.float32
    assert normalized.voxel_size_nm == (2.0, 1.0, 1.0) and normalized.origin_nm == (1.0, 1.0, 1.0)
    assert normalized.data.mean(dtype=np.float64) == pytest.approx(0.0, abs=1e-5)
    assert normalized.data.std(dtype=np.float64) == pytest.approx(1.0, abs=1e-5)


def test_mad_ignores_outliers() -> None:
    data = np.array(gaussian_volume().data)
    data[:2] = 1e4  # 10% of voxels saturated (e.g. a gold fiducial)
    normalized = cs.method("filter.normalize", method="mad")(cs.Volume(data)).data
    rest = normalized[2:]
    assert np.median(rest) == pytest.approx(-0.13, abs=0.1)  # the outliers shift the median by ~0.13 std only
    assert rest.std() == pytest.approx(1.0, abs=0.15)
    zscored_rest = cs.method("filter.normalize")(cs.Volume(data)).data[2:]
    assert zscored_rest.std() < 0.01  # the plain z-score is ruined by them


def test_minmax() -> None:
    normalized = cs.method("filter.normalize", method="minmax")(gaussian_volume()).data
    assert normalized.min() == 0.0 and normalized.max() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("clip", [False, True])
def test_percentile(clip: bool) -> None:
    volume = gaussian_volume()
    normalized = cs.method("filter.normalize", method="percentile", low_percentile=2, high_percentile=98,
                           clip=clip)(volume).data
    assert np.percentile(normalized, 2) == pytest.approx(0.0, abs=1e-4)
    assert np.percentile(normalized, 98) == pytest.approx(1.0, abs=1e-4)
    if clip:
        assert normalized.min() == 0.0 and normalized.max() == 1.0
    else:
        assert normalized.min() < -0.05 and normalized.max() > 1.05


def test_constant_input_and_bad_params() -> None:
    constant = cs.Volume(np.full((5, 5, 5), 3.0, np.float32))
    for method in ("zscore", "mad", "minmax", "percentile"):
        with pytest.raises(cs.InputError, match=r"filter.normalize: the volume is constant \(3\)"):
            cs.method("filter.normalize", method=method)(constant)
    mostly_zero = np.zeros((5, 5, 5), np.float32)
    mostly_zero[0] = 1.0
    with pytest.raises(cs.InputError, match="method 'mad' divides by the volume's median absolute deviation"):
        cs.method("filter.normalize", method="mad")(cs.Volume(mostly_zero))
    with pytest.raises(cs.InputError, match="low_percentile must be below high_percentile"):
        cs.method("filter.normalize", method="percentile", low_percentile=90, high_percentile=10)(gaussian_volume())
    with pytest.raises(cs.InputError, match="parameter 'high_percentile': 101 is out of range: must be <= 100"):
        cs.method("filter.normalize", high_percentile=101)
    with pytest.raises(cs.InputError, match="'robust' is not one of 'zscore', 'mad', 'minmax', 'percentile'"):
        cs.method("filter.normalize", method="robust")


def test_every_filter_is_registered() -> None:
    volume = gaussian_volume()
    for name in ("filter.gaussian", "filter.median", "filter.nad", "filter.background", "filter.normalize"):
        method = cs.method(name)
        assert isinstance(method, cs.Filter) and method.stage == "filter"
        out = method(volume)
        assert isinstance(out, cs.Volume) and out.shape == volume.shape and out.data.dtype == np.float32
