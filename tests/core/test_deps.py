import sys

import pytest

import cellscape as cs


def test_require_returns_the_module() -> None:
    import json

    assert cs.require("json") is json


def test_missing_module_names_package_extra_and_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pymeshlab", None)
    with pytest.raises(cs.MissingDependencyError, match=r"mesh.tetrahedralize needs the package 'pymeshlab'.*"
                                                        r"pip install 'cellscape\[mesh\]'") as info:
        cs.require("pymeshlab", extra="mesh", who="mesh.tetrahedralize")
    assert isinstance(info.value, cs.PluginError) and isinstance(info.value, ImportError)


def test_missing_module_without_extra_names_the_distribution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "skl_missing_mod", None)
    with pytest.raises(cs.MissingDependencyError, match="pip install scikit-thing$"):
        cs.require("skl_missing_mod", package="scikit-thing")
