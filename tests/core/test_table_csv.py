"""Tables round-trip through CSV with their units."""

from __future__ import annotations

import numpy as np
import pytest

import cellscape as cs


def test_csv_round_trip(tmp_path) -> None:
    table = cs.Table(
        {"region": np.array(["cytosol", "nucleus"]), "count": np.array([3, 4]), "volume": np.array([0.1, 1 / 3])},
        {"volume": "um^3"}, "sizes",
    )
    path = cs.write(table, tmp_path / "sizes.csv")
    assert path.read_text().splitlines()[0] == "region,count,volume [um^3]"
    back = cs.read(path)
    assert back.units == {"volume": "um^3"}
    np.testing.assert_array_equal(back.columns["region"], table.columns["region"])
    np.testing.assert_array_equal(back.columns["count"], table.columns["count"])
    np.testing.assert_array_equal(back.columns["volume"], table.columns["volume"])


def test_ragged_csv_is_an_input_error(tmp_path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("a,b\n1,2\n3\n")
    with pytest.raises(cs.InputError, match="bad.csv: line 3 has 1 fields, the header has 2"):
        cs.read(path)


def test_csv_cannot_hold_a_volume(tmp_path) -> None:
    with pytest.raises(cs.InputError, match="CSV files cannot hold a Volume"):
        cs.write(cs.Volume(np.zeros((2, 2, 2))), tmp_path / "v.csv")
