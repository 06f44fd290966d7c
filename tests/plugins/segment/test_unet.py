"""segment.unet: learns from sparse labels, sees context slices, corrects the class prior, deterministic, saves and
loads safely, tiles without seams, averages mirror images and transposes."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import needed_modules

import cellscape as cs

torch = needed_modules("torch")

# teacher None: most tests are about learning from the scribbles themselves (the forest teacher has its own tests)
SMALL = {"base_channels": 4, "depth": 2, "patch_voxels": 32, "batch_size": 4, "learning_rate": 0.01, "teacher": None}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> None:
    """Tiny networks gain nothing from threads, and on a busy machine idle-spinning threads slow them several-fold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def disk_cell(nz: int = 4, n: int = 48, seed: int = 0) -> tuple[cs.Volume, np.ndarray]:
    """A bright disk (class 2) on a dark background (class 1), noisy, the same in every slice."""
    rng = np.random.default_rng(seed)
    _, y, x = np.mgrid[:nz, :n, :n]
    truth = (((y - n / 2 + 3) ** 2 + (x - n / 2 - 2) ** 2) < (n / 3.5) ** 2).astype(np.uint16) + 1
    image = np.where(truth == 2, 1.0, 0.0) + rng.normal(0, 0.4, truth.shape)
    return cs.Volume(image.astype(np.float32), 4.0), truth


def scribbles(truth: np.ndarray, fraction: float, seed: int = 1) -> cs.Labels:
    rng = np.random.default_rng(seed)
    sparse = np.where(rng.random(truth.shape) < fraction, truth, 0).astype(np.uint16)
    return cs.Labels(sparse, {1: "background", 2: "cell"}, 4.0)


def dice(labels: np.ndarray, truth: np.ndarray, value: int) -> float:
    a, b = labels == value, truth == value
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


@pytest.fixture(scope="module")
def trained() -> tuple[cs.Method, cs.Volume, np.ndarray, dict]:
    volume, truth = disk_cell()
    unet = cs.method("segment.unet", iterations=60, **SMALL)
    out = unet(volume, training_labels=scribbles(truth, 0.02))
    return unet, volume, truth, out


def test_learns_from_two_percent_of_the_voxels(trained) -> None:
    unet, _, truth, out = trained
    assert dice(out["labels"].data, truth, 2) > 0.9
    assert dice(out["labels"].data, truth, 1) > 0.9
    assert np.mean(unet.history[-10:]) < 0.7 * np.mean(unet.history[:5])
    assert out["labels"].class_names == {1: "background", 2: "cell"}
    probability = out["probability"].data
    assert probability.min() >= 0.5 - 1e-6 and probability.max() <= 1.0 + 1e-6  # the winner of two classes


def test_overfits_a_tiny_volume_with_dense_labels() -> None:
    rng = np.random.default_rng(5)
    image = rng.normal(0, 1, (2, 32, 32)).astype(np.float32)
    truth = (image > 0.3).astype(np.uint16) + 1  # a pixel-wise rule the network must memorise
    unet = cs.method("segment.unet", iterations=150, augment=False, class_prior="training", **SMALL)
    out = unet(cs.Volume(image, 1.0), training_labels=cs.Labels(truth, {}, 1.0))
    assert (out["labels"].data == truth).mean() > 0.97


@pytest.mark.parametrize(("context", "accuracy"), [(1, (0.95, 1.0)), (0, (0.0, 0.7))])
def test_context_slices_let_the_network_see_the_neighbouring_planes(context, accuracy) -> None:
    rng = np.random.default_rng(6)
    image = rng.normal(0, 1, (6, 32, 32)).astype(np.float32)
    truth = np.ones(image.shape, np.uint16)
    truth[1:] += image[:-1] > 0  # a voxel's class is the sign of the voxel below it: invisible in its own plane
    labels = cs.Labels(np.where(np.arange(6)[:, None, None] > 0, truth, 0).astype(np.uint16), {}, 1.0)
    unet = cs.method("segment.unet", iterations=80, augment=False, context_slices=context, class_prior="training",
                     **SMALL)
    out = unet(cs.Volume(image, 1.0), training_labels=labels)
    assert unet.model.arrays["down.0.0.weight"].shape[1] == 2 * context + 1  # the slices enter as channels
    low, high = accuracy
    assert low < (out["labels"].data[1:] == truth[1:]).mean() <= high


