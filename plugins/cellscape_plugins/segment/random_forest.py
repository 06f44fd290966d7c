"""``segment.random_forest``: ilastik-style pixel classification from sparse scribbles.

Every voxel is described by a bank of multi-scale filters (see
:mod:`cellscape_plugins.segment.features`: Gaussian, Laplacian of Gaussian,
gradient magnitude, difference of Gaussians, structure-tensor and Hessian
eigenvalues at several σ). A random forest (scikit-learn) is trained on the
features of the labeled voxels only (``training_labels``: 0 = unlabeled,
1..K classes) and then classifies every voxel. The features are raw filter
responses of the image intensities, so a model applies to images with the
same contrast and intensity scale as those it was trained on.

Prediction goes chunk by chunk (``chunk_voxels`` on a side): the features
of a chunk are computed on the chunk plus the feature bank's halo, cropped
and classified, so memory is bounded by the chunk size and the result is
identical to classifying the whole volume at once.

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
a vectorized numpy traversal, so a loaded model needs neither scikit-learn
nor pickle.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import attrs
import numpy as np

import cellscape as cs

from ._training import segmentation_outputs, training_classes
from .features import DEFAULT_SCALES, FEATURE_GROUPS, FeatureBank

FORMAT = "cellscape-random-forest-1"
_ARRAYS = ("tree_offsets", "children_left", "children_right", "feature", "threshold", "probability")
_FEATURE_CACHE_BYTES = 1 << 30  # fit and predict share the features of a volume when they take less than this


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
                                 help="edge of the cubic chunks classified at a time (memory ~ 60 features x chunk^3 x 4"
                                 " bytes, plus the filter halo)")
    class_weight: str | None = cs.param("balanced", choices=("balanced", None),
                                        help="balanced: rare labeled classes weigh as much as common ones")
    n_jobs: int = cs.param(2, ge=1, help="CPU threads used to train the forest")

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
    """A model's node tables, ready for traversal: children as global node indices, leaves pointing to themselves."""

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
        if problems:
            raise cs.InputError(f"{who}: the model's node tables are malformed: {'; '.join(problems)}")
        tree_of = np.repeat(np.arange(offsets.size - 1), np.diff(offsets))
        start = offsets[:-1][tree_of]
        index = np.int32 if 2 * n_nodes < 2**31 else np.int64
        node = np.arange(n_nodes)
        self.offsets = offsets
        # children[2 * node + goes_right]; a leaf is its own child, so finished samples could stay put
        self.children = np.stack([np.where(internal, left + start, node),
                                  np.where(internal, right + start, node)], axis=1).reshape(-1).astype(index)
        self.feature = np.where(internal, feature, 0).astype(np.int64)
        self.threshold = np.where(internal, threshold, np.inf)
        self.is_leaf = ~internal
        self.probability_by_class = np.ascontiguousarray(probability.T)
        self.tree_sizes = np.diff(offsets)

    @property
    def n_trees(self) -> int:
        return int(self.offsets.size - 1)

    @property
    def n_classes(self) -> int:
        return int(self.probability_by_class.shape[0])

    def leaves(self, features: np.ndarray, tree: int) -> np.ndarray:
        """Leaf (global node index) each sample reaches in one tree.

        All samples advance one level per step; those that reached a leaf
        leave the active set. ``features`` is (n_features, n_samples) float32.
        """
        n = features.shape[1]
        flat = features.reshape(-1)
        offset = self.feature * n  # where each node's feature row starts in `flat`
        root = int(self.offsets[tree])
        result = np.full(n, root, self.children.dtype)
        if self.is_leaf[root]:
            return result
        active = np.arange(n, dtype=np.int64)
        node = result.copy()
        for _ in range(int(self.tree_sizes[tree])):  # a path is never longer than the tree
            where = np.take(offset, node)
            where += active
            goes_right = np.take(flat, where) > np.take(self.threshold, node)  # sklearn: left when x <= threshold
            node += node
            node += goes_right
            node = np.take(self.children, node)
            done = np.take(self.is_leaf, node)
            finished = int(np.count_nonzero(done))
            if finished:
                result[active[done]] = node[done]
                if finished == node.size:
                    break
                keep = ~done
                active, node = active[keep], node[keep]
        return result

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Mean leaf probability over trees: (K, n_samples) float64 for (n_features, n_samples) float32 features."""
        total = np.zeros((self.n_classes, features.shape[1]), np.float64)
        for tree in range(self.n_trees):
            leaves = self.leaves(features, tree)
            for k in range(self.n_classes):
                total[k] += np.take(self.probability_by_class[k], leaves)
        total /= self.n_trees
        return total


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

    def __init__(self, params: Any = None, **values: Any):
        super().__init__(params, **values)
        self.model: cs.Model | None = None
        self._tables: ForestTables | None = None
        self._cache: dict[tuple[int, ...], np.ndarray] | None = None  # chunk features, only during segment()

    # -- the stage call -------------------------------------------------------------------------------------------

    def segment(self, volume: cs.Volume, training_labels: cs.Labels | None = None,
                model: cs.Model | None = None) -> dict[str, cs.Artefact]:
        if training_labels is not None and model is not None:
            raise cs.InputError(f"{self.name}: give 'training_labels' to train a new forest or a trained 'model' to "
                                "apply, not both (a random forest is not fine-tuned)")
        if model is not None:
            self.load(model)
        # features of the labeled chunks are reused for prediction only when this call trains: applying a model
        # computes each chunk once, so caching would only hold the whole feature stack in memory
        self._cache = {} if training_labels is not None else None
        try:
            if training_labels is not None:
                self.fit(volume, training_labels)
            elif self.model is None:
                raise cs.InputError(f"{self.name}: give 'training_labels' (sparse scribbles) to train a forest, or a "
                                    "trained 'model' to apply")
            probabilities = self.predict_proba(volume)
        finally:
            self._cache = None
        assert self.model is not None
        return segmentation_outputs(probabilities, self.model, volume)

    # -- training -------------------------------------------------------------------------------------------------

    def fit(self, volume: cs.Volume, training_labels: cs.Labels) -> cs.Model:
        """Train a forest on the features of the labeled voxels; returns (and keeps) the :class:`cellscape.Model`.

        Features are computed only for chunks holding labeled voxels.
        """
        from sklearn import __version__ as sklearn_version
        from sklearn.ensemble import RandomForestClassifier

        p = self.params
        values = training_classes(volume, training_labels, self.name)
        bank = self.feature_bank(volume)
        labels = np.asarray(training_labels.data)
        samples, targets = [], []
        regions = [r for r in chunk_regions(volume.shape, p.chunk_voxels) if np.any(labels[r])]
        for region in self.progress(regions, description="features of labeled voxels"):
            features = self._features(volume, bank, region)
            mask = labels[region] != 0
            samples.append(features[:, mask].T)
            targets.append(labels[region][mask])
        x = np.concatenate(samples)
        y = np.concatenate(targets)
        forest = RandomForestClassifier(n_estimators=p.n_trees, max_depth=p.max_depth,
                                        min_samples_leaf=p.min_samples_leaf, class_weight=p.class_weight,
                                        random_state=p.seed, n_jobs=p.n_jobs)
        forest.fit(x, y)
        if [int(c) for c in forest.classes_] != values:
            raise AssertionError(f"{self.name}: scikit-learn classes {forest.classes_} differ from {values}")
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
            "seed": p.seed,
            "n_training_voxels": {str(v): int(np.count_nonzero(y == v)) for v in values},
            "sklearn_version": sklearn_version,
        }
        self.model = cs.Model(self.name, export_forest(forest), meta)
        self._tables = ForestTables(self.model, self.name)
        return self.model

    # -- inference ------------------------------------------------------------------------------------------------

    def predict_proba(self, volume: cs.Volume) -> np.ndarray:
        """Class probabilities, shape (K, z, y, x), float32, in the order of the model's ``class_values``.

        Classified chunk by chunk; each chunk's features are computed with the bank's halo.
        """
        tables = self._require_tables()
        bank = self.feature_bank(volume, trained=True)
        self._check_features(bank)
        out = np.empty((tables.n_classes, *volume.shape), np.float32)
        for region in self.progress(chunk_regions(volume.shape, self.params.chunk_voxels), description="predicting"):
            features = self._features(volume, bank, region)
            chunk = out[(slice(None), *region)]
            chunk[...] = tables.predict_proba(features.reshape(bank.n_features, -1)).reshape(chunk.shape)
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
        self.model, self._tables = model, tables
        meta = model.meta
        try:
            self._check_features(FeatureBank(meta["feature_groups"], meta["scales"], who=self.name))
        except KeyError as exc:
            raise cs.InputError(f"{self.name}: the model does not record its features ({exc} missing)") from exc
        return self

    # -- helpers --------------------------------------------------------------------------------------------------

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

    def _features(self, volume: cs.Volume, bank: FeatureBank, region: tuple[slice, ...]) -> np.ndarray:
        # fit and predict within one segment() call see the same volume: compute each chunk's features once
        if self._cache is None or bank.n_features * volume.data.size * 4 > _FEATURE_CACHE_BYTES:
            return bank.compute(volume.data, region)  # type: ignore[arg-type]
        key = (id(volume), *(s.start for s in region))
        if key not in self._cache:
            self._cache[key] = bank.compute(volume.data, region)  # type: ignore[arg-type]
        return self._cache[key]
