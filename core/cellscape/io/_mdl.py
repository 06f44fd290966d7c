"""MCell3 MDL geometry (.mdl): a SurfaceMesh as a ``POLYGON_LIST`` object with surface regions.

Written file::

    /* cellscape markers: {"regions": {"plasma_membrane": 1}, "names": {"1": "plasma membrane"}} */
    cell POLYGON_LIST
    {
      VERTEX_LIST
      {
        [0.1, 0.0, 0.25]                      coordinates in µm (MCell's unit; cellscape uses nm)
        ...
      }
      ELEMENT_CONNECTIONS
      {
        [0, 1, 2]                             vertex indices from 0
        ...
      }
      DEFINE_SURFACE_REGIONS
      {
        plasma_membrane
        {
          ELEMENT_LIST = [0, 1, 5]            triangle indices from 0
        }
      }
    }

One surface region per marker (an unnamed marker 0 means "no region" and gets none). Region names
are marker names made into MDL identifiers; the comment maps them back to marker numbers and the
original names, so reading a cellscape file restores the mesh exactly (coordinates are written with
``repr``, 17 significant digits at most, and go through one division and one multiplication by 1000).

Reading accepts any MDL text: ``/* */`` and ``//`` comments are skipped, every ``NAME POLYGON_LIST
{ ... }`` anywhere in the file is read (also inside ``OBJECT`` blocks) and other statements are
ignored. Several objects are concatenated, their vertex indices offset. Without the cellscape
comment (a foreign file) the regions get markers 1, 2, ... in file order, named after the region
(``object_region`` when the file holds more than one object); triangles in no region get marker 0
and a triangle in several regions takes the last one. Element lists may hold ranges ``a TO b`` and
``[a TO b STEP c]``, ``ALL_ELEMENTS``, ``INCLUDE_ELEMENTS`` and ``EXCLUDE_ELEMENTS``. Vertex
coordinates must be plain numbers (MDL expressions and variables are not evaluated), and object
transforms (``TRANSLATE``, ``SCALE``, ``ROTATE``) and ``REMOVE_ELEMENTS`` are refused rather than
ignored, so a file is never read with the wrong geometry.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import attrs
import numpy as np

from .._data import Artefact, SurfaceMesh
from .._errors import InputError
from .._payload import atomic_write

NM_PER_UM = 1000.0
_MARKER_COMMENT = "cellscape markers:"
_MARKER_NOTE = re.compile(r"/\*\s*cellscape markers:\s*(?P<json>\{.*?\})\s*\*/", re.DOTALL)
_UNSUPPORTED = ("TRANSLATE", "SCALE", "ROTATE", "REMOVE_ELEMENTS")
_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<comment>/\*.*?\*/|//[^\n]*)
  | (?P<open_comment>/\*)
  | (?P<string>"[^"\n]*")
  | (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>[{}\[\],=])
  | (?P<other>.)
""", re.VERBOSE | re.DOTALL)


# -- writing ------------------------------------------------------------------------------------


