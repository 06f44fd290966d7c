"""``segment.random_forest``: ilastik-style pixel classification from sparse scribbles.

Every voxel is described by a bank of multi-scale filters (see
:mod:`cellscape_plugins.segment.features`: Gaussian, Laplacian of Gaussian,
gradient magnitude, difference of Gaussians, structure-tensor and Hessian
eigenvalues at several σ). A random forest (scikit-learn) is trained on the
features of the labeled voxels only (``training_labels``: 0 = unlabeled,
1..K classes) and then classifies every voxel. The features are raw filter
responses of the image intensities, so a model applies to images with the
same contrast and intensity scale as those it was trained on.

Prediction goes block by block (cubes of ``chunk_voxels`` on a side): the
features of a block are computed on the block plus the feature bank's halo,
cropped and classified, and the labels and probabilities are written into
outputs allocated once for the volume, so the result is identical to
classifying the whole volume at once (bit for bit) and no array the size of
the volume exists besides the input and the outputs.

Memory
------
Beyond the input volume and the outputs (labels: 1 byte per voxel up to 255
classes, 2 up to 65 535; probability: 4 bytes per voxel, 2 with
``probability_dtype="float16"``), prediction holds one block at a time: its
feature stack and the filters' work arrays of the scales being filtered (the
``n_jobs`` threads filter different scales of the same block, then split its
voxels for the traversal), the widest on the block grown by the halo h:
about ``4 bytes × (n_features · B³ + 4 · (B + 2h)³)`` for a block edge B —
independent of the volume size, and growing little with ``n_jobs`` (the other
scales' work arrays are smaller than the widest one's). With the default bank
(60 features, halo 60 voxels: 4σ of σ = 10 plus the structure tensor's σ/2)
and B = 64, that is about 160 MB (measured: see ``benchmarks/results/segment.md``).
Smaller blocks take less memory and more time: every block recomputes its halo.

Applying a trained model is also chunk-safe for the runner (a step with
``chunks:``, see ``cellscape._chunked``): ``chunk_port`` is the volume and
:meth:`RandomForest.chunk_halo` the feature bank's reach, the largest kernel
radius per axis (``int(4σ + 0.5)`` of the largest scale, plus the structure
tensor's outer radius). The halo is declared from the parameters 'features'
and 'scales' (the runner asks before it sees the model), so a model whose
filters reach further than those is refused with an error naming the scales
to give. Training needs the whole volume: a chunked step applies a model.

Model format (a :class:`cellscape.Model`, stored as ``.npz``, never pickle)
-------------------------------------------------------------------------
The trees of the forest are concatenated node tables; tree ``t`` holds the
nodes ``tree_offsets[t]:tree_offsets[t + 1]`` and its root is the first.

=================== ======================= ==========================================================
array               shape, dtype            meaning
=================== ======================= ==========================================================
``tree_offsets``    (n_trees + 1,) int64    start of each tree's nodes; the last entry is n_nodes
``children_left``   (n_nodes,) int32        left child, as a node index *within its tree*; -1 at leaves
``children_right``  (n_nodes,) int32        right child, likewise
``feature``         (n_nodes,) int32        feature channel tested at the node; -2 at leaves
``threshold``       (n_nodes,) float64      a voxel goes left when ``float32 feature <= threshold``
``probability``     (n_nodes, K) float64    class probabilities of the training voxels reaching the node
                                            (class-weighted when ``class_weight`` is balanced)
=================== ======================= ==========================================================

``meta`` holds ``format`` (``"cellscape-random-forest-1"``), ``class_values``
(the label value of each probability column), ``class_names``,
``feature_names``, ``feature_groups``, ``scales``, ``voxel_size_nm`` of the
training volume, the training parameters and the scikit-learn version used.
The forest's probability is the mean over trees of the probability at the
leaf each voxel reaches — scikit-learn's ``predict_proba`` — computed here by
a compiled traversal (:mod:`._forest_kernels`, numba, parallel over voxels),
so a loaded model needs neither scikit-learn nor pickle.

Class prior
-----------
Scribbles do not label classes in proportion to their volume: a thin
membrane gets as many labeled voxels as the cytosol, and ``class_weight=
"balanced"`` makes every class equally likely a priori. Left as is, the
forest calls membrane every ambiguous voxel near one. With
``class_prior="estimated"`` (the default) the training step classifies a
random sample of unlabeled voxels and estimates the class frequencies of the
volume by expectation-maximization (:func:`estimate_class_prior`); ``meta``
then also holds ``training_prior`` (the prior the forest was trained with)
and ``volume_prior`` (the estimate), and every probability is re-weighted by
``volume_prior / training_prior`` and renormalized. Models without
``volume_prior`` are applied as trained.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs
import numpy as np

import cellscape as cs

from ._training import training_classes
from .features import DEFAULT_SCALES, FEATURE_GROUPS, FeatureBank

FORMAT = "cellscape-random-forest-1"
_ARRAYS = ("tree_offsets", "children_left", "children_right", "feature", "threshold", "probability")
_FEATURE_CACHE_BYTES = 1 << 30  # fit and predict share the features of a volume when they take less than this
T = TypeVar("T")
_PRIOR_SAMPLE = 100_000  # unlabeled voxels classified to estimate the class frequencies of the training volume


@attrs.frozen
class RandomForestParams:
    n_trees: int = cs.param(100, ge=1, le=10_000, help="trees in the forest")
    max_depth: int | None = cs.param(None, ge=1, help="maximum tree depth (None: grow until leaves are pure)")
    min_samples_leaf: int = cs.param(1, ge=1, help="fewest training voxels in a leaf")
    scales: list[float] = cs.param(list(DEFAULT_SCALES), gt=0, unit="voxel",
                                   help="σ of the filters, in voxels of the finest axis (scaled per axis by voxel size)")
    features: list[str] = cs.param(list(FEATURE_GROUPS),
                                   help="feature groups, any of: " + ", ".join(FEATURE_GROUPS))
    seed: int = cs.param(0, ge=0, help="random seed: same seed and labels, same forest")
    chunk_voxels: int = cs.param(64, ge=8, unit="voxel",
                                 help="edge B of the cubic blocks whose features are computed and classified at a time: "
                                 "memory beyond the input and outputs is about 4 bytes x (n_features B^3 + "
                                 "4 (B + 2 halo)^3), whatever the volume size (about 160 MB for the default bank and "
                                 "B = 64); the result does not depend on it")
    probability_dtype: str = cs.param("float32", choices=("float32", "float16"),
                                      help="dtype of the 'probability' output (float16: half the memory, the "
                                      "probability to 3 significant digits; labels do not change)")
    class_weight: str | None = cs.param("balanced", choices=("balanced", None),
                                        help="balanced: rare labeled classes weigh as much as common ones")
    class_prior: str = cs.param("estimated", choices=("estimated", "training"),
                                help="estimated: re-weight class probabilities to the class frequencies of the "
                                "training volume, estimated from the forest's own predictions on unlabeled voxels "
                                "(scribbles over-represent thin classes such as membranes); training: keep the "
                                "training labels' prior (uniform when class_weight is balanced)")
    n_jobs: int = cs.param(2, ge=1, help="CPU threads used to train the forest, compute features and classify")

    @features.validator
    def _known_groups(self, attribute: attrs.Attribute, value: list[str]) -> None:
        unknown = [g for g in value if g not in FEATURE_GROUPS]
        if unknown or not value:
            raise cs.InputError(f"parameter 'features': must list one or more of {', '.join(FEATURE_GROUPS)}"
                                + (f"; unknown: {', '.join(map(repr, unknown))}" if unknown else ""))

    @scales.validator
    def _some_scales(self, attribute: attrs.Attribute, value: list[float]) -> None:
        if not value:
            raise cs.InputError("parameter 'scales': give at least one σ")


def chunk_regions(shape: tuple[int, ...], edge: int) -> list[tuple[slice, slice, slice]]:
    """Cubic blocks of ``edge`` voxels (smaller at the far ends) tiling a (z, y, x) grid, in C order."""
    starts = [range(0, n, edge) for n in shape]
    return [tuple(slice(a, min(a + edge, n)) for a, n in zip(corner, shape, strict=True))  # type: ignore[misc]
            for corner in itertools.product(*starts)]


class ForestTables:
    """A model's node tables, checked and laid out for the compiled traversal.

    All trees share flat node arrays: children as global node indices with
    leaves pointing to themselves (so a voxel that reached its leaf stays
    there), thresholds rounded down to float32 (``x <= t`` in float64 holds
    exactly when ``x <= t32`` for a float32 feature ``x``), and each tree's
    depth, the number of steps every voxel takes through it.
    """

    def __init__(self, model: cs.Model, who: str):
        arrays = model.arrays
        missing = [k for k in _ARRAYS if k not in arrays]
        if missing or model.meta.get("format") != FORMAT:
            raise cs.InputError(f"{who}: the model is not a {FORMAT} forest (missing {', '.join(missing) or 'format'})")
        offsets = np.asarray(arrays["tree_offsets"], np.int64)
        n_nodes = int(offsets[-1]) if offsets.size else 0
        left = np.asarray(arrays["children_left"], np.int64)
        right = np.asarray(arrays["children_right"], np.int64)
        feature = np.asarray(arrays["feature"], np.int64)
        threshold = np.asarray(arrays["threshold"], np.float64)
        probability = np.asarray(arrays["probability"], np.float64)
        n_features = int(model.meta.get("n_features", 0))
        problems = []
        internal = left >= 0
        if offsets.ndim != 1 or offsets.size < 2 or offsets[0] != 0 or np.any(np.diff(offsets) < 1):
            problems.append("tree_offsets must rise from 0 with at least one node per tree")
        elif any(a.shape != (n_nodes,) for a in (left, right, feature, threshold)) or probability.shape[0] != n_nodes:
            problems.append(f"node tables must all have {n_nodes} rows")
        else:
            size = np.repeat(np.diff(offsets), np.diff(offsets))  # the size of each node's tree
            if np.any(internal != (right >= 0)) or np.any((left >= size) | (right >= size)):
                problems.append("children must be -1 at leaves and node indices within their tree elsewhere")
            if np.any(internal & ((feature < 0) | (feature >= n_features))):
                problems.append(f"node features must lie in 0..{n_features - 1}")
            if probability.ndim != 2 or probability.shape[1] != len(model.meta.get("class_values", [])):
                problems.append("probability needs one column per class value")
            if np.any(internal & np.isnan(threshold)):
                problems.append("thresholds must be numbers")
        if problems:
            raise cs.InputError(f"{who}: the model's node tables are malformed: {'; '.join(problems)}")
        start = np.repeat(offsets[:-1], np.diff(offsets))  # each node's tree's first node
        node = np.arange(n_nodes)
        children = np.stack([np.where(internal, left + start, node), np.where(internal, right + start, node)], axis=1)
        self.n_features = n_features
        self.roots = offsets[:-1].astype(np.int32)
        self.depths = _tree_depths(self.roots, children, internal, offsets, who)
        self.children = children.reshape(-1).astype(np.uint32)  # children[2 n + (x > threshold)]
        self.feature = np.where(internal, feature, 0).astype(np.uint32)
        self.threshold = np.where(internal, _float32_at_most(threshold), np.float32(np.inf)).astype(np.float32)
        self.leaf_probability = np.ascontiguousarray(probability, np.float32)

    @property
    def n_trees(self) -> int:
        return int(self.roots.size)

    @property
    def n_classes(self) -> int:
        return int(self.leaf_probability.shape[1])

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Mean leaf probability over trees, as scikit-learn's ``predict_proba`` (to float32 rounding).

        Parameters
        ----------
        features : (n_features, n_samples) float32 array

        Returns
        -------
        (K, n_samples) float32 array, columns in the order of the model's ``class_values``.
        """
        from ._forest_kernels import forest_probabilities

        if features.ndim != 2 or features.shape[0] != self.n_features:
            raise cs.InputError(f"forest: features must have shape ({self.n_features}, n_samples), got {features.shape}")
        return forest_probabilities(features, self.roots, self.depths, self.feature, self.threshold, self.children,
                                    self.leaf_probability)


