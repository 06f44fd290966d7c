"""The demo pipeline end to end: every stage's output checked against the phantom's ground truth."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import needed_tool

import cellscape as cs

SPEC = Path(__file__).resolve().parents[1] / "spec" / "examples" / "demo.yaml"


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> cs._runner.RunResult:
    return cs.run(SPEC, run_dir=tmp_path_factory.mktemp("demo") / "run")


def hashes(provenance: dict) -> dict[str, dict[str, str]]:
    return {s["id"]: {k: v["hash"] for k, v in s["outputs"].items()} for s in provenance["steps"]}


def test_every_step_ran_and_saved_its_outputs(demo) -> None:
    assert sorted(demo.computed) == sorted(["cell", "tilts", "tomogram", "cell_mask", "organelle_mask", "organelles",
                                            "surface", "improved", "volume_mesh", "diffusion", "summary"])
    kinds = {"tilts.mrc": cs.TiltSeries, "tomogram.mrc": cs.Volume, "mesh/cell_surface.vtp": cs.SurfaceMesh,
             "mesh/cell.vtu": cs.TetMesh, "summary.csv": cs.Table}
    for name, kind in kinds.items():
        assert isinstance(cs.read(demo.run_dir / name), kind), name
    labels = cs.read(demo.run_dir / "segmentation" / "organelles.tif", kind="labels")
    np.testing.assert_array_equal(labels.data, demo.artefact("organelles").data)


def test_segmentation_and_meshes_match_the_phantom(demo) -> None:
    truth = demo.artefact("cell", "labels")
    cell = demo.artefact("cell_mask").data > 0
    offset = (cell.shape[0] - truth.shape[0]) // 2  # the tomogram is thicker than the phantom, centred on it
    true_cell = np.zeros(cell.shape, bool)
    true_cell[offset:offset + truth.shape[0]] = truth.data > 0
    dice = 2 * (cell & true_cell).sum() / (cell.sum() + true_cell.sum())
    assert dice > 0.8
    organelles = demo.artefact("organelles")
    n_true = 1 + 4  # nucleus and four mitochondria
    assert abs(organelles.data.max() - n_true) <= 1
    mesh = demo.artefact("volume_mesh")
    volume_um3 = cell.sum() * 20.0**3 / 1e9  # the mesh follows the segmentation (smoothed by marching cubes)
    tets = mesh.points[mesh.tetrahedra]
    mesh_um3 = np.abs(np.einsum("ij,ij->i", tets[:, 1] - tets[:, 0],
                                np.cross(tets[:, 2] - tets[:, 0], tets[:, 3] - tets[:, 0]))).sum() / 6 / 1e9
    assert mesh_um3 == pytest.approx(volume_um3, rel=0.05)


def test_diffusion_conserves_the_released_amount(demo) -> None:
    table = {(r["quantity"], r["region"]): r["value"] for r in demo.artefact("summary", "table").rows()}
    start, end = table[("calcium amount at t=0", "cell")], table[("calcium amount at t=1 s", "cell")]
    assert start > 0 and end == pytest.approx(start, rel=1e-10)
    course = demo.artefact("summary", "timecourse")
    mean = course.columns["calcium in cell"]
    assert mean[-1] == pytest.approx(mean[0], rel=1e-9)  # the mean is conserved too...
    fields = demo.artefact("diffusion")
    values = fields.values["calcium"]
    assert values[-1].max() < 0.5 * values[0].max()  # ...while the peak spreads out


def test_report_shows_every_figure(demo) -> None:
    page = (demo.run_dir / "report" / "index.html").read_text()
    images = re.findall(r"<img alt='([^']+)' src='data:image/png;base64,", page)
    # two per phantom, diffusion and surfaces, three for the mesh (boundary, cut-away, dihedral); one per other output
    assert len(images) == 17
    for needed in ("tomogram_volume_slices", "cell_mask_labels_overlay", "surface_surface_render_vtk",
                   "surface_surface_angles", "diffusion_fields_curves", "volume_mesh_mesh_boundary_vtk",
                   "volume_mesh_mesh_cutaway_vtk", "volume_mesh_mesh_dihedral"):
        assert needed in images
    assert "<th>quantity</th>" in page and "class='error'" not in page


@pytest.mark.slow
def test_report_opens_in_a_headless_browser_with_every_figure_decoded(demo, tmp_path) -> None:
    """Chromium loads the page, decodes every embedded PNG and meets no script or resource error."""
    browser = needed_tool("chromium", "chromium-browser", "google-chrome")
    index = demo.run_dir / "report" / "index.html"
    expected = len(re.findall(r"<img ", index.read_text()))
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", "--dump-dom",
                           index.as_uri()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", done.stdout)
    assert body is not None, done.stdout[:2000]
    attributes = dict(re.findall(r'([\w-]+)="([^"]*)"', body.group(1)))
    assert int(attributes["data-figures"]) == expected == 17
    assert int(attributes["data-figures-shown"]) == expected  # each image decoded with a width > 0
    assert attributes["data-errors"] == ""
    assert f"figures: {expected} of {expected} shown" in done.stdout


def test_second_run_recomputes_nothing(demo) -> None:
    again = cs.run(SPEC, run_dir=demo.run_dir)
    assert again.computed == []
    assert hashes(again.provenance) == hashes(demo.provenance)


@pytest.mark.slow
def test_killed_demo_resumes_to_identical_outputs(demo, tmp_path) -> None:
    run_dir = tmp_path / "killed"
    command = [sys.executable, "-m", "cellscape.cli", "run", str(SPEC), "--run-dir", str(run_dir), "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # kill it once a few steps are done and before the last one, however fast or loaded the machine is
    provenance = run_dir / "provenance.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        try:
            done = sum(s["status"] == "computed" for s in json.loads(provenance.read_text())["steps"])
        except (OSError, ValueError, KeyError):
            done = 0
        if done >= 3:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    subprocess.run(command, check=True, timeout=600)
    resumed = json.loads((run_dir / "provenance.json").read_text())
    assert hashes(resumed) == hashes(demo.provenance)
    assert any(s["status"] == "cached" for s in resumed["steps"])  # the kill left finished steps behind
