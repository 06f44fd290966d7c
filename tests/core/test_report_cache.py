"""The report's figure cache: a figure is redrawn when any source of its maker's package changes."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from cellscape import _report


def test_editing_a_helper_beside_the_figure_maker_changes_its_fingerprint(tmp_path: Path, monkeypatch) -> None:
    package = tmp_path / "figpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "figures.py").write_text("def draw(artefact, out, **kw):\n    return []\n")
    (package / "_renderer.py").write_text("COLOURS = ['red']\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    maker = importlib.import_module("figpkg.figures").draw
    try:
        before = _report._module_fingerprint(maker)
        assert before == _report._module_fingerprint(maker)  # stable while nothing changes
        (package / "_renderer.py").write_text("COLOURS = ['blue']\n")
        after_helper = _report._module_fingerprint(maker)
        assert after_helper != before
        (package / "figures.py").write_text("def draw(artefact, out, **kw):\n    return [1]\n")
        assert _report._module_fingerprint(maker) not in (before, after_helper)
    finally:
        for name in ("figpkg.figures", "figpkg"):
            sys.modules.pop(name, None)
