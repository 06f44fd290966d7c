"""generate.tilt_series: line integrals of known objects."""

from __future__ import annotations

import numpy as np
import pytest

import cellscape as cs


def ball_volume(n: int = 48, radius: float = 12.0, centre=(0.0, 0.0, 0.0)) -> cs.Volume:
    z, y, x = np.mgrid[:n, :n, :n] - (n - 1) / 2
    cz, cy, cx = centre
    return cs.Volume(((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= radius**2).astype(np.float32), 3.0)


def test_ball_projection_is_the_chord_length() -> None:
    ts = cs.method("generate.tilt_series", angles_deg=[-45.0, 0.0, 30.0])(ball_volume(radius=12.0))
    assert ts.pixel_size_nm == 3.0
    centre = 23.5
    for image in ts.projections:
        # chord through the centre: 2r; at s = 6 px off-centre: 2*sqrt(r²-s²)
        centre_value = image[23:25, 23:25].mean()
        assert centre_value == pytest.approx(24.0, rel=0.05)
        off = image[23:25, [17, 30]].mean()  # |s| = 6.5 px
        assert off == pytest.approx(2 * np.sqrt(144 - (centre - 17) ** 2), rel=0.06)


def test_mass_is_conserved_and_tilt_zero_sums_along_z() -> None:
    volume = ball_volume(radius=10.0, centre=(3.0, -4.0, 6.0))
    ts = cs.method("generate.tilt_series", min_angle_deg=-60, max_angle_deg=60, step_deg=20)(volume)
    np.testing.assert_allclose(ts.projections.sum(axis=(1, 2)), volume.data.sum(), rtol=0.01)
    zero = list(ts.tilt_angles_deg).index(0.0)
    np.testing.assert_allclose(ts.projections[zero], volume.data.sum(axis=0), atol=1e-4)
    np.testing.assert_array_equal(ts.tilt_angles_deg, [-60, -40, -20, 0, 20, 40, 60])


def test_noise_is_seeded_at_the_requested_snr() -> None:
    volume = ball_volume()
    clean = cs.method("generate.tilt_series", step_deg=10)(volume).projections
    a = cs.method("generate.tilt_series", step_deg=10, noise_snr=2.0, seed=1)(volume).projections
    b = cs.method("generate.tilt_series", step_deg=10, noise_snr=2.0, seed=1)(volume).projections
    np.testing.assert_array_equal(a, b)
    assert (a - clean).std() == pytest.approx(clean.std() / 2.0, rel=0.02)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"min_angle_deg": 30, "max_angle_deg": -30}, "min_angle_deg \\(30.0\\) > max_angle_deg"),
        ({"angles_deg": [0.0]}, "needs >= 2 angles"),
        ({"angles_deg": [0.0, 95.0]}, "within ±90°"),
        ({"min_angle_deg": 0, "max_angle_deg": 1, "step_deg": 5}, "fewer than 2 tilts"),
    ],
)
def test_bad_angles(params, message) -> None:
    with pytest.raises(cs.InputError, match=message):
        cs.method("generate.tilt_series", **params)(ball_volume(n=24, radius=5))


def test_step_must_be_positive_and_voxels_isotropic_in_xz() -> None:
    with pytest.raises(cs.InputError, match="step_deg': 0 is out of range"):
        cs.method("generate.tilt_series", step_deg=0)
    volume = cs.Volume(np.zeros((8, 8, 8)), (2.0, 1.0, 1.0))
    with pytest.raises(cs.InputError, match="equal in x and z"):
        cs.method("generate.tilt_series")(volume)
