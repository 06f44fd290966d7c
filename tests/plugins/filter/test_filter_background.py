"""filter.background: a linear illumination ramp is removed, small objects keep their contrast."""

from __future__ import annotations

import numpy as np
import pytest

import cellscape as cs

SHAPE = (12, 64, 64)
Z, Y, X = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]].astype(np.float32)
CENTRES = [(6, 16, 16), (6, 16, 48), (6, 48, 16), (6, 48, 48), (6, 32, 32)]


def distance_sq(centre: tuple[int, int, int]) -> np.ndarray:
    # voxels (4, 2, 2) nm: distances in units of 2 nm
    return ((Z - centre[0]) * 2) ** 2 + (Y - centre[1]) ** 2 + (X - centre[2]) ** 2


def objects() -> np.ndarray:
    return sum((distance_sq(c) <= 3.5**2).astype(np.float32) for c in CENTRES)


def ramp_with_objects(sign: float = 1.0) -> cs.Volume:
    data = 0.5 + 0.02 * X + sign * objects()
    return cs.Volume(data.astype(np.float32), (4.0, 2.0, 2.0), (0.0, 1.0, 2.0))


def ramp_slope(data: np.ndarray) -> float:
    background = objects() == 0
    return float(np.polyfit(X[background], data[background], 1)[0])


def contrasts(data: np.ndarray) -> np.ndarray:
    result = []
    for centre in CENTRES:
        d2 = distance_sq(centre)
        result.append(data[d2 <= 2**2].mean() - data[(d2 >= 6**2) & (d2 <= 9**2)].mean())
    return np.array(result)


@pytest.mark.parametrize(("method", "radius_nm"), [("gaussian", 40.0), ("rolling_ball", 16.0)])
def test_ramp_removed_and_contrast_kept(method: str, radius_nm: float) -> None:
    volume = ramp_with_objects()
    assert ramp_slope(volume.data) == pytest.approx(0.02, rel=1e-3)
    np.testing.assert_allclose(contrasts(volume.data), 1.0, rtol=1e-4)
    corrected = cs.method("filter.background", method=method, radius_nm=radius_nm)(volume)
    assert corrected.data.dtype == np.float32
    assert corrected.voxel_size_nm == volume.voxel_size_nm and corrected.origin_nm == volume.origin_nm
    assert abs(ramp_slope(corrected.data)) * 10 <= 0.02
    np.testing.assert_allclose(contrasts(corrected.data), 1.0, rtol=0.1)


def test_rolling_ball_from_above_for_dark_objects() -> None:
    volume = ramp_with_objects(sign=-1.0)
    corrected = cs.method("filter.background", method="rolling_ball", radius_nm=16.0, objects_dark=True)(volume)
    assert abs(ramp_slope(corrected.data)) * 10 <= 0.02
    np.testing.assert_allclose(contrasts(corrected.data), -1.0, rtol=0.1)


def test_keep_mean() -> None:
    volume = ramp_with_objects()
    kept = cs.method("filter.background", radius_nm=40.0)(volume).data
    assert kept.mean(dtype=np.float64) == pytest.approx(volume.data.mean(dtype=np.float64), abs=1e-4)
    centred = cs.method("filter.background", radius_nm=40.0, keep_mean=False)(volume).data
    assert abs(centred.mean(dtype=np.float64)) < 0.02  # the background's mean is close to the volume's
    offset = kept - centred  # the background's mean, the same everywhere
    assert float(offset.std()) < 1e-5
    assert float(offset.mean()) == pytest.approx(volume.data.mean(), abs=0.02)


def test_bad_params() -> None:
    with pytest.raises(cs.InputError, match="filter.background: parameter 'method': 'tophat' is not one of"):
        cs.method("filter.background", method="tophat")
    with pytest.raises(cs.InputError, match="parameter 'radius_nm': 0 is out of range: must be > 0"):
        cs.method("filter.background", radius_nm=0)
    with pytest.raises(cs.InputError, match="radius_nm=0.5 is smaller than a pixel"):
        cs.method("filter.background", method="rolling_ball", radius_nm=0.5)(ramp_with_objects())
