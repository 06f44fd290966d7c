"""The runner: caching, selective recomputation, atomic store, provenance, crash safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import toy_runs

import cellscape as cs
from cellscape._runner import Runner
from cellscape._spec import load_spec

SPEC = """\
version: 1
name: toy
steps:
  - id: raw
    use: generate.toy_volume
    with: {{size: 12, seed: 7, sleep_s: {sleep}}}
    save: raw.npz
  - id: scaled
    use: filter.toy_scale
    inputs: {{volume: raw}}
    with: {{factor: {factor}}}
  - id: cut
    use: segment.toy_cut
    inputs: {{volume: scaled}}
    with: {{level: 0.8}}
    save: {{labels: labels/cut.npz}}
  - id: stats
    use: analyze.toy_stats
    inputs: {{volume: raw, labels: cut}}
"""


def write_spec(tmp_path: Path, factor: float = 2.0, sleep: float = 0.0) -> Path:
    path = tmp_path / "toy.yaml"
    path.write_text(SPEC.format(factor=factor, sleep=sleep))
    return path


def output_hashes(run_dir: Path) -> dict[str, dict[str, str]]:
    provenance = json.loads((run_dir / "provenance.json").read_text())
    return {s["id"]: {k: v["hash"] for k, v in s["outputs"].items()} for s in provenance["steps"]}


def test_first_run_computes_and_second_run_is_cached(toy, tmp_path) -> None:
    spec = write_spec(tmp_path)
    first = cs.run(spec, run_dir=tmp_path / "run", report=False)
    assert first.computed == ["raw", "scaled", "cut", "stats"]
    assert toy_runs(toy) == ["generate.toy_volume", "filter.toy_scale", "segment.toy_cut", "analyze.toy_stats"]
    expected = np.random.default_rng(7).random((12, 12, 12)).astype(np.float32) * 2
    np.testing.assert_array_equal(first.artefact("scaled").data, expected)
    labels = cs.read(tmp_path / "run" / "labels" / "cut.npz", kind="labels")
    np.testing.assert_array_equal(labels.data, (expected > 0.8).astype(np.uint8))
    second = cs.run(spec, run_dir=tmp_path / "run", report=False)
    assert second.cached == ["raw", "scaled", "cut", "stats"] and second.computed == []
    assert len(toy_runs(toy)) == 4
    assert output_hashes(tmp_path / "run") == {k: v for k, v in second.outputs.items()}


def test_changing_one_parameter_recomputes_only_what_depends_on_it(toy, tmp_path) -> None:
    cs.run(write_spec(tmp_path, factor=2.0), run_dir=tmp_path / "run", report=False)
    before = output_hashes(tmp_path / "run")
    result = cs.run(write_spec(tmp_path, factor=3.0), run_dir=tmp_path / "run", report=False)
    assert result.cached == ["raw"]
    assert result.computed == ["scaled", "cut", "stats"]
    after = output_hashes(tmp_path / "run")
    assert after["raw"] == before["raw"] and after["scaled"] != before["scaled"]
    # going back to the old value is a cache hit for every step
    back = cs.run(write_spec(tmp_path, factor=2.0), run_dir=tmp_path / "run", report=False)
    assert back.computed == []


def test_plan_and_force(toy, tmp_path) -> None:
    spec = load_spec(write_spec(tmp_path))
    runner = Runner(spec, tmp_path / "run")
    assert [p.status for p in runner.plan()] == ["run"] * 4
    assert "will be computed" in runner.plan()[1].reason
    runner.run(report=False)
    assert [p.status for p in runner.plan()] == ["cached"] * 4
    forced = runner.plan(force=["cut"])
    # downstream of a forced step the plan cannot know the new outputs yet, so it says "run"...
    assert [p.status for p in forced] == ["cached", "cached", "run", "run"]
    assert "'cut' will be computed" in forced[3].reason
    # ...but the recomputed output is identical, so the step after it is a cache hit
    result = runner.run(force=["cut"], report=False)
    assert result.computed == ["cut"]
    assert result.cached == ["raw", "scaled", "stats"]
    with pytest.raises(cs.InputError, match="--force: no step named nope"):
        runner.run(force=["nope"])


def test_provenance_records_what_happened(toy, tmp_path) -> None:
    result = cs.run(write_spec(tmp_path), run_dir=tmp_path / "run", report=False)
    provenance = json.loads((tmp_path / "run" / "provenance.json").read_text())
    raw = provenance["steps"][0]
    assert raw["method"] == "generate.toy_volume"
    assert raw["distribution"] == "cellscape-toy"
    assert raw["version"] == "cellscape-toy==1.2.3/1"
    assert raw["params"] == {"size": 12, "seed": 7, "sleep_s": 0.0}
    assert raw["seeds"] == {"seed": 7}
    assert raw["status"] == "computed" and raw["time_s"] >= 0
    assert raw["saved"] == [str(tmp_path / "run" / "raw.npz")]
    stats = provenance["steps"][3]
    assert stats["inputs"]["labels"] == {"from": "cut.labels", "hash": result.outputs["cut"]["labels"]}
    assert provenance["spec"]["sha256"] and provenance["host"]["python"]
    assert provenance["plugins"]["toy"] == {"distribution": "cellscape-toy", "version": "1.2.3"}
    stored = result.store.get(result.outputs["raw"]["volume"])
    assert cs.content_hash(stored) == result.outputs["raw"]["volume"]


def test_a_failing_step_names_itself_and_keeps_earlier_results(toy, tmp_path) -> None:
    spec = tmp_path / "fail.yaml"
    spec.write_text(
        "version: 1\nsteps:\n  - id: raw\n    use: generate.toy_volume\n"
        "  - id: bad\n    use: filter.toy_explode\n    inputs: {volume: raw}\n"
    )
    with pytest.raises(cs.StepError, match="step 'bad' \\(filter.toy_explode\\) failed: RuntimeError: boom"):
        cs.run(spec, run_dir=tmp_path / "run", report=False)
    plan = Runner(load_spec(spec), tmp_path / "run").plan()
    assert [p.status for p in plan] == ["cached", "run"]


def test_missing_or_corrupt_input_file_is_an_input_error_naming_it(toy, tmp_path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file at all")
    spec = tmp_path / "file.yaml"
    spec.write_text("version: 1\nsteps:\n  - id: s\n    use: filter.toy_scale\n    inputs: {volume: {file: bad.npz}}\n")
    with pytest.raises(cs.InputError, match="step 's', input 'volume': .*bad.npz"):
        cs.run(spec, run_dir=tmp_path / "run", report=False)


def test_damaged_store_object_is_detected(toy, tmp_path) -> None:
    result = cs.run(write_spec(tmp_path), run_dir=tmp_path / "run", report=False)
    digest = result.outputs["raw"]["volume"]
    path = result.store.path_of(digest)
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(cs.StoreError, match="damaged|does not match"):
        result.store.get(digest)


def _run_cli(spec: Path, run_dir: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cellscape.cli", "run", str(spec), "--run-dir", str(run_dir), "--quiet", "--no-report"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


@pytest.mark.slow
def test_sigkill_then_rerun_gives_identical_outputs(toy, tmp_path) -> None:
    spec = write_spec(tmp_path, sleep=1.5)
    reference = _run_cli(spec, tmp_path / "reference", toy.env)
    assert reference.wait(timeout=120) == 0, reference.stderr.read().decode()
    for delay in (0.4, 1.2, 2.0):
        run_dir = tmp_path / f"killed-{delay}"
        process = _run_cli(spec, run_dir, toy.env)
        time.sleep(delay)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        rerun = _run_cli(spec, run_dir, toy.env)
        assert rerun.wait(timeout=120) == 0, rerun.stderr.read().decode()
        assert output_hashes(run_dir) == output_hashes(tmp_path / "reference")
        assert not list(run_dir.rglob(".*.tmp"))
        saved = cs.read(run_dir / "raw.npz")
        assert cs.content_hash(saved) == output_hashes(run_dir)["raw"]["volume"]
