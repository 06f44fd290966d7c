"""Executors: local threads and Dask run the same steps to the same artefacts; faults are reported or survived."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import needed_modules, toy_runs

import cellscape as cs
from cellscape import cli
from cellscape._executor import ExecutorConfig
from cellscape._spec import load_spec

# two independent slow branches joined by one step: concurrency shows as overlapping intervals
BRANCHES = """\
version: 1
name: branches
{executor}
steps:
  - id: left
    use: generate.toy_volume
    with: {{size: 8, seed: 1, sleep_s: {sleep}}}
  - id: right
    use: generate.toy_volume
    with: {{size: 8, seed: 2, sleep_s: {sleep}}}
  - id: scaled
    use: filter.toy_scale
    inputs: {{volume: left}}
  - id: stats
    use: analyze.toy_stats
    inputs: {{volume: right, labels: cut}}
  - id: cut
    use: segment.toy_cut
    inputs: {{volume: scaled}}
"""


def write(tmp_path: Path, sleep: float = 0.0, executor: str = "", name: str = "branches.yaml") -> Path:
    path = tmp_path / name
    path.write_text(BRANCHES.format(sleep=sleep, executor=executor))
    return path


def outputs(result: cs.RunResult) -> dict[str, dict[str, str]]:
    return {step: dict(outs) for step, outs in result.outputs.items()}


def interval(result: cs.RunResult, step: str) -> tuple[float, float]:
    record = next(r for r in result.provenance["steps"] if r["id"] == step)
    return record["started"], record["finished"]


def test_two_threads_run_independent_steps_at_the_same_time_with_the_same_results(toy, tmp_path) -> None:
    spec = write(tmp_path, sleep=0.4)
    serial = cs.run(spec, run_dir=tmp_path / "serial", report=False)
    parallel = cs.run(spec, run_dir=tmp_path / "parallel", report=False, workers=2)
    assert outputs(parallel) == outputs(serial)  # content hashes: identical artefacts
    assert sorted(parallel.computed) == sorted(serial.computed) == ["cut", "left", "right", "scaled", "stats"]
    # provenance lists steps in the spec's dependency order whatever order they finished in
    assert [r["id"] for r in parallel.provenance["steps"]] == [s.id for s in load_spec(spec).steps]
    (l0, l1), (r0, r1) = interval(parallel, "left"), interval(parallel, "right")
    assert max(l0, r0) < min(l1, r1), "with two workers the two sleeping branches overlap"
    (l0, l1), (r0, r1) = interval(serial, "left"), interval(serial, "right")
    assert min(l1, r1) <= max(l0, r0), "with one worker they run one after the other"
    assert parallel.provenance["executor"] == {"type": "local", "workers": 2}


def test_executor_block_in_the_spec_and_command_line_override(toy, tmp_path) -> None:
    spec = write(tmp_path, executor="executor: {type: local, workers: 2}")
    loaded = load_spec(spec)
    assert ExecutorConfig.from_mapping(loaded.executor).workers == 2
    assert ExecutorConfig.from_mapping(loaded.executor, workers=1).workers == 1
    assert ExecutorConfig.from_mapping({}, scheduler="tcp://somewhere:8786").type == "dask"
    result = cs.run(spec, run_dir=tmp_path / "run", report=False)
    assert result.provenance["executor"]["workers"] == 2


def test_bad_executor_settings_are_spec_errors_with_lines(toy, tmp_path) -> None:
    spec = write(tmp_path, executor="executor: {type: slurm, workers: 0}")
    with pytest.raises(cs.SpecError) as err:
        load_spec(spec)
    text = str(err.value)
    assert "executor.type" in text and "executor.workers" in text and ":3" in text
    with pytest.raises(cs.InputError, match="workers must be at least 1"):
        ExecutorConfig.from_mapping({}, workers=0)


def test_a_failing_step_keeps_what_finished_and_names_the_step(toy, tmp_path) -> None:
    path = tmp_path / "fail.yaml"
    path.write_text(BRANCHES.format(sleep=0.0, executor="").replace(
        "use: filter.toy_scale", "use: filter.toy_explode"))
    with pytest.raises(cs.StepError, match="step 'scaled' \\(filter.toy_explode\\) failed: RuntimeError: boom"):
        cs.run(path, run_dir=tmp_path / "run", report=False, workers=2)
    provenance = json.loads((tmp_path / "run" / "provenance.json").read_text())
    finished = {r["id"] for r in provenance["steps"]}
    assert {"left", "right"} <= finished and "scaled" not in finished
    again = cs.run(write(tmp_path), run_dir=tmp_path / "run", report=False)
    assert {"left", "right"} <= set(again.cached)  # nothing computed before the failure is lost


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_dask_local_cluster_gives_the_same_artefacts_and_survives_a_killed_worker(toy, tmp_path, monkeypatch) -> None:
    needed_modules("distributed")
    monkeypatch.setenv("PYTHONPATH", toy.env["PYTHONPATH"])  # the workers import the toy plugin
    marker = tmp_path / "died-once"
    monkeypatch.setenv("CELLSCAPE_TOY_DIE_ONCE", str(marker))
    text = BRANCHES.format(sleep=0.0, executor="").replace("use: filter.toy_scale", "use: filter.toy_die_once")
    spec = tmp_path / "dies.yaml"
    spec.write_text(text)
    reference_spec = tmp_path / "reference.yaml"
    reference_spec.write_text(text)
    marker.write_text("already died")  # the in-process reference run must not kill pytest
    reference = cs.run(reference_spec, run_dir=tmp_path / "reference", report=False)
    marker.unlink()
    before = len(toy_runs(toy))
    from cellscape._executor import DaskExecutor
    from cellscape._runner import Runner

    with DaskExecutor(workers=2) as executor:
        assert executor.workers == 2
        result = Runner(load_spec(spec), tmp_path / "dask").run(executor=executor, report=False)
    assert marker.exists(), "the first attempt killed its worker"
    assert int(marker.read_text()) != os.getpid()
    assert outputs(result) == outputs(reference)
    assert toy_runs(toy)[before:].count("filter.toy_die_once") == 1  # the retry ran once, on a live worker
    workers = {r["worker"] for r in result.provenance["steps"] if r["status"] == "computed"}
    assert all(w.split(":")[1] != str(os.getpid()) for w in workers)
    store = result.store
    for record in result.provenance["steps"]:
        for out in record["outputs"].values():
            store.get(out["hash"], verify=True)  # every artefact intact
    assert store.clean_temporaries() <= 1  # at most the killed attempt's half-written file, removed by the next run
    data = result.artefact("scaled")
    expected = np.random.default_rng(1).random((8, 8, 8)).astype(np.float32) + 1
    np.testing.assert_array_equal(data.data, expected)


@pytest.mark.timeout(90)
def test_an_unreachable_scheduler_is_a_clear_error_within_its_timeout(toy, tmp_path) -> None:
    needed_modules("distributed")
    spec = write(tmp_path, executor="executor: {scheduler: 'tcp://127.0.0.1:9', timeout_s: 2}")
    start = time.monotonic()
    with pytest.raises(cs.InputError, match=r"cannot reach the Dask scheduler at tcp://127.0.0.1:9 within 2 s"):
        cs.run(spec, run_dir=tmp_path / "run", report=False)
    assert time.monotonic() - start < 60  # a bound on a hang, not a speed measurement
    code = cli.main(["run", str(write(tmp_path, name="plain.yaml")), "--run-dir", str(tmp_path / "cli"), "--quiet",
                     "--scheduler", "tcp://127.0.0.1:9"])
    assert code == cli.EXIT_FAILED


def test_cli_runs_with_workers(toy, tmp_path, capsys) -> None:
    spec = write(tmp_path)
    code = cli.main(["run", str(spec), "--run-dir", str(tmp_path / "run"), "--workers", "2", "--no-report"])
    assert code == 0
    err = capsys.readouterr().err
    assert "on 2 threads" in err
    provenance = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert provenance["executor"] == {"type": "local", "workers": 2}


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_chunked_step_on_dask_workers_equals_the_local_run(tmp_path) -> None:
    needed_modules("distributed")
    from cellscape._executor import DaskExecutor
    from cellscape._runner import Runner

    data = np.random.default_rng(5).random((40, 36, 30)).astype(np.float32)
    cs.write(cs.Volume(data, voxel_size_nm=(2.0, 1.0, 1.0)), tmp_path / "v.ome.zarr")
    spec = tmp_path / "chunked.yaml"
    spec.write_text("version: 1\nsteps:\n  - id: smooth\n    use: filter.gaussian\n"
                    "    inputs: {volume: {file: v.ome.zarr}}\n    with: {sigma_nm: 2.0}\n    chunks: 16\n")
    local = cs.run(spec, run_dir=tmp_path / "local", report=False)
    with DaskExecutor(workers=2) as executor:
        remote = Runner(load_spec(spec), tmp_path / "dask").run(executor=executor, report=False)
    np.testing.assert_allclose(remote.artefact("smooth").data, local.artefact("smooth").data, atol=1e-6)
    whole = cs.method("filter.gaussian", sigma_nm=2.0)(cs.read(tmp_path / "v.ome.zarr"))
    np.testing.assert_allclose(remote.artefact("smooth").data, whole.data, atol=1e-6)
