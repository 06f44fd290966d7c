"""segment.random_forest on an EM-like phantom: accuracy, the exported trees, chunking, saving and bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import needed_modules
from scipy import ndimage

import cellscape as cs
from cellscape_plugins.segment.features import FeatureBank
from cellscape_plugins.segment.random_forest import (
    FORMAT,
    ForestTables,
    RandomForest,
    estimate_class_prior,
    export_forest,
)

CLASSES = {1: "cytosol", 2: "membrane", 3: "mitochondria"}
FAST = {"n_trees": 30, "scales": [1.0, 1.6, 3.5]}  # 30 features; keeps the tests quick


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


def em_phantom(n: int = 64, snr: float = 3.0, seed: int = 0) -> tuple[cs.Volume, np.ndarray]:
    """A cell with a dark 2-voxel plasma membrane and three mitochondria (dark rim, grey matrix), blurred and noisy.

    Returns the volume (4 nm voxels) and the truth: 1 cytosol and outside, 2 membrane, 3 mitochondria.
    SNR is the membrane-to-cytosol contrast (0.6) over the noise standard deviation.
    """
    z, y, x = np.mgrid[:n, :n, :n].astype(np.float64) - (n - 1) / 2
    cell_radius = 0.42 * n
    radius = np.sqrt(z**2 + y**2 + (x / 1.1) ** 2)
    inside = radius < cell_radius
    membrane = inside & (radius >= cell_radius - 2)
    mitochondria = np.zeros(inside.shape, bool)
    rims = np.zeros(inside.shape, bool)
    for centre, axes in [((-9, -8, -7), (7, 6, 11)), ((10, 6, -5), (6, 10, 7)), ((-3, 11, 11), (6, 6, 8))]:
        d = np.sqrt(sum(((c - c0) / a) ** 2 for c, c0, a in zip((z, y, x), centre, axes, strict=True)))
        mitochondria |= d < 1
        rims |= (d < 1) & (d >= 1 - 1.5 / min(axes))
    truth = np.ones(inside.shape, np.uint8)
    truth[membrane] = 2
    truth[mitochondria] = 3
    image = np.where(inside, 0.7, 0.8)
    image[membrane] = 0.1
    image[mitochondria] = 0.45
    image[rims] = 0.2
    image = ndimage.gaussian_filter(image, 1.0)
    image += np.random.default_rng(seed).normal(0, 0.6 / snr, image.shape)
    return cs.Volume(image.astype(np.float32), 4.0), truth


def scribbles(truth: np.ndarray, fraction: float = 0.01, seed: int = 1) -> cs.Labels:
    """Sparse labels: small 7-voxel crosses at random places of each class, ~``fraction`` of the voxels in all."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(truth.shape, np.uint8)
    cross = ndimage.generate_binary_structure(3, 1)
    for value in CLASSES:
        inside = truth == value
        candidates = np.argwhere(inside)
        centres = candidates[rng.choice(len(candidates), int(fraction * truth.size / len(CLASSES) / 5), replace=False)]
        marks = np.zeros(truth.shape, bool)
        marks[tuple(centres.T)] = True
        labels[ndimage.binary_dilation(marks, cross) & inside] = value
    return cs.Labels(labels, CLASSES, 4.0)


@pytest.fixture(scope="module")
def phantom() -> tuple[cs.Volume, np.ndarray, cs.Labels]:
    volume, truth = em_phantom()
    return volume, truth, scribbles(truth)


@pytest.fixture(scope="module")
def trained(phantom: tuple[cs.Volume, np.ndarray, cs.Labels]) -> dict[str, Any]:
    volume, _, labels = phantom
    return RandomForest(**FAST)(volume, training_labels=labels)


def test_segments_membrane_and_mitochondria_from_one_percent_scribbles(phantom, trained) -> None:
    _, truth, labels = phantom
    assert 0.009 < np.count_nonzero(labels.data) / labels.data.size < 0.015
    assert set(trained) == {"labels", "probability", "model"}
    result = trained["labels"]
    assert result.class_names == CLASSES and result.voxel_size_nm == (4.0, 4.0, 4.0)
    assert dice(result.data == 2, truth == 2) >= 0.93  # measured 0.950 (0.914 without the class prior)
    assert dice(result.data == 3, truth == 3) >= 0.92  # measured 0.938 (0.909 without)
    assert dice(result.data == 1, truth == 1) >= 0.99  # measured 0.995


