"""generate.em_image: staining and membranes, blur, noise at the requested SNR, tilt series, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import cellscape as cs
from cellscape_plugins.generate.em_image import stained_density
from cellscape_plugins.generate.tilt_series import project

NAMES = {1: "cytosol", 2: "nucleus", 3: "mitochondrion"}


@pytest.fixture(scope="module")
def geometry() -> cs.Labels:
    """A cell (sphere of radius 14 voxels) with a nucleus and one mitochondrion, 5 nm voxels."""
    n = 36
    z, y, x = np.mgrid[:n, :n, :n] - (n - 1) / 2
    data = np.zeros((n, n, n), np.uint8)
    data[z**2 + y**2 + x**2 <= 14**2] = 1
    data[(z - 2) ** 2 + (y + 2) ** 2 + (x + 3) ** 2 <= 6**2] = 2
    data[(z + 3) ** 2 + (y - 6) ** 2 / 4 + (x - 6) ** 2 <= 3**2] = 3
    return cs.Labels(data, NAMES, 5.0)


def test_staining_and_membranes_without_blur_or_noise(geometry) -> None:
    em = cs.method("generate.em_image", psf_sigma_nm=0.0, snr=None, membrane_thickness_nm=6.0,
                   staining={"cytosol": 0.2, "nucleus": 0.45, "mitochondrion": 0.7})
    out = em(geometry)
    image, data = out["volume"].data, geometry.data
    assert np.array_equal(image, out["clean"].data)
    assert out["volume"].voxel_size_nm == (5.0, 5.0, 5.0)
    deep = {v: ndimage.binary_erosion(data == v, iterations=3) for v in (1, 2, 3)}
    assert np.allclose(image[deep[1]], 0.2) and np.allclose(image[deep[2]], 0.45) and np.allclose(image[deep[3]], 0.7)
    assert (image[data == 0] == 0.0).all()
    # every labelled voxel face-adjacent to another label is membrane; 6 nm reaches 1 voxel, not 2 (10 nm)
    boundary = np.zeros_like(data, bool)
    for axis in range(3):
        for shift in (1, -1):
            boundary |= np.roll(data, shift, axis) != data
    labelled = data > 0
    assert (image[boundary & labelled] == 1.0).all()
    assert (image[labelled & ~boundary] < 1.0).all()  # diagonal neighbours are 7.1 nm away: not membrane


def test_blur_is_the_gaussian_psf(geometry) -> None:
    sharp = cs.method("generate.em_image", psf_sigma_nm=0.0, snr=None)(geometry)["clean"].data
    blurred = cs.method("generate.em_image", psf_sigma_nm=7.5, snr=None)(geometry)["clean"].data
    assert np.allclose(blurred, ndimage.gaussian_filter(sharp, 1.5, mode="nearest"), atol=1e-6)
    assert blurred.sum() == pytest.approx(sharp.sum(), rel=1e-3)  # the PSF keeps the total density


@pytest.mark.parametrize("noise", ["gaussian", "poisson"])
@pytest.mark.parametrize("snr", [0.5, 3.0])
def test_measured_snr_is_the_requested_one(geometry, noise, snr) -> None:
    out = cs.method("generate.em_image", snr=snr, noise=noise, seed=7)(geometry)
    clean, noisy = out["clean"].data.astype(np.float64), out["volume"].data.astype(np.float64)
    measured = clean.std() / (noisy - clean).std()
    assert measured == pytest.approx(snr, rel=0.05)


def test_poisson_noise_is_shot_noise_stronger_where_transmission_is_high(geometry) -> None:
    out = cs.method("generate.em_image", snr=2.0, noise="poisson", psf_sigma_nm=0.0, seed=1)(geometry)
    noise = out["volume"].data - out["clean"].data
    outside, membrane = geometry.data == 0, out["clean"].data == 1.0
    # transmission ∝ c_max − c + floor: outside (c = 0) lets 5x more electrons through than a membrane (c = c_max)
    ratio = noise[outside].var() / noise[membrane].var()
    assert ratio == pytest.approx(5.0, rel=0.15)


def test_same_seed_same_image_and_inversion(geometry) -> None:
    a = cs.method("generate.em_image", seed=3)(geometry)["volume"]
    b = cs.method("generate.em_image", seed=3)(geometry)["volume"]
    c = cs.method("generate.em_image", seed=4)(geometry)["volume"]
    assert cs.content_hash(a) == cs.content_hash(b) != cs.content_hash(c)
    inverted = cs.method("generate.em_image", seed=3, invert=True)(geometry)
    clean = cs.method("generate.em_image", seed=3)(geometry)["clean"].data
    assert np.allclose(inverted["clean"].data, clean.max() - clean)
    assert np.allclose(inverted["volume"].data, clean.max() - a.data, atol=1e-6)


def test_tilt_series_goes_through_the_tilt_series_projector(geometry) -> None:
    em = cs.method("generate.em_image", snr=None)
    tilts = em.tilt_series(geometry, min_angle_deg=-60, max_angle_deg=60, step_deg=30)
    assert np.allclose(tilts.tilt_angles_deg, [-60, -30, 0, 30, 60])
    assert tilts.pixel_size_nm == 5.0
    expected = project(em.render_clean(geometry), tilts.tilt_angles_deg)
    assert np.allclose(tilts.projections, expected, atol=1e-5)
    noisy = cs.method("generate.em_image", snr=2.0, seed=1).tilt_series(geometry, angles_deg=[-40, 0, 40])
    clean_projections = project(em.render_clean(geometry), np.array([-40.0, 0.0, 40.0]))
    snr = clean_projections.std() / (noisy.projections - clean_projections).std()
    assert snr == pytest.approx(2.0, rel=0.05)


def test_unknown_class_name_in_staining_is_a_clear_error(geometry) -> None:
    with pytest.raises(cs.InputError, match=r"'staining' names class\(es\) 'golgi'.*classes are 'cytosol', "
                                            "'mitochondrion', 'nucleus'"):
        cs.method("generate.em_image", staining={"golgi": 0.4})(geometry)


def test_negative_staining_density_is_a_clear_error(geometry) -> None:
    with pytest.raises(cs.InputError, match=r"'staining' gives class\(es\) 'nucleus' a density that is not a number >= 0"):
        cs.method("generate.em_image", staining={"cytosol": 0.3, "nucleus": -0.2})(geometry)


def test_uniform_image_has_no_snr() -> None:
    labels = cs.Labels(np.ones((8, 8, 8), np.uint8), {1: "cytosol"}, 5.0)
    with pytest.raises(cs.InputError, match="uniform .* no SNR can be defined"):
        cs.method("generate.em_image", membrane_thickness_nm=0.0, snr=2.0)(labels)


def test_poisson_tilt_series_is_refused(geometry) -> None:
    with pytest.raises(cs.InputError, match="Gaussian noise on its projections; set noise to 'gaussian'"):
        cs.method("generate.em_image", noise="poisson").tilt_series(geometry)


def test_classes_not_in_staining_get_their_built_in_or_the_default_density(geometry) -> None:
    density = stained_density(geometry, {"nucleus": 0.9}, default_density=0.25, membrane_thickness_nm=0.0)
    assert set(np.unique(density[geometry.data == 1])) == {np.float32(0.3)}  # built-in cytosol density
    assert set(np.unique(density[geometry.data == 2])) == {np.float32(0.9)}
    other = cs.Labels(geometry.data, {1: "cytoplasm", 2: "nucleus", 3: "vesicle"}, 5.0)
    density = stained_density(other, {}, default_density=0.25, membrane_thickness_nm=0.0)
    assert set(np.unique(density[geometry.data == 3])) == {np.float32(0.25)}
