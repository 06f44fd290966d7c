"""Registers the built-in file formats (imported on first use of cellscape.io)."""

from __future__ import annotations

from pathlib import Path

from .._data import Artefact
from .._payload import read_npz, write_npz
from . import Format, register_format


def _read_npz(path: Path, kind: type[Artefact] | None) -> Artefact:
    return read_npz(path)


register_format(Format("NumPy npz", (".npz",), ("*",), _read_npz, write_npz))
