"""segment.unet: learns from sparse labels, deterministic, saves and loads safely, tiles without seams."""

from __future__ import annotations

import numpy as np
import pytest

import cellscape as cs

pytest.importorskip("torch")

SMALL = {"base_channels": 4, "depth": 2, "patch_voxels": 32, "batch_size": 4}


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
    unet = cs.method("segment.unet", iterations=80, augment=False, learning_rate=0.01, **SMALL)
    out = unet(cs.Volume(image, 1.0), training_labels=cs.Labels(truth, {}, 1.0))
    assert (out["labels"].data == truth).mean() > 0.97


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


def test_tiles_blend_without_seams(trained) -> None:
    unet, volume, _, _ = trained
    whole = cs.method("segment.unet", patch_voxels=64, base_channels=4, depth=2).load(unet.model)
    tiled = cs.method("segment.unet", patch_voxels=16, overlap=0.5, base_channels=4, depth=2).load(unet.model)
    a, b = whole.predict_proba(volume), tiled.predict_proba(volume)
    assert (a.argmax(0) == b.argmax(0)).mean() > 0.98
    assert np.abs(a - b).mean() < 0.05


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
    out = cs.method("segment.unet", dim=3, iterations=20, base_channels=4, depth=2, patch_voxels=16,
                    batch_size=2)(volume, training_labels=scribbles(truth, 0.05))
    assert out["labels"].shape == volume.shape
    assert dice(out["labels"].data, truth, 2) > 0.7


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
    import torch

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