def test_probability_is_the_winning_class_probability(phantom, trained) -> None:
    volume = phantom[0]
    rf = RandomForest(**FAST).load(trained["model"])
    probabilities = rf.predict_proba(volume)
    assert probabilities.shape == (3, *volume.shape) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(trained["probability"].data, probabilities.max(0))
    np.testing.assert_array_equal(trained["labels"].data, np.array([1, 2, 3])[probabilities.argmax(0)])
    assert trained["probability"].data.min() >= 1 / 3 - 1e-6


def test_model_records_the_forest_and_its_features(trained) -> None:
    model = trained["model"]
    assert model.method == "segment.random_forest" and model.meta["format"] == FORMAT
    assert model.meta["class_values"] == [1, 2, 3] and model.meta["class_names"] == {"1": "cytosol", "2": "membrane",
                                                                                     "3": "mitochondria"}
    assert model.meta["n_features"] == 30 and len(model.meta["feature_names"]) == 30
    offsets = model.arrays["tree_offsets"]
    assert offsets.shape == (31,) and offsets[-1] == model.arrays["feature"].shape[0]
    assert model.arrays["probability"].shape == (offsets[-1], 3)


def test_compiled_traversal_equals_sklearn_predict_proba(phantom) -> None:
    from sklearn.ensemble import RandomForestClassifier

    volume, _, labels = phantom
    bank = FeatureBank(["gaussian", "hessian_eigenvalues", "gradient_magnitude"], [1.0, 3.5], volume.voxel_size_nm)
    features = bank.compute(volume.data, (slice(10, 40), slice(0, 64), slice(20, 44))).reshape(bank.n_features, -1)
    mask = labels.data[10:40, :, 20:44].reshape(-1) > 0
    for settings in [{"max_depth": None, "class_weight": "balanced"}, {"max_depth": 4, "class_weight": None,
                                                                        "min_samples_leaf": 5}]:
        forest = RandomForestClassifier(n_estimators=12, random_state=3, **settings).fit(
            features[:, mask].T, labels.data[10:40, :, 20:44].reshape(-1)[mask])
        model = cs.Model("segment.random_forest", export_forest(forest),
                         {"format": FORMAT, "n_features": bank.n_features, "class_values": [1, 2, 3]})
        tables = ForestTables(model, "test")
        ours = tables.predict_proba(features)
        assert ours.dtype == np.float32 and ours.shape == (3, features.shape[1])
        np.testing.assert_allclose(ours.T, forest.predict_proba(features.T), atol=1e-6)
        # voxels exactly on a threshold go left, as in scikit-learn: put every internal node's float32 threshold
        # into the tested feature of some voxel
        internal = model.arrays["children_left"] >= 0
        ties = np.repeat(features[:, :1], int(internal.sum()), axis=1)
        ties[model.arrays["feature"][internal], np.arange(ties.shape[1])] = tables.threshold[internal]
        np.testing.assert_allclose(tables.predict_proba(ties).T, forest.predict_proba(ties.T), atol=1e-6)


def test_traversal_uses_threads_without_changing_a_bit(trained) -> None:
    import numba

    tables = ForestTables(trained["model"], "test")
    features = np.random.default_rng(4).normal(0.5, 0.3, (30, 5000)).astype(np.float32)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        serial = tables.predict_proba(features)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        parallel = tables.predict_proba(features)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(parallel, serial)


def test_class_prior_is_recovered_from_posteriors() -> None:
    # two classes with unit-variance Gaussian likelihoods at -1 and +1, 90% / 10% of the voxels; a classifier
    # trained with equal priors gives posterior p(1 | x) = 1 / (1 + exp(2x)); EM must find 0.9 / 0.1 again
    rng = np.random.default_rng(0)
    n = 200_000
    x = np.where(rng.random(n) < 0.9, rng.normal(-1, 1, n), rng.normal(1, 1, n))
    first = 1 / (1 + np.exp(2 * x))
    prior = estimate_class_prior(np.stack([first, 1 - first]), np.array([0.5, 0.5]))
    np.testing.assert_allclose(prior, [0.9, 0.1], atol=0.006)
    # a classifier that learned nothing returns its training prior everywhere: no evidence, no change
    training = np.array([0.2, 0.3, 0.5])
    np.testing.assert_allclose(estimate_class_prior(np.repeat(training[:, None], 10, 1), training), training)


