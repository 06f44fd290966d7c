"""segment.ridge_membrane on a synthetic membrane, and its discovery as an installed plugin."""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pytest
from scipy import ndimage

import cellscape as cs


def shell_phantom(dark: bool = False, seed: int = 0, anisotropic: bool = False):
    n = 48
    z, y, x = np.mgrid[:n, :n, :n] - (n - 1) / 2
    r = np.sqrt(x**2 + y**2 + z**2)
    shell = np.abs(r - 15) <= 1.0
    rng = np.random.default_rng(seed)
    data = np.where(shell, 1.0, 0.2) + rng.normal(0, 0.25, shell.shape)
    if dark:
        data = 1.2 - data
    voxel = (4.0, 4.0, 4.0)
    if anisotropic:
        data, shell, voxel = data[::2], shell[::2], (8.0, 4.0, 4.0)
    return cs.Volume(data.astype(np.float32), voxel), shell


def dice_with_tolerance(found: np.ndarray, truth: np.ndarray) -> float:
    near = ndimage.binary_dilation(truth)
    hits = (found & near).sum()
    return 2 * hits / (found.sum() + truth.sum())


def test_bright_membrane() -> None:
    volume, shell = shell_phantom()
    labels = cs.method("segment.ridge_membrane", sigmas_nm=[4.0, 8.0])(volume)
    assert labels.class_names == {1: "membrane"}
    assert dice_with_tolerance(labels.data == 1, shell) >= 0.7


def test_dark_membrane_with_black_ridges() -> None:
    volume, shell = shell_phantom(dark=True, seed=1)
    labels = cs.method("segment.ridge_membrane", sigmas_nm=[4.0, 8.0], black_ridges=True)(volume)
    assert dice_with_tolerance(labels.data == 1, shell) >= 0.7
    wrong = cs.method("segment.ridge_membrane", sigmas_nm=[4.0, 8.0], black_ridges=False)(volume)
    assert dice_with_tolerance(wrong.data == 1, shell) < 0.5


def test_anisotropic_sections() -> None:
    volume, shell = shell_phantom(anisotropic=True, seed=2)
    labels = cs.method("segment.ridge_membrane", sigmas_nm=[4.0, 8.0])(volume)
    assert labels.shape == volume.shape
    assert dice_with_tolerance(labels.data == 1, shell) >= 0.6


def test_bad_parameters_name_themselves() -> None:
    volume, _ = shell_phantom()
    with pytest.raises(cs.InputError, match="sigmas_nm must be a non-empty list"):
        cs.method("segment.ridge_membrane", sigmas_nm=[])(volume)
    with pytest.raises(cs.InputError, match="sigmas_nm must be a non-empty list of widths > 0 nm"):
        cs.method("segment.ridge_membrane", sigmas_nm=[-2.0])(volume)
    with pytest.raises(cs.InputError, match=r"low_quantile \(0.9\) must be below high_quantile \(0.8\)"):
        cs.method("segment.ridge_membrane", low_quantile=0.9, high_quantile=0.8)(volume)
    with pytest.raises(cs.InputError, match="'hessian' is not one of"):
        cs.method("segment.ridge_membrane", filter="hessian")


def test_installed_plugin_is_discovered_through_its_entry_point() -> None:
    points = {ep.name: ep for ep in importlib.metadata.entry_points(group="cellscape")}
    assert points["example"].value == "cellscape_example"
    assert points["example"].dist.name == "cellscape-example"
    info = next(m for m in cs.methods() if m.name == "segment.ridge_membrane")
    assert (info.distribution, info.version, info.stage) == ("cellscape-example", "0.1.0", "segment")
