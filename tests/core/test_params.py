"""Parameter declarations: type conversion, ranges, choices, required values, every problem at once."""

from __future__ import annotations

import attrs
import pytest

import cellscape as cs
from cellscape._params import build_params, check_params, param_infos, params_to_json


@attrs.frozen
class Example:
    sigma_nm: float = cs.param(1.0, ge=0, unit="nm", help="smoothing")
    iterations: int = cs.param(10, ge=1, le=1000, help="iterations")
    mode: str = cs.param("otsu", choices=("otsu", "li"), help="threshold method")
    shape: int | tuple[int, int, int] = cs.param(64, help="grid size")
    labels: list[int] | None = cs.param(None, help="labels to use")
    enabled: bool = cs.param(True, help="switch")
    region_values: dict[int, float] = cs.param({}, help="per-region value")
    name: str = cs.param(help="required name")


def test_conversion_and_defaults() -> None:
    p = build_params(Example, {"name": "x", "sigma_nm": 2, "iterations": 3.0, "shape": [1, 2, 3], "labels": [4]})
    assert p.sigma_nm == 2.0 and isinstance(p.sigma_nm, float)
    assert p.iterations == 3 and isinstance(p.iterations, int)
    assert p.shape == (1, 2, 3)
    assert p.labels == [4]
    assert p.mode == "otsu" and p.enabled is True
    assert params_to_json(p)["shape"] == [1, 2, 3]


def test_every_problem_is_collected() -> None:
    _, problems = check_params(Example, {"sigma_nm": -1, "iterations": "many", "mode": "median", "enabld": False,
                                         "enabled": 1, "shape": [1, 2]})
    text = "\n".join(p for _, p in problems)
    assert "'sigma_nm': -1 is out of range: must be >= 0" in text
    assert "'iterations': expected an integer, got str 'many'" in text
    assert "'median' is not one of 'otsu', 'li'" in text
    assert "unknown parameter 'enabld'; did you mean 'enabled'?" in text
    assert "'enabled': expected true or false, got int 1" in text
    assert "parameter 'shape': expected" in text
    assert "parameter 'name' is required" in text
    assert len(problems) == 7


def test_build_params_raises_one_input_error_naming_the_method() -> None:
    with pytest.raises(cs.InputError, match="my.method: parameter 'iterations': 0 is out of range"):
        build_params(Example, {"name": "x", "iterations": 0}, where="my.method")


def test_dict_parameters_are_typed() -> None:
    p = build_params(Example, {"name": "x", "region_values": {1: 2, 3: 4.5}})
    assert p.region_values == {1: 2.0, 3: 4.5}
    _, problems = check_params(Example, {"name": "x", "region_values": {1: "a"}})
    assert "expected a number" in problems[0][1]


def test_param_infos_describe_units_bounds_and_choices() -> None:
    infos = {i.name: i for i in param_infos(Example)}
    assert infos["sigma_nm"].unit == "nm" and infos["sigma_nm"].bounds_text() == ">= 0"
    assert infos["iterations"].bounds_text() == ">= 1, <= 1000"
    assert infos["mode"].choices == ("otsu", "li")
    assert infos["name"].required and not infos["mode"].required
    assert infos["labels"].type == "list[int] | None"
    assert infos["region_values"].default == {}


def test_mutable_defaults_are_not_shared() -> None:
    a = build_params(Example, {"name": "a"})
    b = build_params(Example, {"name": "b"})
    assert a.region_values is not b.region_values