def test_estimated_class_prior_matches_the_volume_and_corrects_thin_classes(phantom, trained) -> None:
    volume, truth, labels = phantom
    model = trained["model"]
    assert model.meta["class_prior"] == "estimated" and model.meta["training_prior"] == [1 / 3] * 3
    frequencies = [float(np.mean(truth == v)) for v in (1, 2, 3)]  # 0.911, 0.071, 0.019
    np.testing.assert_allclose(model.meta["volume_prior"], frequencies, atol=0.01)  # measured 0.919, 0.067, 0.014
    plain = RandomForest(**FAST, class_prior="training")(volume, training_labels=labels)
    assert "volume_prior" not in plain["model"].meta
    for value, gain in ((2, 0.02), (3, 0.01)):  # membrane 0.914 -> 0.950, mitochondria 0.909 -> 0.938
        corrected = dice(trained["labels"].data == value, truth == value)
        assert corrected > dice(plain["labels"].data == value, truth == value) + gain
    # the same trees: without the prior the probabilities are the forest's own
    raw = RandomForest(**FAST).load(cs.Model(model.method, model.arrays, {
        k: v for k, v in model.meta.items() if k != "volume_prior"}))
    small = cs.Volume(volume.data[:20], 4.0)
    tables = ForestTables(model, "test")
    features = FeatureBank(model.meta["feature_groups"], model.meta["scales"], (4.0, 4.0, 4.0)).compute(small.data)
    np.testing.assert_array_equal(raw.predict_proba(small).reshape(3, -1), tables.predict_proba(features.reshape(30, -1)))


def test_save_and_load_round_trip_gives_identical_predictions(phantom, trained, tmp_path: Path) -> None:
    volume = phantom[0]
    small = cs.Volume(volume.data[:40, 10:50, 12:52], 4.0)
    first = RandomForest(**FAST).load(trained["model"])
    path = first.save(tmp_path / "forest.npz")
    assert isinstance(cs.read(path), cs.Model)
    again = RandomForest(**FAST).load(path)(small)
    from_input = RandomForest(**FAST)(small, model=cs.read(path))
    expected = first(small)
    for result in (again, from_input):
        np.testing.assert_array_equal(result["labels"].data, expected["labels"].data)
        np.testing.assert_array_equal(result["probability"].data, expected["probability"].data)


def test_chunked_prediction_equals_whole_volume_prediction(phantom, trained) -> None:
    volume = phantom[0]
    small = cs.Volume(volume.data[5:45, 2:40, 20:64], (8.0, 4.0, 4.0))  # anisotropic: z halo differs from y, x
    whole = RandomForest(**FAST, chunk_voxels=64, n_jobs=1).load(trained["model"])(small)
    for chunk, threads in ((13, 2), (13, 1), (30, 3)):
        chunked = RandomForest(**FAST, chunk_voxels=chunk, n_jobs=threads).load(trained["model"])(small)
        np.testing.assert_array_equal(chunked["labels"].data, whole["labels"].data)
        np.testing.assert_array_equal(chunked["probability"].data, whole["probability"].data)


def test_block_prediction_equals_the_features_of_the_whole_volume_classified_at_once(phantom, trained) -> None:
    volume = cs.Volume(phantom[0].data[3:50, 7:60, 0:41], (8.0, 4.0, 4.0))
    rf = RandomForest(**FAST, chunk_voxels=9, n_jobs=2).load(trained["model"])
    bank = rf.feature_bank(volume, trained=True)
    assert bank.halo == (11, 21, 21)  # wider than the 9-voxel blocks: every block reads far beyond itself
    # the whole-volume computation: one feature stack of the whole volume (its scales one after the other on one
    # thread), one traversal of all its voxels
    serial = RandomForest(**FAST, n_jobs=1).load(trained["model"])
    whole = serial._chunk_probabilities(volume, bank, tuple(slice(0, n) for n in volume.shape))
    np.testing.assert_array_equal(rf.predict_proba(volume), whole)
    out = rf(volume)
    np.testing.assert_array_equal(out["labels"].data, np.array([1, 2, 3], np.uint8)[whole.argmax(0)])
    np.testing.assert_array_equal(out["probability"].data, whole.max(0))
    assert out["labels"].data.dtype == np.uint8 and out["probability"].data.dtype == np.float32


