"""``analyze.reduce``: PCA/POD of fields over time or of descriptor tables, clustering, 2D embeddings.

Fields (proper orthogonal decomposition)
    The snapshots ``X`` (n_times × n_points) of one species, centred on their
    time mean when ``center``, are decomposed in the L² inner product of the
    mesh when ``weighted``: with lumped P1 node masses ``w`` (µm³),
    ``X W^½ = U Σ Vᵀ`` and the spatial modes ``φ_k = W^{-½} v_k`` are
    orthonormal, ``Σ_i w_i φ_k,i φ_l,i = δ_kl``. The temporal coefficients are
    ``U Σ`` and ``σ_k² / Σ σ²`` is the share of the (centred) energy a mode carries.
Tables (PCA)
    Rows are objects (cells, runs), the numeric columns their descriptors,
    standardized (zero mean, unit variance) when ``standardize``.

The scores of the first components are the default 2D embedding; ``tsne``
embeds with scikit-learn's t-SNE instead. Rows are clustered by k-means or a
Gaussian mixture (scikit-learn) in the space of the first ``n_components`` scores.
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

import cellscape as cs

from .summary import node_weights_by_region

__all__ = ["Reduce", "ReduceParams", "pod"]

NM3_PER_UM3 = 1e9


def pod(snapshots: np.ndarray, weights: np.ndarray | None = None, center: bool = True) -> dict[str, np.ndarray]:
    """Principal components of the rows of ``snapshots`` in the inner product ``diag(weights)``.

    Parameters
    ----------
    snapshots : ndarray, shape (n, m)
        One snapshot (time point, object) per row.
    weights : ndarray, shape (m,), optional
        Positive weights of the entries (node masses); None for the Euclidean inner product.
    center : bool
        Subtract the row mean before decomposing.

    Returns
    -------
    dict
        ``modes`` (r, m), orthonormal in the weighted inner product; ``scores`` (n, r) with
        ``snapshots ≈ mean + scores @ modes``; ``singular_values`` (r,); ``explained`` (r,) shares
        of the total squared norm; ``mean`` (m,). r = min(n, m).
    """
    x = np.asarray(snapshots, dtype=np.float64)
    mean = x.mean(axis=0) if center else np.zeros(x.shape[1])
    root = np.sqrt(weights) if weights is not None else np.ones(x.shape[1])
    u, s, vt = np.linalg.svd((x - mean) * root, full_matrices=False)
    energy = float((s**2).sum())
    explained = s**2 / energy if energy > 0 else np.zeros_like(s)
    # one sign convention per mode: its largest entry positive, so results do not flip between runs
    signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])
    signs[signs == 0] = 1.0
    return {"modes": vt * signs[:, None] / root, "scores": u * s * signs, "singular_values": s,
            "explained": explained, "mean": mean}


@attrs.frozen
class ReduceParams:
    n_components: int = cs.param(3, ge=1, help="components kept (scores, modes, clustering space)")
    species: str | None = cs.param(None, help="species of the fields to decompose (default: the first)")
    center: bool = cs.param(True, help="decompose fluctuations about the mean snapshot (PCA) rather than raw snapshots")
    weighted: bool = cs.param(True, help="fields: L2 inner product of the mesh (node masses), modes orthonormal in it")
    columns: list[str] | None = cs.param(None, help="table: descriptor columns (default: every numeric column)")
    standardize: bool = cs.param(True, help="table: scale every descriptor to zero mean and unit variance")
    clustering: str = cs.param("none", choices=("none", "kmeans", "gmm"),
                               help="cluster the rows in the space of the kept scores")
    n_clusters: int = cs.param(3, ge=1, help="number of clusters")
    embedding: str = cs.param("pca", choices=("pca", "tsne"), help="2D embedding: first two scores, or t-SNE")
    seed: int = cs.param(0, help="seed of the clustering and t-SNE")


def _label_column(table: cs.Table) -> np.ndarray:
    strings = [name for name, column in table.columns.items() if column.dtype.kind == "U"]
    return table.columns[strings[0]] if strings else np.array([f"row_{i}" for i in range(table.n_rows)])


class Reduce(cs.Analyzer):
    """PCA/POD of a species' field over time or of a descriptor table; k-means/GMM clustering; 2D embedding.

    Give exactly one input, ``fields`` or ``table``.

    Outputs
    -------
    table : Table
        One row per component: ``component`` (1, 2, ...), ``singular_value``, ``explained_variance_ratio``,
        ``cumulative`` (dimensionless).
    scores : Table
        One row per snapshot (``time_s``) or table row (``label``: its first text column or ``row_<i>``):
        ``pc1``..``pc<k>`` (the species' unit × µm^{3/2} for weighted fields, standardized units for tables),
        ``embed_x``, ``embed_y`` and ``cluster`` (−1 without clustering).
    loadings : Table
        Fields: one row per mesh node, ``node``, ``x_nm``, ``y_nm``, ``z_nm``, ``mean`` and ``mode1``..``mode<k>``
        (the spatial modes, 1/µm^{3/2} when weighted). Tables: one row per descriptor, ``descriptor``,
        ``mode1``..``mode<k>``.
    """

    name = "analyze.reduce"
    Params = ReduceParams
    inputs = {
        "fields": cs.Port(cs.Fields, optional=True, help="snapshots of a species over time"),
        "table": cs.Port(cs.Table, optional=True, help="descriptors, one row per object (cell, run)"),
    }
    outputs = {"table": cs.Table, "scores": cs.Table, "loadings": cs.Table}

    def analyze(self, fields: cs.Fields | None = None, table: cs.Table | None = None) -> dict[str, cs.Table]:
        p = self.params
        if (fields is None) == (table is None):
            raise cs.InputError(f"{self.name} needs exactly one input: 'fields' (POD over time) or 'table' "
                                f"(PCA of descriptors); got {'both' if fields is not None else 'neither'}")
        if fields is not None:
            species = p.species or next(iter(fields.values))
            if species not in fields.values:
                raise cs.InputError(f"{self.name}: species '{species}' is not in the fields; species: "
                                    f"{', '.join(fields.values)}")
            data = np.asarray(fields.values[species], float)
            weights = None
            if p.weighted:
                weights = sum(node_weights_by_region(fields.mesh).values()) / NM3_PER_UM3
                if (weights <= 0).any():
                    raise cs.InputError(f"{self.name}: {int((weights <= 0).sum())} mesh node(s) belong to no "
                                        "tetrahedron; set weighted: false or clean the mesh")
            labels: dict[str, np.ndarray] = {"time_s": fields.times_s}
            unit = fields.units[species]
        else:
            assert table is not None
            names = p.columns or [n for n, c in table.columns.items() if c.dtype.kind in "fiu"]
            missing = [n for n in names if n not in table.columns]
            if missing:
                raise cs.InputError(f"{self.name}: column(s) {missing} are not in the table; columns: "
                                    f"{', '.join(table.columns)}")
            text = [n for n in names if table.columns[n].dtype.kind not in "fiub"]
            if text:
                raise cs.InputError(f"{self.name}: column(s) {text} are not numeric; choose descriptor columns")
            if not names:
                raise cs.InputError(f"{self.name}: the table has no numeric columns to reduce")
            data = np.column_stack([np.asarray(table.columns[n], float) for n in names])
            bad = ~np.isfinite(data)
            if bad.any():
                raise cs.InputError(f"{self.name}: {int(bad.sum())} NaN or infinite value(s) in columns "
                                    f"{[names[j] for j in np.unique(np.nonzero(bad)[1])]}; drop or fill those rows")
            if p.standardize:
                spread = data.std(axis=0)
                constant = [names[j] for j in np.nonzero(spread == 0)[0]]
                if constant:
                    raise cs.InputError(f"{self.name}: column(s) {constant} are constant and cannot be "
                                        "standardized; leave them out with 'columns'")
                data = (data - data.mean(axis=0)) / spread
            weights = None
            labels = {"label": _label_column(table)}
            unit = ""
        if len(data) < 2:
            raise cs.InputError(f"{self.name}: need at least 2 snapshots or rows, got {len(data)}")
        result = pod(data, weights, p.center)
        k = min(p.n_components, len(result["singular_values"]))
        scores = result["scores"][:, :k]
        components = cs.Table({
            "component": np.arange(1, len(result["explained"]) + 1), "singular_value": result["singular_values"],
            "explained_variance_ratio": result["explained"], "cumulative": np.cumsum(result["explained"]),
        }, {"explained_variance_ratio": "", "cumulative": ""}, "principal components")
        embedding = self._embed(scores)
        clusters = self._cluster(scores)
        score_columns: dict[str, Any] = dict(labels)
        score_columns.update({f"pc{i + 1}": scores[:, i] for i in range(k)})
        score_columns.update({"embed_x": embedding[:, 0], "embed_y": embedding[:, 1], "cluster": clusters})
        score_units = {f"pc{i + 1}": unit for i in range(k)}
        title = f"scores and {p.embedding} embedding" + (f", {p.clustering} clusters" if p.clustering != "none" else "")
        if fields is not None:
            points = fields.mesh.points
            loading_columns: dict[str, Any] = {"node": np.arange(len(points)), "x_nm": points[:, 0],
                                               "y_nm": points[:, 1], "z_nm": points[:, 2], "mean": result["mean"]}
        else:
            loading_columns = {"descriptor": np.array(names)}
        loading_columns.update({f"mode{i + 1}": result["modes"][i] for i in range(k)})
        return {"table": components, "scores": cs.Table(score_columns, score_units, title),
                "loadings": cs.Table(loading_columns, {}, "modes (loadings)")}

    def _embed(self, scores: np.ndarray) -> np.ndarray:
        if self.params.embedding == "pca":
            padded = np.zeros((len(scores), 2))
            padded[:, :min(2, scores.shape[1])] = scores[:, :2]
            return padded
        manifold = cs.require("sklearn.manifold", extra="ml", package="scikit-learn", who="analyze.reduce (t-SNE)")
        perplexity = min(30.0, max(1.0, (len(scores) - 1) / 3))
        return manifold.TSNE(2, perplexity=perplexity, random_state=self.params.seed, init="pca").fit_transform(scores)

    def _cluster(self, scores: np.ndarray) -> np.ndarray:
        p = self.params
        if p.clustering == "none":
            return np.full(len(scores), -1, dtype=np.int64)
        if p.n_clusters > len(scores):
            raise cs.InputError(f"{self.name}: n_clusters = {p.n_clusters} is more than the {len(scores)} rows")
        if p.clustering == "kmeans":
            cluster = cs.require("sklearn.cluster", extra="ml", package="scikit-learn", who="analyze.reduce (k-means)")
            model = cluster.KMeans(p.n_clusters, n_init=10, random_state=p.seed)
        else:
            mixture = cs.require("sklearn.mixture", extra="ml", package="scikit-learn", who="analyze.reduce (GMM)")
            model = mixture.GaussianMixture(p.n_clusters, n_init=5, random_state=p.seed)
        labels = np.asarray(model.fit_predict(scores), dtype=np.int64)
        # number clusters by their first appearance, so equal partitions give equal labels
        order = {value: index for index, value in enumerate(dict.fromkeys(labels.tolist()))}
        return np.array([order[v] for v in labels], dtype=np.int64)
