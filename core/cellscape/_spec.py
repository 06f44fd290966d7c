"""Pipeline specs: loading (YAML with the safe loader, or TOML), validation, the step graph.

A spec names steps; each runs one registered method on files or on other
steps' outputs::

    version: 1
    vars: {seed: 1}
    steps:
      - id: cell
        use: generate.phantom_cell
        with: {shape: 64, seed: "${seed}"}
      - id: tomogram
        use: reconstruct.wbp
        inputs: {tilts: tilts}           # the only output of step 'tilts'
        save: tomogram.mrc               # relative to the run directory

Validation collects every problem (schema, unknown methods, parameter
types and ranges, inputs, save paths, cycles) with its file, line and key,
and raises one SpecError listing them all. Nothing in a spec can run code:
YAML is composed with the safe loader, so ``!!python/...`` tags are errors.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import yaml

from ._errors import SpecError, SpecIssue
from ._params import check_params
from ._registry import Registry, get_registry

__all__ = ["InputRef", "Spec", "Step", "Sweep", "SweepMember", "load_spec", "validate_spec"]

SCHEMA_PATH = Path(__file__).with_name("pipeline.schema.json")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

PathKey = tuple[str | int, ...]


@attrs.frozen
class InputRef:
    """Where a step input comes from: another step's output or a file."""

    step: str | None = None
    output: str | None = None
    file: Path | None = None

    def describe(self) -> str:
        return str(self.file) if self.file is not None else f"{self.step}.{self.output}"


@attrs.frozen
class Step:
    """One validated step of a spec."""

    id: str
    use: str
    params: dict[str, Any]
    inputs: dict[str, InputRef]
    save: dict[str, str]
    line: int | None = None
    chunks: tuple[int, int, int] | None = None

    def upstream(self) -> list[str]:
        return sorted({ref.step for ref in self.inputs.values() if ref.step is not None})


@attrs.frozen
class Spec:
    """A validated pipeline: its steps in dependency order."""

    path: Path
    text: str
    name: str
    description: str
    steps: list[Step]
    executor: dict[str, Any] = attrs.field(factory=dict)
    sweep: Sweep | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def step(self, step_id: str) -> Step:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    def mermaid(self) -> str:
        """The step graph as Mermaid flowchart text."""
        lines = ["flowchart TD"]
        for step in self.steps:
            lines.append(f'    {_mermaid_id(step.id)}["{step.id}<br/>{step.use}"]')
        for step in self.steps:
            for name, ref in step.inputs.items():
                if ref.step is not None:
                    lines.append(f"    {_mermaid_id(ref.step)} -->|{ref.output}→{name}| {_mermaid_id(step.id)}")
                else:
                    file_node = "file_" + hashlib.sha1(str(ref.file).encode()).hexdigest()[:8]
                    lines.append(f'    {file_node}[("{ref.file.name}")] -->|{name}| {_mermaid_id(step.id)}')
        return "\n".join(lines)


@attrs.frozen
class SweepMember:
    """One member of a sweep: the values it sets and the pipeline they give."""

    index: int
    values: dict[str, Any]
    spec: Spec

    def label(self) -> str:
        return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.values.items())


@attrs.frozen
class Sweep:
    """A validated ``sweep:`` block: its members, and which step's Table to gather."""

    mode: str
    keys: list[str]
    members: list[SweepMember]
    gather_step: str | None = None
    gather_output: str | None = None


def _mermaid_id(step_id: str) -> str:
    return "s_" + re.sub(r"[^A-Za-z0-9_]", "_", step_id)


# -- parsing with line numbers ----------------------------------------------
class _Issues:
    def __init__(self, file: str, lines: dict[PathKey, int]):
        self.file = file
        self.lines = lines
        self.items: list[SpecIssue] = []

    def line_of(self, path: PathKey) -> int | None:
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())

    def add(self, path: PathKey, message: str) -> None:
        key = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in path).replace(".[", "[")
        self.items.append(SpecIssue(message, self.file, self.line_of(path), key or None))