def _identifier(text: str) -> str:
    """``text`` as an MDL identifier: letters, digits and underscores, starting with a letter."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", text)
    return name if name[:1].isalpha() else f"r_{name}"


def _region_names(mesh: SurfaceMesh) -> dict[int, str]:
    """An MDL region name for each marker that gets a region, unique and not an all-caps keyword."""
    present = [int(m) for m in np.unique(mesh.markers) if m != 0 or 0 in mesh.marker_names]
    names: dict[int, str] = {}
    for marker in present:
        name = _identifier(mesh.marker_names.get(marker, f"marker_{marker}"))
        if name.isupper() or name in names.values():  # MDL keywords (ALL, TOP, ...) are upper case
            name = f"{name}_{marker}"
        while name in names.values():
            name = f"{name}_"
        names[marker] = name
    return names


def _rows(values: np.ndarray, per_line: int) -> Iterator[str]:
    for start in range(0, len(values), per_line):
        yield ", ".join(str(int(v)) for v in values[start:start + per_line])


def mdl_text(mesh: SurfaceMesh, object_name: str = "cellscape_surface") -> str:
    """The MDL text of a surface mesh (see the module docstring for the layout)."""
    regions = _region_names(mesh)
    note = {"regions": {name: marker for marker, name in regions.items()},
            "names": {str(k): v for k, v in sorted(mesh.marker_names.items())}}
    # escaping "/" keeps the JSON valid and a name holding "*/" from ending the comment
    lines = [
        "/* MCell3 geometry written by cellscape; coordinates in um, indices from 0 */",
        f"/* {_MARKER_COMMENT} {json.dumps(note).replace('/', chr(92) + '/')} */",
        f"{_identifier(object_name)} POLYGON_LIST",
        "{",
        "  VERTEX_LIST",
        "  {",
        *(f"    [{x!r}, {y!r}, {z!r}]" for x, y, z in (mesh.vertices / NM_PER_UM).tolist()),
        "  }",
        "  ELEMENT_CONNECTIONS",
        "  {",
        *(f"    [{i}, {j}, {k}]" for i, j, k in mesh.triangles.tolist()),
        "  }",
    ]
    if regions:
        lines += ["  DEFINE_SURFACE_REGIONS", "  {"]
        for marker, name in regions.items():
            elements = list(_rows(np.flatnonzero(mesh.markers == marker), 20))
            lines += [f"    {name}", "    {", "      ELEMENT_LIST = [" + ",\n        ".join(elements) + "]", "    }"]
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_mdl(obj: Artefact, path: Path) -> None:
    """Write a SurfaceMesh as an MCell3 MDL ``POLYGON_LIST`` named after the file, atomically."""
    if not isinstance(obj, SurfaceMesh):
        raise InputError(f"{path}: .mdl files hold surface meshes, not {type(obj).__name__}")
    text = mdl_text(obj, Path(path).name.split(".")[0] or "cellscape_surface")
    atomic_write(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))


# -- reading ------------------------------------------------------------------------------------


@attrs.frozen
class _Token:
    kind: str
    text: str
    line: int


@attrs.define
class _Region:
    name: str
    line: int
    included: list[int] = attrs.field(factory=list)
    excluded: list[int] = attrs.field(factory=list)
    include_all: bool = False
    exclude_all: bool = False


@attrs.define
class _Object:
    name: str
    line: int
    vertices: list[list[float]] = attrs.field(factory=list)
    triangles: list[list[int]] = attrs.field(factory=list)
    triangle_lines: list[int] = attrs.field(factory=list)
    regions: list[_Region] = attrs.field(factory=list)


def _tokens(text: str, path: Path) -> list[_Token]:
    tokens, line = [], 1
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup
        assert kind is not None
        if kind == "open_comment":
            raise InputError(f"{path}: line {line}: comment '/*' is never closed")
        if kind not in ("space", "comment"):
            tokens.append(_Token(kind, match.group(), line))
        line += match.group().count("\n")
    return tokens


def _check_balance(tokens: list[_Token], path: Path) -> None:
    pairs = {"}": "{", "]": "["}
    stack: list[_Token] = []
    for token in tokens:
        if token.text in ("{", "["):
            stack.append(token)
        elif token.text in pairs:
            if not stack or stack[-1].text != pairs[token.text]:
                raise InputError(f"{path}: line {token.line}: unbalanced '{token.text}'"
                                 + (f" (the '{stack[-1].text}' of line {stack[-1].line} is still open)" if stack else ""))
            stack.pop()
    if stack:
        raise InputError(f"{path}: line {stack[-1].line}: '{stack[-1].text}' is never closed")


class _Parser:
    """Recursive-descent reader of the POLYGON_LIST parts of an MDL token list."""

    def __init__(self, tokens: list[_Token], path: Path):
        self.tokens, self.path, self.at = tokens, path, 0

    def error(self, message: str, token: _Token | None = None) -> InputError:
        token = token or self.peek()
        return InputError(f"{self.path}: line {token.line}: {message}")

    def peek(self, ahead: int = 0) -> _Token:
        index = min(self.at + ahead, len(self.tokens) - 1)
        return self.tokens[index]

    def next(self) -> _Token:
        if self.at >= len(self.tokens):
            raise self.error("unexpected end of file")
        self.at += 1
        return self.tokens[self.at - 1]

    def expect(self, text: str, where: str) -> _Token:
        token = self.next()
        if token.text != text:
            raise self.error(f"expected '{text}' {where}, found '{token.text}'", token)
        return token

    def skip_block(self) -> None:
        """Skip a balanced ``{ ... }`` or ``[ ... ]`` starting at the current token."""
        close = {"{": "}", "[": "]"}[self.next().text]
        depth = 1
        while depth:
            token = self.next()
            if token.text in ("{", "["):
                depth += 1
            elif token.text in ("}", "]"):
                depth -= 1
        assert token.text == close  # balance was checked before parsing

    def skip_value(self) -> None:
        """Skip what follows ``KEY =``: a bracketed list or a block, or a single token."""
        if self.peek().text in ("{", "["):
            self.skip_block()
        else:
            self.next()

    def objects(self) -> list[_Object]:
        found = []
        while self.at < len(self.tokens) - 2:
            if (self.peek().kind == "name" and self.peek(1).text == "POLYGON_LIST" and self.peek(2).text == "{"):
                name = self.next()
                self.at += 1
                found.append(self.polygon_list(name))
            else:
                self.at += 1
        return found

    def polygon_list(self, name_token: _Token) -> _Object:
        name = name_token.text
        obj = _Object(name, name_token.line)
        self.expect("{", f"after '{name} POLYGON_LIST'")
        while self.peek().text != "}":
            if self.peek().text in ("{", "["):
                self.skip_block()
                continue
            token = self.next()
            if token.text == "VERTEX_LIST":
                self.rows(obj, "vertex")
            elif token.text == "ELEMENT_CONNECTIONS":
                self.rows(obj, "element")
            elif token.text == "DEFINE_SURFACE_REGIONS":
                self.surface_regions(obj)
            elif token.text in _UNSUPPORTED:
                raise self.error(f"{token.text} in POLYGON_LIST '{name}' is not supported; "
                                 "apply it to the geometry before export", token)
            elif self.peek().text == "=":
                self.next()
                self.skip_value()
            elif self.peek().text in ("{", "["):
                self.skip_block()  # NORMAL_LIST and other blocks that do not change the geometry
        self.next()
        return obj

    def rows(self, obj: _Object, what: str) -> None:
        self.expect("{", f"after the {'VERTEX_LIST' if what == 'vertex' else 'ELEMENT_CONNECTIONS'} keyword")
        while self.peek().text != "}":
            start = self.expect("[", f"to start a {what}")
            values = []
            while self.peek().text != "]":
                token = self.next()
                if token.text == ",":
                    continue
                values.append(self.number(token, what))
            self.next()
            if len(values) != 3:
                raise self.error(f"a {what} needs 3 numbers, got {len(values)}", start)
            if what == "vertex":
                obj.vertices.append(values)
            else:
                obj.triangles.append(values)
                obj.triangle_lines.append(start.line)
        self.next()

    def number(self, token: _Token, what: str) -> float:
        if token.kind != "number":
            raise self.error(f"{what} entry is not a number: '{token.text}' (MDL expressions are not evaluated)", token)
        value = float(token.text)
        if what == "vertex":
            if not np.isfinite(value):
                raise self.error(f"vertex coordinate {token.text} is not finite", token)
            return value
        if value != int(value):
            raise self.error(f"{what} index is not an integer: '{token.text}'", token)
        return int(value)

    def surface_regions(self, obj: _Object) -> None:
        self.expect("{", "after DEFINE_SURFACE_REGIONS")
        while self.peek().text != "}":
            name = self.next()
            if name.kind != "name":
                raise self.error(f"expected a region name, found '{name.text}'", name)
            self.expect("{", f"after region name '{name.text}'")
            region = _Region(name.text, name.line)
            while self.peek().text != "}":
                if self.peek().text in ("{", "["):
                    self.skip_block()
                    continue
                key = self.next()
                if self.peek().text != "=":
                    continue
                self.next()
                if key.text not in ("ELEMENT_LIST", "INCLUDE_ELEMENTS", "EXCLUDE_ELEMENTS"):
                    self.skip_value()  # SURFACE_CLASS, MOLECULE_DENSITY, ... do not change the geometry
                elif self.peek().text == "ALL_ELEMENTS":
                    self.next()
                    if key.text == "EXCLUDE_ELEMENTS":
                        region.exclude_all = True
                    else:
                        region.include_all = True
                elif key.text == "EXCLUDE_ELEMENTS":
                    region.excluded.extend(self.element_list())
                else:
                    region.included.extend(self.element_list())
            self.next()
            obj.regions.append(region)
        self.next()

    def element_list(self) -> list[int]:
        self.expect("[", "to start an element list")
        elements: list[int] = []
        while self.peek().text != "]":
            token = self.next()
            if token.text == ",":
                continue
            if token.text == "[":  # [a TO b STEP c]
                first = int(self.number(self.next(), "element"))
                self.expect("TO", "in an element range")
                last = int(self.number(self.next(), "element"))
                step = 1
                if self.peek().text == "STEP":
                    self.next()
                    step = int(self.number(self.next(), "element"))
                    if step <= 0:
                        raise self.error("the STEP of an element range must be positive")
                self.expect("]", "to close an element range")
                elements.extend(range(first, last + 1, step))
                continue
            first = int(self.number(token, "element"))
            if self.peek().text == "TO":
                self.next()
                elements.extend(range(first, int(self.number(self.next(), "element")) + 1))
            else:
                elements.append(first)
        self.next()
        return elements


def _region_elements(path: Path, obj: _Object, region: _Region) -> np.ndarray:
    """Indices of the object's elements in the region: the included ones minus the excluded ones."""
    n = len(obj.triangles)
    for index in (*region.included, *region.excluded):
        if not 0 <= index < n:
            raise InputError(f"{path}: line {region.line}: region '{region.name}' of '{obj.name}' lists element "
                             f"{index}, but the object has {n} elements (0 to {n - 1})")
    chosen = np.full(n, region.include_all)
    chosen[np.array(region.included, np.int64)] = True
    chosen[np.array(region.excluded, np.int64)] = False
    return np.flatnonzero(chosen & (not region.exclude_all))


