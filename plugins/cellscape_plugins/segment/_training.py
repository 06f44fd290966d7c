"""What the trainable segmenters share: checking sparse training labels, and turning probabilities into outputs."""

from __future__ import annotations

import numpy as np

import cellscape as cs


def training_classes(volume: cs.Volume, labels: cs.Labels, name: str) -> list[int]:
    """Class values 1..K present in sparse ``labels``, after checking them against ``volume``."""
    if labels.shape != volume.shape:
        raise cs.InputError(f"{name}: input 'training_labels' has shape {labels.shape} but the volume has "
                            f"{volume.shape}; they must match voxel for voxel")
    values = [int(v) for v in np.unique(labels.data) if v != 0]
    if not values:
        raise cs.InputError(f"{name}: input 'training_labels' has no labeled voxel (0 means unlabeled); "
                            "label a few voxels of each class")
    if len(values) < 2:
        raise cs.InputError(f"{name}: input 'training_labels' labels only class {values[0]}; label at least two "
                            "classes (e.g. background and the object)")
    return values


def segmentation_outputs(probabilities: np.ndarray, model: cs.Model, volume: cs.Volume) -> dict[str, cs.Artefact]:
    """``labels`` (the most probable class), ``probability`` (its probability) and the ``model``, on volume's grid.

    ``probabilities`` has shape (K, z, y, x) in the order of ``model.meta["class_values"]``.
    """
    values = model.meta["class_values"]
    winner = np.argmax(probabilities, axis=0)
    dtype = np.uint8 if max(values) < 256 else np.uint16 if max(values) < 65536 else np.uint32
    names = {int(k): v for k, v in model.meta.get("class_names", {}).items()}
    return {
        "labels": cs.Labels(np.asarray(values, dtype)[winner], names, volume.voxel_size_nm, volume.origin_nm),
        "probability": cs.Volume(np.take_along_axis(probabilities, winner[None], 0)[0], volume.voxel_size_nm,
                                 volume.origin_nm),
        "model": model,
    }
