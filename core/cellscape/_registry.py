"""The plugin registry: discovery through entry points, one registrar hook.

A plugin is any module (or object) with a ``cellscape_register`` hook
implementation. Installed plugins are found through the ``cellscape``
entry-point group, read with ``importlib.metadata``; built-in methods are
registered exactly the same way, from cellscape's own pyproject.toml::

    [project.entry-points.cellscape]
    segment = "cellscape_plugins.segment"

    # cellscape_plugins/segment/__init__.py
    @cs.hookimpl
    def cellscape_register(registry):
        registry.add_method(Watershed)

Each plugin is loaded and registered on its own: one that fails to import or
raises while registering is recorded (``Registry.failures``) and the others
still work. A method name registered by two plugins is a conflict: the name
is withdrawn and using it raises a PluginError naming both distributions.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import pluggy

from ._data import Artefact
from ._errors import PluginError
from ._method import Method

__all__ = ["MethodEntry", "PluginFailure", "Registrar", "Registry", "hookimpl", "hookspec"]

ENTRY_POINT_GROUP = "cellscape"
DISABLE_ENV = "CELLSCAPE_DISABLE_PLUGINS"

hookspec = pluggy.HookspecMarker("cellscape")
hookimpl = pluggy.HookimplMarker("cellscape")


class _Hookspecs:
    @hookspec
    def cellscape_register(self, registry: Registrar) -> None:
        """Add this plugin's methods (and figure makers) to ``registry``.

        Called once per plugin at discovery, with keyword arguments only.
        Keep it cheap: import heavy libraries inside the methods, not here.
        """


@attrs.frozen
class MethodEntry:
    """A registered method and where it came from."""

    name: str
    cls: type[Method]
    plugin: str
    distribution: str
    dist_version: str

    @property
    def stage(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def cache_version(self) -> str:
        """What goes into cache keys: the distribution's and the method's version."""
        return f"{self.distribution}=={self.dist_version}/{self.cls.version}"


@attrs.frozen
class PluginFailure:
    """A plugin that could not be loaded or registered."""

    plugin: str
    distribution: str
    error: str

    def __str__(self) -> str:
        return f"plugin '{self.plugin}' from {self.distribution}: {self.error}"


FigureMaker = Callable[..., Any]


class Registrar:
    """What a plugin's ``cellscape_register`` hook receives.

    Additions are staged and committed only when the hook returns without
    raising, so a failing plugin leaves no half-registered methods behind.
    """

    def __init__(self, plugin: str, distribution: str, dist_version: str):
        self.plugin = plugin
        self.distribution = distribution
        self.dist_version = dist_version
        self._methods: list[MethodEntry] = []
        self._figures: list[tuple[type[Artefact], FigureMaker]] = []

    def add_method(self, cls: type[Method]) -> None:
        """Register a Method subclass under its ``name`` (``stage.method``)."""
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise PluginError(f"plugin '{self.plugin}': add_method needs a cellscape.Method subclass, got {cls!r}")
        name = cls.name
        stage, _, method = name.partition(".")
        if not method or not name.replace(".", "_").replace("_", "a").isalnum() or name != name.lower():
            raise PluginError(f"plugin '{self.plugin}': method name {name!r} must be 'stage.method' in snake_case")
        if cls.stage and cls.stage != stage:
            raise PluginError(f"plugin '{self.plugin}': {name!r} is a {cls.stage} method but is named for stage {stage!r}")
        self._methods.append(MethodEntry(name, cls, self.plugin, self.distribution, self.dist_version))

    def add_figure(self, kind: type[Artefact], maker: FigureMaker) -> None:
        """Register ``maker(artefact, out_dir, title) -> list[Path]`` drawing PNGs of one artefact kind for reports."""
        self._figures.append((kind, maker))


class Registry:
    """Every method and figure maker that the installed plugins registered."""

    def __init__(self) -> None:
        self._pm = pluggy.PluginManager("cellscape")
        self._pm.add_hookspecs(_Hookspecs)
        self.methods: dict[str, MethodEntry] = {}
        self.conflicts: dict[str, list[MethodEntry]] = {}
        self.failures: list[PluginFailure] = []
        self.disabled: list[str] = []
        self.plugins: dict[str, tuple[str, str]] = {}
        self._figures: list[tuple[type[Artefact], FigureMaker]] = []

    # -- discovery ---------------------------------------------------------
    def load_entry_points(self, disabled: Iterable[str] = ()) -> None:
        """Load every plugin of the ``cellscape`` entry-point group except ``disabled`` ones."""
        blocked = set(disabled)
        for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist else "unknown"
            version = ep.dist.version if ep.dist else "0"
            if ep.name in blocked:
                self.disabled.append(ep.name)
                continue
            if ep.name in self.plugins:
                self.failures.append(PluginFailure(ep.name, dist, f"plugin name already used by {self.plugins[ep.name][0]}"))
                continue
            try:
                module = ep.load()
            except Exception as exc:  # a broken plugin must not break the others
                self.failures.append(PluginFailure(ep.name, dist, f"failed to import: {type(exc).__name__}: {exc}"))
                continue
            self.register_plugin(module, name=ep.name, distribution=dist, version=version)

    def register_plugin(self, plugin: Any, name: str, distribution: str = "local", version: str = "0") -> bool:
        """Register one plugin object by calling its ``cellscape_register`` hook; False if it failed."""
        registrar = Registrar(name, distribution, version)
        try:
            self._pm.register(plugin, name=name)
        except (ValueError, pluggy.PluginValidationError) as exc:
            self.failures.append(PluginFailure(name, distribution, f"invalid plugin: {exc}"))
            return False
        impls = [i for i in self._pm.hook.cellscape_register.get_hookimpls() if i.plugin is plugin]
        try:
            for impl in impls:
                impl.function(registry=registrar)
        except Exception as exc:
            self._pm.unregister(plugin)
            self.failures.append(PluginFailure(name, distribution, f"cellscape_register raised {type(exc).__name__}: {exc}"))
            return False
        self.plugins[name] = (distribution, version)
        for entry in registrar._methods:
            self._add(entry)
        self._figures.extend(registrar._figures)
        return True

    def _add(self, entry: MethodEntry) -> None:
        if entry.name in self.conflicts:
            self.conflicts[entry.name].append(entry)
            return
        existing = self.methods.pop(entry.name, None)
        if existing is None:
            self.methods[entry.name] = entry
        else:
            self.conflicts[entry.name] = [existing, entry]

    # -- lookup ------------------------------------------------------------
    def get(self, name: str) -> MethodEntry:
        """The entry of method ``name``; PluginError (with a suggestion) if there is none."""
        entry = self.methods.get(name)
        if entry is not None:
            return entry
        raise PluginError(self.unknown_message(name))

    def unknown_message(self, name: str) -> str:
        if name in self.conflicts:
            who = " and ".join(f"{e.distribution} (plugin '{e.plugin}')" for e in self.conflicts[name])
            return f"method '{name}' is registered by both {who}; uninstall or disable one of them"
        close = difflib.get_close_matches(name, list(self.methods), n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else "; run `cellscape plugins` to list methods"
        broken = [f for f in self.failures if f.plugin == name.split(".")[0]]
        extra = f" (note: {broken[0]})" if broken else ""
        return f"unknown method '{name}'{hint}{extra}"

    def figure_makers(self, artefact: Artefact) -> list[FigureMaker]:
        """Figure makers registered for the artefact's class (or a base class)."""
        return [maker for kind, maker in self._figures if isinstance(artefact, kind)]


_LOCK = threading.Lock()
_REGISTRY: Registry | None = None


def disabled_from_env() -> list[str]:
    return [p.strip() for p in os.environ.get(DISABLE_ENV, "").split(",") if p.strip()]


def get_registry(disabled: Iterable[str] | None = None) -> Registry:
    """The process-wide registry, discovered on first use.

    ``disabled`` (or the ``CELLSCAPE_DISABLE_PLUGINS`` environment variable,
    comma-separated plugin names) blocks plugins by their entry-point name.
    Passing ``disabled`` rebuilds the registry.
    """
    global _REGISTRY
    with _LOCK:
        if _REGISTRY is None or disabled is not None:
            registry = Registry()
            registry.load_entry_points([*disabled_from_env(), *(disabled or [])])
            _REGISTRY = registry
        return _REGISTRY


def reset_registry() -> None:
    """Forget the discovered plugins (the next lookup discovers them again)."""
    global _REGISTRY
    with _LOCK:
        _REGISTRY = None
