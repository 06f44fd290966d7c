"""generate.gmm: parameter recovery on a known population, exact placement rules, fidelity, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from populations import (
    CELL_LOG_SD,
    CELL_MEDIAN_VOXELS,
    COUNT_MEAN,
    NAMES,
    NUCLEUS_FRACTION,
    NUCLEUS_OFFSET,
    VOLUME_LOG_SD,
    VOLUME_MEDIAN_VOXELS,
    VOXEL_NM,
    ellipsoid_mask,
    known_population,
)
from scipy import ndimage, stats

import cellscape as cs
from cellscape_plugins.generate import gmm as gmm_module


def side_by_side(cells: list[cs.Labels]) -> cs.Labels:
    """Several cells in one volume along x (each keeps its empty margin, so they stay separate)."""
    return cs.Labels(np.concatenate([c.data for c in cells], axis=2), NAMES, VOXEL_NM)


def table_value(table: cs.Table, component: str, parameter: str) -> float:
    for row in table.rows():
        if row["component"] == component and row["parameter"] == parameter:
            return row["value"]
    raise KeyError((component, parameter))


@pytest.fixture(scope="module")
def small_model() -> gmm_module.CellGMM:
    method = cs.method("generate.gmm", seed=3)
    method.fit(known_population(8, seed=11))
    return method


# ---------------------------------------------------------------------------------------------- fast tests


def test_moment_ellipsoid_of_a_voxelised_ellipsoid() -> None:
    semi = np.array([9.0, 6.0, 4.0])  # voxels along z, y, x
    mask = ellipsoid_mask((24, 24, 24), np.array([11.5, 11.7, 11.2]), semi)
    _, fitted, axes = gmm_module.moment_ellipsoid(np.argwhere(mask) * 10.0, (10.0, 10.0, 10.0))
    assert np.allclose(fitted, 10.0 * semi, rtol=0.02)
    assert abs(axes[0, 0]) > 0.999  # the longest axis is z


def test_exit_distance_of_a_sphere() -> None:
    mask = ellipsoid_mask((40, 40, 40), np.array([20.0, 20.0, 20.0]), np.full(3, 12.0))
    directions = np.array([[1, 0, 0], [0, 0, 1], [0, 0.6, 0.8]], float)
    distance = gmm_module.exit_distance(mask, np.full(3, 200.0), directions, (10.0, 10.0, 10.0))
    assert np.allclose(distance, 120.0, atol=6.0)  # half a voxel of sampling and the voxel staircase


def test_count_model_choice_and_negative_binomial_recovery() -> None:
    rng = np.random.default_rng(0)
    poisson = gmm_module._fit_counts(rng.poisson(6.0, 400).astype(float), "auto")
    assert poisson["distribution"] == "poisson" and poisson["mean"] == pytest.approx(6.0, rel=0.05)
    r, mean = 2.0, 6.0
    counts = rng.negative_binomial(r, r / (r + mean), 3000).astype(float)
    model = gmm_module._fit_counts(counts, "auto")
    assert model["distribution"] == "negative_binomial" and model["dispersion_p_value"] < 1e-6
    assert model["r"] == pytest.approx(r, rel=0.10) and model["mean"] == pytest.approx(mean, rel=0.10)
    with pytest.raises(cs.InputError, match="not over-dispersed .* use count_model 'poisson'"):
        gmm_module._fit_counts(np.full(20, 3.0), "negative_binomial")


def assert_valid_cell(labels: cs.Labels, instances: cs.Labels, margin_nm: float, gap_nm: float) -> None:
    """Exact voxel checks: one cell and one nucleus, organelles inside the cell, off the nucleus, never touching."""
    data, ids = labels.data, instances.data
    assert labels.class_names == NAMES and labels.voxel_size_nm == (VOXEL_NM,) * 3
    cell, nucleus = data > 0, data == 2
    assert ndimage.label(cell)[1] == 1 and ndimage.label(nucleus)[1] == 1
    border = np.concatenate([data[[0, -1]].ravel(), data[:, [0, -1]].ravel(), data[:, :, [0, -1]].ravel()])
    assert (border == 0).all()
    depth = ndimage.distance_transform_edt(cell, sampling=VOXEL_NM)
    off_nucleus = ndimage.distance_transform_edt(~nucleus, sampling=VOXEL_NM)
    assert ((ids > 0) == (data == 3)).all()
    for k in range(1, int(ids.max()) + 1):
        body = ids == k
        assert body.any()
        assert depth[body].min() > margin_nm and off_nucleus[body].min() > margin_nm
        others = (ids > 0) & ~body
        if others.any():
            assert ndimage.distance_transform_edt(~others, sampling=VOXEL_NM)[body].min() > gap_nm
    # the class image separates the organelles the same way: no two touch, even diagonally
    assert ndimage.label(data == 3, structure=np.ones((3, 3, 3)))[1] == ids.max()
    assert depth[nucleus].min() > margin_nm


def test_sampled_organelles_are_inside_the_cell_and_never_touch(small_model) -> None:
    p = small_model.params
    for labels, instances in small_model.sample_with_instances(4, seed=5):
        assert_valid_cell(labels, instances, p.margin_nm, p.gap_nm)


def test_same_seed_same_cells_and_model_round_trip(small_model, tmp_path) -> None:
    first = small_model.sample(2, seed=9)
    again = small_model.sample(2, seed=9)
    assert all(cs.content_hash(a) == cs.content_hash(b) for a, b in zip(first, again, strict=True))
    assert cs.content_hash(small_model.sample(1, seed=10)[0]) != cs.content_hash(first[0])
    path = small_model.save(tmp_path / "cell_model.npz")
    loaded = cs.method("generate.gmm", seed=3).load(path)
    assert cs.content_hash(loaded.model) == cs.content_hash(small_model.model)
    assert cs.content_hash(loaded.sample(2, seed=9)[1]) == cs.content_hash(first[1])
    assert not any(v.dtype == object for v in loaded.model.arrays.values())


def test_parameters_table(small_model) -> None:
    table = small_model.parameters_table()
    assert set(table.columns) == {"component", "parameter", "distribution", "value", "unit"}
    median_x = table_value(table, "cytosol", "semi_axis_a1_median")
    assert median_x == pytest.approx(VOXEL_NM * CELL_MEDIAN_VOXELS[0], rel=0.05)
    assert table_value(table, "mitochondrion", "position_components") >= 1


def test_spec_call_fits_on_cells_sharing_one_volume() -> None:
    method = cs.method("generate.gmm", seed=1)
    out = method(training=side_by_side(known_population(6, seed=2)))
    assert out["model"].meta["n_training_cells"] == 6
    assert set(out["labels"].label_values()) <= {1, 2, 3} and out["instances"].data.max() >= 0
    assert out["parameters"].n_rows > 20


def test_impossible_placement_is_a_clear_error(small_model) -> None:
    strict = cs.method("generate.gmm", gap_nm=900.0, max_attempts=5, max_cell_attempts=2, seed=3)
    strict.load(small_model.model)
    with pytest.raises(cs.InputError, match=r"could not sample a cell .* after 2 cells x 5 placement draws.*gap_nm"):
        strict.sample(3, seed=0)


def test_too_few_cells_is_a_clear_error() -> None:
    with pytest.raises(cs.InputError, match="2 training cell.*too few.*at least 5 cells"):
        cs.method("generate.gmm").fit(known_population(2, seed=4))


def test_cell_touching_the_border_is_a_clear_error() -> None:
    data = known_population(1, seed=5)[0].data[:, :, 8:]  # cut the cell open on the low-x side
    with pytest.raises(cs.InputError, match="training cell 1 of 1 touches the volume border.*crop"):
        cs.method("generate.gmm").fit(cs.Labels(data, NAMES, VOXEL_NM))


def test_unknown_class_name_is_a_clear_error() -> None:
    with pytest.raises(cs.InputError, match="no class named 'golgi'.*'cytosol', 'mitochondrion', 'nucleus'"):
        cs.method("generate.gmm", organelle_classes=["golgi"]).fit(known_population(1, seed=6))


def test_too_few_organelles_is_a_clear_error() -> None:
    cells = known_population(5, seed=7)
    data = [np.where(c.data == 3, 1, c.data).astype(np.uint8) for c in cells]
    for cell in data[:2]:  # one 2³ organelle beside the nucleus in two cells: 2 in all
        z, y, x = np.argwhere(cell == 1)[len(np.argwhere(cell == 1)) // 2]
        cell[z:z + 2, y:y + 2, x:x + 2] = np.where(cell[z:z + 2, y:y + 2, x:x + 2] == 1, 3, cell[z:z + 2, y:y + 2, x:x + 2])
    with pytest.raises(cs.InputError, match=r"only 2 'mitochondrion' object\(s\) in 5 training cells.*at least 5 in "
                                            "total, or drop 'mitochondrion' from 'organelle_classes'"):
        cs.method("generate.gmm").fit([cs.Labels(d, NAMES, VOXEL_NM) for d in data])


def test_mixed_voxel_sizes_are_a_clear_error() -> None:
    cells = known_population(5, seed=8)
    mixed = [*cells[:4], cs.Labels(cells[4].data, NAMES, 12.0)]
    with pytest.raises(cs.InputError, match="different voxel sizes .* resample them to one voxel size"):
        cs.method("generate.gmm").fit(mixed)


def test_training_and_model_together_or_a_foreign_model_are_clear_errors(small_model) -> None:
    with pytest.raises(cs.InputError, match="give 'training' labels to fit a model or a trained 'model', not both"):
        cs.method("generate.gmm")(training=known_population(1, seed=9)[0], model=small_model.model)
    foreign = cs.Model("generate.gan", {"x": np.zeros(2)}, {"format": "cellscape-wgan-gp-1"})
    with pytest.raises(cs.InputError, match="the model was made by generate.gan, not by generate.gmm"):
        cs.method("generate.gmm").load(foreign)


def test_no_training_source_is_a_clear_error() -> None:
    with pytest.raises(cs.InputError, match="give 'training' labels, a trained 'model', or set 'phantom_training_cells'"):
        cs.method("generate.gmm")()


# ---------------------------------------------------------------------------------------------- population tests


@pytest.fixture(scope="module")
def recovered() -> tuple[gmm_module.CellGMM, list[cs.Labels]]:
    training = known_population(80, seed=21)
    method = cs.method("generate.gmm", seed=0)
    method.fit(training)
    return method, training


@pytest.mark.slow
def test_known_population_parameters_are_recovered_within_10_percent(recovered) -> None:
    method, _ = recovered
    table = method.parameters_table()
    model = method.model
    assert model.meta["count_models"]["mitochondrion"]["distribution"] == "poisson"
    assert table_value(table, "mitochondrion", "count_mean") == pytest.approx(COUNT_MEAN, rel=0.10)
    volume_nm3 = VOLUME_MEDIAN_VOXELS * VOXEL_NM**3
    assert table_value(table, "mitochondrion", "volume_median") == pytest.approx(volume_nm3, rel=0.10)
    assert table_value(table, "mitochondrion", "volume_log_sd") == pytest.approx(VOLUME_LOG_SD, rel=0.10)
    for axis in (1, 2, 3):
        cell = table_value(table, "cytosol", f"semi_axis_a{axis}_median")
        assert cell == pytest.approx(VOXEL_NM * CELL_MEDIAN_VOXELS[axis - 1], rel=0.10)
        nucleus = table_value(table, "nucleus", f"semi_axis_a{axis}_median")
        assert nucleus == pytest.approx(NUCLEUS_FRACTION * VOXEL_NM * CELL_MEDIAN_VOXELS[axis - 1], rel=0.10)
    # the three cell semi-axes share one log-sd: pooled, 240 values estimate it within ~5 %
    pooled = math.sqrt(np.mean([table_value(table, "cytosol", f"semi_axis_a{a}_log_sd") ** 2 for a in (1, 2, 3)]))
    assert pooled == pytest.approx(CELL_LOG_SD, rel=0.10)
    assert table_value(table, "nucleus", "nucleus_offset_1_mean") == pytest.approx(NUCLEUS_OFFSET, rel=0.10)


def _organelle_volumes(cells: list[cs.Labels]) -> tuple[np.ndarray, np.ndarray]:
    volumes, counts = [], []
    for labels in cells:
        objects, n = ndimage.label(labels.data == 3, structure=np.ones((3, 3, 3)))
        counts.append(n)
        volumes.extend(np.bincount(objects.ravel())[1:] * VOXEL_NM**3)
    return np.asarray(volumes, float), np.asarray(counts, float)


def _organelle_depths(cells: list[cs.Labels]) -> np.ndarray:
    measured = [m for c in cells for m in gmm_module.measure_cells(c, "cytosol", "nucleus", ["mitochondrion"])]
    logit_t = np.concatenate([m.positions["mitochondrion"][:, 0] for m in measured])
    return 1.0 / (1.0 + np.exp(-logit_t))


@pytest.mark.slow
def test_sampled_descriptors_match_the_training_distributions(recovered) -> None:
    method, training = recovered
    samples = method.sample(60, seed=1)
    train_volumes, train_counts = _organelle_volumes(training)
    sample_volumes, sample_counts = _organelle_volumes(samples)
    assert stats.ks_2samp(np.log(train_volumes), np.log(sample_volumes)).statistic < 0.12
    assert stats.wasserstein_distance(train_counts, sample_counts) < 0.1 * COUNT_MEAN
    train_cells = np.array([(c.data > 0).sum() for c in training], float)
    sample_cells = np.array([(c.data > 0).sum() for c in samples], float)
    assert stats.ks_2samp(train_cells, sample_cells).statistic < 0.25
    assert abs(np.median(sample_cells) / np.median(train_cells) - 1) < 0.05
    # positions, measured back in each cell's frame: the fraction t of the way from nuclear envelope to membrane
    train_t, sample_t = _organelle_depths(training), _organelle_depths(samples)
    assert stats.ks_2samp(train_t, sample_t).statistic < 0.15
    assert abs(np.median(sample_t) - np.median(train_t)) < 0.05


@pytest.mark.slow
def test_spherical_harmonic_cells_keep_the_training_size_and_the_placement_rules() -> None:
    training = known_population(8, seed=11)
    method = cs.method("generate.gmm", cell_shape="spharm", spharm_degree=6, seed=3)
    method.fit(training)
    assert table_value(method.parameters_table(), "cytosol", "shape_space_modes") >= 3
    train_volumes = [int((c.data > 0).sum()) for c in training]
    for labels, instances in method.sample_with_instances(3, seed=2):
        assert 0.9 * min(train_volumes) < (labels.data > 0).sum() < 1.1 * max(train_volumes)
        assert_valid_cell(labels, instances, method.params.margin_nm, method.params.gap_nm)
