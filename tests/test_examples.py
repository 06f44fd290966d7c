"""The example specs end to end.

spec/examples/train_segmenter.yaml: a segmenter trained on a synthetic cell, scored, and its model reused.
spec/examples/signaling.yaml: membrane signaling in a segmented, meshed cell (closed system: amounts conserved).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import cellscape as cs

EXAMPLES = Path(__file__).resolve().parents[1] / "spec" / "examples"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return cs.run(EXAMPLES / "train_segmenter.yaml", run_dir=tmp_path_factory.mktemp("train") / "run")


def test_the_forest_learns_the_phantom_from_two_percent_scribbles(trained) -> None:
    rows = {row["class"]: row for row in cs.read(trained.run_dir / "scores.csv").rows()}
    assert rows["cytosol"]["dice"] > 0.9
    assert rows["nucleus"]["dice"] > 0.85
    assert rows["mitochondrion"]["dice"] > 0.7


def test_the_saved_model_segments_new_data_in_another_spec(trained, tmp_path) -> None:
    model = cs.read(trained.run_dir / "forest.npz")
    assert isinstance(model, cs.Model) and model.method == "segment.random_forest"
    spec = tmp_path / "apply.yaml"
    volume_file, model_file = trained.run_dir / "tomogram.npz", trained.run_dir / "forest.npz"
    spec.write_text(
        "version: 1\n"
        "steps:\n"
        "  - id: apply\n"
        "    use: segment.random_forest\n"
        f"    inputs: {{volume: {{file: '{volume_file}'}}, model: {{file: '{model_file}'}}}}\n"
    )
    cs.write(trained.artefact("smoothed"), trained.run_dir / "tomogram.npz")
    applied = cs.run(spec, run_dir=tmp_path / "run").artefact("apply", "labels")
    np.testing.assert_array_equal(applied.data, trained.artefact("forest", "labels").data)


@pytest.fixture(scope="module")
def signaling(tmp_path_factory):
    return cs.run(EXAMPLES / "signaling.yaml", run_dir=tmp_path_factory.mktemp("signaling") / "run")


@pytest.mark.slow
def test_signaling_conserves_substrate_and_kinase_while_the_phospho_form_rises(signaling) -> None:
    probes = cs.read(signaling.run_dir / "signaling_probes.csv").columns
    np.testing.assert_allclose(probes["time_s"], np.linspace(0.0, 2.0, 11), rtol=1e-12)
    # closed system: phosphorylation and dephosphorylation convert S and Sp, recruitment moves K to the membrane
    substrate = probes["amount_S"] + probes["amount_Sp"]
    kinase = probes["amount_K"] + probes["amount_Kmem"]
    np.testing.assert_allclose(substrate, substrate[0], rtol=1e-9, atol=0)
    np.testing.assert_allclose(kinase, kinase[0], rtol=1e-9, atol=0)
    assert probes["amount_Kmem"][-1] > 0.2 * kinase[0]  # real exchange between volume and membrane
    # starting from none, the phospho-form rises at every saved time (the membrane kinase keeps growing)
    assert probes["mean_Sp_cell"][0] == 0.0
    assert np.all(np.diff(probes["mean_Sp_cell"]) > 0)
    assert 0.01 < probes["mean_Sp_cell"][-1] < 0.5
    # made on the membrane, removed in the cytosol: higher at the membrane than at the cell's core. The cell
    # (about 1 µm across) is smaller than the gradient length √(D/k_p) ≈ 1.6 µm, so the gradient is shallow:
    # in a sphere of radius R at steady state, membrane/centre = sinh(R/L)/(R/L) < 1.07 for R <= 1 µm
    fields = signaling.artefact("signaling", "fields")
    mesh = fields.mesh
    on_membrane = np.unique(mesh.boundary_triangles)
    depth = np.linalg.norm(mesh.points - mesh.points[on_membrane].mean(axis=0), axis=1)
    core = depth < np.quantile(depth, 0.05)
    sp = fields.values["Sp"][-1]
    assert 1.0 < sp[on_membrane].mean() / sp[core].mean() < 1.07
    assert (signaling.run_dir / "signaling.pvd").exists()


# ---------------------------------------------------------------------------------------------- synthetic_cells.yaml


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return cs.run(EXAMPLES / "synthetic_cells.yaml", run_dir=tmp_path_factory.mktemp("synthetic") / "run")


@pytest.mark.slow
def test_the_sampled_cell_keeps_its_organelles_inside_and_apart(synthetic) -> None:
    from scipy import ndimage

    labels = cs.read(synthetic.run_dir / "cell" / "labels.tif")
    organelles = cs.read(synthetic.run_dir / "cell" / "organelles.tif")
    assert labels.class_names == {1: "cytosol", 2: "nucleus", 3: "mitochondrion"}
    cell, nucleus, ids = labels.data > 0, labels.data == 2, organelles.data
    assert ndimage.label(cell)[1] == 1 and ndimage.label(nucleus)[1] == 1
    assert ids.max() >= 1 and np.array_equal(ids > 0, labels.data == 3)
    depth = ndimage.distance_transform_edt(cell, sampling=labels.voxel_size_nm)
    off_nucleus = ndimage.distance_transform_edt(~nucleus, sampling=labels.voxel_size_nm)
    for k in range(1, int(ids.max()) + 1):
        body, others = ids == k, (ids > 0) & (ids != k)
        assert depth[body].min() > 20.0 and off_nucleus[body].min() > 20.0  # margin_nm of the spec
        if others.any():
            assert ndimage.distance_transform_edt(~others, sampling=labels.voxel_size_nm)[body].min() > 20.0
    parameters = {(r["component"], r["parameter"]): r["value"] for r in cs.read(synthetic.run_dir /
                                                                              "cell_model_parameters.csv").rows()}
    assert 2.0 <= parameters[("mitochondrion", "count_mean")] <= 6.0  # the phantoms hold 2-6 mitochondria


@pytest.mark.slow
def test_the_sampled_cell_is_meshed_with_named_regions_and_rendered_at_the_requested_snr(synthetic) -> None:
    mdl = (synthetic.run_dir / "mesh" / "cell_surface.mdl").read_text()
    regions = mdl[mdl.index("DEFINE_SURFACE_REGIONS"):]
    assert all(name in regions for name in ("cytosol", "nucleus", "mitochondrion"))
    tets = cs.read(synthetic.run_dir / "mesh" / "cell.xdmf")
    assert set(np.unique(tets.region_markers)) == {1, 2, 3}
    clean = cs.read(synthetic.run_dir / "image" / "em_clean.mrc").data.astype(np.float64)
    noisy = cs.read(synthetic.run_dir / "image" / "em.mrc").data.astype(np.float64)
    assert clean.std() / (noisy - clean).std() == pytest.approx(4.0, rel=0.05)
    tilts = cs.read(synthetic.run_dir / "image" / "tilts.mrc")
    assert np.allclose(tilts.tilt_angles_deg, np.arange(-60.0, 60.1, 3.0))
    assert tilts.projections.shape[1:] == clean.shape[1:]


@pytest.mark.slow
def test_the_saved_cell_model_samples_the_same_cell_again(synthetic, tmp_path) -> None:
    spec = tmp_path / "resample.yaml"
    spec.write_text(
        "version: 1\n"
        "steps:\n"
        "  - id: cell\n"
        "    use: generate.gmm\n"
        f"    inputs: {{model: {{file: '{synthetic.run_dir / 'cell_model.npz'}'}}}}\n"
        "    with: {organelle_classes: [mitochondrion], margin_nm: 20.0, gap_nm: 20.0, seed: 7}\n"
    )
    again = cs.run(spec, run_dir=tmp_path / "run").artefact("cell", "labels")
    np.testing.assert_array_equal(again.data, cs.read(synthetic.run_dir / "cell" / "labels.tif").data)
