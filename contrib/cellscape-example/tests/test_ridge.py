"""segment.ridge_membrane on synthetic membranes, its sheet measures, its errors, and its discovery as an installed plugin."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import numpy as np
import pytest
from cellscape_example.sheetness import MEASURES, hessian_eigenvalues
from scipy import ndimage

import cellscape as cs

N = 48
VOXEL_NM = 4.0
SIGMAS_NM = [4.0, 8.0]


def membrane_phantom(shape: str, dark: bool = False, noise: float = 0.5, seed: int = 0) -> tuple[cs.Volume, np.ndarray]:
    """A 3-voxel-thick membrane (density 1.0 on 0.2, or inverted) plus Gaussian noise; returns (volume, true membrane)."""
    z, y, x = np.mgrid[:N, :N, :N] - (N - 1) / 2
    if shape == "shell":  # a vesicle of radius 60 nm
        truth = np.abs(np.sqrt(x**2 + y**2 + z**2) - 15) <= 1.0
    else:  # a flat, tilted membrane: no curvature for the filter to lean on
        truth = np.abs(z - 0.3 * y) <= 1.0
    rng = np.random.default_rng(seed)
    data = np.where(truth, 1.0, 0.2) + rng.normal(0, noise, truth.shape)
    if dark:
        data = 1.2 - data
    return cs.Volume(data.astype(np.float32), VOXEL_NM), truth


def tolerant_dice(found: np.ndarray, truth: np.ndarray) -> float:
    """Dice where a voxel counts as matched if the other mask has one at most 1 voxel away (6-neighbours); in [0, 1]."""
    matched = (found & ndimage.binary_dilation(truth)).sum() + (truth & ndimage.binary_dilation(found)).sum()
    return float(matched / (found.sum() + truth.sum()))


def dice(found: np.ndarray, truth: np.ndarray) -> float:
    return float(2 * (found & truth).sum() / (found.sum() + truth.sum()))


@pytest.mark.parametrize("shape", ["shell", "plane"])
@pytest.mark.parametrize("measure", ["sato", "frangi", "meijering"])
def test_bright_membrane_is_found(measure: str, shape: str) -> None:
    volume, truth = membrane_phantom(shape, seed=1)
    labels = cs.method("segment.ridge_membrane", filter=measure, sigmas_nm=SIGMAS_NM)(volume)
    assert labels.class_names == {1: "membrane"}
    assert labels.voxel_size_nm == volume.voxel_size_nm and labels.shape == volume.shape
    assert tolerant_dice(labels.data == 1, truth) >= 0.8


def test_dark_membrane_needs_black_ridges() -> None:
    volume, truth = membrane_phantom("shell", dark=True, seed=2)
    right = cs.method("segment.ridge_membrane", sigmas_nm=SIGMAS_NM, black_ridges=True)(volume)
    wrong = cs.method("segment.ridge_membrane", sigmas_nm=SIGMAS_NM, black_ridges=False)(volume)
    assert tolerant_dice(right.data == 1, truth) >= 0.8
    assert dice(wrong.data == 1, truth) < 0.05  # the wrong polarity finds the bright flanks beside the membrane


def test_anisotropic_sections() -> None:
    volume, truth = membrane_phantom("shell", seed=3)
    sections = cs.Volume(volume.data[::2], (2 * VOXEL_NM, VOXEL_NM, VOXEL_NM), origin_nm=(100.0, 0.0, -50.0))
    labels = cs.method("segment.ridge_membrane", sigmas_nm=[8.0, 12.0])(sections)  # >= 0.8 voxel along z
    assert labels.shape == sections.shape
    assert (labels.voxel_size_nm, labels.origin_nm) == ((8.0, 4.0, 4.0), (100.0, 0.0, -50.0))
    assert tolerant_dice(labels.data == 1, truth[::2]) >= 0.75


def test_hessian_is_in_physical_units() -> None:
    # f = a x² + b z² (x, z in nm from the centre) has Hessian diag(2b, 0, 2a) in (z, y, x) whatever the voxel size
    voxel = (6.0, 2.0, 3.0)
    a, b, sigma_nm = 1e-3, -4e-3, 9.0
    z, _, x = ((np.arange(n) - (n - 1) / 2) * v for n, v in zip((24, 20, 40), voxel, strict=True))
    data = (a * x[None, None, :] ** 2 + b * z[:, None, None] ** 2 + np.zeros((24, 20, 40))).astype(np.float32)
    mu = hessian_eigenvalues(data, sigma_nm, voxel, dark=True)[8:16, 6:14, 16:24]
    expected = sigma_nm**2 * np.array([0.0, 2 * a, 2 * b])  # sorted by magnitude
    np.testing.assert_allclose(mu, np.broadcast_to(expected, mu.shape), atol=1e-2 * abs(expected).max())
    bright = hessian_eigenvalues(data, sigma_nm, voxel, dark=False)[8:16, 6:14, 16:24]
    np.testing.assert_allclose(bright, -mu, atol=1e-6)


@pytest.mark.parametrize("measure", ["sato", "frangi", "meijering"])
def test_measures_rank_sheet_over_tube_and_blob(measure: str) -> None:
    # rows: sheet, tube, blob, a ridge of the other polarity; columns sorted by magnitude
    mu = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 1.0], [0.0, 0.0, -1.0]], np.float32)
    sheet, tube, blob, opposite = MEASURES[measure](mu)
    assert sheet > 0
    assert tube <= 0.7 * sheet
    assert blob <= tube
    assert opposite == 0


def test_bad_parameters_fail_when_the_method_is_made() -> None:
    with pytest.raises(cs.InputError, match=r"sigmas_nm is empty; give at least one scale"):
        cs.method("segment.ridge_membrane", sigmas_nm=[])
    with pytest.raises(cs.InputError, match=r"parameter 'sigmas_nm': -2 is out of range: must be > 0"):
        cs.method("segment.ridge_membrane", sigmas_nm=[8.0, -2.0])
    with pytest.raises(cs.InputError, match=r"parameter 'sigmas_nm': 0 is out of range"):
        cs.method("segment.ridge_membrane", sigmas_nm=[0.0])
    with pytest.raises(cs.InputError, match=r"low_quantile \(0.9\) must be below high_quantile \(0.8\)"):
        cs.method("segment.ridge_membrane", low_quantile=0.9, high_quantile=0.8)
    with pytest.raises(cs.InputError, match=r"low_quantile \(0.9\) must be below high_quantile \(0.9\)"):
        cs.method("segment.ridge_membrane", low_quantile=0.9, high_quantile=0.9)
    with pytest.raises(cs.InputError, match=r"sigmas_nm is empty; .*; low_quantile \(0.5\) must be below high_quantile \(0.4\)"):
        cs.method("segment.ridge_membrane", sigmas_nm=[], low_quantile=0.5, high_quantile=0.4)
    with pytest.raises(cs.InputError, match=r"parameter 'high_quantile': 1 is out of range: must be < 1"):
        cs.method("segment.ridge_membrane", high_quantile=1.0)
    with pytest.raises(cs.InputError, match=r"'hessian' is not one of 'sato', 'frangi', 'meijering'"):
        cs.method("segment.ridge_membrane", filter="hessian")


def test_bad_volumes_are_refused_with_what_to_do() -> None:
    coarse = cs.Volume(np.random.default_rng(0).normal(size=(8, 16, 16)).astype(np.float32), (20.0, 5.0, 5.0))
    with pytest.raises(cs.InputError, match=r"sigmas_nm \[8.0\] are finer than 0.8 voxel .* use scales >= 16 nm"):
        cs.method("segment.ridge_membrane", sigmas_nm=[8.0, 16.0])(coarse)
    constant = cs.Volume(np.full((8, 16, 16), 3.0, np.float32), 4.0)
    with pytest.raises(cs.InputError, match=r"the volume is constant \(3\); there are no membranes"):
        cs.method("segment.ridge_membrane")(constant)


def test_installed_plugin_is_discovered_through_its_entry_point() -> None:
    points = {ep.name: ep for ep in importlib.metadata.entry_points(group="cellscape")}
    assert points["example"].value == "cellscape_example"
    assert points["example"].dist.name == "cellscape-example"
    info = next(m for m in cs.methods() if m.name == "segment.ridge_membrane")
    assert (info.distribution, info.version, info.stage) == ("cellscape-example", "0.1.0", "segment")
    method = cs.method("segment.ridge_membrane", filter="frangi")
    assert isinstance(method, cs.Segmenter) and method.params.filter == "frangi"
    assert method.params_json()["sigmas_nm"] == [8.0, 16.0]


def test_discovery_stays_light() -> None:
    # listing methods imports the plugin module but neither scikit-image nor SciPy
    code = "import sys, cellscape as cs; cs.methods(); print(sorted(m for m in ('skimage', 'scipy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