def read_mdl(path: Path, kind: type[Artefact] | None = None) -> SurfaceMesh:
    """Read every ``POLYGON_LIST`` of an MDL file into one SurfaceMesh (vertices in nm)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read MDL text ({exc})") from exc
    tokens = _tokens(text, path)
    _check_balance(tokens, path)
    objects = _Parser(tokens, path).objects() if tokens else []
    if not objects:
        raise InputError(f"{path}: no 'NAME POLYGON_LIST {{ ... }}' object in the file")
    vertices, triangles, markers = [], [], []
    names: dict[int, str] = {}
    note = _MARKER_NOTE.search(text)
    own: dict[str, int] = {}
    if note is not None and len(objects) == 1:
        try:
            meta = json.loads(note.group("json"))
            own = {str(k): int(v) for k, v in meta["regions"].items()}
            names = {int(k): str(v) for k, v in meta["names"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            line = text.count("\n", 0, note.start()) + 1
            raise InputError(f"{path}: line {line}: the cellscape markers comment is not valid ({exc})") from None
    next_marker = max([0, *own.values(), *names]) + 1
    offset = 0
    for obj in objects:
        n_vertices = len(obj.vertices)
        if not obj.triangles:
            raise InputError(f"{path}: line {obj.line}: POLYGON_LIST '{obj.name}' has no ELEMENT_CONNECTIONS")
        connections = np.array(obj.triangles, np.int64)
        bad = np.flatnonzero(((connections < 0) | (connections >= n_vertices)).any(axis=1))
        if len(bad):
            raise InputError(f"{path}: line {obj.triangle_lines[bad[0]]}: element {bad[0]} of '{obj.name}' refers to "
                             f"vertex {connections[bad[0]].tolist()}, but the object has {n_vertices} vertices "
                             f"(0 to {n_vertices - 1})")
        marker_of = np.zeros(len(connections), np.int32)
        for region in obj.regions:
            region_name = region.name
            if region_name in own:
                marker = own[region_name]
            else:
                marker, next_marker = next_marker, next_marker + 1
                names[marker] = region_name if len(objects) == 1 else f"{obj.name}_{region_name}"
            marker_of[_region_elements(path, obj, region)] = marker
        vertices.append(np.array(obj.vertices, np.float64).reshape(-1, 3))
        triangles.append(connections + offset)
        markers.append(marker_of)
        offset += n_vertices
    return SurfaceMesh(np.concatenate(vertices) * NM_PER_UM, np.concatenate(triangles), np.concatenate(markers), names)
