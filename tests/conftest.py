"""Shared fixtures: plugins installed the way a third party installs them (a dist-info with entry points)."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType

import pytest

import cellscape as cs
from cellscape import _registry

TOY_DIR = Path(__file__).parent / "core" / "toy"


class PluginSite:
    """A folder on sys.path holding fake installed distributions with cellscape entry points."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch):
        self.root = root
        self.monkeypatch = monkeypatch
        root.mkdir(parents=True, exist_ok=True)
        monkeypatch.syspath_prepend(str(TOY_DIR))
        monkeypatch.syspath_prepend(str(root))

    def install(self, dist: str, version: str, entry_points: Mapping[str, str]) -> None:
        info = self.root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir(exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        lines = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
        (info / "entry_points.txt").write_text(f"[cellscape]\n{lines}\n")
        importlib.invalidate_caches()
        _registry.reset_registry()

    @property
    def env(self) -> dict[str, str]:
        """Environment for a subprocess that should see these distributions."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(self.root), str(TOY_DIR), env.get("PYTHONPATH", "")])
        return env


@pytest.fixture
def plugin_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PluginSite]:
    site = PluginSite(tmp_path / "site", monkeypatch)
    yield site
    for module in ("cellscape_toy", "cellscape_twin", "cellscape_broken", "cellscape_raises"):
        sys.modules.pop(module, None)
    _registry.reset_registry()


@pytest.fixture
def toy(plugin_site: PluginSite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PluginSite:
    """The toy plugin installed as distribution cellscape-toy 1.2.3; method runs are logged."""
    plugin_site.install("cellscape-toy", "1.2.3", {"toy": "cellscape_toy"})
    log = tmp_path / "toy.log"
    monkeypatch.setenv("CELLSCAPE_TOY_LOG", str(log))
    plugin_site.log = log  # type: ignore[attr-defined]
    return plugin_site


def toy_runs(site: PluginSite) -> list[str]:
    log: Path = site.log  # type: ignore[attr-defined]
    return log.read_text().split() if log.exists() else []


@pytest.fixture
def registry() -> cs.Registry:
    return cs.get_registry()


# `make test` installs these and sets CELLSCAPE_FULL_ENV=1: there a missing one is a failure, not a quiet skip
FULL_ENV = os.environ.get("CELLSCAPE_FULL_ENV") == "1"


def _missing(what: str) -> None:
    message = f"{what} is not installed (make test installs it)"
    if FULL_ENV:
        pytest.fail(message + "; CELLSCAPE_FULL_ENV=1 says it should be here", pytrace=False)
    pytest.skip(message, allow_module_level=True)


def needed_tool(*names: str) -> str:
    """Path of the first of ``names`` on PATH; missing: skipped, or failed under ``make test``."""
    import shutil

    found = next((path for path in map(shutil.which, names) if path), None)
    if found is None:
        _missing(" / ".join(names))
    return found  # type: ignore[return-value]


def needed_modules(*names: str) -> ModuleType:
    """Import ``names`` and return the last; missing: skipped, or failed under ``make test``.

    Usable at module level too (``torch = needed_modules("torch")``).
    """
    module = None
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError:
            _missing(f"Python module {name}")
    return module  # type: ignore[return-value]


def pytest_runtest_setup(item: pytest.Item) -> None:
    """``@pytest.mark.requires("petsc4py", ...)``: the modules a test needs, checked as :func:`needed_modules` does."""
    for mark in item.iter_markers("requires"):
        needed_modules(*mark.args)
