"""``mpiexec -n 2 cellscape run``: rank 0 runs ordinary steps once, collective steps run on both ranks together."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import needed_modules, needed_tool, toy_runs

from cellscape._store import Store

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


SPEC = """\
version: 1
name: ranks
steps:
  - id: raw
    use: generate.toy_volume
    with: {size: 10, seed: 4}
  - id: scaled
    use: filter.toy_scale
    inputs: {volume: raw}
  - id: together
    use: analyze.toy_ranks
    inputs: {volume: scaled}
"""


def mpi_run(toy, tmp_path, spec_text: str, run_dir) -> subprocess.CompletedProcess[str]:
    mpiexec = needed_tool("mpiexec")
    needed_modules("mpi4py")
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_text)
    env = {**toy.env, "CELLSCAPE_TOY_LOG": str(toy.log)}
    return subprocess.run([mpiexec, "-n", "2", sys.executable, "-m", "cellscape.cli", "run", str(spec), "--run-dir",
                           str(run_dir), "--quiet", "--no-report"], capture_output=True, text=True, env=env, timeout=240)


def test_two_ranks(toy, tmp_path) -> None:
    run = mpi_run(toy, tmp_path, SPEC, tmp_path / "run")
    assert run.returncode == 0, run.stderr[-3000:]
    runs = toy_runs(toy)
    assert runs.count("generate.toy_volume") == 1 and runs.count("filter.toy_scale") == 1  # rank 0 only
    assert runs.count("analyze.toy_ranks") == 2  # both ranks, together
    provenance = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert provenance["executor"] == {"type": "mpi", "ranks": 2}
    record = provenance["steps"][-1]
    assert record["id"] == "together" and record["ranks"] == 2
    table = Store(tmp_path / "run" / "store").get(record["outputs"]["table"]["hash"])
    assert table.columns["ranks"].tolist() == [2] and table.columns["sum"].tolist() == [1 + 2]
    again = mpi_run(toy, tmp_path, SPEC, tmp_path / "run")
    assert again.returncode == 0 and len(toy_runs(toy)) == len(runs)  # everything cached, on every rank


def test_a_failure_on_rank_0_stops_every_rank_with_the_step_named(toy, tmp_path) -> None:
    run = mpi_run(toy, tmp_path, SPEC.replace("filter.toy_scale", "filter.toy_explode"), tmp_path / "run")
    assert run.returncode != 0
    assert "step 'scaled' (filter.toy_explode) failed" in run.stderr
    assert "analyze.toy_ranks" not in toy_runs(toy)
