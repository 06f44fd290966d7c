"""reconstruct.wbp: geometry, density scale, uneven angles, filters."""

from __future__ import annotations

import numpy as np
import pytest

import cellscape as cs
from cellscape_plugins.reconstruct.wbp import angle_weights

N = 48


def ball(radius: float, centre=(0.0, 0.0, 0.0), density: float = 1.0) -> cs.Volume:
    z, y, x = np.mgrid[:N, :N, :N] - (N - 1) / 2
    cz, cy, cx = centre
    inside = (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= radius**2
    return cs.Volume((density * inside).astype(np.float32), 2.5)


def full_range(volume: cs.Volume, step: float = 1.0, **params) -> cs.Volume:
    tilts = cs.method("generate.tilt_series", min_angle_deg=-90, max_angle_deg=90, step_deg=step)(volume)
    return cs.method("reconstruct.wbp", **params)(tilts)


def test_uniform_ball_reconstructs_to_its_density_at_its_position() -> None:
    truth = ball(10.0, centre=(-6.0, 3.0, 7.0), density=2.0)
    rec = full_range(truth)
    assert rec.voxel_size_nm == (2.5, 2.5, 2.5)
    z, y, x = np.mgrid[:N, :N, :N] - (N - 1) / 2
    r2 = (x - 7.0) ** 2 + (y - 3.0) ** 2 + (z + 6.0) ** 2
    assert rec.data[r2 <= 6**2].mean() == pytest.approx(2.0, rel=0.02)
    assert abs(rec.data[(r2 >= 14**2) & (x**2 + z**2 < 20**2)].mean()) < 0.02
    weights = np.clip(rec.data, 0, None) * (rec.data > 1.0)
    centroid = [float((weights * g).sum() / weights.sum()) for g in (z, y, x)]
    np.testing.assert_allclose(centroid, [-6.0, 3.0, 7.0], atol=0.1)
    radius = (3 * (rec.data > 1.0).sum() / (4 * np.pi)) ** (1 / 3)
    assert radius == pytest.approx(10.0, abs=0.5)


def test_point_reappears_at_its_voxel() -> None:
    data = np.zeros((N, N, N), np.float32)
    data[30, 20, 12] = 1.0
    rec = full_range(cs.Volume(data, 1.0))
    assert np.unravel_index(np.argmax(rec.data), rec.shape) == (30, 20, 12)


def test_phantom_cell_correlates_with_ground_truth() -> None:
    phantom = cs.method("generate.phantom_cell", shape=N, voxel_size_nm=10.0, seed=2)()["density"]
    rec = full_range(phantom, step=1.0, filter="shepp-logan")
    assert np.corrcoef(rec.data.ravel(), phantom.data.ravel())[0, 1] > 0.9


def test_unevenly_spaced_angles_are_weighted_exactly() -> None:
    rng = np.random.default_rng(0)
    angles = np.sort(np.concatenate([[-90.0, 90.0], rng.uniform(-89, 89, 200)]))
    weights = angle_weights(angles)
    assert weights.sum() == pytest.approx(np.pi)
    truth = ball(10.0)
    tilts = cs.method("generate.tilt_series", angles_deg=list(angles))(truth)
    rec = cs.method("reconstruct.wbp")(tilts)
    z, y, x = np.mgrid[:N, :N, :N] - (N - 1) / 2
    assert rec.data[x**2 + y**2 + z**2 <= 36].mean() == pytest.approx(1.0, rel=0.03)


@pytest.mark.parametrize("name", ["ram-lak", "shepp-logan", "cosine", "hamming", "hann"])
def test_every_filter_keeps_the_scale(name: str) -> None:
    rec = full_range(ball(12.0), step=2.0, filter=name)
    z, y, x = np.mgrid[:N, :N, :N] - (N - 1) / 2
    assert rec.data[x**2 + y**2 + z**2 <= 49].mean() == pytest.approx(1.0, rel=0.03)


def test_thickness_option() -> None:
    tilts = cs.method("generate.tilt_series", step_deg=3.0)(ball(8.0))
    rec = cs.method("reconstruct.wbp", thickness_voxels=20)(tilts)
    assert rec.shape == (20, N, N)


def test_bad_input() -> None:
    with pytest.raises(cs.InputError, match="'wiener' is not one of"):
        cs.method("reconstruct.wbp", filter="wiener")
    rotated = cs.TiltSeries(np.zeros((3, 8, 8)), [-10, 0, 10], 1.0, tilt_axis_angle_deg=5.0)
    with pytest.raises(cs.InputError, match="align the tilt series first"):
        cs.method("reconstruct.wbp")(rotated)
    repeated = cs.TiltSeries(np.zeros((3, 8, 8)), [0, 0, 10], 1.0)
    with pytest.raises(cs.InputError, match="tilt angles repeat"):
        cs.method("reconstruct.wbp")(repeated)