def test_probability_in_float16_halves_the_output_and_keeps_the_labels(phantom, trained) -> None:
    volume = cs.Volume(phantom[0].data[:32, :40, :36], 4.0)
    full = RandomForest(**FAST).load(trained["model"])(volume)
    half = RandomForest(**FAST, probability_dtype="float16").load(trained["model"])(volume)
    assert half["probability"].data.dtype == np.float16
    assert half["probability"].data.nbytes * 2 == full["probability"].data.nbytes
    np.testing.assert_array_equal(half["labels"].data, full["labels"].data)
    error = np.abs(half["probability"].data.astype(np.float32) - full["probability"].data)
    assert error.max() <= 2.0**-11  # float16 rounding of a value in [1/3, 1]
    proba = RandomForest(**FAST).load(trained["model"]).predict_proba(volume, dtype=np.float16)
    assert proba.dtype == np.float16 and proba.shape == (3, *volume.shape)
    with pytest.raises(cs.InputError, match="predict_proba dtype must be float32 or float16, got uint8"):
        RandomForest(**FAST).load(trained["model"]).predict_proba(volume, dtype=np.uint8)
    with pytest.raises(cs.InputError, match="parameter 'probability_dtype'"):
        RandomForest(probability_dtype="uint8")


def _work_memory(rf: RandomForest, volume: cs.Volume) -> int:
    """Peak bytes numpy allocates while ``rf`` classifies ``volume``, beyond its two outputs (the input exists before)."""
    import tracemalloc

    tracemalloc.start()
    try:
        out = rf(volume)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak - out["labels"].data.nbytes - out["probability"].data.nbytes


def test_memory_beyond_input_and_outputs_is_bounded_by_the_block_not_the_volume(trained) -> None:
    edge = 16
    rng = np.random.default_rng(5)
    rf = RandomForest(**FAST, chunk_voxels=edge, n_jobs=1).load(trained["model"])
    work = {}
    for n in (48, 96):  # 27 and 216 blocks; both volumes have blocks whose halo lies inside the image
        volume = cs.Volume(rng.normal(0.7, 0.2, (n, n, n)).astype(np.float32), 4.0)
        work[n] = _work_memory(rf, volume)
    n_features, halo = 30, (21, 21, 21)
    # one block's features and the filters' work arrays on the block grown by the halo (see the module docstring)
    bound = 4 * (n_features * edge**3 + 4 * int(np.prod([edge + 2 * h for h in halo])))
    stack = 4 * n_features * 96**3  # what the features of the whole 96³ volume would take
    assert bound < stack / 25  # the bound can tell a blocked prediction from a whole-volume one
    assert work[48] <= bound and work[96] <= bound, (work, bound)  # measured 2.4 and 2.5 MB, bound 3.4 MB
    # 8x the voxels: the same largest block, and a few hundred bytes of bookkeeping per block (measured +0.1 to
    # +0.2 MB); the features of the whole volume would add 4 x 30 x (96³ - 48³) bytes = 93 MB
    assert work[96] - work[48] <= 0.1 * bound, work
    # two threads share a block (two scales filtered at once): still within the bound (measured 2.9 MB)
    two = RandomForest(**FAST, chunk_voxels=edge, n_jobs=2).load(trained["model"])
    assert _work_memory(two, volume) <= bound


def test_runner_chunks_equal_the_whole_volume_and_need_the_halo(phantom, trained, tmp_path: Path) -> None:
    from cellscape._chunked import run_chunked

    small = cs.Volume(phantom[0].data[5:45, 2:40, 20:64], (8.0, 4.0, 4.0))  # anisotropic: z halo differs from y, x
    method = RandomForest(**FAST)
    # the bank's reach: int(4σ + 0.5) of the largest σ (3.5 voxels of the finest axis, 1.75 along z) plus the
    # structure tensor's outer radius (σ/2)
    assert method.chunk_halo(small.voxel_size_nm) == (7 + 4, 14 + 7, 14 + 7)
    whole = method(small, model=trained["model"])
    out = run_chunked(method, {"volume": small, "model": trained["model"]}, (12, 24, 22), tmp_path)
    assert list(out) == ["labels", "probability", "model"] and out["model"] is trained["model"]
    assert isinstance(out["labels"].data, np.memmap) and out["labels"].class_names == CLASSES
    np.testing.assert_array_equal(np.asarray(out["labels"].data), whole["labels"].data)
    np.testing.assert_allclose(np.asarray(out["probability"].data), whole["probability"].data, rtol=0, atol=1e-6)

    class NoHalo(RandomForest):  # without the halo (and without the check that refuses a model reaching beyond it)
        def chunk_halo(self, voxel_size_nm):
            return (0, 0, 0)

        def _check_reach(self, volume):
            pass

    wrong = run_chunked(NoHalo(method.params), {"volume": small, "model": trained["model"]}, (12, 24, 22), tmp_path)
    assert np.abs(np.asarray(wrong["probability"].data) - whole["probability"].data).max() > 0.05


