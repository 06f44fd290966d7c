"""Plugin discovery through entry points: distributions, failures, conflicts, disabling, light imports."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import cellscape as cs
from cellscape import _registry
from cellscape.cli import main


def test_toy_plugin_is_discovered_with_its_distribution(toy) -> None:
    infos = {m.name: m for m in cs.methods()}
    assert infos["filter.toy_scale"].distribution == "cellscape-toy"
    assert infos["filter.toy_scale"].version == "1.2.3"
    assert infos["filter.toy_scale"].stage == "filter"
    assert infos["filter.toy_scale"].summary == "Multiply a volume by a factor."
    assert [p.name for p in infos["generate.toy_volume"].params] == ["size", "seed", "sleep_s"]
    assert infos["analyze.toy_stats"].outputs == {"table": "Table", "split": "Table"}
    assert {m.name for m in cs.methods(stage="segment")} >= {"segment.toy_cut"}


def test_method_api_validates_and_runs(toy) -> None:
    scale = cs.method("filter.toy_scale", factor=3)
    volume = cs.Volume(np.ones((2, 2, 2)), 1.0)
    assert float(scale(volume).data.sum()) == 24.0
    with pytest.raises(cs.InputError, match="factor': 0 is out of range: must be > 0"):
        cs.method("filter.toy_scale", factor=0)
    with pytest.raises(cs.PluginError, match="did you mean 'filter.toy_scale'"):
        cs.method("filter.toy_scal")
    with pytest.raises(cs.InputError, match="input 'volume' must be a Volume, got Labels"):
        scale(cs.Labels(np.ones((2, 2, 2), np.uint8)))
    stats = cs.method("analyze.toy_stats")(volume)
    assert set(stats) == {"table", "split"}


def test_broken_and_raising_plugins_are_reported_and_do_not_break_others(toy, capsys) -> None:
    toy.install("cellscape-broken", "0.1", {"broken": "cellscape_broken"})
    toy.install("cellscape-raises", "0.2", {"raises": "cellscape_raises"})
    registry = cs.get_registry()
    failures = {f.plugin: f for f in registry.failures}
    assert failures["broken"].distribution == "cellscape-broken"
    assert "failed to import: ImportError: cellscape_broken needs a library" in failures["broken"].error
    assert "cellscape_register raised RuntimeError: registration failed on purpose" in failures["raises"].error
    assert "filter.toy_scale" in registry.methods
    code = main(["plugins"])
    captured = capsys.readouterr()
    assert code == 1
    assert "filter.toy_scale" in captured.out
    assert "BROKEN   plugin 'broken' from cellscape-broken: failed to import" in captured.err


def test_duplicate_method_names_are_an_error_naming_both_distributions(toy) -> None:
    toy.install("cellscape-twin", "9.9", {"twin": "cellscape_twin"})
    registry = cs.get_registry()
    assert "filter.toy_scale" not in registry.methods
    with pytest.raises(cs.PluginError, match=r"registered by both cellscape-toy \(plugin 'toy'\) and cellscape-twin"):
        cs.method("filter.toy_scale")
    assert "filter.toy_cut" not in registry.conflicts


def test_disable_by_environment_and_option(toy, monkeypatch, capsys) -> None:
    toy.install("cellscape-twin", "9.9", {"twin": "cellscape_twin"})
    monkeypatch.setenv("CELLSCAPE_DISABLE_PLUGINS", "twin")
    _registry.reset_registry()
    assert cs.get_registry().methods["filter.toy_scale"].distribution == "cellscape-toy"
    assert cs.get_registry().disabled == ["twin"]
    monkeypatch.delenv("CELLSCAPE_DISABLE_PLUGINS")
    assert main(["--disable", "toy", "plugins", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    names = {m["name"] for m in listing["methods"]}
    assert "filter.toy_scale" in names and listing["methods"][0]["name"]
    assert {m["distribution"] for m in listing["methods"] if m["name"] == "filter.toy_scale"} == {"cellscape-twin"}
    assert "toy" in listing["disabled"]


def test_bad_method_names_are_rejected() -> None:
    class Bad(cs.Filter):
        name = "Filter.Bad"

    class Misfiled(cs.Filter):
        name = "segment.misfiled"

    class Plugin:
        @staticmethod
        @cs.hookimpl
        def cellscape_register(registry):
            registry.add_method(Bad)

    class Plugin2:
        @staticmethod
        @cs.hookimpl
        def cellscape_register(registry):
            registry.add_method(Misfiled)

    registry = cs.Registry()
    assert registry.register_plugin(Plugin, name="bad") is False
    assert registry.register_plugin(Plugin2, name="misfiled") is False
    messages = [f.error for f in registry.failures]
    assert "must be 'stage.method' in snake_case" in messages[0]
    assert "is a filter method but is named for stage 'segment'" in messages[1]
    assert registry.methods == {}


def test_discovery_imports_no_heavy_library() -> None:
    code = (
        "import sys, cellscape as cs; ms = cs.methods(); "
        "heavy = [m for m in ('torch', 'vtk', 'petsc4py', 'tetgen', 'pymeshlab', 'matplotlib', 'sklearn', 'dask') "
        "if m in sys.modules]; print(len(ms), heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split(" ", 1)
    assert int(out[0]) >= 1
    assert out[1].strip() == "[]"


def test_every_hook_is_documented_with_its_signature() -> None:
    import inspect

    spec = _registry._Hookspecs.cellscape_register
    assert list(inspect.signature(spec).parameters) == ["self", "registry"]
    assert "keyword arguments" in spec.__doc__
