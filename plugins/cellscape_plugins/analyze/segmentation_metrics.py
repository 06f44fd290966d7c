"""``analyze.segmentation_metrics``: how well a segmentation agrees with a reference.

Semantic (per class) scores:

``dice``, ``iou``
    overlap of the voxels carrying one label value in both images:
    Dice = 2|P∩R| / (|P|+|R|), IoU (Jaccard) = |P∩R| / |P∪R|.
``boundary_f1``
    boundary voxels (voxels whose label differs from one of their face
    neighbours, the 6-neighbourhood in 3D) that lie within a distance
    tolerance of the other image's boundary: precision over the predicted
    boundary, recall over the reference boundary, F1 their harmonic mean.
``pixel_error``
    the share of voxels whose labels differ (the ISBI 2012 pixel error when
    both images are binary).

Instance (whole-volume) scores, computed from the contingency table
``n_ij`` = number of voxels with reference label i and predicted label j:

``adapted_rand_error``
    the CREMI / SNEMI3D adapted Rand error, 1 − F-score of Rand precision
    Σn_ij² / Σb_j² and Rand recall Σn_ij² / Σa_i² (a_i, b_j: segment sizes).
    Voxels whose reference label is 0 are ignored; voxels predicted 0 inside the
    reference foreground count as single-voxel segments.
``variation_of_information``
    split = H(pred | ref), merge = H(ref | pred), in bits (CREMI's order);
    over-segmentation raises the split term, merging objects the merge term.
    Voxels whose reference label is 0 are ignored, as in CREMI.

Every function takes integer arrays of any dimension and the same shape.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import numpy as np

import cellscape as cs

__all__ = [
    "SegmentationMetrics",
    "adapted_rand_error",
    "boundary_f1",
    "boundary_mask",
    "boundary_precision_recall",
    "contingency_table",
    "dice",
    "iou",
    "pixel_error",
    "variation_of_information",
]


def _same_shape(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.shape != ref.shape:
        raise cs.InputError(
            f"the prediction has shape {pred.shape} but the reference has shape {ref.shape}; "
            "they must be on the same voxel grid (resample or crop one of them)"
        )
    return pred, ref


def _counts_of(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """How often each of ``labels`` occurs in ``values`` (0 for labels that do not occur)."""
    present, counts = np.unique(values, return_counts=True)
    result = np.zeros(len(labels), np.int64)
    if len(present):
        where = np.clip(np.searchsorted(present, labels), 0, len(present) - 1)
        found = present[where] == labels
        result[found] = counts[where[found]]
    return result


def _overlap_counts(pred: np.ndarray, ref: np.ndarray,
                    labels: Sequence[int] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    pred, ref = _same_shape(pred, ref)
    if labels is None:
        chosen = np.union1d(np.unique(pred), np.unique(ref))
        chosen = chosen[chosen != 0]
    else:
        chosen = np.asarray(sorted({int(v) for v in labels}), dtype=np.int64)
    chosen = chosen.astype(np.int64)
    pred_sizes = _counts_of(pred.ravel(), chosen)
    ref_sizes = _counts_of(ref.ravel(), chosen)
    both = _counts_of(pred[pred == ref].ravel(), chosen)
    return chosen, pred_sizes, ref_sizes, both


def dice(pred: np.ndarray, ref: np.ndarray, labels: Sequence[int] | None = None) -> dict[int, float]:
    """Dice coefficient of each label value.

    Parameters
    ----------
    pred, ref : ndarray of int, same shape
        Predicted and reference label images.
    labels : sequence of int, optional
        Label values to score; default every non-zero value present in either image.

    Returns
    -------
    dict[int, float]
        Label value -> 2|P∩R| / (|P|+|R|) in [0, 1]; 1.0 for a label absent from both images.
    """
    chosen, p, r, both = _overlap_counts(pred, ref, labels)
    total = p + r
    scores = np.divide(2.0 * both, total, out=np.ones(len(chosen)), where=total > 0)
    return {int(v): float(s) for v, s in zip(chosen, scores, strict=True)}


def iou(pred: np.ndarray, ref: np.ndarray, labels: Sequence[int] | None = None) -> dict[int, float]:
    """Intersection over union (Jaccard index) of each label value.

    Parameters and defaults as :func:`dice`; returns label value -> |P∩R| / |P∪R|
    (1.0 for a label absent from both images).
    """
    chosen, p, r, both = _overlap_counts(pred, ref, labels)
    union = p + r - both
    scores = np.divide(both.astype(float), union, out=np.ones(len(chosen)), where=union > 0)
    return {int(v): float(s) for v, s in zip(chosen, scores, strict=True)}


def pixel_error(pred: np.ndarray, ref: np.ndarray) -> float:
    """Share of voxels whose labels differ, in [0, 1] (the ISBI pixel error for binary images)."""
    pred, ref = _same_shape(pred, ref)
    return float(np.count_nonzero(pred != ref)) / pred.size


def _dense_codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values of a 1D array and the index of each element among them (int64)."""
    if values.dtype == bool:
        values = values.astype(np.uint8)
    distinct = np.unique(values)
    if len(distinct) and distinct[0] >= 0 and distinct[-1] < 4 * values.size + 1024:
        # a lookup table avoids np.unique(return_inverse=True), which sorts the whole array again
        lookup = np.zeros(int(distinct[-1]) + 1, np.int64)
        lookup[distinct] = np.arange(len(distinct))
        return distinct, lookup[values]
    return distinct, np.searchsorted(distinct, values).astype(np.int64)


