"""The reaction–diffusion model of a spec: species, parameters, reactions, boundary conditions, checked units.

A model is a plain mapping (the ``model:`` block of a spec)::

    parameters:                       # a number (dimensionless), "value unit", or {value: .., unit: ..}
      k_kin: 2.0 um/s
      k_p: 0.5 1/s
    species:                          # volume species live "in" regions, surface species on a "surface"
      A:  {in: cytosol, D: 10.0, initial: 1.0}                # D in µm²/s, values in the species' unit
      Ap: {in: cytosol, D: {cytosol: 10.0}, initial: 0.0}     # D per region
      R:  {surface: membrane, D: 0.1, unit: molecules/um^2, initial: "x/L * R0"}
    reactions:
      dephosphorylation: {equation: "Ap -> A", rate: "k_p * Ap"}                 # volume: uM/s
      phosphorylation:   {equation: "A -> Ap", rate: "k_kin * A", surface: membrane}  # flux: amount/µm²/s
    boundary_conditions:
      - {species: A, surface: outer, type: dirichlet, value: 1.0}
      - {species: A, surface: outer, type: neumann, flux: 0.2}                     # inward, uM·µm/s
      - {species: A, surface: outer, type: robin, coefficient: 1.0, reference: 0.5}  # −D∂c/∂n = h (c − c_ref)

Species units default to µM (volume) and molecules/µm² (surface). Regions and
boundaries are named by the mesh's ``region_names`` / ``boundary_names`` or by
integer markers. (The key is ``surface``, not ``on``: YAML reads a bare ``on``
as ``true``.) A reaction is a *surface* reaction (a membrane flux) when it
has a ``surface`` or involves a surface species; its rate is then an amount
per area and time, and the volume species it involves act through their
values on that surface (mixed-dimensional coupling, as in SMART). A surface
reaction that changes a volume species is that species' boundary flux.

:func:`parse_model` checks everything that does not need the mesh (names,
expressions, units, signs); :func:`bind_model` resolves regions and
boundaries on a :class:`cellscape.TetMesh` and lays out the unknowns.
Neumann and Robin conditions become internal surface reactions, so the
discretization knows only reactions and Dirichlet values.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np

import cellscape as cs

from ._expr import (
    COORDINATES,
    FUNCTIONS,
    RATE_LAWS,
    Expression,
    ExpressionError,
    Num,
    Op,
    Sym,
    Unit,
    mul,
    parse_expression,
    parse_quantity,
    parse_unit,
    sub,
    unit_of,
)

__all__ = [
    "BoundModel",
    "BoundaryCondition",
    "Model",
    "Placement",
    "Reaction",
    "Species",
    "bind_model",
    "parse_model",
]

NM_PER_UM = 1000.0
VOLUME_UNIT = "uM"
SURFACE_UNIT = "molecules/um^2"
DIFFUSION_UNIT = "um^2/s"
_RESERVED = set(COORDINATES) | set(FUNCTIONS) | set(RATE_LAWS) | {"pi", "heaviside", "sign"}
_UM, _SECOND = parse_unit("um"), parse_unit("s")
_TERM = re.compile(r"^\s*(?:(\d+(?:\.\d*)?|\.\d+)\s*\*?\s*)?([A-Za-z_]\w*)\s*$")


def _fail(message: str) -> cs.InputError:
    return cs.InputError(f"model: {message}")


# ---------------------------------------------------------------- the parsed model


@attrs.frozen
class Species:
    """A species: where it lives, its unit, diffusion coefficient(s) and initial value.

    Attributes
    ----------
    name : str
        Its name in expressions and outputs.
    kind : {"volume", "surface"}
        Lives in volume regions or on boundary (membrane) regions.
    location : tuple of (str | int), or None
        Region (volume) or boundary (surface) names/markers; None: every region of the mesh.
    unit : Unit
        Unit of its values (amount per volume or per area).
    diffusion : dict
        µm²/s; key None for one value everywhere, else region/boundary name or marker → value.
    initial : Expression or dict
        An expression of x, y, z (µm) in base units, or region/boundary → value in ``unit``.
    """

    name: str
    kind: str
    location: tuple[str | int, ...] | None
    unit: Unit
    diffusion: dict[Any, float]
    initial: Any


@attrs.frozen
class Reaction:
    """A reaction (or an internal one standing for a Neumann/Robin condition).

    Attributes
    ----------
    name : str
        For messages and statistics.
    stoichiometry : dict[str, float]
        Net change of each species per unit of reaction (products +, reactants −).
    rate : Expression
        Rate in base units (molecule, µm, s): species symbols stand for values in
        their own unit, parameters are substituted. Amount/µm³/s for volume
        reactions, amount/µm²/s for surface ones.
    surface : tuple or None
        Boundary names/markers of a surface reaction; None for a volume reaction.
    """

    name: str
    stoichiometry: dict[str, float]
    rate: Expression
    surface: tuple[str | int, ...] | None


@attrs.frozen
class BoundaryCondition:
    """A Dirichlet condition: ``value`` (in base units, an expression of x, y, z, t) for ``species`` on ``surface``."""

    name: str
    species: str
    surface: tuple[str | int, ...]
    value: Expression


@attrs.frozen
class Model:
    """A checked model, independent of any mesh; built by :func:`parse_model`."""

    species: dict[str, Species]
    parameters: dict[str, tuple[float, Unit]]
    reactions: tuple[Reaction, ...]
    dirichlet: tuple[BoundaryCondition, ...]

    def scale(self, species: str) -> float:
        """Base units (molecules/µm³ or /µm²) in one unit of the species."""
        return self.species[species].unit.scale


# ---------------------------------------------------------------- parsing


def _check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise _fail(f"{what} name {name!r} must be an identifier (letters, digits, _; not starting with a digit)")
    if name in _RESERVED:
        raise _fail(f"{what} name '{name}' is reserved (x, y, z, t, pi and function names)")
    return name


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _fail(f"{what} must be a mapping, got {type(value).__name__}")
    return value


def _check_keys(entry: Mapping[str, Any], allowed: set[str], what: str) -> None:
    if True in entry:
        raise _fail(f"{what}: a key reads as true; YAML turns a bare 'on' (or 'yes') into true: "
                    "write 'surface:' for the boundary")
    unknown = sorted(set(entry) - allowed, key=str)
    if unknown:
        raise _fail(f"{what}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _location(value: Any, what: str) -> tuple[str | int, ...]:
    items = value if isinstance(value, (list, tuple)) else [value]
    if not items or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in items):
        raise _fail(f"{what} must be a region/boundary name or marker or a list of them, got {value!r}")
    return tuple(items)


def _parse_parameters(spec: Mapping[str, Any]) -> dict[str, tuple[float, Unit]]:
    parameters = {}
    for name, value in _mapping(spec, "parameters").items():
        _check_name(name, "parameter")
        number, unit = parse_quantity(value, "1", f"model: parameter '{name}'")
        parameters[name] = (number, unit)
    return parameters


def _parse_species(name: str, entry: Any) -> Species:
    what = f"species '{name}'"
    _check_name(name, "species")
    entry = _mapping(entry, what)
    _check_keys(entry, {"in", "surface", "D", "unit", "initial"}, what)
    if "in" in entry and "surface" in entry:
        raise _fail(f"{what} is both 'in' a region and on a 'surface'; a species lives in one place")
    kind = "surface" if "surface" in entry else "volume"
    location = _location(entry["surface"] if kind == "surface" else entry["in"], f"{what}: location") \
        if ("surface" in entry or "in" in entry) else None
    unit_text = entry.get("unit", SURFACE_UNIT if kind == "surface" else VOLUME_UNIT)
    unit = parse_unit(unit_text, f"model: {what}, unit")
    expected = parse_unit(SURFACE_UNIT if kind == "surface" else VOLUME_UNIT)
    if not unit.same_dimension(expected):
        raise ExpressionError(f"model: {what}: unit '{unit_text}' is {unit.describe()}, but a {kind} species needs "
                              f"an amount per {'area' if kind == 'surface' else 'volume'} ({expected.describe()})")
    diffusion_spec = entry.get("D", 0.0)
    items = diffusion_spec.items() if isinstance(diffusion_spec, Mapping) and "value" not in diffusion_spec \
        else [(None, diffusion_spec)]
    diffusion = {}
    diffusion_unit = parse_unit(DIFFUSION_UNIT)
    for key, value in items:
        label = what if key is None else f"{what} in '{key}'"
        number, d_unit = parse_quantity(value, DIFFUSION_UNIT, f"model: {label}, diffusion coefficient D")
        if not d_unit.same_dimension(diffusion_unit):
            raise ExpressionError(f"model: {label}: diffusion coefficient unit '{d_unit.text}' is {d_unit.describe()}, "
                                  "expected an area per time (um^2/s)")
        if number < 0:
            raise _fail(f"{label}: negative diffusion coefficient D = {number:g} {d_unit.text}; D must be >= 0")
        diffusion[key] = number * d_unit.scale
    return Species(name, kind, location, unit, diffusion, entry.get("initial", 0.0))


def _parse_equation(text: Any, species: Mapping[str, Species], what: str) -> dict[str, float]:
    if not isinstance(text, str) or text.count("->") != 1:
        raise _fail(f"{what}: equation {text!r} must have one '->', e.g. 'A + 2 B -> C' ('A ->' degrades A)")
    stoichiometry: dict[str, float] = {}
    for side, sign in zip(text.split("->"), (-1.0, 1.0), strict=True):
        if side.strip() in ("", "0", "∅"):
            continue
        for term in side.split("+"):
            match = _TERM.match(term)
            if match is None:
                raise _fail(f"{what}: cannot read '{term.strip()}' in equation {text!r}; write e.g. '2 B'")
            coefficient, name = float(match.group(1) or 1.0), match.group(2)
            if name not in species:
                raise _fail(f"{what}: unknown species '{name}' in equation {text!r}; species: {', '.join(species)}")
            stoichiometry[name] = stoichiometry.get(name, 0.0) + sign * coefficient
    return {name: value for name, value in stoichiometry.items() if value != 0}


class _Units:
    """Units and base-unit substitutions shared by every expression of one model."""

    def __init__(self, species: Mapping[str, Species], parameters: Mapping[str, tuple[float, Unit]]):
        self.species, self.parameters = species, parameters
        self.units = {name: s.unit for name, s in species.items()}
        self.units.update({name: unit for name, (_, unit) in parameters.items()})
        self.units.update({"x": _UM, "y": _UM, "z": _UM, "t": _SECOND})
        self.constants = {name: value * unit.scale for name, (value, unit) in parameters.items()}
        self.known = set(species) | set(parameters)

    def to_base(self, expression: Expression) -> Expression:
        """Substitute parameter values (base units) and species in base units (so the expression is in base units)."""
        substitutions: dict[str, Any] = dict(self.constants)
        for name, s in self.species.items():
            substitutions[name] = Op("*", (Num(s.unit.scale), Sym(name))) if s.unit.scale != 1.0 else Sym(name)
        return expression.substitute(substitutions)

    def value(self, text: Any, expected: Unit, where: str) -> Expression:
        """A value: a quantity (``"0.3 uM*um/s"``, ``{value, unit}``, a number in ``expected``) or an
        expression of parameters, x, y, z and t (dimensionless: in ``expected``); in base units."""
        if isinstance(text, Mapping) or (isinstance(text, str) and _is_quantity(text)):
            number, unit = parse_quantity(text, expected.text, where)
            if not unit.same_dimension(expected):
                raise ExpressionError(f"{where}: unit '{unit.text}' is {unit.describe()}, expected "
                                      f"{expected.describe()} ({expected.text})")
            return parse_expression(number * unit.scale, None, where)
        return self.expression(text, expected, where, strict=False, allowed=set(self.parameters))

    def expression(self, text: Any, expected: Unit, where: str, strict: bool,
                   allowed: set[str] | None = None) -> Expression:
        """Parse, check the unit against ``expected`` and convert to base units.

        A non-strict expression may be dimensionless, meaning "in the unit ``expected``".
        """
        known = self.known if allowed is None else allowed
        expression = parse_expression(text, known, where)
        unit = unit_of(expression, self.units, self.constants)
        base = self.to_base(expression)
        if unit.same_dimension(expected):
            return base
        if not strict and unit.dimensionless:
            return base.scaled(expected.scale)
        raise ExpressionError(f"{where}: {expression.text!r} has unit {unit.describe()}, expected {expected.describe()} "
                              f"({expected.text}); give the parameters units (e.g. 'k: 0.5 1/s'); x, y, z are in µm, t in s")


def parse_model(spec: Mapping[str, Any]) -> Model:
    """Check a model mapping and convert its expressions to base units.

    Parameters
    ----------
    spec : mapping
        Keys ``species`` (required), ``parameters``, ``reactions``,
        ``boundary_conditions``; see the module docstring.

    Returns
    -------
    Model

    Raises
    ------
    cellscape.InputError
        Naming the item: an unknown key, a bad name, unknown species in a
        reaction, an expression that does not parse, mismatched units, a
        negative diffusion coefficient, a boundary condition on a surface species.
    """
    spec = _mapping(spec, "the model")
    _check_keys(spec, {"species", "parameters", "reactions", "boundary_conditions"}, "the model")
    species_spec = _mapping(spec.get("species"), "species")
    if not species_spec:
        raise _fail("no species; add e.g. species: {A: {in: cytosol, D: 1.0, initial: 1.0}}")
    parameters = _parse_parameters(spec.get("parameters"))
    species = {name: _parse_species(name, entry) for name, entry in species_spec.items()}
    clash = sorted(set(species) & set(parameters))
    if clash:
        raise _fail(f"{clash} are both species and parameters; rename one")
    units = _Units(species, parameters)
    species = {name: attrs.evolve(s, initial=_parse_initial(s, units)) for name, s in species.items()}
    reactions = [_parse_reaction(name, entry, species, units) for name, entry in
                 _mapping(spec.get("reactions"), "reactions").items()]
    boundary = spec.get("boundary_conditions") or []
    if not isinstance(boundary, list):
        raise _fail("boundary_conditions must be a list of {species, on, type, ...}")
    dirichlet = []
    for index, entry in enumerate(boundary):
        condition = _parse_boundary_condition(index, entry, species, units)
        (dirichlet if isinstance(condition, BoundaryCondition) else reactions).append(condition)
    return Model(species, parameters, tuple(reactions), tuple(dirichlet))


def _parse_initial(s: Species, units: _Units) -> Expression | dict[Any, float]:
    """The initial value as an expression of x, y, z in base units, or region/boundary → value in the species' unit."""
    what = f"model: species '{s.name}', initial value"
    if isinstance(s.initial, Mapping) and "value" not in s.initial:
        values = {}
        for token, value in s.initial.items():
            number, unit = parse_quantity(value, s.unit.text, f"{what} in '{token}'")
            if not unit.same_dimension(s.unit):
                raise ExpressionError(f"{what} in '{token}': unit '{unit.text}' is {unit.describe()}, "
                                      f"expected {s.unit.describe()}")
            values[token] = number * unit.scale / s.unit.scale
        return values
    return units.value(s.initial, s.unit, what)


