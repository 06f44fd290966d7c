"""Outputs of the model solvers: Fields at the mesh nodes, probe and step tables, ParaView time series.

Tables (one row per saved time) hold, for every species ``s``:

- ``mean_<s>_<region>``: mean value over each region (volume-weighted) or
  boundary (area-weighted) the species lives on, in the species' unit;
- ``amount_<s>``: total amount in molecules (so amounts of volume and
  surface species add up to the conserved total of a closed system);
- ``<s>_at_<i>``: the value at probe point i (P1 interpolation in the
  tetrahedron holding it; surface species: the nearest node of their surface;
  NaN when the species does not live there).

ParaView files: :func:`write_xdmf_series` (``.xmf``: XDMF 3 + HDF5 through
h5py, an optional package) and :func:`write_pvd_series` (``.pvd``: a collection of ``.vtu``).
:func:`register_formats` makes ``cs.write(fields, "out.xmf")`` and spec
``save:`` entries use them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import cellscape as cs

if TYPE_CHECKING:
    from .reaction_diffusion import DiscreteSystem

__all__ = ["locate_points", "make_outputs", "nodal_fields", "probe_table", "register_formats", "step_table",
           "write_pvd_series", "write_xdmf_series"]

NM_PER_UM = 1000.0


def locate_points(points: np.ndarray, tets: np.ndarray, probes: np.ndarray, tolerance: float = 1e-9
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The tetrahedron holding each probe point and its barycentric coordinates there.

    Parameters
    ----------
    points : ndarray, shape (n, 3)
        Node coordinates (any length unit, the same as ``probes``).
    tets : ndarray, shape (k, 4), int
        Tetrahedra to search.
    probes : ndarray, shape (p, 3)
        Points to locate.
    tolerance : float
        Barycentric slack, so points on faces are found.

    Returns
    -------
    cells : ndarray, shape (p,), int
        Index into ``tets``, −1 where no tetrahedron holds the point.
    barycentric : ndarray, shape (p, 4)
        Weights of the four corners (NaN where not found).
    """
    p0 = points[tets[:, 0]]
    edges = np.stack([points[tets[:, i]] - p0 for i in (1, 2, 3)], axis=2)  # columns are the edges
    inverse = np.linalg.inv(edges)
    cells = np.full(len(probes), -1)
    barycentric = np.full((len(probes), 4), np.nan)
    for index, probe in enumerate(np.asarray(probes, float)):
        local = np.einsum("kij,kj->ki", inverse, probe - p0)
        weights = np.concatenate([1.0 - local.sum(axis=1, keepdims=True), local], axis=1)
        inside = np.flatnonzero(weights.min(axis=1) >= -tolerance)
        if len(inside):
            best = inside[np.argmax(weights[inside].min(axis=1))]
            cells[index], barycentric[index] = best, weights[best]
    return cells, barycentric


def nodal_fields(system: DiscreteSystem, states: np.ndarray) -> dict[str, np.ndarray]:
    """Every species at every mesh node, shape (n_times, n_points); zero where the species does not live."""
    n_points = len(system.bound.points_um)
    values = {}
    for name, placement in system.bound.placements.items():
        array = np.zeros((len(states), n_points))
        array[:, placement.nodes] = states[:, system.species_dofs[name]]
        values[name] = array
    return values


def _region_label(names: Mapping[int, str], marker: int) -> str:
    return names.get(marker, str(marker)).replace(" ", "_")


