"""The command line: exit codes, messages, and each subcommand's output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_runner import write_spec

from cellscape.cli import main


def test_validate_ok_and_errors(toy, tmp_path, capsys) -> None:
    spec = write_spec(tmp_path)
    assert main(["validate", str(spec)]) == 0
    assert "valid, 4 steps: raw → scaled → cut → stats" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(spec.read_text().replace("factor: 2.0", "factor: -2").replace("level: 0.8", "levl: 1")
                   .replace("toy_stats", "toy_stat"))
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "3 problems in the pipeline spec:" in err
    assert "bad.yaml:11: [steps[1].with.factor]" in err
    assert "bad.yaml:15: [steps[2].with.levl]" in err
    assert "bad.yaml:18: [steps[3].use] unknown method 'analyze.toy_stat'; did you mean 'analyze.toy_stats'?" in err


def test_run_plan_graph_report(toy, tmp_path, capsys) -> None:
    spec = write_spec(tmp_path)
    run_dir = tmp_path / "run"
    assert main(["plan", str(spec), "--run-dir", str(run_dir)]) == 0
    assert "0 of 4 steps cached" in capsys.readouterr().out
    assert main(["run", str(spec), "--run-dir", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "4 computed, 0 cached" in out
    assert f"report      {run_dir / 'report' / 'index.html'}" in out
    assert main(["plan", str(spec), "--run-dir", str(run_dir)]) == 0
    assert "4 of 4 steps cached" in capsys.readouterr().out
    assert main(["graph", str(spec)]) == 0
    assert "s_scaled -->|volume→volume| s_cut" in capsys.readouterr().out
    page = (run_dir / "report" / "index.html").read_text()
    assert "<td>mean</td>" in page and "generate.toy_volume" in page
    assert main(["report", str(run_dir)]) == 0
    assert main(["report", str(tmp_path)]) == 1
    assert "no provenance.json here" in capsys.readouterr().err


def test_step_failure_exit_code(toy, tmp_path, capsys) -> None:
    spec = tmp_path / "fail.yaml"
    spec.write_text("version: 1\nsteps:\n  - id: raw\n    use: generate.toy_volume\n"
                    "  - id: bad\n    use: filter.toy_explode\n    inputs: {volume: raw}\n")
    assert main(["run", str(spec), "--run-dir", str(tmp_path / "r"), "--quiet"]) == 1
    assert "StepError: step 'bad' (filter.toy_explode) failed" in capsys.readouterr().err


def test_plugins_show(toy, capsys) -> None:
    assert main(["plugins", "show", "generate.toy_volume"]) == 0
    out = capsys.readouterr().out
    assert "generate.toy_volume  (cellscape-toy 1.2.3, plugin 'toy')" in out
    assert "size: int [voxel] = default 8 (>= 2, <= 256)" in out
    assert "outputs: volume: Volume" in out
    assert main(["plugins", "show", "generate.toy_volum"]) == 1
    assert "did you mean 'generate.toy_volume'" in capsys.readouterr().err


def test_usage_errors_exit_2() -> None:
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2


def test_console_script_is_installed() -> None:
    exe = Path(sys.executable).with_name("cellscape")
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("cellscape 0.1.0")
