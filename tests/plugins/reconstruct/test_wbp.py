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


def test_rotated_tilt_axis_is_put_back_on_y() -> None:
    """Images whose tilt axis is rotated by 12° (IMOD's axis angle) reconstruct like unrotated ones."""
    from scipy import ndimage

    truth = ball(9.0, centre=(2.0, -5.0, 4.0))
    tilts = cs.method("generate.tilt_series", min_angle_deg=-60, max_angle_deg=60, step_deg=3)(truth)
    rotated = np.stack([ndimage.rotate(image, 12.0, reshape=False, order=3, mode="nearest") for image in tilts.projections])
    tilted = cs.TiltSeries(rotated, tilts.tilt_angles_deg, tilts.pixel_size_nm, tilt_axis_angle_deg=12.0)
    reference = cs.method("reconstruct.wbp")(tilts).data
    result = cs.method("reconstruct.wbp")(tilted).data
    inner = (slice(None), slice(12, -12), slice(12, -12))  # corners rotate out of the field of view
    assert np.corrcoef(result[inner].ravel(), reference[inner].ravel())[0, 1] > 0.97


def test_binning_halves_the_grid_and_keeps_the_density() -> None:
    truth = ball(12.0, density=1.5)
    tilts = cs.method("generate.tilt_series", min_angle_deg=-90, max_angle_deg=90, step_deg=1)(truth)
    rec = cs.method("reconstruct.wbp", binning=2)(tilts)
    assert rec.shape == (N // 2, N // 2, N // 2)
    assert rec.voxel_size_nm == (5.0, 5.0, 5.0)
    assert rec.origin_nm[1:] == (1.25, 1.25)
    z, y, x = np.mgrid[: N // 2, : N // 2, : N // 2] - (N // 2 - 1) / 2
    assert rec.data[x**2 + y**2 + z**2 <= 3**2].mean() == pytest.approx(1.5, rel=0.03)


def test_excluded_tilts_are_left_out() -> None:
    truth = ball(9.0)
    tilts = cs.method("generate.tilt_series", min_angle_deg=-60, max_angle_deg=60, step_deg=3)(truth)
    spoiled = np.array(tilts.projections)
    spoiled[[4, 20]] = 1000.0  # two ruined images (e.g. a grid bar, a charging event)
    bad = cs.TiltSeries(spoiled, tilts.tilt_angles_deg, tilts.pixel_size_nm)
    clean = cs.method("reconstruct.wbp", exclude_tilts=[4, 20])(tilts).data
    fixed = cs.method("reconstruct.wbp", exclude_tilts=[4, 20])(bad).data
    np.testing.assert_array_equal(fixed, clean)
    assert np.abs(cs.method("reconstruct.wbp")(bad).data - clean).max() > 10


def test_memory_mapped_mrc_stack(tmp_path, monkeypatch) -> None:
    from cellscape.io import _mrc

    truth = ball(9.0)
    tilts = cs.method("generate.tilt_series", min_angle_deg=-60, max_angle_deg=60, step_deg=3)(truth)
    cs.write(tilts, tmp_path / "stack.mrc")
    monkeypatch.setattr(_mrc, "MMAP_BYTES", 0)
    mapped = cs.read(tmp_path / "stack.mrc")
    assert isinstance(mapped, cs.TiltSeries)
    assert isinstance(mapped.projections.base, np.memmap) or isinstance(mapped.projections, np.memmap)
    np.testing.assert_array_equal(cs.method("reconstruct.wbp")(mapped).data, cs.method("reconstruct.wbp")(tilts).data)


@pytest.mark.parametrize(("params", "message"), [
    ({"exclude_tilts": [7]}, r"'exclude_tilts': index 7 is out of range for 3 tilt images"),
    ({"exclude_tilts": [0, 1]}, r"only 1 tilt image\(s\) left after 'exclude_tilts'"),
    ({"binning": 16}, r"'binning': 16 leaves no image"),
])
def test_bad_reconstruction_options(params, message) -> None:
    tilts = cs.TiltSeries(np.zeros((3, 8, 8)), [-10, 0, 10], 1.0)
    with pytest.raises(cs.InputError, match=message):
        cs.method("reconstruct.wbp", **params)(tilts)


def test_bad_input() -> None:
    with pytest.raises(cs.InputError, match="'wiener' is not one of"):
        cs.method("reconstruct.wbp", filter="wiener")
    repeated = cs.TiltSeries(np.zeros((3, 8, 8)), [0, 0, 10], 1.0)
    with pytest.raises(cs.InputError, match="tilt angles repeat"):
        cs.method("reconstruct.wbp")(repeated)


@pytest.mark.parametrize(("make", "message"), [
    (lambda: cs.TiltSeries(np.zeros((3, 8, 8)), [0, 10], 1.0), "2 tilt angles for 3 images"),
    (lambda: cs.TiltSeries(np.zeros((2, 8, 8)), [0, 95], 1.0), "within ±90°"),
    (lambda: cs.TiltSeries(np.full((2, 8, 8), np.nan), [0, 10], 1.0), "NaN or infinite"),
    (lambda: cs.TiltSeries(np.zeros((1, 8, 8)), [0], 1.0), "at least 2 tilt images"),
    (lambda: cs.TiltSeries(np.zeros((0, 8, 8)), [], 1.0), "at least 2 tilt images"),
])
def test_bad_tilt_series(make, message) -> None:
    with pytest.raises(cs.InputError, match=message):
        make()


def test_bad_tilt_series_files(tmp_path) -> None:
    tilts = cs.TiltSeries(np.ones((3, 8, 8), np.float32), [-10, 0, 10], 1.0)
    cs.write(tilts, tmp_path / "stack.mrc")
    (tmp_path / "stack.tlt").write_text("-10\n0\n")
    with pytest.raises(cs.InputError, match=r"stack.mrc: 3 images but 2 angles in stack.tlt"):
        cs.read(tmp_path / "stack.mrc")
    (tmp_path / "stack.tlt").write_text("-10\n0\n100\n")
    with pytest.raises(cs.InputError, match=r"stack.mrc: .*stack.tlt: line 3: tilt angle 100.0 is outside ±90°"):
        cs.read(tmp_path / "stack.mrc")
    raw = (tmp_path / "stack.mrc").read_bytes()
    (tmp_path / "broken.mrc").write_bytes(raw[:200])  # header cut short
    with pytest.raises(cs.InputError, match=r"broken.mrc: corrupt or truncated MRC"):
        cs.read(tmp_path / "broken.mrc")
