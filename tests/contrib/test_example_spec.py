"""The contrib plugin works in a spec like a built-in method: membranes of the phantom cell are found."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

import cellscape as cs

SPEC = Path(__file__).resolve().parents[2] / "spec" / "examples" / "membranes.yaml"


def test_membranes_spec_finds_the_phantom_membranes(tmp_path) -> None:
    result = cs.run(SPEC, run_dir=tmp_path / "run", report=False)
    found = cs.read(tmp_path / "run" / "membranes.tif", kind="labels").data > 0
    truth = result.artefact("cell", "density").data >= 1.0  # membranes have density 1.0 in the phantom
    near_truth = ndimage.binary_dilation(truth, iterations=2)
    precision = (found & near_truth).sum() / found.sum()
    recall = (ndimage.binary_dilation(found, iterations=2) & truth).sum() / truth.sum()
    assert precision >= 0.8
    assert recall >= 0.9
    provenance = result.provenance["steps"][-1]
    assert provenance["distribution"] == "cellscape-example"
    assert np.unique(found).tolist() == [False, True]