def _float32_at_most(threshold: np.ndarray) -> np.ndarray:
    """The largest float32 ≤ each float64 threshold (−inf below float32's range)."""
    largest = float(np.finfo(np.float32).max)
    rounded = np.clip(threshold, -largest, largest).astype(np.float32)
    above = rounded.astype(np.float64) > threshold
    rounded[above] = np.nextafter(rounded[above], np.float32(-np.inf))
    return rounded


def _tree_depths(roots: np.ndarray, children: np.ndarray, internal: np.ndarray, offsets: np.ndarray,
                 who: str) -> np.ndarray:
    """Depth of each tree, walking all trees level by level; every node must be reached once from its root."""
    n_nodes = internal.size
    level_of = np.full(n_nodes, -1, np.int64)
    frontier = roots.astype(np.int64)
    level = 0
    while frontier.size:
        if np.any(level_of[frontier] >= 0) or np.unique(frontier).size != frontier.size:
            raise cs.InputError(f"{who}: the model's node tables are malformed: a node is the child of two nodes")
        level_of[frontier] = level
        parents = frontier[internal[frontier]]
        frontier = children[parents].reshape(-1)
        level += 1
    if np.any(level_of < 0):
        raise cs.InputError(f"{who}: the model's node tables are malformed: {int(np.sum(level_of < 0))} nodes are "
                            "not reached from their tree's root")
    return np.maximum.reduceat(level_of, offsets[:-1]).astype(np.int32)


