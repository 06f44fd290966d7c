"""``generate.scribbles``: sparse training labels drawn from dense ground truth.

Trainable segmenters (``segment.random_forest``, ``segment.unet``) learn from
scribbles — a few labeled voxels per class, 0 meaning "unlabeled". When the
ground truth is known (a synthetic cell from ``generate.phantom_cell``, or a
fully annotated reference), this method draws such scribbles from it, so a
model can be trained with no manual labels, and benchmarks can ask what a
given labeling effort buys.

``mode: strokes`` draws short in-plane strokes (random walks in Y-X that stay
inside their class, as a person scribbles on a slice); ``mode: points``
scatters single voxels. Each class gets the same number of labeled voxels
(``fraction`` of the volume split evenly), so rare classes such as
membranes are not drowned by the background.
"""

from __future__ import annotations

import attrs
import numpy as np

import cellscape as cs


@attrs.frozen
class ScribblesParams:
    fraction: float = cs.param(0.01, gt=0, le=1, help="share of all voxels to label, split evenly between classes")
    mode: str = cs.param("strokes", choices=("strokes", "points"), help="in-plane strokes or scattered voxels")
    stroke_voxels: int = cs.param(20, ge=2, le=10_000, unit="voxel", help="length of one stroke")
    background_value: int | None = cs.param(None, ge=1, le=65535,
                                            help="label the ground truth's 0 voxels with this class (None: leave them)")
    seed: int = cs.param(0, help="random seed")


class Scribbles(cs.Generator):
    """Sparse labels (0 = unlabeled) sampled from dense ground truth: strokes or points, balanced per class."""

    name = "generate.scribbles"
    Params = ScribblesParams
    inputs = {"labels": cs.Port(cs.Labels, help="dense ground truth")}
    outputs = {"labels": cs.Labels}

    def generate(self, labels: cs.Labels) -> cs.Labels:
        p = self.params
        dense = labels.data.astype(np.int64)
        names = dict(labels.class_names)
        if p.background_value is not None:
            if (dense == p.background_value).any():
                raise cs.InputError(f"{self.name}: parameter 'background_value': {p.background_value} is already a "
                                    "class of the labels; choose an unused value")
            dense = np.where(dense == 0, p.background_value, dense)
            names.setdefault(p.background_value, "background")
        classes = [int(v) for v in np.unique(dense) if v != 0]
        if not classes:
            raise cs.InputError(f"{self.name}: the labels hold no class (every voxel is 0)")
        rng = np.random.default_rng(p.seed)
        budget = max(1, round(p.fraction * dense.size / len(classes)))
        sparse = np.zeros(dense.shape, np.uint16)
        for value in self.progress(classes, description="scribbling"):
            where = np.flatnonzero(dense.ravel() == value)
            if p.mode == "points" or len(where) <= budget:
                chosen = rng.choice(where, size=min(budget, len(where)), replace=False)
            else:
                chosen = _strokes(dense, value, where, budget, p.stroke_voxels, rng)
            sparse.ravel()[chosen] = value
        kept = {v: n for v, n in names.items() if v in classes}
        return cs.Labels(sparse, kept, labels.voxel_size_nm, labels.origin_nm)


_STEPS = np.array([(0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (1, -1), (-1, 1), (-1, -1)])


def _strokes(dense: np.ndarray, value: int, where: np.ndarray, budget: int, length: int,
             rng: np.random.Generator) -> np.ndarray:
    """Flat indices of random-walk strokes in Y-X planes, inside class ``value``, until ``budget`` voxels."""
    _, ny, nx = dense.shape
    picked: set[int] = set()
    attempts = 0
    while len(picked) < budget and attempts < 50 * budget:
        start = int(where[rng.integers(len(where))])
        z, rest = divmod(start, ny * nx)
        y, x = divmod(rest, nx)
        direction = _STEPS[rng.integers(len(_STEPS))]
        for _ in range(length):
            attempts += 1
            picked.add(z * ny * nx + y * nx + x)
            if len(picked) >= budget:
                break
            if rng.random() < 0.3:  # wander a little, as a hand does
                direction = _STEPS[rng.integers(len(_STEPS))]
            ny_, nx_ = y + int(direction[0]), x + int(direction[1])
            if not (0 <= ny_ < ny and 0 <= nx_ < nx) or dense[z, ny_, nx_] != value:
                break
            y, x = ny_, nx_
    return np.fromiter(picked, np.int64)
