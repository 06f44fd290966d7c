"""Method parameters: declared once as an attrs class, read by specs, the API and the CLI.

A method declares its parameters like this::

    @attrs.frozen
    class Params:
        filter: str = cs.param("ram-lak", choices=("ram-lak", "shepp-logan"),
                               help="Fourier filter applied before backprojection")
        thickness_voxels: int | None = cs.param(None, ge=1, unit="voxel",
                                                help="output thickness; None keeps the image width")

``build_params`` turns a plain mapping (from YAML, TOML or keyword
arguments) into that class, checking types, ranges and choices and
collecting every problem before it reports them.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

import attrs

from ._errors import InputError

_META = "cellscape"
_NOTHING = attrs.NOTHING


@attrs.frozen
class ParamInfo:
    """What a user needs to know about one parameter."""

    name: str
    type: str
    default: Any
    required: bool
    help: str
    unit: str | None = None
    choices: tuple[Any, ...] | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def bounds_text(self) -> str:
        parts = []
        for op, value in ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt)):
            if value is not None:
                parts.append(f"{op} {value:g}")
        return ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "type": self.type, "default": None if self.required else self.default,
            "required": self.required, "help": self.help, "unit": self.unit,
            "choices": list(self.choices) if self.choices else None,
            "ge": self.ge, "gt": self.gt, "le": self.le, "lt": self.lt,
        }


def param(
    default: Any = _NOTHING,
    *,
    help: str,
    unit: str | None = None,
    choices: tuple[Any, ...] | list[Any] | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """Declare one method parameter (an ``attrs.field`` with cellscape metadata).

    Parameters
    ----------
    default : any, optional
        Default value; omit it for a required parameter. Lists and dicts are
        copied per instance.
    help : str
        One line saying what the parameter does, shown by ``cellscape plugins show``.
    unit : str, optional
        Physical unit of the value ("nm", "s", "um^2/s", "voxel", ...).
    choices : sequence, optional
        The allowed values.
    ge, gt, le, lt : float, optional
        Inclusive/exclusive bounds for numbers (each element of a tuple/list).
    """
    meta = {_META: {"help": help, "unit": unit, "choices": tuple(choices) if choices else None,
                    "ge": ge, "gt": gt, "le": le, "lt": lt}}
    if isinstance(default, (list, dict)):
        factory = type(default)
        snapshot = default
        return attrs.field(factory=lambda: factory(snapshot), metadata=meta, validator=_field_validator, kw_only=True)
    return attrs.field(default=default, metadata=meta, validator=_field_validator, kw_only=True)


def _field_validator(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    problems = _check_limits(attribute, value)
    if problems:
        raise InputError(f"parameter '{attribute.name}': {problems[0]}")


def _meta(attribute: attrs.Attribute) -> dict[str, Any]:
    return attribute.metadata.get(_META, {"help": "", "unit": None, "choices": None,
                                          "ge": None, "gt": None, "le": None, "lt": None})


def _numbers(value: Any) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return []


def _check_limits(attribute: attrs.Attribute, value: Any) -> list[str]:
    meta = _meta(attribute)
    problems = []
    if value is None:
        return problems
    if meta["choices"] is not None and value not in meta["choices"]:
        problems.append(f"{value!r} is not one of {', '.join(repr(c) for c in meta['choices'])}")
    for number in _numbers(value):
        for op, bound, ok in (
            (">=", meta["ge"], lambda x, b: x >= b), (">", meta["gt"], lambda x, b: x > b),
            ("<=", meta["le"], lambda x, b: x <= b), ("<", meta["lt"], lambda x, b: x < b),
        ):
            if bound is not None and not ok(number, bound):
                problems.append(f"{number:g} is out of range: must be {op} {bound:g}")
    return problems


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join("..." if a is Ellipsis else _type_name(a) for a in typing.get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Return ``value`` converted to ``tp`` or raise TypeError with a message."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        errors = []
        for option in args:
            try:
                return _coerce(value, option, path)
            except TypeError as exc:
                errors.append(str(exc))
        raise TypeError(f"expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    if origin is Literal:
        if value in args:
            return value
        raise TypeError(f"expected one of {', '.join(repr(a) for a in args)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise TypeError(f"expected None, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TypeError(f"expected true or false, got {type(value).__name__} {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise TypeError(f"expected an integer, got {type(value).__name__} {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise TypeError(f"expected a number, got {type(value).__name__} {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise TypeError(f"expected a string, got {type(value).__name__} {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"expected a list ({_type_name(tp)}), got {type(value).__name__} {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise TypeError(f"expected {len(args)} items ({_type_name(tp)}), got {len(value)}")
            items = [_coerce(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))]
        else:
            item_tp = args[0] if args else Any
            items = [_coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise TypeError(f"expected a mapping ({_type_name(tp)}), got {type(value).__name__} {value!r}")
        key_tp, value_tp = args if args else (Any, Any)
        return {_coerce(k, key_tp, path): _coerce(v, value_tp, f"{path}.{k}") for k, v in value.items()}
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise TypeError(f"expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def _fields(params_cls: type) -> tuple[attrs.Attribute, ...]:
    attrs.resolve_types(params_cls)
    return attrs.fields(params_cls)


def param_infos(params_cls: type) -> list[ParamInfo]:
    """Describe each parameter of a method's ``Params`` class."""
    infos = []
    for attribute in _fields(params_cls):
        meta = _meta(attribute)
        required = attribute.default is _NOTHING
        default = attribute.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = default.factory()
        infos.append(ParamInfo(
            name=attribute.name, type=_type_name(attribute.type), default=None if required else default,
            required=required, help=meta["help"], unit=meta["unit"], choices=meta["choices"],
            ge=meta["ge"], gt=meta["gt"], le=meta["le"], lt=meta["lt"],
        ))
    return infos


def check_params(params_cls: type, values: Mapping[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Convert ``values`` for ``params_cls``; return (converted, [(name, problem), ...]).

    Every problem is collected: unknown names (with a "did you mean"),
    missing required values, wrong types and values out of range.
    """
    import difflib

    fields = {a.name: a for a in _fields(params_cls)}
    converted: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    for name, value in values.items():
        attribute = fields.get(name)
        if attribute is None:
            close = difflib.get_close_matches(name, fields, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known parameters: {', '.join(fields) or 'none'}"
            problems.append((name, f"unknown parameter '{name}'{hint}"))
            continue
        try:
            coerced = _coerce(value, attribute.type, name)
        except TypeError as exc:
            problems.append((name, f"parameter '{name}': {exc}"))
            continue
        limit_problems = _check_limits(attribute, coerced)
        problems.extend((name, f"parameter '{name}': {p}") for p in limit_problems)
        if not limit_problems:
            converted[name] = coerced
    for name, attribute in fields.items():
        if attribute.default is _NOTHING and name not in values:
            problems.append((name, f"parameter '{name}' is required ({_meta(attribute)['help']})"))
    return converted, problems


def build_params(params_cls: type, values: Mapping[str, Any], where: str = "") -> Any:
    """Build a validated ``params_cls`` instance or raise InputError listing every problem."""
    converted, problems = check_params(params_cls, values)
    if problems:
        prefix = f"{where}: " if where else ""
        raise InputError(prefix + "; ".join(p for _, p in problems))
    return params_cls(**converted)


def params_to_json(params: Any) -> dict[str, Any]:
    """Parameters as plain JSON values (tuples become lists), for hashing and provenance."""
    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        return value

    return {a.name: plain(getattr(params, a.name)) for a in _fields(type(params))}