def _is_quantity(text: str) -> bool:
    try:
        parse_quantity(text, "1", "")
    except ExpressionError:
        return False
    return True


def _parse_reaction(name: str, entry: Any, species: Mapping[str, Species], units: _Units) -> Reaction:
    what = f"reaction '{name}'"
    entry = _mapping(entry, what)
    _check_keys(entry, {"equation", "rate", "surface"}, what)
    if "rate" not in entry or "equation" not in entry:
        raise _fail(f"{what} needs an 'equation' (e.g. 'A -> B') and a 'rate' expression")
    stoichiometry = _parse_equation(entry["equation"], species, what)
    rate_expression = parse_expression(entry["rate"], units.known, f"model: {what}, rate")
    involved = set(stoichiometry) | (rate_expression.symbols & set(species))
    surfaces = {species[n].location for n in sorted(involved) if species[n].kind == "surface"}
    surface = _location(entry["surface"], f"{what}: 'surface'") if "surface" in entry else None
    if surface is None and surfaces:
        if len(surfaces) > 1:
            raise _fail(f"{what} involves surface species on different boundaries {sorted(map(str, surfaces))}; "
                        "a reaction happens on one surface")
        surface = surfaces.pop()
    elif surface is not None and surfaces and any(set(s) != set(surface) for s in surfaces):
        raise _fail(f"{what} is on {list(surface)} but involves surface species on {sorted(map(str, surfaces))}")
    if surface is None and not stoichiometry:
        raise _fail(f"{what} changes no species; its equation needs species on at least one side")
    expected = parse_unit("uM*um/s" if surface is not None else "uM/s")
    rate = units.expression(entry["rate"], expected, f"model: {what}, rate", strict=True)
    return Reaction(name, stoichiometry, rate, surface)