def _yaml_to_python(text: str, file: str) -> tuple[Any, dict[PathKey, int]]:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError([SpecIssue(f"malformed YAML: {problem}", file, line)]) from exc
    if root is None:
        raise SpecError([SpecIssue("the spec file is empty", file, 1)])
    constructor = yaml.SafeLoader("")
    lines: dict[PathKey, int] = {}
    problems: list[SpecIssue] = []

    def convert(node: yaml.Node, path: PathKey) -> Any:
        lines[path] = node.start_mark.line + 1
        expected = {yaml.MappingNode: "map", yaml.SequenceNode: "seq"}.get(type(node))
        if expected and node.tag != f"tag:yaml.org,2002:{expected}":
            problems.append(SpecIssue(
                f"YAML tag {node.tag} is not allowed (specs cannot construct Python objects or run code)",
                file, node.start_mark.line + 1,
            ))
            return None
        if isinstance(node, yaml.MappingNode):
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = constructor.construct_object(key_node, deep=True)
                if key in result:
                    problems.append(SpecIssue(f"duplicate key '{key}'", file, key_node.start_mark.line + 1, str(key)))
                result[key] = convert(value_node, (*path, key))
                lines[(*path, key)] = key_node.start_mark.line + 1
            return result
        if isinstance(node, yaml.SequenceNode):
            return [convert(item, (*path, i)) for i, item in enumerate(node.value)]
        try:
            return constructor.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            problems.append(SpecIssue(
                f"YAML tag {node.tag} is not allowed (specs cannot construct Python objects or run code)",
                file, node.start_mark.line + 1,
            ))
            del exc
            return None

    data = convert(root, ())
    if problems:
        raise SpecError(problems)
    return data, lines


def _toml_to_python(text: str, file: str) -> tuple[Any, dict[PathKey, int]]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        raise SpecError([SpecIssue(f"malformed TOML: {exc}", file, int(match.group(1)) if match else None)]) from exc
    # TOML parsers give no positions: find each key's line by scanning the text.
    source = text.splitlines()
    step_headers = [i + 1 for i, line in enumerate(source) if re.match(r"\s*\[\[\s*steps\s*\]\]", line)]
    lines: dict[PathKey, int] = {}

    def find(key: str, start: int) -> int | None:
        pattern = re.compile(rf'^\s*(\[+\s*)?("?){re.escape(str(key))}\2\s*(=|\]|\.)')
        inline = re.compile(rf'[{{,]\s*("?){re.escape(str(key))}\1\s*=')
        for number in range(start, len(source) + 1):
            if pattern.search(source[number - 1]) or inline.search(source[number - 1]):
                return number
        return None

    def walk(value: Any, path: PathKey, start: int) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                line = find(key, start)
                if line is not None:
                    lines[(*path, key)] = line
                walk(item, (*path, key), line or start)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                begin = step_headers[i] if path == ("steps",) and i < len(step_headers) else start
                lines[(*path, i)] = begin
                walk(item, (*path, i), begin)

    walk(data, (), 1)
    return data, lines


def _parse(path: Path) -> tuple[str, Any, dict[PathKey, int]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError([SpecIssue("spec file not found", str(path))]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([SpecIssue(f"cannot read spec file: {exc}", str(path))]) from exc
    if path.suffix.lower() == ".toml":
        data, lines = _toml_to_python(text, str(path))
    elif path.suffix.lower() in (".yaml", ".yml"):
        data, lines = _yaml_to_python(text, str(path))
    else:
        raise SpecError([SpecIssue("spec files must end in .yaml, .yml or .toml", str(path))])
    return text, data, lines


# -- validation ---------------------------------------------------------------
def _schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


def _check_schema(data: Any, issues: _Issues) -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(_schema())
    for error in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path))):
        path = tuple(error.absolute_path)
        if error.validator == "additionalProperties":
            extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
            allowed = sorted(error.schema.get("properties", {}))
            for key in extra:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else f"; allowed keys: {', '.join(allowed)}"
                issues.add((*path, key), f"unknown key '{key}'{hint}")
        elif error.validator == "oneOf" and path[:1] == ("steps",) and "inputs" in path:
            issues.add(path, "an input must be a step reference ('step' or 'step.output') or {file: path}")
        elif error.validator == "oneOf" and "save" in path:
            issues.add(path, "save must be a path, or a mapping of output name to path")
        else:
            issues.add(path, error.message)


def _substitute(value: Any, variables: Mapping[str, Any], path: PathKey, issues: _Issues) -> Any:
    if isinstance(value, str):
        whole = _VAR.fullmatch(value)
        if whole:
            name = whole.group(1)
            if name not in variables:
                issues.add(path, f"undefined variable '${{{name}}}' (define it under vars:)")
                return value
            return variables[name]

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in variables:
                issues.add(path, f"undefined variable '${{{name}}}' (define it under vars:)")
                return match.group(0)
            return str(variables[name])

        return _VAR.sub(replace, value)
    if isinstance(value, dict):
        return {k: _substitute(v, variables, (*path, k), issues) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, variables, (*path, i), issues) for i, v in enumerate(value)]
    return value


