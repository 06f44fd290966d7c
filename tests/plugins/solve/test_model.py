"""The model layer: what a spec's model means (units, fluxes, placement) and every bad input with its message."""

from __future__ import annotations

import numpy as np
import pytest
from meshes import cube_mesh

import cellscape as cs
from cellscape_plugins.solve._model import bind_model, parse_model

NM_PER_UM = 1000.0
MOLECULES_PER_UM3_PER_UM = 602.214076

BASE = {
    "parameters": {"k_p": "0.5 1/s", "k_kin": "2 um/s"},
    "species": {"A": {"in": "cube", "D": 1.0, "initial": 1.0}, "Ap": {"in": "cube", "D": 1.0, "initial": 0.0}},
    "reactions": {"dephosphorylation": {"equation": "Ap -> A", "rate": "k_p*Ap"},
                  "phosphorylation": {"equation": "A -> Ap", "rate": "k_kin*A", "surface": "surface"}},
}


def with_changes(**changes) -> dict:
    model = {key: dict(value) for key, value in BASE.items()}
    for path, value in changes.items():
        section, _, name = path.partition("__")
        model[section] = {**model[section], name: value}
    return model


# ---------------------------------------------------------------- meaning


def test_volume_surface_binding_converts_micromolar_to_molecules_per_area() -> None:
    # A (µM) binds a membrane site S (molecules/µm²): at equilibrium k_on A = k_off S in molecules/µm²/s,
    # i.e. S = 602.214 k_on A / k_off with k_on in µm/s
    model = {"parameters": {"kon": "0.01 um/s", "koff": "2 1/s"},
             "species": {"A": {"in": 1, "D": 3.0, "initial": 1.0},
                         "S": {"surface": 1, "D": 0.2, "initial": "10 molecules/um^2"}},
             "reactions": {"binding": {"equation": "A -> S", "rate": "kon*A"},
                           "unbinding": {"equation": "S -> A", "rate": "koff*S"}}}
    mesh = cube_mesh(2, NM_PER_UM)
    out = cs.method("solve.stationary", model=model)(mesh)
    a = out["fields"].values["A"][0][np.unique(mesh.tetrahedra)]
    s = out["fields"].values["S"][0][np.unique(mesh.boundary_triangles)]
    np.testing.assert_allclose(s / a.mean(), MOLECULES_PER_UM3_PER_UM * 0.01 / 2, rtol=1e-9)
    probes = out["probes"].columns
    initial_total = 1.0 * MOLECULES_PER_UM3_PER_UM * 1.0 + 10.0 * 6.0  # 1 µm³ of 1 µM, 6 µm² at 10 /µm²
    assert probes["amount_A"][0] + probes["amount_S"][0] == pytest.approx(initial_total, rel=1e-10)
    assert out["fields"].units == {"A": "uM", "S": "molecules/um^2"}


def test_a_neumann_influx_adds_its_amount_and_nanomolar_units_convert() -> None:
    model = {"species": {"c": {"in": 1, "D": 2.0, "unit": "nM", "initial": "5 nM"}},
             "boundary_conditions": [{"species": "c", "surface": "surface", "type": "neumann", "flux": "0.3 uM*um/s"}]}
    mesh = cube_mesh(2, 2 * NM_PER_UM)  # 8 µm³, 24 µm²
    out = cs.method("solve.reaction_diffusion", model=model, t_end_s=0.5, dt_s=0.1, n_outputs=2)(mesh)
    amounts = out["probes"].columns["amount_c"]
    assert amounts[0] == pytest.approx(5e-3 * MOLECULES_PER_UM3_PER_UM * 8, rel=1e-12)
    assert amounts[1] - amounts[0] == pytest.approx(0.3 * MOLECULES_PER_UM3_PER_UM * 24 * 0.5, rel=1e-10)
    mean = out["probes"].columns["mean_c_cube"]
    assert mean[1] == pytest.approx(5.0 + 1000 * 0.3 * 24 * 0.5 / 8, rel=1e-10)  # in nM


def test_diffusion_and_initial_values_per_region() -> None:
    mesh = cube_mesh(4, 2 * NM_PER_UM, regions_split=True)
    model = {"species": {"c": {"D": {"left": 1.0, 2: 0.0}, "initial": {"left": 2.0, "right": 0.0}}}}
    system = cs.method("solve.reaction_diffusion", model=model).system(mesh)
    placement = system.bound.placements["c"]
    assert set(np.unique(placement.diffusion)) == {0.0, 1.0}
    assert np.all(placement.diffusion[placement.markers == 2] == 0.0)
    initial = system.initial_state()
    amount = system.amounts(initial[None])["c"][0]
    assert amount == pytest.approx(2.0 * 4.0 * MOLECULES_PER_UM3_PER_UM, rel=1e-12)  # 2 µM in 4 µm³


