"""spec/examples/train_segmenter.yaml: a segmenter trained on a synthetic cell, scored, and its model reused."""

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