def probe_table(system: DiscreteSystem, times: np.ndarray, states: np.ndarray,
                probes_nm: Sequence[Sequence[float]] = ()) -> cs.Table:
    """Means per region, total amounts and point values of every species at every saved time."""
    from ._p1 import element_geometry
    from ._surface import triangle_geometry

    bound, model = system.bound, system.bound.model
    mesh = bound.mesh
    columns: dict[str, np.ndarray] = {"time_s": np.asarray(times, float)}
    units = {"time_s": "s"}
    amounts = system.amounts(states)
    probes_um = np.asarray(probes_nm, float).reshape(-1, 3) / NM_PER_UM
    for name, placement in bound.placements.items():
        species = model.species[name]
        unit = species.unit.text
        values = states[:, system.species_dofs[name]]
        local = placement.local(placement.cells)
        points = bound.points_um[placement.nodes]
        volume = species.kind == "volume"
        sizes = (element_geometry if volume else triangle_geometry)(points, local)[0]
        names = mesh.region_names if volume else mesh.boundary_names
        for marker in np.unique(placement.markers):
            chosen = placement.markers == marker
            cell_means = values[:, local[chosen]].mean(axis=2)  # exact mean of a P1 function on a simplex
            column = f"mean_{name}_{_region_label(names, int(marker))}"
            columns[column] = cell_means @ sizes[chosen] / sizes[chosen].sum()
            units[column] = unit
        columns[f"amount_{name}"] = amounts[name]
        units[f"amount_{name}"] = "molecules"
        if len(probes_um):
            if volume:
                cells, weights = locate_points(points, local, probes_um)
                for index in range(len(probes_um)):
                    column = f"{name}_at_{index}"
                    if cells[index] < 0:
                        columns[column] = np.full(len(times), np.nan)
                    else:
                        columns[column] = values[:, local[cells[index]]] @ weights[index]
                    units[column] = unit
            else:
                for index, probe in enumerate(probes_um):
                    nearest = int(np.argmin(np.linalg.norm(points - probe, axis=1)))
                    columns[f"{name}_at_{index}"] = values[:, nearest]
                    units[f"{name}_at_{index}"] = unit
    return cs.Table(columns, units, title="species means per region, amounts and probe values over time")


def step_table(steps: Mapping[str, np.ndarray]) -> cs.Table:
    """One row per accepted time step."""
    units = {"time_s": "s", "dt_s": "s", "order": "", "newton_iterations": "", "linear_iterations": "",
             "error_estimate": "", "rejected": ""}
    columns = {key: np.asarray(steps.get(key, []), float) for key in units}
    for key in ("order", "newton_iterations", "linear_iterations", "rejected"):
        columns[key] = columns[key].astype(np.int64)
    return cs.Table(columns, units, title="time steps: size, order, Newton and linear iterations, error estimate")


def make_outputs(system: DiscreteSystem, times: np.ndarray, states: np.ndarray, steps: cs.Table,
                 probes_nm: Sequence[Sequence[float]] = ()) -> dict[str, cs.Artefact]:
    """``fields``, ``probes`` and ``steps`` artefacts of a simulation (``steps`` passed through)."""
    units = {name: s.unit.text for name, s in system.bound.model.species.items()}
    fields = cs.Fields(system.bound.mesh, times, nodal_fields(system, states), units)
    return {"fields": fields, "probes": probe_table(system, times, states, probes_nm), "steps": steps}


def _meshio_mesh(fields: cs.Fields) -> Any:
    import meshio

    mesh = fields.mesh
    return meshio.Mesh(np.asarray(mesh.points, float), [("tetra", np.asarray(mesh.tetrahedra))],
                       cell_data={"region": [np.asarray(mesh.region_markers, np.int32)]})


def _data_item(h5_name: str, dataset: str, shape: tuple[int, ...], number_type: str) -> str:
    dimensions = " ".join(str(d) for d in shape)
    return (f'<DataItem Dimensions="{dimensions}" NumberType="{number_type}" Precision="8" Format="HDF">'
            f"{h5_name}:{dataset}</DataItem>")


