"""Tables as CSV: a header row of column names (with units in brackets), then one row per record."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from .._data import Artefact, Table
from .._errors import InputError
from .._payload import atomic_write
from . import Format, register_format

_HEADER = re.compile(r"^(?P<name>.*?)(?: \[(?P<unit>[^\]]*)\])?$")


def write_csv(table: Artefact, path: Path) -> None:
    assert isinstance(table, Table)
    names = list(table.columns)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow([f"{n} [{table.units[n]}]" if table.units.get(n) else n for n in names])
            for i in range(table.n_rows):
                writer.writerow([repr(float(table.columns[n][i])) if table.columns[n].dtype.kind == "f"
                                 else table.columns[n][i] for n in names])

    atomic_write(path, write)


def _column(values: list[str]) -> np.ndarray:
    for dtype in (np.int64, np.float64):
        try:
            return np.array(values, dtype=dtype) if values else np.zeros(0)
        except ValueError:
            continue
    return np.array(values, dtype=str)


def read_csv(path: Path, kind: type[Artefact] | None) -> Table:
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read CSV ({exc})") from exc
    if not rows:
        raise InputError(f"{path}: empty CSV file (expected a header row)")
    header, body = rows[0], rows[1:]
    for number, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise InputError(f"{path}: line {number} has {len(row)} fields, the header has {len(header)}")
    names, units = [], {}
    for cell in header:
        match = _HEADER.match(cell)
        assert match is not None
        names.append(match.group("name"))
        if match.group("unit") is not None:
            units[match.group("name")] = match.group("unit")
    columns = {name: _column([row[i] for row in body]) for i, name in enumerate(names)}
    return Table(columns, units, path.stem)


register_format(Format("CSV", (".csv",), ("table",), read_csv, write_csv))