def _topological(steps: list[Step], issues: _Issues, index: dict[str, int]) -> list[Step]:
    by_id = {s.id: s for s in steps}
    remaining = {s.id: set(s.upstream()) & set(by_id) for s in steps}
    ordered: list[Step] = []
    while remaining:
        ready = [sid for sid, deps in remaining.items() if not deps]
        if not ready:
            cycle = " → ".join(sorted(remaining))
            for sid in sorted(remaining):
                issues.add(("steps", index[sid], "inputs"), f"step '{sid}' is part of a dependency cycle ({cycle})")
            return ordered
        for sid in sorted(ready, key=lambda s: index[s]):
            ordered.append(by_id[sid])
            del remaining[sid]
        for deps in remaining.values():
            deps.difference_update(ready)
    return ordered


def _check_save(step_path: PathKey, use: str, outputs: Mapping[str, Any], save: Any, issues: _Issues) -> dict[str, str]:
    from .io import _find

    if save is None:
        return {}
    if isinstance(save, str):
        if len(outputs) != 1:
            issues.add((*step_path, "save"), f"{use} has outputs {', '.join(outputs)}: give save as a mapping output → path")
            return {}
        save = {next(iter(outputs)): save}
    result = {}
    for name, target in save.items():
        if name not in outputs:
            issues.add((*step_path, "save", name), f"{use} has no output '{name}'; outputs: {', '.join(outputs)}")
            continue
        try:
            fmt = _find(Path(target), "write")
        except Exception as exc:  # unsupported suffix: InputError with the list of formats
            issues.add((*step_path, "save", name), str(exc))
            continue
        kind = outputs[name].kind
        if fmt.kinds != ("*",) and kind.kind not in fmt.kinds:
            issues.add((*step_path, "save", name), f"{fmt.name} files cannot hold a {kind.__name__} ('{target}')")
            continue
        result[name] = target
    return result


