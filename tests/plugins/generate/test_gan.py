"""generate.gan: training shapes on the 32³ grid, shape quality, determinism, safe weights, a tiny training run."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import needed_modules
from scipy import ndimage

import cellscape as cs
from cellscape_plugins.generate import gan as gan_module

torch = needed_modules("torch")

VOXEL_NM = 10.0


def capsules(n_objects: int, seed: int = 0, size: int = 96) -> cs.Labels:
    """Mitochondria-like capsules (radius 3-4.5 voxels, length 10-20 voxels) in random orientations, on a lattice."""
    rng = np.random.default_rng(seed)
    data = np.zeros((size, size, size), np.uint8)
    z, y, x = np.mgrid[-11:12, -11:12, -11:12]
    sites = [(a, b, c) for a in range(12, size - 11, 24) for b in range(12, size - 11, 24) for c in range(12, size - 11, 24)]
    for cz, cy, cx in sites[:n_objects]:
        radius, half = rng.uniform(3.0, 4.5), rng.uniform(2.0, 6.0)
        d = rng.standard_normal(3)
        d /= np.linalg.norm(d)
        t = np.clip(z * d[0] + y * d[1] + x * d[2], -half, half)
        body = (z - t * d[0]) ** 2 + (y - t * d[1]) ** 2 + (x - t * d[2]) ** 2 <= radius**2
        data[cz - 11:cz + 12, cy - 11:cy + 12, cx - 11:cx + 12][body] = 1
    return cs.Labels(data, {1: "mitochondrion"}, VOXEL_NM)


@pytest.fixture(scope="module")
def training() -> cs.Labels:
    return capsules(16)


@pytest.fixture(scope="module")
def untrained(training) -> gan_module.ShapeGAN:
    """A GAN with no training step: the generator draws the training template (the mean shape)."""
    gan = cs.method("generate.gan", iterations=0, seed=1)
    gan.fit(training)
    return gan


def test_voxelized_objects_are_centred_aligned_and_scaled() -> None:
    n = 40
    z, y, x = np.mgrid[:n, :n, :n] - (n - 1) / 2
    # an ellipsoid with semi-axes 12, 7, 4 voxels, its long axis along the grid's z axis
    data = ((z / 12) ** 2 + (y / 7) ** 2 + (x / 4) ** 2 <= 1).astype(np.uint8)
    shapes, spacing = gan_module.voxelize_objects(cs.Labels(data, {1: "mitochondrion"}, VOXEL_NM), "mitochondrion",
                                                  fill_fraction=0.75)
    shape = shapes[0]
    assert shapes.shape == (1, 32, 32, 32)
    extents = [np.ptp(np.nonzero(shape)[axis]) + 1 for axis in range(3)]
    assert extents[2] == pytest.approx(24, abs=1.5)  # longest along x, spanning 0.75 of the grid
    assert extents[2] > extents[1] > extents[0]
    centroid = np.argwhere(shape).mean(axis=0)
    assert np.allclose(centroid, 15.5, atol=0.5)
    # the physical size is kept: volume in nm³ within 5 % of the ellipsoid's
    assert shape.sum() * spacing[0] ** 3 == pytest.approx(4 / 3 * np.pi * 12 * 7 * 4 * VOXEL_NM**3, rel=0.05)


def test_shape_quality_counts_components_cavities_and_border() -> None:
    n = 32
    z, y, x = np.mgrid[:n, :n, :n] - 15.5
    r = np.sqrt(z**2 + y**2 + x**2)
    ball = r <= 8
    two = (np.sqrt((z - 8) ** 2 + y**2 + x**2) <= 5) | (np.sqrt((z + 8) ** 2 + y**2 + x**2) <= 5)
    hollow = (r <= 9) & (r > 5)
    cut = np.sqrt(z**2 + y**2 + (x - 12) ** 2) <= 6
    scores = gan_module.shape_quality(np.stack([ball, two, hollow, cut, np.zeros_like(ball)]))
    assert scores["components"].tolist() == [1, 2, 1, 1, 0]
    assert scores["cavities"].tolist() == [0, 0, 1, 0, 0]
    assert scores["touches_border"].tolist() == [False, False, False, True, False]
    assert scores["single_closed"].tolist() == [True, False, False, False, False]
    cleaned = gan_module.clean_shape(two | (hollow & (z > 100)))
    assert ndimage.label(cleaned)[1] == 1 and cleaned.sum() == (np.sqrt((z - 8) ** 2 + y**2 + x**2) <= 5).sum()
    assert (gan_module.clean_shape(hollow) == (r <= 9)).all()


def test_spacing_model_recovers_a_known_power_law() -> None:
    n = 32
    z, y, x = np.mgrid[:n, :n, :n] - 15.5
    r = np.sqrt(z**2 + y**2 + x**2)
    shapes = np.stack([r <= radius for radius in (4.0, 6.0, 8.0, 10.0, 12.0)])
    counts = shapes.reshape(5, -1).sum(axis=1)
    spacing = np.exp(2.0 - 0.5 * np.log(counts))
    model = gan_module.spacing_model(shapes, spacing)
    assert model["spacing_slope"] == pytest.approx(-0.5, abs=1e-9)
    assert model["spacing_intercept"] == pytest.approx(2.0, abs=1e-9) and model["spacing_residual_sd"] < 1e-9


def test_untrained_generator_draws_the_template_as_one_closed_shape(untrained, training) -> None:
    quality = untrained.quality(8, seed=0)
    assert gan_module.single_object_share(quality) == 1.0
    samples = untrained.sample(3, seed=2)
    spacing = [s.voxel_size_nm[0] for s in samples]
    assert len(set(spacing)) == 3  # a size per sample, from the training spacings' lognormal
    _, training_spacing = gan_module.voxelize_objects(training, "mitochondrion")
    assert min(training_spacing) * 0.7 < np.median(spacing) < max(training_spacing) * 1.3
    for labels in samples:
        assert labels.class_names == {1: "mitochondrion"} and ndimage.label(labels.data)[1] == 1
    meshes = untrained.sample_meshes(1, seed=2)
    assert len(meshes) == 1 and len(meshes[0].triangles) > 100


def test_weights_round_trip_through_npz_and_a_weights_only_state_dict(untrained, tmp_path) -> None:
    reference = untrained.raw_samples(2, seed=4)
    for name in ("gan.npz", "gan.pt"):
        path = tmp_path / name
        untrained.save(path)
        loaded = cs.method("generate.gan").load(path)
        assert np.array_equal(loaded.raw_samples(2, seed=4), reference)
    state = torch.load(tmp_path / "gan.pt", map_location="cpu", weights_only=True)
    assert "generator/template" in state["state_dict"] and state["meta"]["format"] == gan_module.FORMAT
    (tmp_path / "bad.pt").write_bytes(b"not a state dict")
    with pytest.raises(cs.InputError, match="not a generate.gan state-dict file"):
        cs.method("generate.gan").load(tmp_path / "bad.pt")


def test_same_seed_same_weights(training) -> None:
    first = cs.method("generate.gan", iterations=2, batch_size=4, seed=5)
    second = cs.method("generate.gan", iterations=2, batch_size=4, seed=5)
    other = cs.method("generate.gan", iterations=2, batch_size=4, seed=6)
    threads = torch.get_num_threads()
    hashes = [cs.content_hash(m.fit(training)) for m in (first, second, other)]
    assert hashes[0] == hashes[1] != hashes[2]
    assert torch.get_num_threads() == threads  # training on one thread leaves the caller's setting alone


def test_foreign_model_is_a_clear_error() -> None:
    with pytest.raises(cs.InputError, match="the model was made by generate.gmm, not by generate.gan"):
        cs.method("generate.gan").load(cs.Model("generate.gmm", {"x": np.zeros(2)}, {}))
    with pytest.raises(cs.InputError, match="no trained GAN; call fit\\(\\) or load\\(\\) first"):
        cs.method("generate.gan").sample(1)


def test_too_few_shapes_is_a_clear_error() -> None:
    with pytest.raises(cs.InputError, match="3 'mitochondrion' object.*too few to train a GAN; give at least 8"):
        cs.method("generate.gan").fit(capsules(3))


def test_object_touching_the_border_is_a_clear_error() -> None:
    data = np.asarray(capsules(8).data)[:, :, 10:]  # cut the first objects open
    with pytest.raises(cs.InputError, match=r"mitochondrion object \d+ touches the volume border.*crop"):
        cs.method("generate.gan").fit(cs.Labels(data, {1: "mitochondrion"}, VOXEL_NM))


def test_unknown_class_name_is_a_clear_error(training) -> None:
    with pytest.raises(cs.InputError, match="no class named 'vesicle'; their classes are 'mitochondrion'"):
        cs.method("generate.gan", class_name="vesicle").fit(training)


def descriptors(labels_list: list[cs.Labels]) -> tuple[np.ndarray, np.ndarray]:
    """Volume (nm³) and sphericity of every object (26-connected pieces of the non-zero labels)."""
    from cellscape_plugins.generate._descriptors import shape_descriptors
    from cellscape_plugins.generate._shapes import shapes_from_labels

    shapes = []
    for labels in labels_list:
        pieces, n = ndimage.label(labels.data > 0, structure=np.ones((3, 3, 3)))
        for k in range(1, n + 1):
            one = cs.Labels((pieces == k).astype(np.uint8), {1: "object"}, labels.voxel_size_nm, labels.origin_nm)
            shapes.extend(shapes_from_labels(one, [1], who="test"))
    table = shape_descriptors(shapes)
    return np.asarray(table.columns["volume_nm3"]), np.asarray(table.columns["sphericity"])


@pytest.fixture(scope="module")
def trained(training) -> gan_module.ShapeGAN:
    """A short seeded training (40 generator updates, about 30 s on one busy CPU thread)."""
    gan = cs.method("generate.gan", iterations=40, seed=0)
    gan.fit(training)
    return gan


@pytest.mark.slow
def test_short_training_learns_and_samples_stay_single_closed_objects(trained) -> None:
    wasserstein = trained.model.arrays["history/wasserstein"]
    assert wasserstein.shape == (40,) and np.isfinite(wasserstein).all()
    # the critic learns to tell training shapes from generated ones: its Wasserstein estimate rises from ~0
    assert abs(wasserstein[:3].mean()) < 0.1 and wasserstein[-5:].mean() > 0.5
    # the generator has left its template: samples differ from one another
    raw = trained.raw_samples(20, seed=3) >= 0.5
    overlap = [(raw[i] & raw[i + 1]).sum() / (raw[i] | raw[i + 1]).sum() for i in range(0, 20, 2)]
    assert np.mean(overlap) < 0.999
    assert gan_module.single_object_share(trained.quality(50, seed=3)) >= 0.95


@pytest.mark.slow
def test_short_training_samples_have_the_training_sizes_and_shapes(trained, training) -> None:
    from scipy import stats

    train_volume, train_sphericity = descriptors([training])
    volume, sphericity = descriptors(trained.sample(60, seed=3))
    assert len(volume) == 60  # one object per sample
    assert np.median(volume) == pytest.approx(np.median(train_volume), rel=0.10)
    assert stats.ks_2samp(np.log(train_volume), np.log(volume)).statistic < 0.3
    assert np.median(sphericity) == pytest.approx(np.median(train_sphericity), abs=0.03)