APPLY = """\
version: 1
steps:
  - id: apply
    use: segment.random_forest
    inputs: {{volume: {{file: v.ome.zarr}}, model: {{file: forest.npz}}}}
    with: {{scales: [1.0, 1.6, 3.5]}}
    {chunks}
"""


def test_spec_step_with_chunks_equals_the_whole_volume_prediction(phantom, trained, tmp_path: Path) -> None:
    cs.write(phantom[0], tmp_path / "v.ome.zarr")
    cs.write(trained["model"], tmp_path / "forest.npz")
    (tmp_path / "whole.yaml").write_text(APPLY.format(chunks=""))
    (tmp_path / "chunked.yaml").write_text(APPLY.format(chunks="chunks: [24, 32, 40]"))  # halo 21: 3 x 2 x 2 chunks
    whole = cs.run(tmp_path / "whole.yaml", run_dir=tmp_path / "run", report=False)
    chunked = cs.run(tmp_path / "chunked.yaml", run_dir=tmp_path / "run", report=False)
    assert chunked.computed == ["apply"]
    np.testing.assert_array_equal(chunked.artefact("apply", "labels").data, whole.artefact("apply", "labels").data)
    np.testing.assert_allclose(chunked.artefact("apply", "probability").data,
                               whole.artefact("apply", "probability").data, rtol=0, atol=1e-6)
    assert dice(chunked.artefact("apply", "labels").data == 2, phantom[1] == 2) >= 0.93
    assert chunked.artefact("apply", "model").meta["n_features"] == 30
    assert not list((tmp_path / "run" / "store" / "scratch").glob("*.npy"))  # the scratch copies are gone


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_chunked_prediction_on_dask_workers_equals_the_whole_volume(phantom, trained, tmp_path: Path) -> None:
    needed_modules("distributed")
    from cellscape._executor import DaskExecutor
    from cellscape._runner import Runner
    from cellscape._spec import load_spec

    cs.write(phantom[0], tmp_path / "v.ome.zarr")
    cs.write(trained["model"], tmp_path / "forest.npz")
    (tmp_path / "chunked.yaml").write_text(APPLY.format(chunks="chunks: 32"))
    whole = RandomForest(**FAST)(phantom[0], model=trained["model"])
    with DaskExecutor(workers=2) as executor:
        remote = Runner(load_spec(tmp_path / "chunked.yaml"), tmp_path / "dask").run(executor=executor, report=False)
    np.testing.assert_array_equal(remote.artefact("apply", "labels").data, whole["labels"].data)
    np.testing.assert_allclose(remote.artefact("apply", "probability").data, whole["probability"].data, atol=1e-6)


def test_a_model_reaching_beyond_the_declared_halo_is_refused(phantom, trained) -> None:
    # the halo is declared from the parameters (scales [1.0]: radius 4 + 2); the model's filters reach 14 + 7
    with pytest.raises(cs.InputError, match=r"reach \(21, 21, 21\) voxels, beyond the halo \(6, 6, 6\).*set "
                       r"'scales' to \[1.0, 1.6, 3.5\]"):
        RandomForest(scales=[1.0])(phantom[0], model=trained["model"])


def test_same_seed_same_forest_other_seed_other_forest(phantom) -> None:
    volume, _, labels = phantom
    small = {"n_trees": 5, "scales": [1.0, 3.5], "features": ["gaussian", "hessian_eigenvalues"]}
    first = RandomForest(**small, seed=7).fit(volume, labels)
    second = RandomForest(**small, seed=7, n_jobs=1).fit(volume, labels)
    other = RandomForest(**small, seed=8).fit(volume, labels)
    for name, array in first.arrays.items():
        np.testing.assert_array_equal(second.arrays[name], array)
    assert cs.content_hash(first) == cs.content_hash(second) != cs.content_hash(other)


# -- bad input ---------------------------------------------------------------------------------------------------------

def test_training_labels_of_another_shape(phantom) -> None:
    volume = phantom[0]
    with pytest.raises(cs.InputError, match=r"segment.random_forest: input 'training_labels' has shape \(64, 64, 32\)"):
        RandomForest(**FAST)(volume, training_labels=cs.Labels(np.ones((64, 64, 32), np.uint8)))


