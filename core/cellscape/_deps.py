"""Optional dependencies: import them where a method needs them, with an install hint when missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from ._errors import PluginError


class MissingDependencyError(PluginError, ImportError):
    """A method needs a package that is not installed; the message says which extra provides it."""


def require(module: str, *, extra: str | None = None, package: str | None = None, who: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` saying how to install it.

    Parameters
    ----------
    module : str
        Importable module name, e.g. ``"pymeshlab"``.
    extra : str, optional
        The cellscape extra that installs it (``pip install 'cellscape[extra]'``).
    package : str, optional
        The distribution name on PyPI when it differs from ``module``.
    who : str, optional
        The method or feature that needs it, named in the message.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        hint = f"pip install 'cellscape[{extra}]'" if extra else f"pip install {package or module}"
        needer = f"{who} needs" if who else "this needs"
        raise MissingDependencyError(f"{needer} the package '{package or module}', which is not installed "
                                     f"({exc}); install it with: {hint}") from exc