def test_species_in_one_region_get_their_own_unknowns() -> None:
    mesh = cube_mesh(2, NM_PER_UM, regions_split=True)
    bound = bind_model(parse_model({"species": {"a": {"in": "left"}, "b": {"in": [1, "right"]},
                                                "m": {"surface": "surface"}}}), mesh)
    left_nodes = np.unique(mesh.tetrahedra[mesh.region_markers == 1])
    np.testing.assert_array_equal(bound.placements["a"].nodes, left_nodes)
    assert len(bound.placements["b"].nodes) == len(mesh.points)
    assert bound.size == len(left_nodes) + len(mesh.points) + len(np.unique(mesh.boundary_triangles))


# ---------------------------------------------------------------- bad input, each with its message


@pytest.mark.parametrize(("model", "fragment"), [
    (with_changes(reactions__dephosphorylation={"equation": "Ap + B -> A", "rate": "k_p*Ap"}),
     "reaction 'dephosphorylation': unknown species 'B' in equation 'Ap + B -> A'; species: A, Ap"),
    (with_changes(reactions__dephosphorylation={"equation": "Ap -> A", "rate": "k_p*Ap*Q"}),
     "reaction 'dephosphorylation', rate: cannot use 'k_p*Ap*Q' at 'Q': unknown name 'Q'"),
    (with_changes(reactions__dephosphorylation={"equation": "Ap -> A", "rate": "k_p*(Ap"}),
     "reaction 'dephosphorylation', rate: 'k_p*(Ap' does not parse"),
    (with_changes(reactions__dephosphorylation={"equation": "Ap => A", "rate": "k_p*Ap"}),
     "reaction 'dephosphorylation': equation 'Ap => A' must have one '->'"),
    (with_changes(species__A={"in": "cube", "D": -1.0}),
     "species 'A': negative diffusion coefficient D = -1 um^2/s; D must be >= 0"),
    (with_changes(species__A={"in": "cube", "D": {"cube": -0.5}}), "species 'A' in 'cube': negative diffusion"),
    (with_changes(reactions__dephosphorylation={"equation": "Ap -> A", "rate": "k_kin*Ap"}),
     "reaction 'dephosphorylation', rate: 'k_kin*Ap' has unit molecules/(um^2*s), expected uM/s"),
    (with_changes(reactions__phosphorylation={"equation": "A -> Ap", "rate": "k_p*A", "surface": "surface"}),
     "reaction 'phosphorylation', rate: 'k_p*A' has unit uM/s, expected molecules/(um^2*s)"),
    (with_changes(reactions__dephosphorylation={"equation": "Ap -> A", "rate": "k_p*Ap + A"}),
     "units do not match in 'k_p*Ap + A': it adds uM/s and uM"),
    (with_changes(species__A={"in": "cube", "unit": "molecules/um^2"}),
     "species 'A': unit 'molecules/um^2' is molecules/um^2, but a volume species needs an amount per volume"),
    (with_changes(species__A={"in": "cube", "D": "1 um/s"}),
     "species 'A': diffusion coefficient unit 'um/s' is um/s, expected an area per time"),
    (with_changes(species__A={"in": "cube", "initial": "3 um"}), "species 'A', initial value: unit 'um' is um"),
    (with_changes(species__A={"in": "cube", "surface": "surface"}), "species 'A' is both 'in' a region and on a 'surface'"),
    (with_changes(species__A={"in": "cube", "diffusion": 1.0}), "species 'A': unknown key(s) ['diffusion']"),
    (with_changes(species__t={"in": "cube"}), "species name 't' is reserved"),
    (with_changes(parameters__k_p="0.5 per_s"), "parameter 'k_p': unknown unit 'per_s'"),
    (with_changes(species__A={"in": "cube", True: "surface"}), "YAML turns a bare 'on' (or 'yes') into true"),
    ({"species": {}}, "no species"),
    ({**BASE, "boundary_conditions": [{"species": "Z", "surface": "surface", "type": "dirichlet"}]},
     "boundary condition #1: unknown species 'Z'"),
    ({**BASE, "boundary_conditions": [{"species": "A", "surface": "surface", "type": "periodic"}]},
     "boundary condition #1: type must be dirichlet, neumann or robin"),
    ({**BASE, "boundary_conditions": [{"species": "A", "surface": "surface", "type": "neumann", "flux": "1 uM/s"}]},
     "boundary condition #1 (neumann for 'A'), flux: unit 'uM/s' is uM/s, expected molecules/(um^2*s)"),
])
def test_bad_models_are_refused_with_a_message_naming_the_item(model: dict, fragment: str) -> None:
    with pytest.raises(cs.InputError) as caught:
        cs.method("solve.reaction_diffusion", model=model)
    assert fragment in str(caught.value)


