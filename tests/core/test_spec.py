"""Spec loading and validation: every problem reported at once, with file, line and key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import cellscape as cs
from cellscape._spec import load_spec, validate_spec

GOOD = """\
version: 1
name: toy
vars:
  seed: 4
  out: results
steps:
  - id: scaled
    use: filter.toy_scale
    inputs: {volume: raw}
    with: {factor: 0.5}
  - id: raw
    use: generate.toy_volume
    with:
      size: 6
      seed: ${seed}
    save: ${out}/raw.npz
  - id: stats
    use: analyze.toy_stats
    inputs:
      volume: scaled
    save: {table: stats.npz}
"""


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_valid_spec_is_ordered_and_substituted(toy, tmp_path) -> None:
    spec = load_spec(write(tmp_path, GOOD))
    assert [s.id for s in spec.steps] == ["raw", "scaled", "stats"]
    raw = spec.step("raw")
    assert raw.params == {"size": 6, "seed": 4}
    assert raw.save == {"volume": "results/raw.npz"}
    assert spec.step("stats").inputs["volume"].output == "volume"
    assert spec.step("stats").save == {"table": "stats.npz"}
    assert spec.name == "toy"
    mermaid = spec.mermaid()
    assert mermaid.startswith("flowchart TD")
    assert "s_raw -->|volume→volume| s_scaled" in mermaid


def test_three_independent_mistakes_are_all_reported_with_lines(toy, tmp_path) -> None:
    path = write(tmp_path, """\
        version: 1
        steps:
          - id: raw
            use: generate.toy_volume
            with:
              size: "big"
          - id: scaled
            use: filter.toy_scal
            inputs: {volume: raw}
          - id: cut
            use: segment.toy_cut
            inputs: {volume: raw}
            with: {levle: 0.2}
        """)
    issues = validate_spec(path)
    assert len(issues) == 3
    by_line = {i.line: i for i in issues}
    assert "parameter 'size': expected an integer, got str 'big'" in by_line[6].message
    assert by_line[6].key == "steps[0].with.size"
    assert "unknown method 'filter.toy_scal'; did you mean 'filter.toy_scale'?" in by_line[8].message
    assert "unknown parameter 'levle'; did you mean 'level'?" in by_line[13].message
    assert all(i.file == str(path) for i in issues)


def test_structure_errors(toy, tmp_path) -> None:
    path = write(tmp_path, """\
        version: 1
        stepz: []
        steps:
          - id: raw
            use: generate.toy_volume
            wiht: {size: 4}
          - id: raw
            use: filter.toy_scale
            inputs: {volume: nowhere, extra: raw}
          - id: a
            use: filter.toy_scale
            inputs: {volume: b}
          - id: b
            use: filter.toy_scale
            inputs: {volume: a}
          - id: c
            use: segment.toy_cut
            inputs: {volume: {file: missing.mrc}}
            save: c.xyz
        """)
    issues = validate_spec(path)
    text = "\n".join(str(i) for i in issues)
    assert ":2: [stepz] unknown key 'stepz'; did you mean 'steps'?" in text
    assert ":6: [steps[0].wiht] unknown key 'wiht'; did you mean 'with'?" in text
    assert ":7: [steps[1].id] duplicate step id 'raw'" in text
    assert "dependency cycle" in text and "[steps[2].inputs]" in text
    assert "input file not found" in text and "missing.mrc" in text
    assert "cannot write files with suffix '.xyz'" in text


def test_kind_mismatch_and_multi_output_reference(toy, tmp_path) -> None:
    path = write(tmp_path, """\
        version: 1
        steps:
          - id: raw
            use: generate.toy_volume
          - id: cut
            use: segment.toy_cut
            inputs: {volume: raw}
          - id: again
            use: filter.toy_scale
            inputs: {volume: cut}
          - id: stats
            use: analyze.toy_stats
            inputs: {volume: raw}
          - id: more
            use: analyze.toy_stats
            inputs: {volume: stats}
            save: one.npz
        """)
    text = "\n".join(str(i) for i in validate_spec(path))
    assert "'cut.labels' is a Labels, but input 'volume' of filter.toy_scale needs a Volume" in text
    assert "step 'stats' has outputs table, split; write 'stats.<output>'" in text
    assert "give save as a mapping output → path" in text


def test_malformed_yaml_names_the_line(toy, tmp_path) -> None:
    path = write(tmp_path, "version: 1\nsteps:\n  - id: a\n    use: [unclosed\n")
    with pytest.raises(cs.SpecError) as info:
        load_spec(path)
    assert info.value.issues[0].line == 5 or info.value.issues[0].line == 4
    assert "malformed YAML" in str(info.value)


def test_python_tags_cannot_execute(toy, tmp_path) -> None:
    marker = tmp_path / "pwned"
    path = write(tmp_path, f"""\
        version: 1
        steps:
          - id: raw
            use: generate.toy_volume
            with: {{size: !!python/object/apply:os.system ["touch {marker}"]}}
        """)
    with pytest.raises(cs.SpecError, match="tag tag:yaml.org,2002:python/object/apply:os.system is not allowed"):
        load_spec(path)
    assert not marker.exists()


def test_undefined_variable_and_unknown_input(toy, tmp_path) -> None:
    path = write(tmp_path, """\
        version: 1
        steps:
          - id: raw
            use: generate.toy_volume
            with: {seed: "${sed}"}
          - id: s
            use: filter.toy_scale
            inputs: {volum: raw}
        """)
    text = "\n".join(str(i) for i in validate_spec(path))
    assert ":5: [steps[0].with.seed] undefined variable '${sed}'" in text
    assert "filter.toy_scale has no input 'volum'; did you mean 'volume'?" in text
    assert "filter.toy_scale needs input 'volume' (Volume)" in text


def test_toml_spec_is_equivalent(toy, tmp_path) -> None:
    path = write(tmp_path, """\
        version = 1
        name = "toml_toy"

        [[steps]]
        id = "raw"
        use = "generate.toy_volume"
        with = { size = 5, seed = 2 }

        [[steps]]
        id = "scaled"
        use = "filter.toy_scale"
        inputs = { volume = "raw" }

        [steps.with]
        factor = -1
        """, "spec.toml")
    issues = validate_spec(path)
    assert len(issues) == 1
    assert issues[0].line == 15
    assert "factor': -1 is out of range: must be > 0" in issues[0].message
    path.write_text(path.read_text().replace("factor = -1", "factor = 3"))
    spec = load_spec(path)
    assert spec.step("scaled").params == {"factor": 3.0}
    assert spec.step("raw").params == {"size": 5, "seed": 2}


def test_malformed_toml_and_wrong_suffix(tmp_path) -> None:
    with pytest.raises(cs.SpecError, match="malformed TOML"):
        load_spec(write(tmp_path, "version = = 1\n", "bad.toml"))
    with pytest.raises(cs.SpecError, match="must end in .yaml, .yml or .toml"):
        load_spec(write(tmp_path, "{}", "spec.json"))
    with pytest.raises(cs.SpecError, match="spec file not found"):
        load_spec(tmp_path / "nope.yaml")


def test_published_schema_is_the_one_the_validator_uses() -> None:
    root = Path(__file__).resolve().parents[2]
    published = root / "spec" / "pipeline.schema.json"
    from cellscape._spec import SCHEMA_PATH

    assert published.read_text() == SCHEMA_PATH.read_text()
