"""analyze.segmentation_metrics: scores checked against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

import cellscape as cs
from cellscape.cli import main
from cellscape_plugins.analyze.segmentation_metrics import (
    adapted_rand_error,
    boundary_f1,
    boundary_mask,
    boundary_precision_recall,
    dice,
    iou,
    pixel_error,
    variation_of_information,
)


def labels_3d(values: list[int], **kwargs) -> cs.Labels:
    return cs.Labels(np.asarray(values, np.uint16).reshape(1, 1, -1), **kwargs)


def test_dice_iou_pixel_error_by_hand() -> None:
    """pred = 0 1 1 1 0 2 2 0, ref = 0 1 1 0 2 2 2 2.

    Label 1: |P| = 3, |R| = 2, |P∩R| = 2 → Dice 4/5, IoU 2/3.
    Label 2: |P| = 2, |R| = 4, |P∩R| = 2 → Dice 4/6, IoU 2/4.
    Voxels 3, 4 and 7 differ → pixel error 3/8.
    """
    pred = np.array([0, 1, 1, 1, 0, 2, 2, 0])
    ref = np.array([0, 1, 1, 0, 2, 2, 2, 2])
    assert dice(pred, ref) == pytest.approx({1: 0.8, 2: 2 / 3})
    assert iou(pred, ref) == pytest.approx({1: 2 / 3, 2: 0.5})
    assert pixel_error(pred, ref) == pytest.approx(3 / 8)
    assert dice(pred, ref, labels=[2, 7]) == pytest.approx({2: 2 / 3, 7: 1.0})  # absent from both: perfect agreement
    assert iou(pred, ref, labels=[0]) == pytest.approx({0: 1 / 4})  # background {0, 4, 7} vs {0, 3}: 1 of 4 voxels


def test_adapted_rand_error_by_hand() -> None:
    """ref = 1 1 1 1 2 2 2 2: reference sizes a = (4, 4), Σa² = 32.

    Split, pred = 1 1 2 2 3 3 3 3: n_ij = 2, 2, 4 and b = (2, 2, 4), so Σn² = Σb² = 24;
    precision 24/24 = 1, recall 24/32 = 3/4, F = 6/7, error 1/7.
    Merge, pred = 1 × 8: n_ij = 4, 4, b = (8); Σn² = 32, Σb² = 64;
    precision 1/2, recall 1, F = 2/3, error 1/3.
    Unlabelled, ref = 1 1 1 1, pred = 1 1 0 0: the two 0 voxels are singletons:
    Σn² = 4 + 2 = 6, Σb² = 4 + 2 = 6, Σa² = 16; precision 1, recall 3/8, F = 6/11, error 5/11.
    """
    ref = np.array([1, 1, 1, 1, 2, 2, 2, 2])
    assert adapted_rand_error(np.array([1, 1, 2, 2, 3, 3, 3, 3]), ref) == pytest.approx((1 / 7, 1.0, 0.75))
    assert adapted_rand_error(np.ones(8, int), ref) == pytest.approx((1 / 3, 0.5, 1.0))
    assert adapted_rand_error(np.array([1, 1, 0, 0]), np.ones(4, int)) == pytest.approx((5 / 11, 1.0, 3 / 8))
    # reference background is ignored, whatever the prediction says there; label numbers do not matter
    assert adapted_rand_error(np.array([5, 6, 9, 9, 4, 4]), np.array([0, 0, 1, 1, 3, 3])) == pytest.approx((0, 1, 1))


def test_variation_of_information_by_hand() -> None:
    """ref = 1 1 1 1 2 2 2 2, pred = 1 1 1 2 2 2 2 2 (one voxel of object 1 given to object 2).

    split = H(pred|ref) = 1/2 · H(3/4, 1/4) (reference object 2 is whole);
    merge = H(ref|pred) = 5/8 · H(1/5, 4/5) (predicted object 1 is pure).
    """
    def h(*p: float) -> float:
        return -sum(x * np.log2(x) for x in p)

    ref = np.array([1, 1, 1, 1, 2, 2, 2, 2])
    pred = np.array([1, 1, 1, 2, 2, 2, 2, 2])
    split, merge = variation_of_information(pred, ref)
    assert split == pytest.approx(0.5 * h(0.75, 0.25))
    assert merge == pytest.approx(5 / 8 * h(0.2, 0.8))


def test_a_split_is_a_split_and_a_merge_is_a_merge() -> None:
    """Cutting one object in two halves costs exactly 1 bit of split and nothing of merge, and vice versa."""
    whole = np.ones((4, 4, 4), int)
    halves = whole.copy()
    halves[:, :, 2:] = 2
    assert variation_of_information(halves, whole) == pytest.approx((1.0, 0.0))
    assert variation_of_information(whole, halves) == pytest.approx((0.0, 1.0))
    error, precision, recall = adapted_rand_error(halves, whole)
    assert precision == 1.0 and recall < 1.0 and error > 0
    error, precision, recall = adapted_rand_error(whole, halves)
    assert recall == 1.0 and precision < 1.0 and error > 0


def test_identical_segmentations_score_perfectly() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, (6, 7, 8))
    assert dice(labels, labels) == {1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0}
    assert iou(labels, labels) == {1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0}
    assert pixel_error(labels, labels) == 0.0
    assert adapted_rand_error(labels, labels) == pytest.approx((0.0, 1.0, 1.0))
    assert variation_of_information(labels, labels) == pytest.approx((0.0, 0.0))
    assert boundary_f1(labels, labels, tolerance_voxels=0) == 1.0
    renumbered = np.array([0, 7, 3, 9, 2])[labels]  # instance scores ignore the numbers
    assert adapted_rand_error(renumbered, labels) == pytest.approx((0.0, 1.0, 1.0))
    assert variation_of_information(renumbered, labels) == pytest.approx((0.0, 0.0))


def test_boundary_mask_marks_both_sides_of_a_face() -> None:
    labels = np.array([[1, 1, 2], [1, 1, 2], [3, 3, 3]])
    np.testing.assert_array_equal(boundary_mask(labels), [[0, 1, 1], [1, 1, 1], [1, 1, 1]])
    assert not boundary_mask(np.ones((3, 3, 3), int)).any()  # the array's edge is not a boundary


def test_boundary_f1_by_hand() -> None:
    """ref boundary at voxels 3|4, pred boundary at 5|6 (the edge moved by two voxels).

    Predicted boundary voxels 5, 6 are 1 and 2 voxels from the reference boundary {3, 4};
    reference voxels 3, 4 are 2 and 1 voxels from {5, 6}. Tolerance 2: P = R = 1;
    tolerance 1: P = R = 1/2; tolerance 0: P = R = 0.
    """
    ref = np.array([1, 1, 1, 1, 2, 2, 2, 2, 2, 2])
    pred = np.array([1, 1, 1, 1, 1, 1, 2, 2, 2, 2])
    assert boundary_precision_recall(pred, ref, 2) == (1.0, 1.0)
    assert boundary_precision_recall(pred, ref, 1) == (0.5, 0.5)
    assert boundary_f1(pred, ref, 1) == pytest.approx(0.5)
    assert boundary_f1(pred, ref, 0) == 0.0


def test_boundary_tolerance_uses_the_voxel_size() -> None:
    """An edge two sections off in z: boundary rows {4, 5} vs {2, 3} are 1-2 voxels apart, 10-20 nm with 10 nm sections."""
    ref = np.zeros((8, 8), int)
    ref[3:] = 1
    pred = np.zeros((8, 8), int)
    pred[5:] = 1
    assert boundary_f1(pred, ref, tolerance_voxels=2) == 1.0
    assert boundary_precision_recall(pred, ref, tolerance_voxels=1) == (0.5, 0.5)
    assert boundary_f1(pred, ref, tolerance_voxels=2, voxel_size=(10.0, 1.0)) == 0.0
    assert boundary_precision_recall(pred, ref, tolerance_voxels=10, voxel_size=(10.0, 1.0)) == (0.5, 0.5)
    assert boundary_f1(pred, ref, tolerance_voxels=20, voxel_size=(10.0, 1.0)) == 1.0
    assert boundary_precision_recall(np.zeros(4, int), np.zeros(4, int)) == (1.0, 1.0)
    assert boundary_precision_recall(np.zeros(4, int), np.array([0, 0, 1, 1])) == (0.0, 0.0)


def test_shape_mismatch_names_both_shapes() -> None:
    for score in (dice, iou, pixel_error, adapted_rand_error, variation_of_information, boundary_f1):
        with pytest.raises(cs.InputError, match=r"shape \(2, 3\) but the reference has shape \(3, 2\)"):
            score(np.zeros((2, 3), int), np.zeros((3, 2), int))
    metrics = cs.method("analyze.segmentation_metrics")
    with pytest.raises(cs.InputError, match=r"'labels' has shape \(1, 1, 4\) but 'reference' has shape \(1, 1, 5\)"):
        metrics(labels_3d([0, 1, 1, 0]), labels_3d([0, 1, 1, 0, 0]))
    with pytest.raises(cs.InputError, match="input 'reference' .* is required"):
        metrics(labels_3d([0, 1]))
    with pytest.raises(cs.InputError, match="tolerance_voxels': -1 is out of range"):
        cs.method("analyze.segmentation_metrics", tolerance_voxels=-1)


def test_method_table_per_class_and_whole_volume() -> None:
    """The Dice/IoU/pixel-error example of the first test, with class names from the reference."""
    pred = labels_3d([0, 1, 1, 1, 0, 2, 2, 0], class_names={1: "pred-name", 2: "vesicle"})
    ref = labels_3d([0, 1, 1, 0, 2, 2, 2, 2], class_names={1: "mitochondrion"})
    table = cs.method("analyze.segmentation_metrics", tolerance_voxels=0)(pred, ref)
    rows = {r["class"]: r for r in table.rows()}
    assert list(rows) == ["mitochondrion", "vesicle", "all"]
    assert rows["mitochondrion"]["dice"] == pytest.approx(0.8)
    assert rows["mitochondrion"]["voxels_labels"] == 3 and rows["mitochondrion"]["voxels_reference"] == 2
    assert rows["vesicle"]["iou"] == pytest.approx(0.5)
    assert np.isnan(rows["vesicle"]["pixel_error"])
    # foreground {1,2,3,5,6} vs {1,2,4,5,6,7}: overlap 4 → Dice 8/11
    assert rows["all"]["dice"] == pytest.approx(8 / 11)
    assert rows["all"]["pixel_error"] == pytest.approx(3 / 8)
    assert np.isnan(rows["all"]["adapted_rand_error"]) and np.isnan(rows["all"]["vi_split"])
    assert table.units["dice"] == "" and table.units["vi_split"] == "bit" and table.units["voxels_labels"] == "voxel"


def test_method_instances_adds_rand_and_vi() -> None:
    ref = np.ones((4, 4, 4), np.uint16)
    ref[0] = 0
    pred = ref.copy()
    pred[:, :, 2:] *= 2  # every object cut in two
    table = cs.method("analyze.segmentation_metrics", instances=True, tolerance_voxels=0)(cs.Labels(pred), cs.Labels(ref))
    (row,) = table.rows()
    assert row["class"] == "all"
    assert row["dice"] == 1.0 and row["pixel_error"] == 0.0  # the foreground is right
    assert row["vi_split"] == pytest.approx(1.0) and row["vi_merge"] == pytest.approx(0.0)
    assert row["rand_precision"] == 1.0
    assert row["adapted_rand_error"] == pytest.approx(1 / 3)  # Σn² = 2·24², Σa² = 48²: recall 1/2, F 2/3
    # the new cut (x = 1|2, z = 1..3) is boundary; only its z = 1 row lies on the reference's boundary
    assert row["boundary_f1"] < 1.0


def test_registered_and_listed() -> None:
    info = next(m for m in cs.methods("analyze") if m.name == "analyze.segmentation_metrics")
    assert info.inputs == {"labels": "Labels", "reference": "Labels"}
    assert info.outputs == {"table": "Table"}


def test_cli_score(tmp_path, capsys) -> None:
    pred = tmp_path / "pred.npz"
    ref = tmp_path / "ref.npz"
    cs.write(labels_3d([0, 1, 1, 1, 0, 2, 2, 0]), pred)
    cs.write(labels_3d([0, 1, 1, 0, 2, 2, 2, 2], class_names={1: "mitochondrion"}), ref)
    assert main(["score", str(pred), str(ref)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["class", "voxels_labels", "[voxel]", "voxels_reference"]
    assert lines[1].split()[:4] == ["mitochondrion", "3", "2", "0.8"]
    assert lines[3].split()[0] == "all" and lines[3].split()[-1] == "-"
    assert main(["score", str(pred), str(ref), "--instances"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2

    assert main(["score", str(tmp_path / "missing.mrc"), str(ref)]) == 1
    assert "missing.mrc: no such file" in capsys.readouterr().err
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip archive")
    assert main(["score", str(broken), str(ref)]) == 1
    assert "error: InputError:" in capsys.readouterr().err
    cs.write(labels_3d([0, 1, 1]), pred)
    assert main(["score", str(pred), str(ref)]) == 1
    assert "'labels' has shape (1, 1, 3) but 'reference' has shape (1, 1, 8)" in capsys.readouterr().err