def test_class_prior_is_taken_from_the_volume(trained) -> None:
    unet, volume, truth, _ = trained
    meta = unet.model.meta
    share = (truth == 2).mean()  # 0.26 of the voxels are in the disk; the scribbles' prior is uniform
    assert meta["class_prior"] == "mean" and meta["training_prior"] == [0.5, 0.5]  # balanced class weights
    one_step = meta["volume_prior"][1]
    assert share < one_step < 0.45  # the mean posterior: towards the volume's share, not all the way
    labels = scribbles(truth, 0.02)
    em = cs.method("segment.unet", class_prior="estimated", iterations=60, **SMALL)
    em.fit(volume, labels)
    assert abs(em.model.meta["volume_prior"][1] - share) < 0.7 * abs(one_step - share)  # EM goes further
    plain = cs.method("segment.unet", class_prior="training", iterations=60, **SMALL)
    raw = plain(volume, training_labels=labels)
    assert plain.model.meta["volume_prior"] is None
    assert dice(raw["labels"].data, truth, 2) > 0.85


def test_mirror_averaging_makes_the_prediction_mirror_symmetric(trained) -> None:
    unet, volume, _, _ = trained  # 48 x 48 planes: one tile, no padding, so the only asymmetry is the network's
    flipped = cs.Volume(np.ascontiguousarray(volume.data[:, ::-1, :]), 4.0)
    averaged = cs.method("segment.unet", **SMALL).load(unet.model)
    np.testing.assert_allclose(averaged.predict_proba(flipped), averaged.predict_proba(volume)[:, :, ::-1], atol=1e-5)
    single = cs.method("segment.unet", test_time_flips=False, **SMALL).load(unet.model)
    assert np.abs(single.predict_proba(flipped) - single.predict_proba(volume)[:, :, ::-1]).max() > 1e-3


@pytest.mark.parametrize("view", ["transposed", "upside down"])
def test_test_time_averaging_covers_transposes_and_z_mirrors(trained, view) -> None:
    unet, volume, _, _ = trained  # 2 context slices: the z mirror reverses them
    move = (lambda a: a.swapaxes(-1, -2)) if view == "transposed" else (lambda a: a[..., ::-1, :, :])
    other = cs.Volume(np.ascontiguousarray(move(volume.data)), 4.0)
    averaged = cs.method("segment.unet", **SMALL).load(unet.model)
    np.testing.assert_allclose(averaged.predict_proba(other), move(averaged.predict_proba(volume)), atol=1e-5)
    single = cs.method("segment.unet", test_time_flips=False, **SMALL).load(unet.model)
    assert np.abs(single.predict_proba(other) - move(single.predict_proba(volume))).max() > 1e-3