def test_no_labeled_voxels_or_one_class(phantom) -> None:
    volume = phantom[0]
    with pytest.raises(cs.InputError, match="segment.random_forest: input 'training_labels' has no labeled voxel"):
        RandomForest(**FAST)(volume, training_labels=cs.Labels(np.zeros(volume.shape, np.uint8)))
    one = np.zeros(volume.shape, np.uint8)
    one[:4] = 2
    with pytest.raises(cs.InputError, match="labels only class 2; label at least two classes"):
        RandomForest(**FAST).fit(volume, cs.Labels(one))


def test_nan_in_the_volume_is_refused() -> None:
    data = np.zeros((8, 8, 8), np.float32)
    data[3, 3, 3] = np.nan
    with pytest.raises(cs.InputError, match="Volume: data holds 1 NaN or infinite value"):
        cs.Volume(data)


def test_neither_labels_nor_model_and_both(phantom, trained) -> None:
    volume, _, labels = phantom
    with pytest.raises(cs.InputError, match="segment.random_forest: give 'training_labels' .* or a trained 'model'"):
        RandomForest(**FAST)(volume)
    with pytest.raises(cs.InputError, match="not both"):
        RandomForest(**FAST)(volume, training_labels=labels, model=trained["model"])
    with pytest.raises(cs.InputError, match="no trained forest; call fit"):
        RandomForest(**FAST).predict_proba(volume)
    with pytest.raises(cs.InputError, match="nothing to save"):
        RandomForest(**FAST).save("never.npz")


def test_model_of_another_method_or_inconsistent_features(phantom, trained) -> None:
    with pytest.raises(cs.InputError, match="the model was made by segment.unet, not by segment.random_forest"):
        RandomForest(**FAST).load(cs.Model("segment.unet", {"w": np.zeros(3)}, {}))
    # applying a model uses the features it was trained on, whatever the training parameters say
    volume = phantom[0]
    other = RandomForest(n_trees=30, scales=[1.0]).load(trained["model"])
    np.testing.assert_array_equal(other.predict_proba(volume), RandomForest(**FAST).load(trained["model"]).predict_proba(volume))
    # a model whose recorded feature names do not match its recorded groups and scales is refused
    meta = {**trained["model"].meta, "scales": [1.0]}
    broken = cs.Model("segment.random_forest", trained["model"].arrays, meta)
    with pytest.raises(cs.InputError, match=r"trained on 30 features .*scales \[1.0\] give 10: the model file is inconsistent"):
        RandomForest(**FAST).load(broken)


def test_malformed_model_tables(trained) -> None:
    arrays = dict(trained["model"].arrays)
    arrays["feature"] = np.where(arrays["feature"] >= 0, 99, arrays["feature"])
    broken = cs.Model("segment.random_forest", arrays, trained["model"].meta)
    with pytest.raises(cs.InputError, match="malformed: node features must lie in 0..29"):
        RandomForest(**FAST).load(broken)
    arrays = dict(trained["model"].arrays)
    arrays["children_right"] = np.where(arrays["children_right"] >= 0, 1, -1).astype(np.int32)
    with pytest.raises(cs.InputError, match="malformed: a node is the child of two nodes"):
        RandomForest(**FAST).load(cs.Model("segment.random_forest", arrays, trained["model"].meta))
    arrays = dict(trained["model"].arrays)
    arrays["threshold"] = np.where(arrays["children_left"] >= 0, np.nan, arrays["threshold"])
    with pytest.raises(cs.InputError, match="malformed: thresholds must be numbers"):
        RandomForest(**FAST).load(cs.Model("segment.random_forest", arrays, trained["model"].meta))
    meta = {**trained["model"].meta, "volume_prior": [0.5, 0.5]}
    with pytest.raises(cs.InputError, match="volume_prior and training_prior must be 3 frequencies"):
        RandomForest(**FAST).load(cs.Model("segment.random_forest", trained["model"].arrays, meta))
    with pytest.raises(cs.InputError, match=r"forest \(missing tree_offsets, children_left"):
        RandomForest(**FAST).load(cs.Model("segment.random_forest", {"threshold": np.zeros(2)}, {"format": FORMAT}))


def test_bad_parameters() -> None:
    with pytest.raises(cs.InputError, match="parameter 'features'.*unknown: 'sobel'"):
        RandomForest(features=["gaussian", "sobel"])
    with pytest.raises(cs.InputError, match="parameter 'scales'"):
        RandomForest(scales=[1.0, 0.0])
    with pytest.raises(cs.InputError, match="parameter 'class_weight'"):
        RandomForest(class_weight="inverse")
    with pytest.raises(cs.InputError, match="parameter 'class_prior'"):
        RandomForest(class_prior="uniform")
