"""Rate laws, initial values and units written as text: a whitelisted parser, a differentiator, a unit algebra.

User text is parsed with :func:`ast.parse` and only these constructs are
accepted (anything else is an :class:`ExpressionError` naming the offending
token; nothing is ever passed to ``eval`` or ``exec``):

- numbers (``2``, ``0.5``, ``1e-3``) and names: species, parameters, the
  coordinates ``x, y, z`` (µm), the time ``t`` (s) and the constant ``pi``;
- ``+ - * / **`` and unary ``-`` / ``+`` (``^`` is rejected with a hint);
- the functions :data:`FUNCTIONS` (``exp log sqrt min max abs tanh sin cos``);
- the rate laws :data:`RATE_LAWS`, expanded when parsed::

      mass_action(k, A, B, ...)      = k · A · B · ...
      michaelis_menten(S, Vmax, Km)  = Vmax · S / (Km + S)
      hill(S, Vmax, K, n)            = Vmax · Sⁿ / (Kⁿ + Sⁿ)

A parsed :class:`Expression` is a small immutable tree. It differentiates
itself symbolically (:meth:`Expression.derivative`, for Newton Jacobians),
substitutes names (:meth:`Expression.substitute`, e.g. parameter values) and
compiles to a numpy callable built from closures
(:meth:`Expression.compile`), vectorized over nodes.

Units (:class:`Unit`) are a scale and exponents over the base units
molecule, µm and s; ``1 uM = 602.214076 molecules/µm³``. :func:`unit_of`
infers the unit of an expression from the units of its names and raises
:class:`ExpressionError` when it adds unlike units or takes ``exp`` of a
dimensional value.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
import numpy as np

import cellscape as cs

__all__ = [
    "AVOGADRO",
    "COORDINATES",
    "FUNCTIONS",
    "RATE_LAWS",
    "Call",
    "Expression",
    "ExpressionError",
    "Node",
    "Num",
    "Op",
    "Sym",
    "Unit",
    "parse_expression",
    "parse_quantity",
    "parse_unit",
    "unit_of",
]

AVOGADRO = 6.02214076e23
COORDINATES = ("x", "y", "z", "t")
FUNCTIONS = ("exp", "log", "sqrt", "min", "max", "abs", "tanh", "sin", "cos")
RATE_LAWS = ("mass_action", "michaelis_menten", "hill")
# functions the differentiator introduces; not available to users
_INTERNAL_FUNCTIONS = ("heaviside", "sign")
_CONSTANTS = {"pi": math.pi}
MAX_LENGTH = 2000
"""Longest accepted expression (characters); longer text is certainly a mistake and risks deep recursion."""


class ExpressionError(cs.InputError):
    """An expression or unit that does not parse, names something unknown, or mixes units."""


# ---------------------------------------------------------------- the tree


@attrs.frozen
class Num:
    """A number."""

    value: float

    def __str__(self) -> str:
        return repr(self.value) if self.value >= 0 else f"({self.value!r})"


@attrs.frozen
class Sym:
    """A name: a species, a parameter, a coordinate or the time."""

    name: str

    def __str__(self) -> str:
        return self.name


@attrs.frozen
class Op:
    """An arithmetic operation: ``kind`` in ``+ - * / **`` (two arguments) or ``neg`` (one)."""

    kind: str
    args: tuple[Any, ...]

    def __str__(self) -> str:
        if self.kind == "neg":
            return f"(-{self.args[0]})"
        return f"({self.args[0]} {self.kind} {self.args[1]})"


@attrs.frozen
class Call:
    """A function of :data:`FUNCTIONS` (or an internal one) applied to its arguments."""

    func: str
    args: tuple[Any, ...]

    def __str__(self) -> str:
        return f"{self.func}({', '.join(str(a) for a in self.args)})"


Node = Num | Sym | Op | Call
ZERO, ONE = Num(0.0), Num(1.0)


def _is(node: Node, value: float) -> bool:
    return isinstance(node, Num) and node.value == value


# constructors that fold constants and drop neutral elements, so derivatives stay small
def add(a: Node, b: Node) -> Node:
    if _is(a, 0):
        return b
    if _is(b, 0):
        return a
    if isinstance(a, Num) and isinstance(b, Num):
        return Num(a.value + b.value)
    return Op("+", (a, b))


def sub(a: Node, b: Node) -> Node:
    if _is(b, 0):
        return a
    if _is(a, 0):
        return neg(b)
    if isinstance(a, Num) and isinstance(b, Num):
        return Num(a.value - b.value)
    return Op("-", (a, b))


def neg(a: Node) -> Node:
    if isinstance(a, Num):
        return Num(-a.value)
    if isinstance(a, Op) and a.kind == "neg":
        return a.args[0]
    return Op("neg", (a,))


def mul(a: Node, b: Node) -> Node:
    if _is(a, 0) or _is(b, 0):
        return ZERO
    if _is(a, 1):
        return b
    if _is(b, 1):
        return a
    if isinstance(a, Num) and isinstance(b, Num):
        return Num(a.value * b.value)
    return Op("*", (a, b))


def div(a: Node, b: Node) -> Node:
    if _is(a, 0):
        return ZERO
    if _is(b, 1):
        return a
    if isinstance(a, Num) and isinstance(b, Num) and b.value != 0:
        return Num(a.value / b.value)
    return Op("/", (a, b))


def power(a: Node, b: Node) -> Node:
    if _is(b, 0):
        return ONE
    if _is(b, 1):
        return a
    if isinstance(a, Num) and isinstance(b, Num) and (a.value > 0 or float(b.value).is_integer()):
        return Num(a.value**b.value)
    return Op("**", (a, b))


def call(func: str, *args: Node) -> Node:
    if all(isinstance(a, Num) for a in args) and func not in ("heaviside", "sign"):
        value = float(_NUMPY_FUNCTIONS[func](*(a.value for a in args)))
        if math.isfinite(value):
            return Num(value)
    return Call(func, tuple(args))


def symbols(node: Node) -> frozenset[str]:
    """Every name in the tree."""
    if isinstance(node, Sym):
        return frozenset((node.name,))
    if isinstance(node, (Op, Call)):
        return frozenset().union(*(symbols(a) for a in node.args))
    return frozenset()


# ---------------------------------------------------------------- parsing

_BINARY = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}
_BUILDERS: dict[str, Callable[[Node, Node], Node]] = {"+": add, "-": sub, "*": mul, "/": div, "**": power}


def _expand_rate_law(name: str, args: list[Node], fail: Callable[[str], ExpressionError]) -> Node:
    if name == "mass_action":
        if len(args) < 1:
            raise fail("mass_action(k, A, B, ...) needs at least the rate constant")
        product = args[0]
        for species in args[1:]:
            product = mul(product, species)
        return product
    if name == "michaelis_menten":
        if len(args) != 3:
            raise fail(f"michaelis_menten(S, Vmax, Km) takes 3 arguments, got {len(args)}")
        substrate, vmax, km = args
        return div(mul(vmax, substrate), add(km, substrate))
    if len(args) != 4:
        raise fail(f"hill(S, Vmax, K, n) takes 4 arguments, got {len(args)}")
    substrate, vmax, constant, exponent = args
    activated = power(substrate, exponent)
    return div(mul(vmax, activated), add(power(constant, exponent), activated))


class _Parser:
    def __init__(self, text: str, known: frozenset[str] | None, where: str):
        self.text, self.known, self.where = text, known, where

    def fail(self, message: str, node: ast.AST | None = None) -> ExpressionError:
        token = ast.get_source_segment(self.text, node) if node is not None else None
        at = f" at '{token}'" if token else ""
        return ExpressionError(f"{self.where}: cannot use {self.text!r}{at}: {message}")

    def build(self, node: ast.AST) -> Node:
        if isinstance(node, ast.Expression):
            return self.build(node.body)
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                raise self.fail(f"only numbers are allowed as constants, not {type(node.value).__name__}", node)
            return Num(float(node.value))
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            operand = self.build(node.operand)
            return neg(operand) if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp):
            if isinstance(node.op, ast.BitXor):
                raise self.fail("'^' is not a power here; write '**' (e.g. S**2)", node)
            kind = _BINARY.get(type(node.op))
            if kind is None:
                raise self.fail(f"operator {type(node.op).__name__} is not allowed; use + - * / **", node)
            return _BUILDERS[kind](self.build(node.left), self.build(node.right))
        if isinstance(node, ast.Call):
            return self.call(node)
        raise self.fail(f"{type(node).__name__} is not allowed; expressions hold numbers, names, + - * / ** "
                        f"and the functions {', '.join(FUNCTIONS + RATE_LAWS)}", node)

    def name(self, node: ast.Name) -> Node:
        if node.id in _CONSTANTS:
            return Num(_CONSTANTS[node.id])
        if node.id in FUNCTIONS or node.id in RATE_LAWS:
            raise self.fail(f"'{node.id}' is a function; call it, e.g. {node.id}(...)", node)
        if self.known is not None and node.id not in self.known and node.id not in COORDINATES:
            known = ", ".join(sorted(self.known)) or "none"
            raise self.fail(f"unknown name '{node.id}' (known species and parameters: {known}; "
                            "coordinates x, y, z in µm and time t in s)", node)
        return Sym(node.id)

    def call(self, node: ast.Call) -> Node:
        if not isinstance(node.func, ast.Name):
            raise self.fail("only plain function names can be called", node)
        name = node.func.id
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise self.fail(f"{name}() takes positional arguments only", node)
        if name not in FUNCTIONS and name not in RATE_LAWS:
            raise self.fail(f"unknown function '{name}'; allowed: {', '.join(FUNCTIONS + RATE_LAWS)}", node)
        args = [self.build(a) for a in node.args]
        if name in RATE_LAWS:
            return _expand_rate_law(name, args, lambda message: self.fail(message, node))
        if name in ("min", "max"):
            if len(args) < 2:
                raise self.fail(f"{name}() needs at least 2 arguments", node)
            result = args[0]
            for other in args[1:]:
                result = call(name, result, other)
            return result
        if len(args) != 1:
            raise self.fail(f"{name}() takes 1 argument, got {len(args)}", node)
        return call(name, args[0])


def parse_expression(text: str | float | int, known: Iterable[str] | None = None, where: str = "expression") -> Expression:
    """Parse user text into an :class:`Expression`.

    Parameters
    ----------
    text : str or number
        The expression, e.g. ``"kcat * E * S / (Km + S)"``; a number is accepted as is.
    known : iterable of str, optional
        Allowed names besides ``x, y, z, t`` and ``pi``; None allows any name.
    where : str
        What the expression is, for messages (e.g. ``"reaction 'phosphorylation', rate"``).

    Raises
    ------
    ExpressionError
        On a syntax error, a construct outside the whitelist, an unknown name or function.
    """
    if isinstance(text, bool):
        raise ExpressionError(f"{where}: expected an expression or a number, got {text!r}")
    if isinstance(text, (int, float)):
        return Expression(Num(float(text)), str(text), where)
    if not isinstance(text, str):
        raise ExpressionError(f"{where}: expected an expression (text) or a number, got {type(text).__name__}")
    if not text.strip():
        raise ExpressionError(f"{where}: the expression is empty")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"{where}: the expression is {len(text)} characters long; the limit is {MAX_LENGTH}")
    parser = _Parser(text.strip(), None if known is None else frozenset(known), where)
    try:
        tree = ast.parse(parser.text, mode="eval")
    except SyntaxError as exc:
        offset = (exc.offset or 1) - 1
        token = parser.text[offset:offset + 12] or "end of text"
        raise ExpressionError(f"{where}: {text!r} does not parse ({exc.msg}) at '{token}' "
                              f"(column {offset + 1})") from None
    return Expression(parser.build(tree), parser.text, where)


# ---------------------------------------------------------------- differentiation


def _derivative(node: Node, name: str) -> Node:
    if isinstance(node, Num):
        return ZERO
    if isinstance(node, Sym):
        return ONE if node.name == name else ZERO
    if name not in symbols(node):
        return ZERO
    if isinstance(node, Op):
        if node.kind == "neg":
            return neg(_derivative(node.args[0], name))
        a, b = node.args
        da, db = _derivative(a, name), _derivative(b, name)
        if node.kind == "+":
            return add(da, db)
        if node.kind == "-":
            return sub(da, db)
        if node.kind == "*":
            return add(mul(da, b), mul(a, db))
        if node.kind == "/":
            return div(sub(mul(da, b), mul(a, db)), power(b, Num(2.0)))
        # a ** b
        if name not in symbols(b):
            return mul(mul(b, power(a, sub(b, ONE))), da)
        return mul(node, add(mul(db, call("log", a)), div(mul(b, da), a)))
    (a, *rest) = node.args
    da = _derivative(a, name)
    func = node.func
    if func in ("min", "max"):
        b = rest[0]
        db = _derivative(b, name)
        # the derivative of the branch that is taken; heaviside(0) = 1 picks the first argument on ties
        first = call("heaviside", sub(b, a) if func == "min" else sub(a, b))
        return add(mul(first, da), mul(sub(ONE, first), db))
    outer = {
        "exp": lambda: node,
        "log": lambda: div(ONE, a),
        "sqrt": lambda: div(Num(0.5), node),
        "abs": lambda: call("sign", a),
        "tanh": lambda: sub(ONE, power(node, Num(2.0))),
        "sin": lambda: call("cos", a),
        "cos": lambda: neg(call("sin", a)),
        "heaviside": lambda: ZERO,
        "sign": lambda: ZERO,
    }[func]()
    return mul(outer, da)


# ---------------------------------------------------------------- compilation

_NUMPY_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "exp": np.exp, "log": np.log, "sqrt": np.sqrt, "abs": np.abs, "tanh": np.tanh, "sin": np.sin, "cos": np.cos,
    "min": np.minimum, "max": np.maximum, "sign": np.sign,
    "heaviside": lambda v: np.where(np.asarray(v) >= 0, 1.0, 0.0),
}
_NUMPY_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide, "**": np.power,
}

Environment = Mapping[str, Any]


def _compile(node: Node) -> Callable[[Environment], Any]:
    if isinstance(node, Num):
        value = node.value
        return lambda env: value
    if isinstance(node, Sym):
        name = node.name
        return lambda env: env[name]
    compiled = [_compile(a) for a in node.args]
    if isinstance(node, Op):
        if node.kind == "neg":
            (operand,) = compiled
            return lambda env: np.negative(operand(env))
        left, right = compiled
        operator = _NUMPY_OPERATORS[node.kind]
        return lambda env: operator(left(env), right(env))
    function = _NUMPY_FUNCTIONS[node.func]
    if len(compiled) == 1:
        (argument,) = compiled
        return lambda env: function(argument(env))
    first, second = compiled
    return lambda env: function(first(env), second(env))


@attrs.frozen
class Expression:
    """A parsed expression: its tree, the text it came from and what it is (for messages).

    Attributes
    ----------
    tree : Node
        The expression tree (rate laws already expanded, constants folded).
    text : str
        The user's text.
    where : str
        What the expression is, e.g. ``"reaction 'r1', rate"``.
    """

    tree: Node
    text: str
    where: str

    @property
    def symbols(self) -> frozenset[str]:
        """Names the expression uses (species, parameters, x, y, z, t)."""
        return symbols(self.tree)

    @property
    def is_constant(self) -> bool:
        return isinstance(self.tree, Num)

    def derivative(self, name: str) -> Expression:
        """The partial derivative with respect to ``name`` (symbolic, simplified)."""
        return Expression(_derivative(self.tree, name), f"d({self.text})/d{name}", self.where)

    def substitute(self, values: Mapping[str, Node | float]) -> Expression:
        """Replace names by numbers or trees (constants are folded again)."""
        replacements = {k: Num(float(v)) if isinstance(v, (int, float)) else v for k, v in values.items()}

        def walk(node: Node) -> Node:
            if isinstance(node, Sym):
                return replacements.get(node.name, node)
            if isinstance(node, Op):
                args = [walk(a) for a in node.args]
                return neg(args[0]) if node.kind == "neg" else _BUILDERS[node.kind](*args)
            if isinstance(node, Call):
                return call(node.func, *(walk(a) for a in node.args))
            return node

        return Expression(walk(self.tree), self.text, self.where)

    def scaled(self, factor: float) -> Expression:
        """``factor`` times the expression."""
        return Expression(mul(Num(float(factor)), self.tree), self.text, self.where)

    def compile(self) -> Callable[[Environment], Any]:
        """A callable ``f(env)`` evaluating the expression with numpy; ``env`` maps names to arrays or floats."""
        return _compile(self.tree)

    def evaluate(self, env: Environment, size: int | None = None) -> np.ndarray:
        """Evaluate; a constant result is broadcast to ``size`` values when ``size`` is given.

        Raises
        ------
        ExpressionError
            If a name is missing from ``env``.
        """
        try:
            with np.errstate(all="ignore"):
                value = self.compile()(env)
        except KeyError as exc:
            raise ExpressionError(f"{self.where}: {self.text!r} uses '{exc.args[0]}', which has no value here") from None
        array = np.asarray(value, dtype=np.float64)
        return np.broadcast_to(array, (size,)).copy() if size is not None else array


# ---------------------------------------------------------------- units

_BASE = ("molecule", "µm", "s")


@attrs.frozen
class Unit:
    """A physical unit: ``scale`` base units, base units being molecule, µm and s.

    Attributes
    ----------
    scale : float
        How many base units one of this unit is (1 uM → 602.214076 molecules/µm³).
    dims : tuple[float, float, float]
        Exponents of molecule, µm and s.
    text : str
        How the user wrote it (for messages).
    """

    scale: float
    dims: tuple[float, float, float]
    text: str = ""

    def __mul__(self, other: Unit) -> Unit:
        return Unit(self.scale * other.scale, tuple(a + b for a, b in zip(self.dims, other.dims, strict=True)),
                    f"{self.text}*{other.text}")

    def __truediv__(self, other: Unit) -> Unit:
        return Unit(self.scale / other.scale, tuple(a - b for a, b in zip(self.dims, other.dims, strict=True)),
                    f"{self.text}/({other.text})")

    def __pow__(self, exponent: float) -> Unit:
        return Unit(self.scale**exponent, tuple(a * exponent for a in self.dims), f"({self.text})**{exponent:g}")

    def same_dimension(self, other: Unit) -> bool:
        return all(math.isclose(a, b, abs_tol=1e-9) for a, b in zip(self.dims, other.dims, strict=True))

    @property
    def dimensionless(self) -> bool:
        return self.same_dimension(DIMENSIONLESS)

    def describe(self) -> str:
        """The dimension as a biologist writes it, e.g. ``"uM/s"``, ``"molecules/um^2"``, ``"1/(uM*s)"``."""
        amount, length, time = self.dims
        numerator, denominator = [], []
        if math.isclose(amount, 1) and length <= -3 + 1e-9:
            numerator.append("uM")
            length += 3
        elif math.isclose(amount, -1) and length >= 3 - 1e-9:
            denominator.append("uM")
            length -= 3
        for name, exponent in (("molecules", amount if not (numerator or denominator) else 0.0), ("um", length),
                               ("s", time)):
            if math.isclose(exponent, 0, abs_tol=1e-9):
                continue
            power = abs(exponent)
            text = name if math.isclose(power, 1) else f"{name}^{power:g}"
            (numerator if exponent > 0 else denominator).append(text)
        if not numerator and not denominator:
            return "1 (dimensionless)"
        text = "*".join(numerator) or "1"
        if denominator:
            text += "/" + (denominator[0] if len(denominator) == 1 else f"({'*'.join(denominator)})")
        return text


DIMENSIONLESS = Unit(1.0, (0.0, 0.0, 0.0), "1")
_MOLAR = AVOGADRO / 1e15  # molecules per µm³ in 1 mol/L (1 L = 1e15 µm³)
_UNITS = {
    "molecules": Unit(1.0, (1, 0, 0)), "molecule": Unit(1.0, (1, 0, 0)), "molec": Unit(1.0, (1, 0, 0)),
    "mol": Unit(AVOGADRO, (1, 0, 0)), "mmol": Unit(AVOGADRO * 1e-3, (1, 0, 0)),
    "umol": Unit(AVOGADRO * 1e-6, (1, 0, 0)), "nmol": Unit(AVOGADRO * 1e-9, (1, 0, 0)),
    "M": Unit(_MOLAR, (1, -3, 0)), "mM": Unit(_MOLAR * 1e-3, (1, -3, 0)), "uM": Unit(_MOLAR * 1e-6, (1, -3, 0)),
    "nM": Unit(_MOLAR * 1e-9, (1, -3, 0)), "pM": Unit(_MOLAR * 1e-12, (1, -3, 0)),
    "L": Unit(1e15, (0, 3, 0)), "mL": Unit(1e12, (0, 3, 0)), "uL": Unit(1e9, (0, 3, 0)), "fL": Unit(1.0, (0, 3, 0)),
    "m": Unit(1e6, (0, 1, 0)), "mm": Unit(1e3, (0, 1, 0)), "um": Unit(1.0, (0, 1, 0)), "nm": Unit(1e-3, (0, 1, 0)),
    "s": Unit(1.0, (0, 0, 1)), "ms": Unit(1e-3, (0, 0, 1)), "us": Unit(1e-6, (0, 0, 1)),
    "min": Unit(60.0, (0, 0, 1)), "h": Unit(3600.0, (0, 0, 1)),
}


def parse_unit(text: str, where: str = "unit") -> Unit:
    """Parse a unit such as ``"uM"``, ``"1/(uM*s)"``, ``"um^2/s"`` or ``"molecules/um^2"``.

    ``^`` and ``**`` are powers, ``µ`` may be written ``u``; the known unit
    names are molecule(s), mol (m/u/n), M (m/u/n/p), L (m/u/f), m, mm, um,
    nm, s, ms, us, min, h and the number 1.

    Raises
    ------
    ExpressionError
        If the text does not parse or names an unknown unit.
    """
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError(f"{where}: expected a unit such as 'uM' or '1/s', got {text!r}")
    source = text.strip().replace("µ", "u").replace("μ", "u").replace("^", "**").replace("·", "*")
    try:
        tree = ast.parse(source, mode="eval").body
    except SyntaxError:
        raise ExpressionError(f"{where}: unit {text!r} does not parse; write e.g. 'uM/s' or 'um^2/s'") from None

    def build(node: ast.AST) -> Unit:
        if isinstance(node, ast.Name):
            if node.id not in _UNITS:
                raise ExpressionError(f"{where}: unknown unit '{node.id}' in {text!r}; known: "
                                      f"{', '.join(sorted(_UNITS, key=str.lower))}")
            unit = _UNITS[node.id]
            return Unit(unit.scale, tuple(float(d) for d in unit.dims), node.id)
        if isinstance(node, ast.Constant) and node.value == 1 and not isinstance(node.value, bool):
            return DIMENSIONLESS
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mult, ast.Div)):
            left, right = build(node.left), build(node.right)
            return left * right if isinstance(node.op, ast.Mult) else left / right
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
            exponent = node.right
            sign = 1.0
            if isinstance(exponent, ast.UnaryOp) and isinstance(exponent.op, ast.USub):
                sign, exponent = -1.0, exponent.operand
            if isinstance(exponent, ast.Constant) and isinstance(exponent.value, (int, float)):
                return build(node.left) ** (sign * float(exponent.value))
        token = ast.get_source_segment(source, node) or source
        raise ExpressionError(f"{where}: unit {text!r}: '{token}' is not a unit, a product, a quotient "
                              "or a numeric power of units")

    unit = build(tree)
    return Unit(unit.scale, unit.dims, text.strip())


def parse_quantity(value: Any, default_unit: str, where: str) -> tuple[float, Unit]:
    """A number with its unit: ``2.5`` (in ``default_unit``), ``"2.5 um^2/s"`` or ``{value: 2.5, unit: um^2/s}``.

    Returns
    -------
    value : float
        The number as written.
    unit : Unit
        Its unit (``default_unit`` when none is given).

    Raises
    ------
    ExpressionError
        If the value is not a number, or the unit does not parse.
    """
    if isinstance(value, Mapping):
        unknown = set(value) - {"value", "unit"}
        if unknown or "value" not in value:
            raise ExpressionError(f"{where}: a quantity is {{value: number, unit: text}}, got keys {sorted(value)}")
        number, unit_text = value["value"], value.get("unit", default_unit)
    elif isinstance(value, str):
        number_text, _, unit_text = value.strip().partition(" ")
        unit_text = unit_text.strip() or default_unit
        try:
            number = float(number_text)
        except ValueError:
            raise ExpressionError(f"{where}: {value!r} is not a number followed by a unit (e.g. '2.5 um^2/s')") from None
    else:
        number, unit_text = value, default_unit
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
        raise ExpressionError(f"{where}: expected a finite number, got {number!r}")
    return float(number), parse_unit(unit_text, where)


def unit_of(expression: Expression, units: Mapping[str, Unit], constants: Mapping[str, float]) -> Unit:
    """The unit (dimension) of an expression whose names have the given units.

    Parameters
    ----------
    expression : Expression
        The expression.
    units : dict[str, Unit]
        Unit of every name it uses (species, parameters, x, y, z, t).
    constants : dict[str, float]
        Values of parameters in base units, needed for exponents such as ``S**n``.

    Returns
    -------
    Unit
        Scale 1 (values are combined in base units); only ``dims`` is meaningful.

    Raises
    ------
    ExpressionError
        Adding or comparing unlike units, a dimensional argument of exp/log/tanh/sin/cos,
        a dimensional or non-constant exponent of a dimensional base.
    """
    def fail(message: str, node: Node) -> ExpressionError:
        return ExpressionError(f"{expression.where}: units do not match in {expression.text!r}: {message} (in {node})")

    def constant_value(node: Node) -> float | None:
        names = symbols(node)
        if not names <= set(constants):
            return None
        return float(Expression(node, "", "").evaluate(constants))

    def walk(node: Node) -> Unit:
        if isinstance(node, Num):
            return DIMENSIONLESS
        if isinstance(node, Sym):
            return Unit(1.0, units[node.name].dims, units[node.name].text)
        args = [walk(a) for a in node.args]
        if isinstance(node, Op):
            if node.kind == "neg":
                return args[0]
            a, b = args
            if node.kind in "+-":
                if not a.same_dimension(b):
                    verb = "adds" if node.kind == "+" else "subtracts"
                    raise fail(f"it {verb} {a.describe()} and {b.describe()}", node)
                return a
            if node.kind == "*":
                return a * b
            if node.kind == "/":
                return a / b
            if not b.dimensionless:
                raise fail(f"an exponent must be dimensionless, this one is {b.describe()}", node)
            if a.dimensionless:
                return DIMENSIONLESS
            exponent = constant_value(node.args[1])
            if exponent is None:
                raise fail(f"{a.describe()} is raised to a power that is not a constant", node)
            return a**exponent
        if node.func in ("min", "max"):
            if not args[0].same_dimension(args[1]):
                raise fail(f"{node.func}() compares {args[0].describe()} with {args[1].describe()}", node)
            return args[0]
        if node.func == "abs":
            return args[0]
        if node.func == "sqrt":
            return args[0] ** 0.5
        if node.func in ("heaviside", "sign"):
            return DIMENSIONLESS
        if not args[0].dimensionless:
            raise fail(f"the argument of {node.func}() must be dimensionless, this one is {args[0].describe()}", node)
        return DIMENSIONLESS

    return walk(expression.tree)