def test_robust_normalisation_ignores_a_few_extreme_voxels() -> None:
    from cellscape_plugins.segment.unet import robust_normalisation

    rng = np.random.default_rng(3)
    data = rng.normal(5.0, 2.0, (40, 50, 50)).astype(np.float32)
    centre, scale = robust_normalisation(data)
    assert centre == pytest.approx(5.0, abs=0.02) and scale == pytest.approx(2.0, rel=0.02)
    data.ravel()[rng.choice(data.size, data.size // 1000, replace=False)] = 1e4  # gold beads
    assert robust_normalisation(data) == pytest.approx((centre, scale), rel=0.02)


def test_same_seed_same_network() -> None:
    volume, truth = disk_cell(nz=2, n=32)
    labels = scribbles(truth, 0.05)
    first = cs.method("segment.unet", iterations=5, **SMALL)
    second = cs.method("segment.unet", iterations=5, **SMALL)
    a, b = first.fit(volume, labels), second.fit(volume, labels)
    for name in a.arrays:
        np.testing.assert_array_equal(a.arrays[name], b.arrays[name])
    other = cs.method("segment.unet", iterations=5, seed=1, **SMALL).fit(volume, labels)
    assert any(not np.array_equal(a.arrays[k], other.arrays[k]) for k in a.arrays)


@pytest.mark.parametrize("suffix", [".npz", ".pt"])
def test_save_load_round_trip(trained, tmp_path, suffix) -> None:
    unet, volume, _, out = trained
    unet.save(tmp_path / f"net{suffix}")
    fresh = cs.method("segment.unet", **SMALL).load(tmp_path / f"net{suffix}")
    np.testing.assert_array_equal(fresh.predict_proba(volume), unet.predict_proba(volume))
    again = cs.method("segment.unet", **SMALL)(volume, model=fresh.model)
    np.testing.assert_array_equal(again["labels"].data, out["labels"].data)


def test_tiles_leave_no_seams(trained) -> None:
    unet, volume, _, _ = trained  # depth 2: a receptive margin of 10 voxels, so 32-voxel tiles keep 12-voxel cores
    whole = cs.method("segment.unet", **SMALL).load(unet.model)
    tiled = cs.method("segment.unet", tile_voxels=32, **SMALL).load(unet.model)
    np.testing.assert_allclose(tiled.predict_proba(volume), whole.predict_proba(volume), atol=2e-5)


@pytest.mark.parametrize("depth", [2, 3])
def test_receptive_margin_bounds_what_a_voxel_sees(depth) -> None:
    from cellscape_plugins.segment._unet_net import build
    from cellscape_plugins.segment.unet import receptive_margin

    margin, stride = receptive_margin(depth), 2 ** (depth - 1)
    torch.manual_seed(0)
    net = build(2, 2, 4, depth, 1).eval()
    with torch.no_grad():
        for module in net.modules():  # positive weights: every path from an input voxel reaches the output
            if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                module.weight.abs_()
        blank = net(torch.zeros(1, 1, 128, 128))
        reach = []
        for phase in range(stride):  # an input voxel at every position on the pooling grid
            x = torch.zeros(1, 1, 128, 128)
            x[0, 0, 64 + phase, 64 + phase] = 1.0
            changed = np.argwhere((net(x) - blank).abs().amax(1)[0].numpy() > 0)
            reach.append(np.abs(changed - (64 + phase)).max())
    assert max(reach) <= margin  # nothing beyond the margin: tiles and chunks cut there give exact results
    assert max(reach) > margin - stride  # ... and the margin is no wider than the pooling grid needs


def test_tile_plan_cores_partition_the_axis() -> None:
    from cellscape_plugins.segment.unet import tile_plan

    plan = tile_plan(100, 40, 8)
    cores = np.concatenate([np.arange(low, high) for _, low, high in plan])
    np.testing.assert_array_equal(cores, np.arange(100))
    for start, low, high in plan:
        assert start % 4 == 0 and start + 40 <= 100
        assert low - start >= (8 if start > 0 else 0) and start + 40 - high >= (8 if start + 40 < 100 else 0)
    assert tile_plan(24, 40, 8) == [(0, 0, 24)]
    with pytest.raises(cs.InputError, match=r"'tile_voxels' \(16\) leaves no room inside the 8-voxel margins"):
        tile_plan(100, 16, 8)


@pytest.mark.parametrize("chunks", [(4, 16, 16), (6, 24, 32)])
def test_chunked_apply_equals_the_whole_volume(trained, tmp_path, chunks) -> None:
    needed_modules("dask")
    from cellscape._chunked import run_chunked

    unet, _, _, _ = trained
    volume, truth = disk_cell(nz=12, n=64, seed=3)
    apply = cs.method("segment.unet_apply", depth=2, tile_voxels=32)  # tiles smaller than a chunk: several per chunk
    assert apply.chunk_halo(volume.voxel_size_nm) == (2, 10, 10)  # the context slices, the receptive margin
    whole = apply(volume, model=unet.model)
    chunked = run_chunked(apply, {"volume": volume, "model": unet.model}, chunks, tmp_path)["labels"]
    assert chunked.class_names == whole.class_names
    agreement = float((np.asarray(chunked.data) == whole.data).mean())
    assert agreement >= 0.9999  # equal but for float rounding between tile shapes at near-ties
    assert dice(whole.data, truth, 2) > 0.9


def test_apply_checks_the_architecture(trained) -> None:
    unet, volume, _, _ = trained
    with pytest.raises(cs.InputError, match=r"segment.unet_apply: the model has depth: 2; set the same"):
        cs.method("segment.unet_apply")(volume, model=unet.model)
    with pytest.raises(cs.InputError, match="the model was made by segment.random_forest, not by segment.unet$"):
        cs.method("segment.unet_apply")(volume, model=cs.Model("segment.random_forest", {}))


def test_fine_tuning_starts_from_the_model(trained) -> None:
    unet, _, _, _ = trained
    volume, truth = disk_cell(seed=9)  # a "new cell type": other noise
    labels = scribbles(truth, 0.02, seed=4)
    tuned = cs.method("segment.unet", iterations=10, **SMALL)
    result = tuned(volume, training_labels=labels, model=unet.model)
    scratch = cs.method("segment.unet", iterations=10, **SMALL)
    scratch(volume, training_labels=labels)
    assert result["model"].meta["iterations"] == 70
    assert np.mean(tuned.history) < 0.6 * np.mean(scratch.history)
    assert dice(result["labels"].data, truth, 2) > 0.9


def test_three_d_network_runs() -> None:
    volume, truth = disk_cell(nz=16, n=32)
    out = cs.method("segment.unet", dim=3, iterations=40, base_channels=4, depth=2, patch_voxels=16, batch_size=2,
                    learning_rate=0.01, teacher=None)(volume, training_labels=scribbles(truth, 0.05))
    assert out["labels"].shape == volume.shape
    assert dice(out["labels"].data, truth, 2) > 0.9


def test_bad_input(trained, tmp_path) -> None:
    unet, volume, truth, _ = trained
    method = cs.method("segment.unet", iterations=1, **SMALL)
    with pytest.raises(cs.InputError, match=r"'training_labels' has shape \(4, 10, 10\) but the volume has"):
        method(volume, training_labels=cs.Labels(np.ones((4, 10, 10), np.uint16)))
    with pytest.raises(cs.InputError, match="has no labeled voxel"):
        method(volume, training_labels=cs.Labels(np.zeros(truth.shape, np.uint16)))
    with pytest.raises(cs.InputError, match="labels only class 2"):
        method(volume, training_labels=cs.Labels((truth == 2).astype(np.uint16) * 2))
    with pytest.raises(cs.InputError, match="give 'training_labels' to train a network, or a trained 'model'"):
        method(volume)
    with pytest.raises(cs.InputError, match="segment.unet: the model was made by segment.random_forest"):
        method(volume, model=cs.Model("segment.random_forest", {}))
    # a weights file of another architecture
    saved = {"state_dict": {k: torch.from_numpy(np.array(v)) for k, v in unet.model.arrays.items()},
             "meta": {**unet.model.meta, "base_channels": 8}}
    torch.save(saved, tmp_path / "other.pt")
    with pytest.raises(cs.InputError, match=r"other.pt\): the weights do not fit the network architecture \(wrong shapes"):
        cs.method("segment.unet").load(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(cs.InputError, match="junk.pt: not a segment.unet weights file"):
        cs.method("segment.unet").load(tmp_path / "junk.pt")
    with pytest.raises(cs.InputError, match="'dim': 4 is not one of"):
        cs.method("segment.unet", dim=4)


def test_missing_torch_is_reported(monkeypatch) -> None:
    import sys

    volume, truth = disk_cell(nz=1, n=16)
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(cs.MissingDependencyError, match=r"segment.unet needs the package 'torch'.*cellscape\[ml\]"):
        cs.method("segment.unet")(volume, training_labels=scribbles(truth, 0.5))


@pytest.mark.requires("sklearn")
def test_distillation_labels_keep_the_scribbles_and_take_the_rest_from_a_forest() -> None:
    from cellscape_plugins.segment.unet import distillation_labels

    volume, truth = disk_cell()
    sparse = scribbles(truth, 0.02)
    dense = distillation_labels(volume, sparse, seed=0)
    labeled = sparse.data > 0
    np.testing.assert_array_equal(dense.data[labeled], sparse.data[labeled])
    assert (dense.data > 0).all() and dense.class_names == sparse.class_names
    assert (dense.data[~labeled] == truth[~labeled]).mean() > 0.95  # the forest's guesses for the other 98%


@pytest.mark.requires("sklearn")
def test_a_forest_teacher_gives_a_dense_unweighted_training() -> None:
    from cellscape_plugins.segment.unet import training_steps

    volume, truth = disk_cell()
    unet = cs.method("segment.unet", iterations=60, **{**SMALL, "teacher": "random_forest"})
    out = unet(volume, training_labels=scribbles(truth, 0.02))
    meta = unet.model.meta
    assert meta["teacher"] == "random_forest" and meta["iterations"] == 60
    # no re-weighting: the training prior is the dense labels' class shares (the disk is 26% of the voxels)
    assert meta["class_prior"] == "training" and meta["volume_prior"] is None
    assert meta["training_prior"][1] == pytest.approx((truth == 2).mean(), abs=0.03)
    assert dice(out["labels"].data, truth, 2) > 0.9
    assert training_steps(cs.method("segment.unet").params) == 8000  # the default: taught by a forest
    assert training_steps(cs.method("segment.unet", teacher=None).params) == 1000


def test_an_unknown_teacher_is_refused() -> None:
    with pytest.raises(cs.InputError, match=r"segment.unet: parameter 'teacher': 'svm' is not one of None, 'random_forest'"):
        cs.method("segment.unet", teacher="svm")


def test_zero_steps_with_a_model_trains_no_teacher(trained, monkeypatch) -> None:
    from cellscape_plugins.segment import unet as unet_module

    def no_forest(*args, **kwargs):
        raise AssertionError("a teacher was trained for a network that does not train")

    monkeypatch.setattr(unet_module, "distillation_labels", no_forest)
    unet, volume, truth, _ = trained
    same = cs.method("segment.unet", iterations=0, **{**SMALL, "teacher": "random_forest"})
    same(volume, training_labels=scribbles(truth, 0.02), model=unet.model)
    for name, array in unet.model.arrays.items():
        np.testing.assert_array_equal(same.model.arrays[name], array)
