"""The rate-law parser: whitelist, differentiation, compilation, units; every rejection names the token."""

from __future__ import annotations

import builtins

import numpy as np
import pytest

from cellscape_plugins.solve._expr import (
    AVOGADRO,
    ExpressionError,
    parse_expression,
    parse_quantity,
    parse_unit,
    unit_of,
)

VALUES = {"S": np.array([0.05, 0.7, 3.0]), "E": np.array([1.0, 2.0, 0.5]), "Vmax": 2.0, "Km": 0.3, "K": 0.8,
          "n": 2.5, "k": 1.7, "x": np.array([0.1, -0.4, 0.9])}


@pytest.mark.parametrize(("text", "reference"), [
    ("michaelis_menten(S, Vmax, Km)", lambda v: v["Vmax"] * v["S"] / (v["Km"] + v["S"])),
    ("hill(S, Vmax, K, n)", lambda v: v["Vmax"] * v["S"] ** v["n"] / (v["K"] ** v["n"] + v["S"] ** v["n"])),
    ("mass_action(k, S, E)", lambda v: v["k"] * v["S"] * v["E"]),
    ("-k*S**2 + 3e-1/E - +x", lambda v: -v["k"] * v["S"] ** 2 + 0.3 / v["E"] - v["x"]),
    ("exp(-S)*log(E + 1) + sqrt(S)*tanh(x) + abs(x)", lambda v: np.exp(-v["S"]) * np.log(v["E"] + 1)
     + np.sqrt(v["S"]) * np.tanh(v["x"]) + np.abs(v["x"])),
    ("min(S, E, K) + max(S, 1) + sin(pi*x)*cos(x)", lambda v: np.minimum(np.minimum(v["S"], v["E"]), v["K"])
     + np.maximum(v["S"], 1) + np.sin(np.pi * v["x"]) * np.cos(v["x"])),
])
def test_expressions_evaluate_like_numpy(text, reference) -> None:
    expression = parse_expression(text, ["S", "E", "Vmax", "Km", "K", "n", "k"], "test")
    np.testing.assert_allclose(expression.evaluate(VALUES), reference(VALUES), rtol=1e-14)


@pytest.mark.parametrize("text", [
    "michaelis_menten(S, Vmax, Km) * E", "hill(S, Vmax, K, n)", "S**E + E**S", "exp(-S*E)/(1 + S)",
    "log(S)*sqrt(E*S)", "tanh(S - E)", "min(S*S, E) - max(S, 2*E)", "abs(S - 1)*sin(S)*cos(E)", "S**2.5/(K**2.5 + S**2.5)",
])
@pytest.mark.parametrize("variable", ["S", "E"])
def test_symbolic_derivatives_match_central_differences(text: str, variable: str) -> None:
    expression = parse_expression(text, None, "test")
    derivative = expression.derivative(variable).evaluate(VALUES)
    step = 1e-6
    plus, minus = dict(VALUES), dict(VALUES)
    plus[variable] = VALUES[variable] + step
    minus[variable] = VALUES[variable] - step
    numerical = (expression.evaluate(plus) - expression.evaluate(minus)) / (2 * step)
    np.testing.assert_allclose(derivative, numerical, rtol=1e-6, atol=1e-8)


def test_derivatives_are_simplified_and_linear_laws_have_constant_derivatives() -> None:
    rate = parse_expression("k*A - 2*B + 0*A*B", None, "r")
    assert rate.derivative("A").symbols == {"k"}
    assert rate.derivative("B").is_constant and float(rate.derivative("B").evaluate({})) == -2.0
    assert parse_expression("x*t", None, "r").derivative("A").is_constant
    substituted = rate.substitute({"k": 3.0}).derivative("A")
    assert substituted.is_constant and float(substituted.evaluate({})) == 3.0


def test_parsing_and_evaluation_never_use_eval_or_exec(monkeypatch) -> None:
    def forbidden(*args, **kwargs):
        raise AssertionError("eval/exec called")

    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    expression = parse_expression("hill(S, Vmax, K, n) + exp(-x)", None, "test")
    assert np.all(np.isfinite(expression.evaluate(VALUES)))
    assert np.all(np.isfinite(expression.derivative("S").evaluate(VALUES)))