def _parse_boundary_condition(index: int, entry: Any, species: Mapping[str, Species],
                              units: _Units) -> Reaction | BoundaryCondition:
    what = f"boundary condition #{index + 1}"
    entry = _mapping(entry, what)
    kind = entry.get("type")
    allowed = {"dirichlet": {"value"}, "neumann": {"flux"}, "robin": {"coefficient", "reference"}}
    if kind not in allowed:
        raise _fail(f"{what}: type must be dirichlet, neumann or robin, got {kind!r}")
    _check_keys(entry, {"species", "surface", "type"} | allowed[kind], what)
    name = entry.get("species")
    if name not in species:
        raise _fail(f"{what}: unknown species {name!r}; species: {', '.join(species)}")
    what = f"{what} ({kind} for '{name}')"
    if species[name].kind != "volume":
        raise _fail(f"{what}: '{name}' is a surface species; boundary conditions apply to volume species "
                    "(a closed membrane has no boundary)")
    if "surface" not in entry:
        raise _fail(f"{what} needs 'surface': the boundary name(s) or marker(s)")
    surface = _location(entry["surface"], f"{what}: 'surface'")
    unit = species[name].unit
    if kind == "dirichlet":
        value = units.value(entry.get("value", 0.0), unit, f"model: {what}, value")
        return BoundaryCondition(what, name, surface, value)
    flux_unit = unit * _UM / _SECOND
    if kind == "neumann":
        flux = units.value(entry.get("flux", 0.0), flux_unit, f"model: {what}, flux")
        return Reaction(what, {name: 1.0}, flux, surface)
    coefficient = units.value(entry.get("coefficient", 0.0), _UM / _SECOND, f"model: {what}, coefficient")
    reference = units.value(entry.get("reference", 0.0), unit, f"model: {what}, reference")
    # outward flux h (c − c_ref), everything in base units
    concentration = mul(Num(unit.scale), Sym(name))
    rate = Expression(mul(coefficient.tree, sub(concentration, reference.tree)),
                      f"({entry.get('coefficient')}) * ({name} - ({entry.get('reference', 0.0)}))", f"model: {what}")
    return Reaction(what, {name: -1.0}, rate, surface)