def estimate_class_prior(probabilities: np.ndarray, training_prior: np.ndarray, iterations: int = 200,
                         tolerance: float = 1e-6) -> np.ndarray:
    """Class frequencies of unlabeled voxels, by expectation-maximization on a classifier's probabilities.

    A classifier trained with class prior π (uniform for balanced class
    weights, whatever the scribbles' proportions) gives posteriors p_k(x).
    Under another prior q, the posteriors are ``p_k q_k / π_k`` renormalized;
    q is the mean of those posteriors over the voxels. Iterating from q = π
    converges to the maximum-likelihood prior (Saerens, Latinne & Decaestecker,
    Neural Computation 14, 2002).

    Parameters
    ----------
    probabilities : (K, n) array
        Posteriors of n voxels, each column summing to 1.
    training_prior : (K,) array
        The prior the classifier was trained with.
    iterations, tolerance
        At most this many updates; stop when no frequency moves more than ``tolerance``.

    Returns
    -------
    (K,) float64 array summing to 1.
    """
    p = np.asarray(probabilities, np.float64)
    train = np.asarray(training_prior, np.float64)
    prior = train.copy()
    for _ in range(iterations):
        posterior = p * (prior / train)[:, None]
        posterior /= np.maximum(posterior.sum(axis=0), np.finfo(np.float64).tiny)
        updated = posterior.mean(axis=1)
        updated /= updated.sum()
        done = np.max(np.abs(updated - prior)) < tolerance
        prior = updated
        if done:
            break
    return prior