@pytest.mark.parametrize(("text", "fragment"), [
    ("A ^ 2", "'^' is not a power here; write '**'"),
    ("__import__('os')", "unknown function '__import__'"),
    ("__import__('os').system('true')", "only plain function names can be called"),
    ("A.real", "at 'A.real': Attribute is not allowed"),
    ("(lambda: 1)()", "only plain function names can be called"),
    ("[A][0]", "Subscript is not allowed"),
    ("'uM'", "only numbers are allowed as constants, not str"),
    ("A if B else 1", "IfExp is not allowed"),
    ("A < B", "Compare is not allowed"),
    ("A // B", "operator FloorDiv is not allowed"),
    ("C + 1", "unknown name 'C' (known species and parameters: A, B"),
    ("exp(A, B)", "exp() takes 1 argument, got 2"),
    ("hill(A, B)", "hill(S, Vmax, K, n) takes 4 arguments, got 2"),
    ("max(A, key=B)", "max() takes positional arguments only"),
    ("exp + A", "'exp' is a function; call it"),
    ("A +", "does not parse"),
    ("   ", "the expression is empty"),
    ("A" + " + A" * 600, "the limit is 2000"),
])
def test_rejected_expressions_name_the_reaction_and_the_token(text: str, fragment: str) -> None:
    with pytest.raises(ExpressionError, match="reaction 'phosphorylation', rate") as caught:
        parse_expression(text, ["A", "B"], "reaction 'phosphorylation', rate")
    assert fragment in str(caught.value)


def test_units_scale_to_molecules_micrometres_and_seconds() -> None:
    assert parse_unit("uM").scale == pytest.approx(AVOGADRO * 1e-6 / 1e15)  # 602.214076 molecules/µm³
    assert parse_unit("uM").scale == pytest.approx(602.214076, rel=1e-12)
    assert parse_unit("nM").scale == pytest.approx(0.602214076, rel=1e-12)
    rate_constant = parse_unit("1/(uM*s)")
    assert rate_constant.dims == (-1.0, 3.0, -1.0)
    assert parse_unit("um^2/s").same_dimension(parse_unit("1e0 * um**2 / s".replace("1e0 * ", "")))
    assert parse_unit("min").scale == 60.0 and parse_unit("µm").scale == 1.0
    assert parse_unit("molecules/um^2").describe() == "molecules/um^2"
    assert parse_unit("uM*um/s").same_dimension(parse_unit("molecules/um^2/s"))
    assert parse_unit("uM*um/s").describe() == "molecules/(um^2*s)"
    assert parse_unit("1/(uM*s)").describe() == "1/(uM*s)"
    assert parse_quantity("2.5 um^2/s", "um^2/s", "D") == (2.5, parse_unit("um^2/s"))
    value, unit = parse_quantity({"value": 3, "unit": "nM"}, "uM", "c")
    assert value == 3.0 and unit.scale == pytest.approx(0.602214076)
    assert parse_quantity(4, "uM", "c")[1].text == "uM"


@pytest.mark.parametrize(("text", "fragment"), [
    ("uM/sec", "unknown unit 'sec'"), ("um^x", "is not a unit, a product, a quotient or a numeric power"),
    ("uM/", "does not parse"), ("", "expected a unit"),
])
def test_bad_units_are_named(text: str, fragment: str) -> None:
    with pytest.raises(ExpressionError, match="parameter 'k'") as caught:
        parse_unit(text, "parameter 'k'")
    assert fragment in str(caught.value)


def test_unit_inference_finds_mismatches() -> None:
    units = {"A": parse_unit("uM"), "k": parse_unit("1/s"), "Km": parse_unit("uM"), "n": parse_unit("1"),
             "x": parse_unit("um")}
    constants = {"k": 1.0, "Km": 602.2, "n": 2.0}
    assert unit_of(parse_expression("k*A", None, "r"), units, constants).same_dimension(parse_unit("uM/s"))
    hill = unit_of(parse_expression("k*A**n/(Km**n + A**n)", None, "r"), units, constants)
    assert hill.same_dimension(parse_unit("1/s"))
    for text, fragment in [("k*A + A", "it adds uM/s and uM"), ("exp(A)", "argument of exp() must be dimensionless"),
                           ("A**A", "exponent must be dimensionless"), ("min(A, k)", "min() compares uM with 1/s"),
                           ("x - 1", "subtracts um and 1 (dimensionless)")]:
        with pytest.raises(ExpressionError, match="reaction 'r'") as caught:
            unit_of(parse_expression(text, None, "reaction 'r'"), units, constants)
        assert fragment in str(caught.value), text