# ---------------------------------------------------------------- the model on a mesh


@attrs.frozen
class Placement:
    """Where one species' unknowns live on the mesh.

    Attributes
    ----------
    nodes : ndarray, shape (n_s,), int
        Mesh nodes carrying the species (sorted); its unknowns are ``offset + arange(n_s)``.
    offset : int
        First index of the species in the global unknown vector.
    cells : ndarray, shape (k_s, 4) or (k_s, 3), int
        Tetrahedra (volume) or boundary triangles (surface) of the species, in mesh node numbers.
    markers : ndarray, shape (k_s,), int
        Region or boundary marker of each cell.
    diffusion : ndarray, shape (k_s,), float
        Diffusion coefficient on each cell (µm²/s).
    """

    nodes: np.ndarray
    offset: int
    cells: np.ndarray
    markers: np.ndarray
    diffusion: np.ndarray

    def local(self, mesh_nodes: np.ndarray) -> np.ndarray:
        """Local indices (0..n_s−1) of mesh nodes that carry the species (callers check membership)."""
        return np.searchsorted(self.nodes, mesh_nodes)


@attrs.frozen
class BoundModel:
    """A model laid out on a mesh: species placements and resolved reaction surfaces.

    Attributes
    ----------
    model : Model
    mesh : cellscape.TetMesh
    points_um : ndarray, shape (n, 3)
        Mesh nodes in µm.
    placements : dict[str, Placement]
    reaction_triangles : dict[str, ndarray]
        Boundary triangles (mesh node numbers) of every surface reaction, by reaction name.
    dirichlet_triangles : dict[str, ndarray]
        Boundary triangles of every Dirichlet condition, by its name.
    size : int
        Total number of unknowns.
    """

    model: Model
    mesh: cs.TetMesh
    points_um: np.ndarray
    placements: dict[str, Placement]
    reaction_triangles: dict[str, np.ndarray]
    dirichlet_triangles: dict[str, np.ndarray]
    size: int


