"""reconstruct.align: known shifts recovered, residuals, saved alignments, tilt-axis angle, bad input.

A specimen translation (x, y, z) moves tilt i by ``(Δx cos θ_i + Δz sin θ_i)`` across the axis and
``Δy`` along it and no alignment can see it, so recovered shifts are compared with the applied ones
after removing the least-squares fit of that translation from their difference.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import cellscape as cs
from cellscape_plugins.reconstruct.align import Align, accumulate, specimen_translation_basis

N = 64


@pytest.fixture(scope="module")
def blob_volume() -> cs.Volume:
    """Gaussian blobs in a 20-voxel-thick section, well inside the field of view at every tilt."""
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[:N, :N, :N] - (N - 1) / 2
    data = np.zeros((N, N, N), np.float32)
    for _ in range(40):
        r, phi = rng.uniform(0, 18), rng.uniform(0, 2 * np.pi)
        cx, cz, cy = r * np.cos(phi), rng.uniform(-10, 10), rng.uniform(-14, 14)
        sigma = rng.uniform(1.5, 3.0)
        data += np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * sigma**2)).astype(np.float32)
    return cs.Volume(data, 2.0)


@pytest.fixture(scope="module")
def clean(blob_volume: cs.Volume) -> cs.TiltSeries:
    return cs.method("generate.tilt_series", min_angle_deg=-60, max_angle_deg=60, step_deg=4)(blob_volume)


def misalign(tilts: cs.TiltSeries, seed: int = 1, rotate_deg: float = 0.0) -> tuple[cs.TiltSeries, np.ndarray]:
    """The series with each image moved by a random (y, x) shift of up to ±8 px; returns it and the shifts."""
    applied = np.random.default_rng(seed).uniform(-8, 8, (len(tilts.tilt_angles_deg), 2))
    images = tilts.projections
    if rotate_deg:
        images = [ndimage.rotate(image, rotate_deg, reshape=False, order=3, mode="constant") for image in images]
    moved = np.stack([ndimage.shift(image, shift, order=3, mode="constant")
                      for image, shift in zip(images, applied, strict=True)])
    return cs.TiltSeries(moved, tilts.tilt_angles_deg, tilts.pixel_size_nm), applied


def recovered(table: cs.Table) -> np.ndarray:
    return np.stack([table.columns["shift_y_px"], table.columns["shift_x_px"]], axis=1)


def shift_errors(table: cs.Table, applied: np.ndarray, axis_angle_deg: float = 0.0) -> np.ndarray:
    """Per-tilt error length (px) of the recovered shifts, up to an unobservable specimen translation."""
    difference = (recovered(table) - applied).ravel()
    basis = specimen_translation_basis(table.columns["tilt_angle_deg"], axis_angle_deg, with_z=True)
    coefficients, *_ = np.linalg.lstsq(basis, difference, rcond=None)
    return np.hypot(*(difference - basis @ coefficients).reshape(-1, 2).T)


def rms(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(values**2)))


@pytest.mark.parametrize("binning", [1, 2])
def test_known_shifts_are_recovered(clean: cs.TiltSeries, binning: int) -> None:
    tilts, applied = misalign(clean)
    out = Align(binning=binning)(tilts)
    table = out["shifts"]
    errors = shift_errors(table, applied)
    assert rms(errors) < 0.5
    assert errors.max() < 1.0
    zero = int(np.argmin(np.abs(clean.tilt_angles_deg)))
    np.testing.assert_array_equal(recovered(table)[zero], [0.0, 0.0])
    assert table.columns["residual_px"].max() < 0.5
    assert table.columns["correlation_peak"].min() > 0.9
    assert table.units["shift_x_px"] == "px" and table.units["tilt_angle_deg"] == "deg"
    aligned = out["aligned"]
    assert aligned.projections.shape == tilts.projections.shape
    assert aligned.pixel_size_nm == tilts.pixel_size_nm and aligned.tilt_axis_angle_deg == 0.0
    np.testing.assert_array_equal(aligned.tilt_angles_deg, tilts.tilt_angles_deg)


def test_aligned_images_line_up_with_the_unshifted_series(clean: cs.TiltSeries) -> None:
    """After alignment, each image equals the clean one up to the specimen translation the fit allows."""
    tilts, applied = misalign(clean)
    out = Align(center_shifts=True)(tilts)
    before = np.mean([np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(tilts.projections, clean.projections, strict=True)])
    shifts = recovered(out["shifts"])
    # move the clean series by the same unobservable translation the recovered shifts contain
    difference = (shifts - applied).ravel()
    basis = specimen_translation_basis(clean.tilt_angles_deg, 0.0, with_z=True)
    coefficients, *_ = np.linalg.lstsq(basis, difference, rcond=None)
    reference = np.stack([ndimage.shift(image, -offset, order=3) for image, offset
                          in zip(clean.projections, (basis @ coefficients).reshape(-1, 2), strict=True)])
    inner = (slice(None), slice(10, -10), slice(10, -10))
    aligned = out["aligned"].projections[inner]
    after = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(aligned, reference[inner], strict=True)]
    assert before < 0.8
    assert min(after) > 0.99


def test_noisy_series_still_aligns(blob_volume: cs.Volume) -> None:
    noisy = cs.method("generate.tilt_series", min_angle_deg=-60, max_angle_deg=60, step_deg=4,
                      noise_snr=2.0, seed=5)(blob_volume)
    tilts, applied = misalign(noisy, seed=2)
    table = Align()(tilts)["shifts"]
    errors = shift_errors(table, applied)
    assert rms(errors) < 0.5
    assert errors.max() < 1.0


def test_shifts_accumulate_with_the_stretch_not_as_a_plain_sum() -> None:
    """``t_i = d_i + S t_j`` inverts ``d_i = t_i − S t_j`` exactly; a plain sum would be off by pixels."""
    angles = np.arange(-60.0, 61.0, 4.0)
    rng = np.random.default_rng(3)
    truth = rng.uniform(-8, 8, (len(angles), 2))
    zero = int(np.argmin(np.abs(angles)))
    truth[zero] = 0.0
    cos = np.cos(np.radians(angles))
    order = np.argsort(angles)
    relative = np.zeros_like(truth)
    for i in range(len(angles)):
        j = i - 1 if i > zero else i + 1
        if i != zero:
            relative[i] = truth[i] - truth[j] * [1.0, cos[i] / cos[j]]  # S scales x (across the axis)
    np.testing.assert_allclose(accumulate(relative, angles, order, zero, 0.0), truth, atol=1e-12)
    plain = np.concatenate([np.cumsum(relative[zero::-1], axis=0)[::-1], np.cumsum(relative[zero + 1:], axis=0)])
    assert np.abs(plain - truth).max() > 1.0


def test_center_shifts_removes_the_in_plane_translation(clean: cs.TiltSeries) -> None:
    tilts, _ = misalign(clean)
    anchored = recovered(Align()(tilts)["shifts"])
    centred = recovered(Align(center_shifts=True)(tilts)["shifts"])
    basis = specimen_translation_basis(clean.tilt_angles_deg, 0.0)
    np.testing.assert_allclose(basis.T @ centred.ravel(), 0.0, atol=1e-9)  # normal equations: nothing left to fit
    coefficients, *_ = np.linalg.lstsq(basis, (anchored - centred).ravel(), rcond=None)
    np.testing.assert_allclose(basis @ coefficients, (anchored - centred).ravel(), atol=1e-9)
    assert np.abs(coefficients).max() > 1.0


def test_saved_alignment_reproduces_the_aligned_images(clean: cs.TiltSeries, tmp_path) -> None:
    tilts, _ = misalign(clean)
    first = Align(center_shifts=True)(tilts)
    path = cs.write(first["shifts"], tmp_path / "shifts.csv")
    again = Align(shifts_file=str(path))(tilts)
    np.testing.assert_array_equal(again["aligned"].projections, first["aligned"].projections)
    np.testing.assert_array_equal(recovered(again["shifts"]), recovered(first["shifts"]))
    np.testing.assert_allclose(again["shifts"].columns["residual_px"], first["shifts"].columns["residual_px"])
    as_list = [[x, y] for y, x in recovered(first["shifts"]).tolist()]
    np.testing.assert_array_equal(Align(shifts_px=as_list)(tilts)["aligned"].projections,
                                  first["aligned"].projections)


def test_tilt_axis_angle_is_estimated(clean: cs.TiltSeries) -> None:
    """Images whose axis is turned 7° from Y, declared as 0°: the estimate lands within 1° of 7°."""
    tilts, applied = misalign(clean, rotate_deg=7.0)
    out = Align(estimate_axis=True, axis_search_deg=10.0)(tilts)
    axis = out["aligned"].tilt_axis_angle_deg
    assert axis == pytest.approx(7.0, abs=1.0)
    np.testing.assert_array_equal(out["shifts"].columns["tilt_axis_angle_deg"], axis)
    errors = shift_errors(out["shifts"], applied, axis)
    assert rms(errors) < 0.5
    assert out["shifts"].columns["residual_px"].max() < 0.5


def test_declares_two_outputs() -> None:
    assert Align.stage == "reconstruct"
    assert {k: v.kind for k, v in Align.input_ports().items()} == {"tilts": cs.TiltSeries}
    assert {k: v.kind for k, v in Align.output_ports().items()} == {"aligned": cs.TiltSeries, "shifts": cs.Table}


def test_saved_alignment_with_the_wrong_row_count(clean: cs.TiltSeries, tmp_path) -> None:
    tilts, _ = misalign(clean)
    table = Align()(tilts)["shifts"]
    short = cs.Table({k: v[:-1] for k, v in table.columns.items()}, table.units)
    path = cs.write(short, tmp_path / "short.csv")
    with pytest.raises(cs.InputError, match=r"reconstruct.align: 'shifts_file' .*short.csv has 30 rows for 31 tilt"):
        Align(shifts_file=str(path))(tilts)
    with pytest.raises(cs.InputError, match=r"reconstruct.align: 'shifts_file': .*no such file"):
        Align(shifts_file=str(tmp_path / "missing.csv"))(tilts)


SMALL = cs.TiltSeries(np.random.default_rng(0).random((3, 32, 32)), [-10.0, 0.0, 10.0], 1.0)


@pytest.mark.parametrize(("params", "message"), [
    ({"shifts_px": [[0.0, 0.0]] * 2}, r"'shifts_px' has 2 rows for 3 tilt images"),
    ({"shifts_px": [[0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0]]}, r"'shifts_px' row 1 has 3 values"),
    ({"shifts_px": [[0.0, 0.0]] * 3, "shifts_file": "s.csv"}, r"'shifts_file' or 'shifts_px', not both"),
    ({"shifts_px": [[0.0, 0.0]] * 3, "estimate_axis": True}, r"'estimate_axis' cannot be combined"),
    ({"lowpass_fraction": 0.1, "highpass_fraction": 0.2}, r"'highpass_fraction' \(0.2\) must be below"),
    ({"binning": 4}, r"'binning': 4 leaves 8×7-pixel images; need at least 8×8"),
])
def test_bad_options(params, message) -> None:
    tilts = cs.TiltSeries(SMALL.projections[:, :, :28], SMALL.tilt_angles_deg) if "binning" in params else SMALL
    with pytest.raises(cs.InputError, match=message):
        Align(**params)(tilts)


def test_bad_input() -> None:
    with pytest.raises(cs.InputError, match=r"reconstruct.align: tilts beyond ±85°"):
        Align()(cs.TiltSeries(np.zeros((3, 16, 16)), [-90.0, 0.0, 90.0], 1.0))
    with pytest.raises(cs.InputError, match=r"need at least 2 tilt images"):
        Align()(cs.TiltSeries(np.zeros((1, 16, 16)), [0.0], 1.0))
    with pytest.raises(cs.InputError, match=r"parameter 'binning': 3 is not one of"):
        Align(binning=3)
    with pytest.raises(cs.InputError, match=r"input 'tilts' must be a TiltSeries"):
        Align()(cs.Volume(np.zeros((4, 4, 4)), 1.0))


def test_align_then_reconstruct_restores_the_tomogram(blob_volume: cs.Volume, clean: cs.TiltSeries) -> None:
    """Through the registry, as a spec would use it: aligning a jittered series brings WBP back to the clean one."""
    tilts, _ = misalign(clean, seed=5)
    aligned = cs.method("reconstruct.align", center_shifts=True)(tilts)["aligned"]
    wbp = cs.method("reconstruct.wbp", filter="hamming")
    reference = wbp(clean).data
    inner = (slice(16, -16), slice(12, -12), slice(12, -12))

    def match(volume: cs.Volume) -> float:
        return float(np.corrcoef(volume.data[inner].ravel(), reference[inner].ravel())[0, 1])

    # up to the unobservable specimen translation, so compare after the best integer re-centring
    def best(volume: cs.Volume) -> float:
        return max(match(cs.Volume(np.roll(volume.data, (dz, dy, dx), axis=(0, 1, 2)), 2.0))
                   for dz in range(-2, 3) for dy in range(-2, 3) for dx in range(-2, 3))

    assert best(wbp(aligned)) > 0.9
    assert best(wbp(tilts)) < 0.6