def contingency_table(pred: np.ndarray, ref: np.ndarray, ignore_background: bool = True):
    """Sparse contingency table of overlaps.

    Parameters
    ----------
    pred, ref : ndarray of int, same shape
    ignore_background : bool
        Leave out voxels whose reference label is 0.

    Returns
    -------
    scipy.sparse.csr_matrix, shape (n_ref_labels, n_pred_labels), int64
        Entry (i, j) is the number of voxels with the i-th reference label and the j-th
        predicted label, labels in increasing order (``np.unique`` of the kept voxels).
    ref_labels, pred_labels : ndarray of int
        The label value of each row and column.
    """
    from scipy import sparse

    pred, ref = _same_shape(pred, ref)
    pred, ref = pred.ravel(), ref.ravel()
    if ignore_background:
        keep = ref != 0
        pred, ref = pred[keep], ref[keep]
    ref_labels, rows = _dense_codes(ref)
    pred_labels, cols = _dense_codes(pred)
    n_cells = len(ref_labels) * len(pred_labels)
    pairs = rows * len(pred_labels) + cols
    if n_cells <= 4 * len(pairs) + 1024:  # a dense count is cheaper than sorting the pairs
        counts = np.bincount(pairs, minlength=n_cells)
        pairs = np.flatnonzero(counts)
        counts = counts[pairs]
    else:
        pairs, counts = np.unique(pairs, return_counts=True)
    table = sparse.coo_matrix((counts.astype(np.int64), (pairs // len(pred_labels), pairs % len(pred_labels))),
                              shape=(len(ref_labels), len(pred_labels))).tocsr()
    return table, ref_labels, pred_labels


def adapted_rand_error(pred_instances: np.ndarray, ref_instances: np.ndarray) -> tuple[float, float, float]:
    """Adapted Rand error of an instance segmentation (CREMI / SNEMI3D definition).

    From the contingency table n_ij over the voxels whose reference label is not 0,
    with a_i the reference and b_j the predicted segment sizes there::

        precision = Σ n_ij² / Σ b_j²      (1 when no two reference objects are merged)
        recall    = Σ n_ij² / Σ a_i²      (1 when no reference object is split)
        error     = 1 − 2·precision·recall / (precision + recall)

    Voxels predicted 0 inside the reference foreground count as single-voxel segments
    (each adds 1 to Σ n_ij² and Σ b_j²). CREMI's code adds their count divided by the
    number of voxels instead, a normalisation left over from SNEMI3D; the two agree
    when the prediction labels every reference voxel.

    Parameters
    ----------
    pred_instances, ref_instances : ndarray of int, same shape
        Instance label images; 0 is background.

    Returns
    -------
    (error, precision, recall) : tuple of float, each in [0, 1]
        All 0-error (1.0, 1.0) when the reference has no foreground.
    """
    table, _, pred_labels = contingency_table(pred_instances, ref_instances, ignore_background=True)
    if table.nnz == 0:
        return 0.0, 1.0, 1.0
    a_i = np.asarray(table.sum(axis=1), float).ravel()  # reference sizes, predicted 0 included
    table = table.tocsc()
    unlabelled = 0.0
    if pred_labels[0] == 0:
        unlabelled = float(table[:, 0].sum())
        table = table[:, 1:]
    n_ij = table.data.astype(float)
    b_j = np.asarray(table.sum(axis=0), float).ravel()
    sum_ab = float(n_ij @ n_ij) + unlabelled
    sum_a = float(a_i @ a_i)
    sum_b = float(b_j @ b_j) + unlabelled
    precision = sum_ab / sum_b
    recall = sum_ab / sum_a
    error = 1.0 - 2.0 * precision * recall / (precision + recall)
    return float(error), float(precision), float(recall)


def _entropy_bits(counts: np.ndarray, total: float) -> float:
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum())


def variation_of_information(pred: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """Variation of information split into its over- and under-segmentation parts.

    Voxels whose reference label is 0 are ignored (as in CREMI); predicted 0 is an
    ordinary segment.

    Parameters
    ----------
    pred, ref : ndarray of int, same shape
        Instance label images.

    Returns
    -------
    (split, merge) : tuple of float, bits
        split = H(pred | ref) (objects cut into pieces), merge = H(ref | pred)
        (objects fused); their sum is the variation of information.
    """
    table, _, _ = contingency_table(pred, ref, ignore_background=True)
    total = float(table.sum())
    if total == 0:
        return 0.0, 0.0
    joint = _entropy_bits(table.data.astype(float), total)
    h_ref = _entropy_bits(np.asarray(table.sum(axis=1)).ravel().astype(float), total)
    h_pred = _entropy_bits(np.asarray(table.sum(axis=0)).ravel().astype(float), total)
    # max(.., 0) only removes rounding noise of order 1e-16
    return max(joint - h_ref, 0.0), max(joint - h_pred, 0.0)


def boundary_mask(labels: np.ndarray) -> np.ndarray:
    """Voxels whose label differs from at least one face neighbour (6-neighbourhood in 3D).

    The edge of the array is not a boundary. Both voxels of a differing pair are marked,
    so a boundary between two objects is two voxels thick.

    Parameters
    ----------
    labels : ndarray of int, any dimension

    Returns
    -------
    ndarray of bool, same shape
    """
    labels = np.asarray(labels)
    boundary = np.zeros(labels.shape, bool)
    for axis in range(labels.ndim):
        lower = [slice(None)] * labels.ndim
        upper = [slice(None)] * labels.ndim
        lower[axis], upper[axis] = slice(None, -1), slice(1, None)
        differs = labels[tuple(lower)] != labels[tuple(upper)]
        boundary[tuple(lower)] |= differs
        boundary[tuple(upper)] |= differs
    return boundary


def boundary_precision_recall(pred: np.ndarray, ref: np.ndarray, tolerance_voxels: float = 2,
                              voxel_size: Sequence[float] | None = None) -> tuple[float, float]:
    """Share of predicted boundary near the reference boundary, and of reference boundary near the predicted one.

    Parameters
    ----------
    pred, ref : ndarray of int, same shape
    tolerance_voxels : float
        Largest distance at which boundary voxels still match, in voxels of the finest axis.
    voxel_size : sequence of float, optional
        Voxel edge length per axis (e.g. nm, (z, y, x)); distances are measured in these
        units and the tolerance is ``tolerance_voxels * min(voxel_size)``. Default isotropic.

    Returns
    -------
    (precision, recall) : tuple of float in [0, 1]
        (1, 1) when neither image has a boundary, (0, 0) when only one of them has none.
    """
    from scipy import ndimage

    pred, ref = _same_shape(pred, ref)
    if tolerance_voxels < 0:
        raise cs.InputError(f"tolerance_voxels must be >= 0, got {tolerance_voxels}")
    sampling = np.ones(pred.ndim) if voxel_size is None else np.asarray(voxel_size, float)
    if sampling.shape != (pred.ndim,) or np.any(sampling <= 0):
        raise cs.InputError(f"voxel_size must give {pred.ndim} positive lengths, got {voxel_size}")
    tolerance = tolerance_voxels * float(sampling.min())
    pred_edge, ref_edge = boundary_mask(pred), boundary_mask(ref)
    n_pred, n_ref = int(pred_edge.sum()), int(ref_edge.sum())
    if n_pred == 0 or n_ref == 0:
        return (1.0, 1.0) if n_pred == n_ref else (0.0, 0.0)
    to_ref = ndimage.distance_transform_edt(~ref_edge, sampling=sampling)
    to_pred = ndimage.distance_transform_edt(~pred_edge, sampling=sampling)
    # a small slack so that a tolerance of exactly k voxels accepts distance k despite rounding
    slack = 1e-9 * float(sampling.min())
    precision = float(np.count_nonzero(to_ref[pred_edge] <= tolerance + slack)) / n_pred
    recall = float(np.count_nonzero(to_pred[ref_edge] <= tolerance + slack)) / n_ref
    return precision, recall


def boundary_f1(pred: np.ndarray, ref: np.ndarray, tolerance_voxels: float = 2,
                voxel_size: Sequence[float] | None = None) -> float:
    """Boundary F1 score: harmonic mean of :func:`boundary_precision_recall`, in [0, 1].

    1.0 when both images have no boundary at all.
    """
    precision, recall = boundary_precision_recall(pred, ref, tolerance_voxels, voxel_size)
    if precision + recall == 0:
        return 0.0
    return 2.0 * precision * recall / (precision + recall)


@attrs.frozen
class SegmentationMetricsParams:
    instances: bool = cs.param(
        False, help="the images hold instances: score the foreground as one class and add adapted Rand error and "
                    "variation of information (per-label rows would compare arbitrary instance numbers)")
    tolerance_voxels: float = cs.param(2.0, ge=0, unit="voxel",
                                       help="boundary F1: largest distance at which boundaries match (finest axis)")
    use_voxel_size: bool = cs.param(True, help="boundary F1: measure distances in nm using the reference's voxel size")


NAN = float("nan")


class SegmentationMetrics(cs.Analyzer):
    """Dice, IoU and boundary F1 per class; pixel error, adapted Rand error and VI of the whole volume.

    Outputs
    -------
    table : Table
        One row per class (every non-zero label value in either image, named from the
        reference's class names, then the prediction's, else ``label_<value>``), then one
        row ``all`` for the whole volume. Columns: ``class``; ``voxels_labels`` and
        ``voxels_reference`` (voxel counts); ``dice``, ``iou``, ``boundary_f1``
        (on the ``all`` row: foreground, i.e. any non-zero label, against background,
        and the boundaries of the whole label images); ``pixel_error`` (share of voxels
        whose labels differ; with ``instances`` whose foreground differs),
        ``adapted_rand_error``, ``rand_precision``, ``rand_recall``, ``vi_split``,
        ``vi_merge`` (bits) — the whole-volume columns are NaN on the per-class rows, and
        the Rand and VI columns are NaN unless ``instances`` is set. With ``instances``
        only the ``all`` row is written. Every score is dimensionless (unit "") except
        VI (bit) and the counts (voxel). The reference's voxel size is used for distances.
    """

    name = "analyze.segmentation_metrics"
    Params = SegmentationMetricsParams
    inputs = {
        "labels": cs.Port(cs.Labels, help="the segmentation to score"),
        "reference": cs.Port(cs.Labels, help="the ground truth, on the same voxel grid"),
    }
    outputs = {"table": cs.Table}

    def analyze(self, labels: cs.Labels, reference: cs.Labels) -> cs.Table:  # type: ignore[override]
        p = self.params
        if labels.shape != reference.shape:
            raise cs.InputError(
                f"{self.name}: input 'labels' has shape {labels.shape} but 'reference' has shape "
                f"{reference.shape}; they must be on the same voxel grid"
            )
        pred, ref = labels.data, reference.data
        voxel_size = reference.voxel_size_nm if p.use_voxel_size else None
        names = {**labels.class_names, **reference.class_names}
        rows: list[dict[str, float | str]] = []
        if not p.instances:
            chosen, pred_sizes, ref_sizes, _ = _overlap_counts(pred, ref, None)
            dices, ious = dice(pred, ref, chosen), iou(pred, ref, chosen)
            for value, n_pred, n_ref in zip(chosen, pred_sizes, ref_sizes, strict=True):
                value = int(value)
                rows.append({
                    "class": names.get(value, f"label_{value}"), "voxels_labels": float(n_pred),
                    "voxels_reference": float(n_ref), "dice": dices[value], "iou": ious[value],
                    "boundary_f1": boundary_f1(pred == value, ref == value, p.tolerance_voxels, voxel_size),
                })
        pred_fg, ref_fg = pred != 0, ref != 0
        whole: dict[str, float | str] = {
            "class": "all", "voxels_labels": float(pred_fg.sum()), "voxels_reference": float(ref_fg.sum()),
            "dice": dice(pred_fg, ref_fg, [1])[1], "iou": iou(pred_fg, ref_fg, [1])[1],
            "boundary_f1": boundary_f1(pred, ref, p.tolerance_voxels, voxel_size),
            "pixel_error": pixel_error(pred_fg, ref_fg) if p.instances else pixel_error(pred, ref),
        }
        if p.instances:
            whole["adapted_rand_error"], whole["rand_precision"], whole["rand_recall"] = adapted_rand_error(pred, ref)
            whole["vi_split"], whole["vi_merge"] = variation_of_information(pred, ref)
        rows.append(whole)
        units = {"voxels_labels": "voxel", "voxels_reference": "voxel", "dice": "", "iou": "", "boundary_f1": "",
                 "pixel_error": "", "adapted_rand_error": "", "rand_precision": "", "rand_recall": "",
                 "vi_split": "bit", "vi_merge": "bit"}
        columns = {"class": np.array([str(r["class"]) for r in rows])}
        columns.update({name: np.array([float(r.get(name, NAN)) for r in rows]) for name in units})
        return cs.Table(columns, units, "segmentation metrics")