def _resolve(tokens: tuple[str | int, ...] | None, markers: np.ndarray, names: Mapping[int, str], kind: str,
             what: str) -> list[int]:
    present = sorted(int(m) for m in np.unique(markers))
    if tokens is None:
        return present
    by_name = {name: marker for marker, name in names.items()}
    resolved = []
    described = ", ".join(f"{m} ({names[m]})" if m in names else str(m) for m in present) or "none"
    for token in tokens:
        marker = by_name.get(token) if isinstance(token, str) else int(token)
        if marker is None or marker not in present:
            raise _fail(f"{what} is on {kind} {token!r}, which has no marker in the mesh; {kind} markers: {described}")
        resolved.append(marker)
    return sorted(set(resolved))


def bind_model(model: Model, mesh: cs.TetMesh) -> BoundModel:
    """Resolve regions and boundaries on the mesh and number the unknowns species by species.

    Raises
    ------
    cellscape.InputError
        A region or boundary with no marker in the mesh (naming the species,
        reaction or condition), a diffusion coefficient missing for a region,
        a surface reaction whose volume species do not reach its surface.
    """
    tets = np.asarray(mesh.tetrahedra)
    triangles = np.asarray(mesh.boundary_triangles)
    placements: dict[str, Placement] = {}
    offset = 0
    for s in model.species.values():
        what = f"species '{s.name}'"
        if s.kind == "volume":
            markers_all, names, kind, cells_all = mesh.region_markers, mesh.region_names, "region", tets
        else:
            markers_all, names, kind, cells_all = mesh.boundary_markers, mesh.boundary_names, "boundary", triangles
            if len(triangles) == 0:
                raise _fail(f"{what} lives on a surface but the mesh has no marked boundary triangles")
        markers = _resolve(s.location, markers_all, names, kind, what)
        chosen = np.isin(markers_all, markers)
        cells, cell_markers = cells_all[chosen], np.asarray(markers_all)[chosen]
        diffusion = np.empty(len(cells))
        if None in s.diffusion:
            diffusion[:] = s.diffusion[None]
        else:
            given = {}
            for token, value in s.diffusion.items():
                for marker in _resolve((token,), markers_all, names, kind, f"{what}, D"):
                    given[marker] = value
            missing = [m for m in markers if m not in given]
            if missing:
                raise _fail(f"{what}: no diffusion coefficient D for {kind}(s) {missing}; give D per "
                            f"{kind} or one number")
            for marker, value in given.items():
                diffusion[cell_markers == marker] = value
        nodes = np.unique(cells)
        placements[s.name] = Placement(nodes, offset, cells, cell_markers, diffusion)
        offset += len(nodes)
    reaction_triangles = {}
    for reaction in model.reactions:
        if reaction.surface is None:
            involved = sorted(set(reaction.stoichiometry) | (reaction.rate.symbols & set(model.species)))
            first = placements[involved[0]]
            for name in involved[1:]:
                if not np.array_equal(placements[name].cells, first.cells):
                    raise _fail(f"reaction '{reaction.name}' involves volume species '{involved[0]}' and '{name}', "
                                "which live in different regions; a volume reaction happens in one place "
                                "(couple regions with a reaction on the 'surface' between them)")
            continue
        what = f"reaction '{reaction.name}'" if not reaction.name.startswith("boundary") else reaction.name
        if len(triangles) == 0:
            raise _fail(f"{what} is on a surface but the mesh has no marked boundary triangles")
        markers = _resolve(reaction.surface, mesh.boundary_markers, mesh.boundary_names, "boundary", what)
        chosen = triangles[np.isin(mesh.boundary_markers, markers)]
        surface_nodes = np.unique(chosen)
        involved = set(reaction.stoichiometry) | (reaction.rate.symbols & set(model.species))
        for name in sorted(involved):
            if not np.isin(surface_nodes, placements[name].nodes).all():
                raise _fail(f"{what} on {list(reaction.surface)} involves species '{name}', which does not reach "
                            "that surface; put the species in a region bounded by it")
        reaction_triangles[reaction.name] = chosen
    dirichlet_triangles = {}
    for condition in model.dirichlet:
        markers = _resolve(condition.surface, mesh.boundary_markers, mesh.boundary_names, "boundary", condition.name)
        chosen = triangles[np.isin(mesh.boundary_markers, markers)]
        if not np.isin(np.unique(chosen), placements[condition.species].nodes).all():
            raise _fail(f"{condition.name}: species '{condition.species}' does not reach boundary "
                        f"{list(condition.surface)}")
        dirichlet_triangles[condition.name] = chosen
    return BoundModel(model, mesh, np.asarray(mesh.points) / NM_PER_UM, placements, reaction_triangles,
                      dirichlet_triangles, offset)