@pytest.mark.parametrize(("model", "fragment"), [
    (with_changes(reactions__phosphorylation={"equation": "A -> Ap", "rate": "k_kin*A", "surface": "nuclear_envelope"}),
     "reaction 'phosphorylation' is on boundary 'nuclear_envelope', which has no marker in the mesh; "
     "boundary markers: 1 (surface)"),
    (with_changes(reactions__phosphorylation={"equation": "A -> Ap", "rate": "k_kin*A", "surface": 7}),
     "reaction 'phosphorylation' is on boundary 7, which has no marker in the mesh"),
    (with_changes(species__A={"in": "nucleus", "D": 1.0}),
     "species 'A' is on region 'nucleus', which has no marker in the mesh; region markers: 1 (cube)"),
    ({"species": {"A": {"D": {"left": 1.0}}}}, "region 'left', which has no marker in the mesh"),
])
def test_places_that_are_not_in_the_mesh_are_named(model: dict, fragment: str) -> None:
    solver = cs.method("solve.reaction_diffusion", model=model)
    with pytest.raises(cs.InputError) as caught:
        solver(cube_mesh(2, NM_PER_UM))
    assert fragment in str(caught.value)
    assert str(caught.value).startswith("solve.reaction_diffusion: ")


def test_a_volume_reaction_between_regions_is_refused() -> None:
    model = {"parameters": {"k": "1 1/s"},
             "species": {"a": {"in": "left"}, "b": {"in": "right"}},
             "reactions": {"leak": {"equation": "a -> b", "rate": "k*a"}}}
    with pytest.raises(cs.InputError, match="reaction 'leak' involves volume species 'a' and 'b', which live in "
                                            "different regions"):
        cs.method("solve.stationary", model=model)(cube_mesh(2, NM_PER_UM, regions_split=True))


def test_a_degenerate_tetrahedron_is_refused() -> None:
    mesh = cube_mesh(2, NM_PER_UM)
    points = np.asarray(mesh.points).copy()
    tets = np.asarray(mesh.tetrahedra)
    # flatten the first tetrahedron: put its last node on the plane of the other three
    p0, p1, p2 = points[tets[0, :3]]
    points = np.vstack([points, (p0 + p1 + p2) / 3])
    tets = tets.copy()
    tets[0, 3] = len(points) - 1
    flat = cs.TetMesh(points, tets, mesh.region_markers, mesh.boundary_triangles, mesh.boundary_markers,
                      mesh.region_names, mesh.boundary_names)
    with pytest.raises(cs.InputError, match=r"solve.reaction_diffusion: .*1 degenerate \(zero-volume\) tetrahedra, "
                                            r"the first is #0"):
        cs.method("solve.reaction_diffusion", model={"species": {"c": {"D": 1.0}}})(flat)


def test_a_degenerate_membrane_triangle_is_refused() -> None:
    mesh = cube_mesh(2, NM_PER_UM)
    triangles = np.asarray(mesh.boundary_triangles).copy()
    triangles[3] = [triangles[3, 0], triangles[3, 1], triangles[3, 0]]
    broken = cs.TetMesh(mesh.points, mesh.tetrahedra, mesh.region_markers, triangles, mesh.boundary_markers,
                        mesh.region_names, mesh.boundary_names)
    with pytest.raises(cs.InputError, match=r"degenerate \(zero-area\) boundary triangles, the first is #3"):
        cs.method("solve.reaction_diffusion", model={"species": {"m": {"surface": "surface", "D": 1.0}}})(broken)


def test_petsc_options_without_the_petsc_backend_are_refused() -> None:
    with pytest.raises(cs.InputError, match="petsc_options' is given but backend is 'scipy'"):
        cs.method("solve.reaction_diffusion", model=BASE, petsc_options="-ksp_type cg")