def _build(path: Path, text: str, data: Any, lines: dict[PathKey, int], registry: Registry) -> Spec:
    issues = _Issues(str(path), lines)
    _check_schema(data, issues)
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
        raise SpecError(issues.items or [SpecIssue("the spec must be a mapping with a 'steps' list", str(path), 1)])
    variables = data.get("vars") or {}
    raw_steps = [s for s in data["steps"] if isinstance(s, dict) and isinstance(s.get("id"), str)]
    index: dict[str, int] = {}
    for i, raw in enumerate(data["steps"]):
        if isinstance(raw, dict) and isinstance(raw.get("id"), str):
            if raw["id"] in index:
                issues.add(("steps", i, "id"), f"duplicate step id '{raw['id']}' (first at step {index[raw['id']] + 1})")
            else:
                index[raw["id"]] = i
    entries = {sid: registry.methods.get(data["steps"][i].get("use", "")) for sid, i in index.items()}
    steps: list[Step] = []
    for raw in raw_steps:
        i = index.get(raw["id"])
        if i is None or data["steps"][i] is not raw:
            continue
        step_path: PathKey = ("steps", i)
        use = raw.get("use")
        entry = entries.get(raw["id"])
        if entry is None:
            if isinstance(use, str):
                issues.add((*step_path, "use"), registry.unknown_message(use))
            continue
        cls = entry.cls
        params_raw = _substitute(raw.get("with") or {}, variables, (*step_path, "with"), issues)
        params: dict[str, Any] = {}
        if isinstance(params_raw, dict):
            params, problems = check_params(cls.Params, params_raw)
            for key, message in problems:
                where = (*step_path, "with", key) if key in params_raw else (*step_path, "with")
                issues.add(where, f"{message} ({cls.name})")
        ports = cls.input_ports()
        inputs: dict[str, InputRef] = {}
        raw_inputs = _substitute(raw.get("inputs") or {}, variables, (*step_path, "inputs"), issues)
        for name, ref in (raw_inputs.items() if isinstance(raw_inputs, dict) else []):
            where = (*step_path, "inputs", name)
            if name not in ports:
                close = difflib.get_close_matches(name, ports, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                issues.add(where, f"{cls.name} has no input '{name}'{hint}; inputs: {', '.join(ports) or 'none'}")
                continue
            if isinstance(ref, dict) and "file" in ref:
                file = (path.parent / str(ref["file"])).resolve()
                if not file.exists():
                    issues.add(where, f"input file not found: {file}")
                    continue
                inputs[name] = InputRef(file=file)
            elif isinstance(ref, str):
                step_id, _, output = ref.partition(".")
                if step_id not in index:
                    close = difflib.get_close_matches(step_id, index, n=1)
                    hint = f"; did you mean '{close[0]}'?" if close else ""
                    file_hint = " (for a file write {file: ...})" if "/" in ref or "." in ref else ""
                    issues.add(where, f"no step '{step_id}'{hint}{file_hint}")
                    continue
                upstream = entries.get(step_id)
                if upstream is None:
                    continue
                outs = upstream.cls.output_ports()
                if not output:
                    if len(outs) != 1:
                        issues.add(where, f"step '{step_id}' has outputs {', '.join(outs)}; write '{step_id}.<output>'")
                        continue
                    output = next(iter(outs))
                if output not in outs:
                    issues.add(where, f"step '{step_id}' ({upstream.name}) has no output '{output}'; outputs: {', '.join(outs)}")
                    continue
                if not issubclass(outs[output].kind, ports[name].kind):
                    issues.add(where, f"'{step_id}.{output}' is a {outs[output].kind.__name__}, but input '{name}' of {cls.name} "
                                      f"needs a {ports[name].kind.__name__}")
                    continue
                inputs[name] = InputRef(step=step_id, output=output)
        for name, port in ports.items():
            if not port.optional and name not in (raw_inputs or {}):
                issues.add((*step_path, "inputs"), f"{cls.name} needs input '{name}' ({port.kind.__name__})")
        raw_save = _substitute(raw.get("save"), variables, (*step_path, "save"), issues)
        save = _check_save(step_path, cls.name, cls.output_ports(), raw_save, issues)
        chunks = raw.get("chunks")
        if chunks is not None:
            chunks = (chunks,) * 3 if isinstance(chunks, int) else tuple(chunks)
            if cls.chunk_port is None:
                issues.add((*step_path, "chunks"), f"{cls.name} is not chunk-safe (it needs the whole volume at once); "
                                                   "remove chunks: or choose a chunk-safe method")
                chunks = None
        steps.append(Step(raw["id"], cls.name, params, inputs, save, issues.line_of(step_path), chunks))
    ordered = _topological(steps, issues, index)
    if issues.items:
        raise SpecError(sorted(issues.items, key=lambda i: (i.line or 0, i.key or "")))
    name = data.get("name") or path.stem.replace(".", "_")
    executor = dict(data.get("executor") or {})
    return Spec(path.resolve(), text, name, data.get("description", ""), ordered, executor)


def _sweep_values(sweep: Mapping[str, Any], issues: _Issues) -> list[dict[str, Any]]:
    """The members' values of a sweep block (grid, zip or seeded random)."""
    import itertools

    import numpy as np

    mode = sweep.get("mode", "grid")
    values: dict[str, Any] = sweep["values"]
    ranges = [k for k, v in values.items() if isinstance(v, dict)]
    if mode in ("grid", "zip") and ranges:
        for key in ranges:
            issues.add(("sweep", "values", key), f"a {mode} sweep needs a list of values for '{key}' "
                                                 "(ranges {low, high} are for mode: random)")
        return []
    if mode == "grid":
        return [dict(zip(values, combo, strict=True)) for combo in itertools.product(*values.values())]
    if mode == "zip":
        lengths = {k: len(v) for k, v in values.items()}
        if len(set(lengths.values())) > 1:
            issues.add(("sweep", "values"), "a zip sweep needs lists of equal length; got "
                       + ", ".join(f"{k}: {n}" for k, n in lengths.items()))
            return []
        return [dict(zip(values, combo, strict=True)) for combo in zip(*values.values(), strict=True)]
    if "samples" not in sweep:
        issues.add(("sweep",), "a random sweep needs 'samples' (how many members to draw)")
        return []
    rng = np.random.default_rng(sweep.get("seed", 0))
    members: list[dict[str, Any]] = [{} for _ in range(sweep["samples"])]
    for key, spec in values.items():
        if isinstance(spec, list):
            picks = rng.integers(0, len(spec), len(members))
            draws = [spec[int(i)] for i in picks]
        else:
            low, high = float(spec["low"]), float(spec["high"])
            if high < low or (spec.get("log") and low <= 0):
                issues.add(("sweep", "values", key), f"range of '{key}' needs low <= high (and low > 0 with log: true)")
                return []
            if spec.get("log"):
                draws = list(np.exp(rng.uniform(np.log(low), np.log(high), len(members))))
            else:
                draws = list(rng.uniform(low, high, len(members)))
            draws = [round(float(d)) if spec.get("integer") else float(d) for d in draws]
        for member, value in zip(members, draws, strict=True):
            member[key] = value
    return members


def _expand_sweep(path: Path, text: str, data: dict[str, Any], lines: dict[PathKey, int], registry: Registry,
                  base: Spec) -> Sweep:
    """Check a sweep block's keys against the pipeline, and build one validated spec per member."""
    import copy

    issues = _Issues(str(path), lines)
    sweep = data["sweep"]
    variables = data.get("vars") or {}
    steps_by_id = {s["id"]: s for s in data["steps"] if isinstance(s, dict) and isinstance(s.get("id"), str)}
    for key in sweep["values"]:
        step_id, dot, param = key.partition(".")
        where = ("sweep", "values", key)
        if not dot:
            if key not in variables:
                issues.add(where, f"sweep over '{key}': not a variable under vars: "
                                  "(write 'step.parameter' for a step's parameter)")
            continue
        if step_id not in steps_by_id:
            close = difflib.get_close_matches(step_id, steps_by_id, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            issues.add(where, f"sweep over '{key}': no step '{step_id}'{hint}")
            continue
        cls = registry.get(base.step(step_id).use).cls
        fields = [f.name for f in attrs.fields(cls.Params)]
        if param not in fields:
            close = difflib.get_close_matches(param, fields, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; parameters: {', '.join(fields)}"
            issues.add(where, f"sweep over '{key}': {cls.name} has no parameter '{param}'{hint}")
    gather = sweep.get("gather")
    gather_step = gather_output = None
    if gather:
        from ._data import Table

        gather_step = gather["step"]
        if gather_step not in steps_by_id:
            issues.add(("sweep", "gather", "step"), f"gather: no step '{gather_step}'")
        else:
            outs = registry.get(base.step(gather_step).use).cls.output_ports()
            tables = [n for n, port in outs.items() if issubclass(port.kind, Table)]
            gather_output = gather.get("output") or (tables[0] if len(tables) == 1 else None)
            if gather_output not in tables:
                issues.add(("sweep", "gather"), f"gather: step '{gather_step}' needs a Table output "
                           f"(name it with output:; its Table outputs: {', '.join(tables) or 'none'})")
    member_values = [] if issues.items else _sweep_values(sweep, issues)
    if issues.items:
        raise SpecError(issues.items)
    members = []
    for index, values in enumerate(member_values):
        member_data = copy.deepcopy(data)
        member_data.pop("sweep")
        member_data["name"] = f"{base.name}-m{index:03d}"
        for key, value in values.items():
            step_id, dot, param = key.partition(".")
            if dot:
                raw = next(s for s in member_data["steps"] if isinstance(s, dict) and s.get("id") == step_id)
                raw["with"] = {**(raw.get("with") or {}), param: value}
            else:
                member_data["vars"][key] = value
        label = ", ".join(f"{k}={v}" for k, v in values.items())
        try:
            spec = _build(path, text, member_data, lines, registry)
        except SpecError as exc:
            raise SpecError([SpecIssue(f"sweep member {index} ({label}): {i.message}", i.file, i.line, i.key)
                             for i in exc.issues]) from None
        members.append(SweepMember(index, values, spec))
    return Sweep(sweep.get("mode", "grid"), list(sweep["values"]), members, gather_step, gather_output)


def load_spec(path: str | Path, registry: Registry | None = None) -> Spec:
    """Load and validate a spec; raise SpecError listing every problem found."""
    path = Path(path)
    text, data, lines = _parse(path)
    registry = registry or get_registry()
    spec = _build(path, text, data, lines, registry)
    if isinstance(data, dict) and data.get("sweep"):
        spec = attrs.evolve(spec, sweep=_expand_sweep(path, text, data, lines, registry, spec))
    return spec


def validate_spec(path: str | Path, registry: Registry | None = None) -> list[SpecIssue]:
    """Every problem of a spec (an empty list when it is valid)."""
    try:
        load_spec(path, registry)
    except SpecError as exc:
        return exc.issues
    return []
