"""analyze.reduce: POD finds three known modes of a field, PCA of descriptors, clustering of separated groups."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import needed_modules
from meshes import cube_mesh

import cellscape as cs
from cellscape_plugins.analyze.summary import node_weights_by_region


def weighted_orthonormal(columns: list[np.ndarray], weights: np.ndarray) -> list[np.ndarray]:
    """Gram–Schmidt in the inner product sum(w f g)."""
    basis: list[np.ndarray] = []
    for f in columns:
        for g in basis:
            f = f - (weights * f * g).sum() * g
        basis.append(f / np.sqrt((weights * f * f).sum()))
    return basis


def three_mode_fields(noise: float) -> tuple[cs.Fields, list[np.ndarray], np.ndarray]:
    mesh = cube_mesh(6, 1000.0)
    weights = node_weights_by_region(mesh)[1] / 1e9  # µm³
    x, y, z = (mesh.points / 1000.0).T
    modes = weighted_orthonormal([np.sin(np.pi * x), np.cos(np.pi * y) * z, x * y - z**2], weights)
    times = np.linspace(0.0, 2.0, 40)
    raw = np.stack([np.sin(2 * np.pi * times), np.cos(3 * np.pi * times), times**2])
    raw -= raw.mean(axis=1, keepdims=True)
    # orthonormal temporal coefficients with energies 9, 4, 1: X = sum s_k u_k φ_k is its own SVD
    coefficients, _ = np.linalg.qr(raw.T)
    values = 5.0 + sum(s * coefficients[:, k, None] * modes[k][None] for k, s in enumerate((3.0, 2.0, 1.0)))
    values = values + noise * np.random.default_rng(0).standard_normal(values.shape)
    return cs.Fields(mesh, times, {"A": values}), modes, weights


def test_pod_of_a_field_made_of_three_modes_finds_them() -> None:
    fields, modes, weights = three_mode_fields(noise=2e-3)
    out = cs.method("analyze.reduce", n_components=3)(fields=fields)
    explained = out["table"].columns["explained_variance_ratio"]
    assert out["table"].columns["cumulative"][2] > 0.999
    np.testing.assert_allclose(explained[:3] / explained[:3].sum(), np.array([9, 4, 1]) / 14, atol=1e-3)
    loadings = out["loadings"].columns
    for k, mode in enumerate(modes):
        found = loadings[f"mode{k + 1}"]
        assert abs((weights * found * mode).sum()) == pytest.approx(1.0, abs=1e-3)  # the same mode up to its sign
    scores = out["scores"].columns
    np.testing.assert_allclose(np.sum(scores["pc1"] ** 2), 9.0, rtol=1e-3)
    np.testing.assert_allclose(loadings["mean"], 5.0, atol=5e-3)


def test_pod_without_noise_is_exact_and_reconstructs_the_snapshots() -> None:
    fields, _, _ = three_mode_fields(noise=0.0)
    out = cs.method("analyze.reduce", n_components=3)(fields=fields)
    assert out["table"].columns["cumulative"][2] == pytest.approx(1.0, abs=1e-12)
    scores, modes = out["scores"].columns, out["loadings"].columns
    rebuilt = modes["mean"][None] + sum(scores[f"pc{k}"][:, None] * modes[f"mode{k}"][None] for k in (1, 2, 3))
    np.testing.assert_allclose(rebuilt, fields.values["A"], atol=1e-10)


def descriptor_table(seed: int = 0) -> tuple[cs.Table, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.array([[0, 0, 0, 0], [6, 0, 3, 0], [0, 6, 0, -3.0]])
    truth = np.repeat(np.arange(3), 30)
    data = centres[truth] + rng.standard_normal((90, 4)) * 0.5
    columns = {"cell": np.array([f"cell{i}" for i in range(90)])}
    columns.update({name: data[:, j] for j, name in enumerate(("volume", "area", "sphericity", "distance"))})
    return cs.Table(columns, {}, "descriptors"), truth


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_pca_of_descriptors_finds_the_dominant_direction() -> None:
    rng = np.random.default_rng(1)
    direction = np.array([1.0, 2.0, -2.0]) / 3.0
    data = rng.standard_normal((500, 1)) * 4.0 * direction + rng.standard_normal((500, 3)) * 0.1
    table = cs.Table({"a": data[:, 0], "b": data[:, 1], "c": data[:, 2]})
    out = cs.method("analyze.reduce", n_components=2, standardize=False)(table=table)
    loading = np.array([r["mode1"] for r in out["loadings"].rows()])
    assert abs(loading @ direction) == pytest.approx(1.0, abs=1e-3)
    assert out["table"].columns["explained_variance_ratio"][0] > 0.99
    assert list(out["scores"].columns["label"][:2]) == ["row_0", "row_1"]


@pytest.mark.parametrize("clustering", ["kmeans", "gmm"])
def test_clustering_recovers_separated_groups(clustering: str) -> None:
    needed_modules("sklearn")
    table, truth = descriptor_table()
    out = cs.method("analyze.reduce", n_components=2, clustering=clustering, n_clusters=3)(table=table)
    scores = out["scores"].columns
    assert same_partition(scores["cluster"], truth)
    assert scores["label"][5] == "cell5"
    np.testing.assert_array_equal(scores["embed_x"], scores["pc1"])


def test_tsne_embedding_keeps_groups_apart() -> None:
    needed_modules("sklearn")
    table, truth = descriptor_table()
    out = cs.method("analyze.reduce", embedding="tsne")(table=table)
    xy = np.column_stack([out["scores"].columns["embed_x"], out["scores"].columns["embed_y"]])
    centres = np.stack([xy[truth == k].mean(axis=0) for k in range(3)])
    spread = max(np.linalg.norm(xy[truth == k] - centres[k], axis=1).mean() for k in range(3))
    gaps = [np.linalg.norm(centres[i] - centres[j]) for i in range(3) for j in range(i + 1, 3)]
    assert min(gaps) > 2 * spread


def test_reduce_bad_inputs_have_clear_messages() -> None:
    reduce = cs.method("analyze.reduce")
    table, _ = descriptor_table()
    fields, _, _ = three_mode_fields(0.0)
    with pytest.raises(cs.InputError, match="needs exactly one input: 'fields'.*got neither"):
        reduce()
    with pytest.raises(cs.InputError, match="got both"):
        reduce(fields=fields, table=table)
    with pytest.raises(cs.InputError, match="species 'B' is not in the fields; species: A"):
        cs.method("analyze.reduce", species="B")(fields=fields)
    with pytest.raises(cs.InputError, match=r"column\(s\) \['cell'\] are not numeric"):
        cs.method("analyze.reduce", columns=["cell", "volume"])(table=table)
    with pytest.raises(cs.InputError, match=r"column\(s\) \['size'\] are not in the table"):
        cs.method("analyze.reduce", columns=["size"])(table=table)
    with pytest.raises(cs.InputError, match=r"column\(s\) \['k'\] are constant"):
        reduce(table=cs.Table({"v": np.arange(5.0), "k": np.ones(5)}))
    with pytest.raises(cs.InputError, match=r"1 NaN or infinite value\(s\) in columns \['v'\]"):
        reduce(table=cs.Table({"v": np.array([1.0, np.nan, 2.0])}))
    with pytest.raises(cs.InputError, match="n_clusters = 5 is more than the 3 rows"):
        cs.method("analyze.reduce", clustering="kmeans", n_clusters=5)(table=cs.Table({"v": np.arange(3.0)}))
