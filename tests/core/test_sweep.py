"""Parameter sweeps: members from grid/zip/random, shared steps computed once, cached members, a gathered table."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import toy_runs

import cellscape as cs
from cellscape import cli
from cellscape._runner import Runner
from cellscape._spec import load_spec

SWEEP = """\
version: 1
name: sweep
vars: {{factor: 2.0}}
{sweep}
steps:
  - id: raw
    use: generate.toy_volume
    with: {{size: 10, seed: 3}}
  - id: scaled
    use: filter.toy_scale
    inputs: {{volume: raw}}
    with: {{factor: "${{factor}}"}}
  - id: cut
    use: segment.toy_cut
    inputs: {{volume: scaled}}
    with: {{level: 0.8}}
    save: {{labels: cut.npz}}
  - id: stats
    use: analyze.toy_stats
    inputs: {{volume: raw, labels: cut}}
"""

GRID = """sweep:
  mode: grid
  values: {factor: [1.0, 2.0, 3.0], cut.level: [0.5, 0.8]}
  gather: {step: stats, output: table}"""


def write(tmp_path, sweep: str, name: str = "sweep.yaml"):
    path = tmp_path / name
    path.write_text(SWEEP.format(sweep=sweep))
    return path


def labelled(factor: float, level: float) -> int:
    volume = np.random.default_rng(3).random((10, 10, 10)).astype(np.float32) * np.float32(factor)
    return int((volume > level).sum())


def test_grid_sweep_runs_every_member_and_computes_shared_steps_once(toy, tmp_path) -> None:
    spec = write(tmp_path, GRID)
    result = cs.run(spec, run_dir=tmp_path / "run", report=True)
    runs = toy_runs(toy)
    assert runs.count("generate.toy_volume") == 1  # the same raw step in every member: one computation
    assert runs.count("filter.toy_scale") == 3  # one per factor
    assert runs.count("segment.toy_cut") == 6
    assert runs.count("analyze.toy_stats") == 6
    table = result.sweep_table
    assert table.n_rows == 6
    combos = list(zip(table.columns["factor"], table.columns["cut.level"], strict=True))
    assert combos == [(1.0, 0.5), (1.0, 0.8), (2.0, 0.5), (2.0, 0.8), (3.0, 0.5), (3.0, 0.8)]
    expected = [labelled(f, lv) for f, lv in combos]
    assert table.columns["value"].tolist() == expected  # last row of each member's stats table: labelled voxels
    assert len(set(expected)) == 6  # the members really differ
    # each member's saves go to its own folder; the sweep table and figure to the run directory
    assert (tmp_path / "run" / "members" / "005" / "cut.npz").exists()
    assert (tmp_path / "run" / "sweep.csv").exists() and (tmp_path / "run" / "sweep.png").stat().st_size > 1000
    member5 = result.artefact("cut", member=5)
    assert int((member5.data > 0).sum()) == expected[5]
    with pytest.raises(KeyError, match="name the member"):
        result.artefact("cut")
    assert "Sweep" in result.report.read_text()


def test_second_run_of_a_sweep_is_fully_cached_and_plan_says_so(toy, tmp_path, capsys) -> None:
    spec = write(tmp_path, GRID)
    code = cli.main(["plan", str(spec), "--run-dir", str(tmp_path / "run")])
    assert code == 0 and "0 of 6 sweep members fully cached" in capsys.readouterr().out
    cs.run(spec, run_dir=tmp_path / "run", report=False, workers=2)
    before = len(toy_runs(toy))
    again = cs.run(spec, run_dir=tmp_path / "run", report=False)
    assert len(toy_runs(toy)) == before and again.computed == []
    plans = Runner(load_spec(spec), tmp_path / "run").plan_members()
    assert all(p.status == "cached" for _, member in plans for p in member)
    code = cli.main(["plan", str(spec), "--run-dir", str(tmp_path / "run")])
    assert code == 0 and "6 of 6 sweep members fully cached" in capsys.readouterr().out


def test_zip_and_random_sweeps(toy, tmp_path) -> None:
    zipped = load_spec(write(tmp_path, "sweep:\n  mode: zip\n  values: {factor: [1.0, 2.0], cut.level: [0.1, 0.2]}"))
    assert [m.values for m in zipped.sweep.members] == [{"factor": 1.0, "cut.level": 0.1}, {"factor": 2.0, "cut.level": 0.2}]
    member = zipped.sweep.members[1].spec
    assert member.step("scaled").params["factor"] == 2.0 and member.step("cut").params["level"] == 0.2
    random = ("sweep:\n  mode: random\n  samples: 20\n  seed: 4\n"
              "  values: {factor: {low: 0.1, high: 10, log: true}, cut.mode: [above, below]}")
    first = load_spec(write(tmp_path, random, "r1.yaml")).sweep
    second = load_spec(write(tmp_path, random, "r2.yaml")).sweep
    assert [m.values for m in first.members] == [m.values for m in second.members]  # seeded
    factors = np.array([m.values["factor"] for m in first.members])
    assert factors.min() >= 0.1 and factors.max() <= 10 and factors.std() > 0.5
    assert {m.values["cut.mode"] for m in first.members} == {"above", "below"}


@pytest.mark.parametrize(("sweep", "message"), [
    ("sweep:\n  values: {cut.levle: [1, 2]}", "segment.toy_cut has no parameter 'levle'; did you mean 'level'?"),
    ("sweep:\n  values: {facter: [1, 2]}", "sweep over 'facter': not a variable under vars:"),
    ("sweep:\n  values: {cutt.level: [1, 2]}", "no step 'cutt'; did you mean 'cut'?"),
    ("sweep:\n  mode: zip\n  values: {factor: [1, 2], cut.level: [1]}", "a zip sweep needs lists of equal length"),
    ("sweep:\n  values: {factor: {low: 1, high: 2}}", "a grid sweep needs a list of values for 'factor'"),
    ("sweep:\n  mode: random\n  values: {factor: [1, 2]}", "a random sweep needs 'samples'"),
    ("sweep:\n  values: {factor: [1.0, -1.0]}", "sweep member 1 (factor=-1.0):"),
    ("sweep:\n  values: {factor: [1.0]}\n  gather: {step: cut}", "gather: step 'cut' needs a Table output"),
])
def test_sweep_errors_name_the_key_and_line(toy, tmp_path, sweep, message) -> None:
    with pytest.raises(cs.SpecError) as err:
        load_spec(write(tmp_path, sweep))
    text = str(err.value)
    assert message in text
    assert "sweep.yaml:" in text  # file and line
