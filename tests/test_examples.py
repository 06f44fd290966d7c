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