def write_xdmf_series(fields: cs.Fields, path: str | Path) -> Path:
    """Write the fields as an XDMF 3 temporal collection for ParaView: ``path`` (.xmf) and an .h5 beside it.

    The HDF5 file holds ``/mesh/points`` (nm), ``/mesh/tetrahedra``, ``/mesh/region`` and
    ``/values/<species>/<i>`` for the i-th saved time; point attributes are named with their
    units (e.g. ``A [uM]``), times are in s.

    Raises
    ------
    cellscape.MissingDependencyError
        If h5py is not installed (:func:`write_pvd_series` writes the same fields without it).
    """
    from xml.sax.saxutils import escape, quoteattr

    h5py = cs.require("h5py", who="writing an XDMF time series (.xmf; .pvd needs no extra package)")
    path = Path(path)
    heavy = path.with_suffix(".h5")
    mesh = fields.mesh
    points, tets = np.asarray(mesh.points, np.float64), np.asarray(mesh.tetrahedra, np.int64)
    with h5py.File(heavy, "w") as h5:
        h5["mesh/points"], h5["mesh/tetrahedra"] = points, tets
        h5["mesh/region"] = np.asarray(mesh.region_markers, np.int64)
        for name, values in fields.values.items():
            for index in range(len(fields.times_s)):
                h5[f"values/{name}/{index}"] = np.asarray(values[index], np.float64)
    topology = (f'<Topology TopologyType="Tetrahedron" NumberOfElements="{len(tets)}">'
                + _data_item(heavy.name, "/mesh/tetrahedra", tets.shape, "Int") + "</Topology>")
    geometry = ('<Geometry GeometryType="XYZ">' + _data_item(heavy.name, "/mesh/points", points.shape, "Float")
                + "</Geometry>")
    region = ('<Attribute Name="region" AttributeType="Scalar" Center="Cell">'
              + _data_item(heavy.name, "/mesh/region", (len(tets),), "Int") + "</Attribute>")
    grids = []
    for index, time in enumerate(fields.times_s):
        attributes = "".join(
            f"<Attribute Name={quoteattr(f'{name} [{fields.units[name]}]')} AttributeType=\"Scalar\" Center=\"Node\">"
            + _data_item(heavy.name, escape(f"/values/{name}/{index}"), (len(points),), "Float") + "</Attribute>"
            for name in fields.values)
        grids.append(f'<Grid Name="t{index}" GridType="Uniform"><Time Value="{float(time)!r}"/>'
                     f"{topology}{geometry}{region}{attributes}</Grid>")
    path.write_text('<?xml version="1.0"?>\n<Xdmf Version="3.0"><Domain>'
                    '<Grid Name="fields" GridType="Collection" CollectionType="Temporal">\n'
                    + "\n".join(grids) + "\n</Grid></Domain></Xdmf>\n")
    return path


def write_pvd_series(fields: cs.Fields, path: str | Path) -> Path:
    """Write a ParaView collection: ``path`` (.pvd) and one ``<stem>_<i>.vtu`` per saved time beside it."""
    import meshio

    path = Path(path)
    meshed = _meshio_mesh(fields)
    entries = []
    for index, time in enumerate(fields.times_s):
        piece = path.with_name(f"{path.stem}_{index:05d}.vtu")
        meshed.point_data = {name: values[index] for name, values in fields.values.items()}
        meshio.write(piece, meshed)
        entries.append(f'    <DataSet timestep="{float(time)!r}" part="0" file="{piece.name}"/>')
    path.write_text('<?xml version="1.0"?>\n<VTKFile type="Collection" version="0.1">\n  <Collection>\n'
                    + "\n".join(entries) + "\n  </Collection>\n</VTKFile>\n")
    return path


_REGISTERED = False


def register_formats() -> None:
    """Let ``cs.write`` save Fields as ``.xmf`` (XDMF time series) and ``.pvd`` (VTU collection). Idempotent."""
    global _REGISTERED
    if _REGISTERED:
        return
    _REGISTERED = True
    from cellscape.io import Format, register_format

    def xdmf_writer(obj: cs.Artefact, path: Path) -> None:
        write_xdmf_series(obj, path)  # type: ignore[arg-type]

    def pvd_writer(obj: cs.Artefact, path: Path) -> None:
        write_pvd_series(obj, path)  # type: ignore[arg-type]

    register_format(Format("XDMF time series (ParaView)", (".xmf",), ("fields",), None, xdmf_writer))
    register_format(Format("ParaView VTU collection", (".pvd",), ("fields",), None, pvd_writer))