def export_forest(forest: Any) -> dict[str, np.ndarray]:
    """Node tables (see the module docstring) of a fitted ``sklearn.ensemble.RandomForestClassifier``."""
    trees = [estimator.tree_ for estimator in forest.estimators_]
    sizes = [t.node_count for t in trees]
    probability = []
    for t in trees:
        value = np.asarray(t.value[:, 0, :], np.float64)
        norm = value.sum(axis=1, keepdims=True)
        probability.append(value / np.where(norm > 0, norm, 1.0))
    return {
        "tree_offsets": np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        "children_left": np.concatenate([t.children_left for t in trees]).astype(np.int32),
        "children_right": np.concatenate([t.children_right for t in trees]).astype(np.int32),
        "feature": np.concatenate([t.feature for t in trees]).astype(np.int32),
        "threshold": np.concatenate([t.threshold for t in trees]).astype(np.float64),
        "probability": np.concatenate(probability).astype(np.float64),
    }


class RandomForest(cs.Segmenter):
    """Random-forest pixel classification (ilastik-style) on multi-scale filter features, from sparse labels."""

    name = "segment.random_forest"
    Params = RandomForestParams
    inputs = {
        "volume": cs.Volume,
        "training_labels": cs.Port(cs.Labels, optional=True, help="sparse labels: 0 unlabeled, 1..K classes"),
        "model": cs.Port(cs.Model, optional=True, help="a trained segment.random_forest model to apply"),
    }
    outputs = {
        "labels": cs.Labels,
        "probability": cs.Port(cs.Volume, help="probability of the chosen class at each voxel (confidence)"),
        "model": cs.Model,
    }

    chunk_port = "volume"

    def __init__(self, params: Any = None, **values: Any):
        super().__init__(params, **values)
        self.model: cs.Model | None = None
        self._tables: ForestTables | None = None
        self._prior_weights: np.ndarray | None = None  # (K,) float32 probability multipliers, or None
        self._cache: dict[tuple[int, ...], np.ndarray] | None = None  # chunk features, only during segment()

    def chunk_halo(self, voxel_size_nm: tuple[float, float, float]) -> tuple[int, int, int]:
        """Voxels (z, y, x) of context per side for exact features: the bank of 'features' at 'scales' reaches this far."""
        return FeatureBank(self.params.features, self.params.scales, voxel_size_nm, who=self.name).halo

    # -- the stage call -------------------------------------------------------------------------------------------

    def segment(self, volume: cs.Volume, training_labels: cs.Labels | None = None,
                model: cs.Model | None = None) -> dict[str, cs.Artefact]:
        if training_labels is not None and model is not None:
            raise cs.InputError(f"{self.name}: give 'training_labels' to train a new forest or a trained 'model' to "
                                "apply, not both (a random forest is not fine-tuned)")
        if model is not None:
            self.load(model)
            self._check_reach(volume)
        # features of the labeled chunks are reused for prediction only when this call trains: applying a model
        # computes each chunk once, so caching would only hold the whole feature stack in memory
        self._cache = {} if training_labels is not None else None
        try:
            if training_labels is not None:
                self.fit(volume, training_labels)
            elif self.model is None:
                raise cs.InputError(f"{self.name}: give 'training_labels' (sparse scribbles) to train a forest, or a "
                                    "trained 'model' to apply")
            return self._classify(volume)
        finally:
            self._cache = None

    # -- training -------------------------------------------------------------------------------------------------

    def fit(self, volume: cs.Volume, training_labels: cs.Labels) -> cs.Model:
        """Train a forest on the features of the labeled voxels; returns (and keeps) the :class:`cellscape.Model`.

        Features are computed only for chunks holding labeled voxels. With
        ``class_prior="estimated"``, a random sample of the unlabeled voxels
        of those chunks (at most 100 000) is classified by the new forest and
        the class frequencies are estimated from it
        (:func:`estimate_class_prior`); the model keeps them.
        """
        from sklearn import __version__ as sklearn_version
        from sklearn.ensemble import RandomForestClassifier

        p = self.params
        values = training_classes(volume, training_labels, self.name)
        bank = self.feature_bank(volume)
        labels = np.asarray(training_labels.data)
        regions = [r for r in chunk_regions(volume.shape, p.chunk_voxels) if np.any(labels[r])]
        share = min(1.0, _PRIOR_SAMPLE / sum(int(np.prod([s.stop - s.start for s in r])) for r in regions))

        def training_samples(index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
            region = regions[index]
            features = self._features(volume, bank, region)
            mask = labels[region] != 0
            sample = None
            if p.class_prior == "estimated":
                free = np.flatnonzero(~mask)
                rng = np.random.default_rng([p.seed, index])  # per chunk: the same sample whatever the thread order
                picked = np.sort(rng.choice(free, size=round(share * free.size), replace=False))
                sample = features.reshape(bank.n_features, -1)[:, picked]
            return features[:, mask].T, labels[region][mask], sample

        parts = self._each_chunk(training_samples, range(len(regions)), "features of labeled voxels")
        samples, targets, unlabeled = ([part[i] for part in parts] for i in range(3))
        unlabeled = [u for u in unlabeled if u is not None]
        x = np.concatenate(samples)
        y = np.concatenate(targets)
        forest = RandomForestClassifier(n_estimators=p.n_trees, max_depth=p.max_depth,
                                        min_samples_leaf=p.min_samples_leaf, class_weight=p.class_weight,
                                        random_state=p.seed, n_jobs=p.n_jobs)
        forest.fit(x, y)
        if [int(c) for c in forest.classes_] != values:
            raise AssertionError(f"{self.name}: scikit-learn classes {forest.classes_} differ from {values}")
        counts = np.array([np.count_nonzero(y == v) for v in values], np.float64)
        training_prior = np.full(len(values), 1.0 / len(values)) if p.class_weight == "balanced" else counts / counts.sum()
        meta = {
            "format": FORMAT,
            "class_values": values,
            "class_names": {str(v): training_labels.class_names.get(v, f"class_{v}") for v in values},
            "n_features": bank.n_features,
            "feature_names": list(bank.names),
            "feature_groups": list(bank.groups),
            "scales": list(bank.scales),
            "voxel_size_nm": list(volume.voxel_size_nm),
            "n_trees": p.n_trees,
            "max_depth": p.max_depth,
            "min_samples_leaf": p.min_samples_leaf,
            "class_weight": p.class_weight,
            "class_prior": p.class_prior,
            "training_prior": [float(v) for v in training_prior],
            "seed": p.seed,
            "n_training_voxels": {str(v): int(n) for v, n in zip(values, counts, strict=True)},
            "sklearn_version": sklearn_version,
        }
        model = cs.Model(self.name, export_forest(forest), meta)
        tables = ForestTables(model, self.name)
        sample = np.concatenate(unlabeled, axis=1) if unlabeled else np.empty((bank.n_features, 0), np.float32)
        if sample.shape[1]:
            with _threads(p.n_jobs):
                prior = estimate_class_prior(tables.predict_proba(sample), training_prior)
            model = cs.Model(self.name, model.arrays, {**meta, "volume_prior": [float(v) for v in prior],
                                                       "n_prior_voxels": int(sample.shape[1])})
        self._use(model, tables)
        return model

    # -- inference ------------------------------------------------------------------------------------------------

    def predict_proba(self, volume: cs.Volume, dtype: Any = np.float32) -> np.ndarray:
        """Class probabilities, shape (K, z, y, x), in the order of the model's ``class_values``.

        Classified block by block into the one output array (``dtype``: float32,
        or float16 for half the memory); each block's features are computed with
        the bank's halo. The probabilities are re-weighted to the model's
        ``volume_prior`` when it has one (``class_prior="estimated"``).
        """
        tables = self._require_tables()
        bank = self.feature_bank(volume, trained=True)
        self._check_features(bank)
        if np.dtype(dtype) not in (np.dtype(np.float32), np.dtype(np.float16)):
            raise cs.InputError(f"{self.name}: predict_proba dtype must be float32 or float16, got {np.dtype(dtype)}")
        out = np.empty((tables.n_classes, *volume.shape), dtype)

        def classify(region: tuple[slice, ...]) -> None:
            out[(slice(None), *region)] = self._chunk_probabilities(volume, bank, region)

        self._each_block(classify, chunk_regions(volume.shape, self.params.chunk_voxels))
        return out

    def feature_bank(self, volume: cs.Volume, trained: bool = False) -> FeatureBank:
        """The feature bank for ``volume``'s voxel size: the trained model's (``trained``), else the parameters'.

        A model carries the features it was trained on, so applying it needs
        no repetition of 'features' and 'scales' (those parameters configure training).
        """
        if trained and self.model is not None:
            meta = self.model.meta
            return FeatureBank(meta["feature_groups"], meta["scales"], volume.voxel_size_nm, who=self.name)
        return FeatureBank(self.params.features, self.params.scales, volume.voxel_size_nm, who=self.name)

    # -- saving and loading ---------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the trained forest (a :class:`cellscape.Model`) to a cellscape file, e.g. ``forest.npz``."""
        if self.model is None:
            raise cs.InputError(f"{self.name}: nothing to save; train the forest with fit() first")
        return cs.write(self.model, path)

    def load(self, source: str | Path | cs.Model) -> RandomForest:
        """Use a trained forest: a :class:`cellscape.Model` or a file written by :meth:`save`."""
        if isinstance(source, cs.Model):
            model = source
        else:
            model = cs.read(source)
            if not isinstance(model, cs.Model):
                raise cs.InputError(f"{source}: holds a {type(model).__name__}, not a trained model")
        model.require(self.name)
        tables = ForestTables(model, self.name)  # fail now, not at the first prediction
        meta = model.meta
        try:
            FeatureBank(meta["feature_groups"], meta["scales"], who=self.name)
        except KeyError as exc:
            raise cs.InputError(f"{self.name}: the model does not record its features ({exc} missing)") from exc
        self._use(model, tables)
        return self

    # -- helpers --------------------------------------------------------------------------------------------------

    def _use(self, model: cs.Model, tables: ForestTables) -> None:
        meta = model.meta
        weights = None
        if meta.get("volume_prior") is not None:
            volume_prior = np.asarray(meta["volume_prior"], np.float64)
            training_prior = np.asarray(meta.get("training_prior", []), np.float64)
            if volume_prior.shape != (tables.n_classes,) or training_prior.shape != volume_prior.shape \
                    or np.any(training_prior <= 0) or np.any(volume_prior < 0) or not np.isfinite(volume_prior).all():
                raise cs.InputError(f"{self.name}: the model's volume_prior and training_prior must be "
                                    f"{tables.n_classes} frequencies (training ones > 0)")
            weights = (volume_prior / training_prior).astype(np.float32)
        previous = self.model, self._tables, self._prior_weights
        self.model, self._tables, self._prior_weights = model, tables, weights
        try:
            self._check_features(FeatureBank(meta["feature_groups"], meta["scales"], who=self.name))
        except cs.InputError:
            self.model, self._tables, self._prior_weights = previous
            raise

    def _chunk_probabilities(self, volume: cs.Volume, bank: FeatureBank, region: tuple[slice, ...]) -> np.ndarray:
        """(K, rz, ry, rx) float32 class probabilities of one chunk, re-weighted to the model's prior."""
        tables = self._require_tables()
        features = self._features(volume, bank, region, self.params.n_jobs)
        probabilities = tables.predict_proba(features.reshape(bank.n_features, -1))
        if self._prior_weights is not None:
            probabilities *= self._prior_weights[:, None]
            probabilities /= probabilities.sum(axis=0)
        return probabilities.reshape(tables.n_classes, *features.shape[1:])

    def _classify(self, volume: cs.Volume) -> dict[str, cs.Artefact]:
        """Labels and winning probability, block by block into the two outputs: no other array of the volume's size."""
        self._require_tables()
        assert self.model is not None
        bank = self.feature_bank(volume, trained=True)
        self._check_features(bank)
        meta = self.model.meta
        values = np.asarray(meta["class_values"])
        dtype = np.uint8 if values.max() < 256 else np.uint16 if values.max() < 65536 else np.uint32
        labels = np.empty(volume.shape, dtype)
        confidence = np.empty(volume.shape, np.dtype(self.params.probability_dtype))
        classes = values.astype(dtype)

        def classify(region: tuple[slice, ...]) -> None:
            probabilities = self._chunk_probabilities(volume, bank, region)
            winner = np.argmax(probabilities, axis=0)
            labels[region] = classes[winner]
            confidence[region] = np.take_along_axis(probabilities, winner[None], 0)[0]

        self._each_block(classify, chunk_regions(volume.shape, self.params.chunk_voxels))
        labels.flags.writeable = confidence.flags.writeable = False  # finished: the artefacts take them without a copy
        names = {int(k): v for k, v in meta.get("class_names", {}).items()}
        return {
            "labels": cs.Labels(labels, names, volume.voxel_size_nm, volume.origin_nm),
            "probability": cs.Volume(confidence, volume.voxel_size_nm, volume.origin_nm),
            "model": self.model,
        }

    def _each_block(self, work: Callable[[tuple[slice, ...]], None], regions: Sequence[tuple[slice, ...]]) -> None:
        """``work`` on one block after the other, each block using the ``n_jobs`` threads.

        The threads share a block: its scales are filtered on them at once (the
        widest first) and its voxels are split between them for the traversal,
        so one block's features exist at a time, whatever ``n_jobs`` is.
        """
        with _threads(self.params.n_jobs):
            for region in self.progress(regions, total=len(regions), description="predicting"):
                work(region)

    def _each_chunk(self, work: Callable[[Any], T], chunks: Sequence[Any], description: str) -> list[T]:
        """``work`` on every chunk, on up to ``n_jobs`` threads; results in the order of ``chunks``.

        The compiled filters release the GIL, so threads over chunks use the
        cores without a parallel region per filter pass; a chunk's traversal
        then runs on its own thread. A single chunk gets the threads for its traversal instead.
        """
        n_jobs = self.params.n_jobs
        if n_jobs == 1 or len(chunks) == 1:
            with _threads(n_jobs):
                return [work(chunk) for chunk in self.progress(chunks, total=len(chunks), description=description)]

        def alone(chunk: Any) -> T:
            with _threads(1):
                return work(chunk)

        with concurrent.futures.ThreadPoolExecutor(min(n_jobs, len(chunks))) as pool:
            return list(self.progress(pool.map(alone, chunks), total=len(chunks), description=description))

    def _check_reach(self, volume: cs.Volume) -> None:
        """A model given as an input must not need more context than :meth:`chunk_halo` declares."""
        assert self.model is not None
        needed = self.feature_bank(volume, trained=True).halo
        declared = self.chunk_halo(volume.voxel_size_nm)
        if any(n > d for n, d in zip(needed, declared, strict=True)):
            meta = self.model.meta
            raise cs.InputError(
                f"{self.name}: the model's filters (features {list(meta['feature_groups'])}, scales "
                f"{list(meta['scales'])}) reach {needed} voxels, beyond the halo {declared} this step declares for "
                f"chunked runs from its parameters; set 'scales' to {list(meta['scales'])} and 'features' to "
                f"{list(meta['feature_groups'])}, as in training")

    def _require_tables(self) -> ForestTables:
        if self.model is None or self._tables is None:
            raise cs.InputError(f"{self.name}: no trained forest; call fit() or load() first, or give "
                                "'training_labels' or a 'model'")
        return self._tables

    def _check_features(self, bank: FeatureBank) -> None:
        assert self.model is not None
        meta = self.model.meta
        if list(meta.get("feature_names", [])) == bank.names:
            return
        raise cs.InputError(
            f"{self.name}: the model was trained on {meta.get('n_features')} features (features "
            f"{meta.get('feature_groups')}, scales {meta.get('scales')}), but features {list(bank.groups)} at scales "
            f"{list(bank.scales)} give {bank.n_features}: the model file is inconsistent; retrain it"
        )

    def _features(self, volume: cs.Volume, bank: FeatureBank, region: tuple[slice, ...], threads: int = 1) -> np.ndarray:
        # fit and predict within one segment() call see the same volume: compute each chunk's features once
        if self._cache is None or bank.n_features * volume.data.size * 4 > _FEATURE_CACHE_BYTES:
            return bank.compute(volume.data, region, threads)  # type: ignore[arg-type]
        key = (id(volume), *(s.start for s in region))
        if key not in self._cache:
            self._cache[key] = bank.compute(volume.data, region, threads)  # type: ignore[arg-type]
        return self._cache[key]


@contextlib.contextmanager
def _threads(n_jobs: int) -> Iterator[None]:
    """Let the compiled kernels use at most ``n_jobs`` threads for the duration of the block."""
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(n_jobs, numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(before)
