"""The linear-solver layer: every backend/method/preconditioner against a direct solve, PETSc options, update(), failures.

The systems are backward-Euler matrices of P1 finite elements on a cube of
1331 nodes: M + Δt K (symmetric positive definite, condition number ≈ 26)
and M + Δt (K + C) with a convection matrix C for a constant velocity (Péclet
number ≈ 1 per cell, non-symmetric).
"""

from __future__ import annotations

import gc
import itertools
import sys

import numpy as np
import pytest
from meshes import cube_mesh
from scipy import sparse
from scipy.sparse import linalg

import cellscape as cs
from cellscape_plugins.solve import _linear
from cellscape_plugins.solve._linear import (
    ConvergenceError,
    make_solver,
    parse_petsc_options,
    petsc_has_cuda,
)
from cellscape_plugins.solve._p1 import _coo_indices, assemble_p1, element_geometry

DT = 0.01
RTOL = 1e-10
VELOCITY = np.array([10.0, 5.0, 2.5])  # length units per unit time on the unit cube


needs_petsc = pytest.mark.requires("petsc4py")
BACKENDS = ["scipy", pytest.param("petsc", marks=needs_petsc)]


def _matrices() -> dict[str, sparse.csr_matrix]:
    mesh = cube_mesh(10, 1.0)
    points, tets = np.asarray(mesh.points), np.asarray(mesh.tetrahedra)
    stiffness, mass = assemble_p1(points, tets)
    volumes, gradients = element_geometry(points, tets)
    # C_ij = ∫ φ_i (v · ∇φ_j) dV; on a tetrahedron ∫ φ_i = V / 4 and ∇φ_j is constant
    local = np.repeat((volumes[:, None] / 4 * (gradients @ VELOCITY))[:, None, :], 4, axis=1)
    rows, cols = _coo_indices(tets)
    convection = sparse.coo_matrix((local.ravel(), (rows, cols)), shape=stiffness.shape).tocsr()
    return {"symmetric": (mass + DT * stiffness).tocsr(), "nonsymmetric": (mass + DT * (stiffness + convection)).tocsr()}


MATRICES = _matrices()
N = MATRICES["symmetric"].shape[0]
RHS = np.random.default_rng(0).standard_normal(N)
REFERENCE = {kind: linalg.spsolve(matrix.tocsc(), RHS) for kind, matrix in MATRICES.items()}


def _relative_error(x: np.ndarray, reference: np.ndarray) -> float:
    return float(np.linalg.norm(x - reference) / np.linalg.norm(reference))


def _residual(matrix: sparse.csr_matrix, x: np.ndarray, rhs: np.ndarray = RHS) -> float:
    return float(np.linalg.norm(rhs - matrix @ x))


def test_test_matrices_are_what_the_tests_assume() -> None:
    symmetric, nonsymmetric = MATRICES["symmetric"], MATRICES["nonsymmetric"]
    assert N == 11**3
    assert _linear.is_symmetric(symmetric) and not _linear.is_symmetric(nonsymmetric)
    assert np.linalg.eigvalsh(symmetric.toarray())[0] > 0
    assert abs(nonsymmetric - nonsymmetric.T).max() > 0.1 * abs(nonsymmetric).max() * DT


COMBINATIONS = [
    (kind, method, preconditioner)
    for kind, method, preconditioner in itertools.product(
        ["symmetric", "nonsymmetric"], ["direct", "cg", "gmres", "bicgstab"], ["auto", "amg", "ilu", "jacobi", "none"])
    if not (kind == "nonsymmetric" and method == "cg") and not (method == "direct" and preconditioner != "auto")
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("kind", "method", "preconditioner"), COMBINATIONS)
def test_every_combination_reaches_the_tolerance_and_the_direct_solution(
        backend: str, kind: str, method: str, preconditioner: str) -> None:
    matrix = MATRICES[kind]
    solver = make_solver(matrix, backend=backend, method=method, preconditioner=preconditioner, rtol=RTOL)
    x = solver.solve(RHS)
    rhs_norm = np.linalg.norm(RHS)
    assert _residual(matrix, x) <= 10 * RTOL * rhs_norm
    assert solver.stats.residual_norm == pytest.approx(_residual(matrix, x), rel=1e-6)
    assert solver.stats.rhs_norm == pytest.approx(rhs_norm)
    # the error is at most the condition number (≈ 26 for the symmetric matrix) times the relative residual
    assert _relative_error(x, REFERENCE[kind]) <= 1e-8
    if method == "direct":
        assert solver.stats.iterations <= 1
    else:
        assert 1 <= solver.stats.iterations < 500
    assert solver.stats.solves == 1 and solver.stats.total_iterations == solver.stats.iterations


@needs_petsc
@pytest.mark.parametrize("kind", ["symmetric", "nonsymmetric"])
@pytest.mark.parametrize("method", ["direct", "auto", "bicgstab"])
def test_scipy_and_petsc_agree(kind: str, method: str) -> None:
    solutions = [make_solver(MATRICES[kind], backend=backend, method=method, rtol=1e-12).solve(RHS)
                 for backend in ("scipy", "petsc")]
    assert _relative_error(solutions[1], solutions[0]) <= 1e-8


def test_scipy_auto_factorizes_small_systems_and_iterates_on_large_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    small = make_solver(MATRICES["symmetric"])
    assert (small.method, small.preconditioner, small.stats.iterations) == ("direct", "none", 0)
    monkeypatch.setattr(_linear, "DIRECT_LIMIT", N)  # N unknowns are no longer "below the limit"
    symmetric = make_solver(MATRICES["symmetric"])
    nonsymmetric = make_solver(MATRICES["nonsymmetric"])
    assert (symmetric.method, symmetric.preconditioner) == ("cg", "amg")
    assert (nonsymmetric.method, nonsymmetric.preconditioner) == ("gmres", "ilu")
    for kind, solver in (("symmetric", symmetric), ("nonsymmetric", nonsymmetric)):
        x = solver.solve(RHS)
        assert solver.stats.iterations >= 1
        assert _relative_error(x, REFERENCE[kind]) <= 1e-8


@needs_petsc
def test_petsc_defaults_are_cg_gamg_and_gmres_ilu() -> None:
    symmetric = make_solver(MATRICES["symmetric"], backend="petsc")
    nonsymmetric = make_solver(MATRICES["nonsymmetric"], backend="petsc")
    assert (symmetric.ksp.getType(), symmetric.ksp.getPC().getType()) == ("cg", "gamg")
    assert (nonsymmetric.ksp.getType(), nonsymmetric.ksp.getPC().getType()) == ("gmres", "ilu")
    assert symmetric.options_prefix != nonsymmetric.options_prefix
    assert petsc_has_cuda() is False  # this machine's PETSc has no CUDA: host types are used
    assert symmetric.ksp.getOperators()[0].getType() == "seqaij"


@needs_petsc
@pytest.mark.parametrize("options", [{"ksp_type": "bcgs", "-pc_type": "jacobi"}, "-ksp_type bcgs -pc_type jacobi"])
def test_petsc_options_override_the_method(options: dict[str, str] | str) -> None:
    solver = make_solver(MATRICES["symmetric"], backend="petsc", method="cg", preconditioner="amg",
                         petsc_options=options, rtol=RTOL)
    x = solver.solve(RHS)
    assert (solver.stats.method, solver.stats.preconditioner) == ("bcgs", "jacobi")
    assert solver.ksp.getType() == "bcgs"
    assert _residual(MATRICES["symmetric"], x) <= 10 * RTOL * np.linalg.norm(RHS)
    # Jacobi BiCGStab needs tens of iterations here where GAMG CG needs about ten
    assert solver.stats.iterations >= 20


@needs_petsc
def test_petsc_options_do_not_leak_between_solvers() -> None:
    from petsc4py import PETSc

    custom = make_solver(MATRICES["symmetric"], backend="petsc", petsc_options="-ksp_type bcgs -pc_type jacobi -ksp_rtol 1e-4")
    plain = make_solver(MATRICES["symmetric"], backend="petsc", rtol=RTOL)
    assert (custom.stats.method, custom.stats.preconditioner) == ("bcgs", "jacobi")
    assert custom.ksp.getTolerances()[0] == pytest.approx(1e-4)
    assert (plain.stats.method, plain.stats.preconditioner) == ("cg", "gamg")
    assert plain.ksp.getTolerances()[0] == pytest.approx(RTOL)
    assert not PETSc.Options().hasName("ksp_type")
    prefix = custom.options_prefix
    assert PETSc.Options(prefix).getString("ksp_type") == "bcgs"
    del custom
    gc.collect()
    assert not PETSc.Options(prefix).hasName("ksp_type")


@pytest.mark.parametrize(("backend", "method"), [("scipy", "direct"), ("scipy", "cg"), ("scipy", "bicgstab"),
                                                 pytest.param("petsc", "cg", marks=needs_petsc),
                                                 pytest.param("petsc", "direct", marks=needs_petsc)])
def test_update_solves_with_the_new_matrix(backend: str, method: str) -> None:
    mesh = cube_mesh(10, 1.0)
    stiffness, mass = assemble_p1(np.asarray(mesh.points), np.asarray(mesh.tetrahedra))
    solver = make_solver(MATRICES["symmetric"], backend=backend, method=method, rtol=RTOL)
    first = solver.solve(RHS)
    longer_step = (mass + 10 * DT * stiffness).tocsr()  # same sparsity pattern, new values
    solver.update(longer_step)
    second = solver.solve(RHS)
    assert _relative_error(first, REFERENCE["symmetric"]) <= 1e-8
    assert _relative_error(second, linalg.spsolve(longer_step.tocsc(), RHS)) <= 1e-8
    assert _relative_error(second, first) > 0.1
    assert (solver.stats.setups, solver.stats.solves) == (2, 2)
    # a different sparsity pattern works too (PETSc rebuilds its matrix)
    diagonal = np.linspace(1.0, 2.0, N)
    solver.update(sparse.diags(diagonal))
    np.testing.assert_allclose(solver.solve(RHS), RHS / diagonal, rtol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_stats_accumulate_and_a_good_guess_needs_no_iterations(backend: str) -> None:
    solver = make_solver(MATRICES["nonsymmetric"], backend=backend, method="gmres", rtol=1e-8)
    x = solver.solve(RHS)
    first = solver.stats.iterations
    solver.solve(2 * RHS, guess=2 * x)
    assert solver.stats.iterations == 0
    solver.solve(RHS)
    assert (solver.stats.solves, solver.stats.total_iterations) == (3, 2 * first)
    zero = solver.solve(np.zeros(N))
    assert np.all(zero == 0) and solver.stats.relative_residual == 0


@pytest.mark.parametrize(("backend", "kind", "method"), [
    ("scipy", "symmetric", "cg"), ("scipy", "nonsymmetric", "gmres"), ("scipy", "nonsymmetric", "bicgstab"),
    pytest.param("petsc", "symmetric", "cg", marks=needs_petsc),
    pytest.param("petsc", "nonsymmetric", "gmres", marks=needs_petsc),
])
def test_an_impossible_tolerance_raises_convergence_error(backend: str, kind: str, method: str) -> None:
    solver = make_solver(MATRICES[kind], backend=backend, method=method, preconditioner="jacobi", rtol=1e-14,
                         max_iterations=1)
    with pytest.raises(ConvergenceError, match=r"after 1 iteration\(s\), residual norm .* raise max_iterations") as info:
        solver.solve(RHS)
    assert info.value.iterations == 1 and info.value.backend == backend
    assert info.value.residual_norm > 1e-14 * np.linalg.norm(RHS)
    assert isinstance(info.value, cs.CellscapeError)
    assert solver.stats.solves == 0


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"backend": "trilinos"}, "unknown linear-solver backend 'trilinos'; choose one of scipy, petsc"),
    ({"method": "lu"}, "unknown linear-solver method 'lu'"),
    ({"preconditioner": "hypre"}, "unknown linear-solver preconditioner 'hypre'"),
    ({"rtol": 0.0}, "tolerances must be >= 0 and not both 0"),
    ({"max_iterations": 0}, "max_iterations must be a positive integer"),
    ({"petsc_options": {"ksp_type": "cg"}}, "petsc_options are given but the backend is 'scipy'"),
])
def test_bad_arguments_raise_input_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(cs.InputError, match=message.replace("(", r"\(")):
        make_solver(MATRICES["symmetric"], **kwargs)


def test_cg_on_a_nonsymmetric_matrix_and_bad_arrays_raise_input_error() -> None:
    with pytest.raises(cs.InputError, match="method 'cg' needs a symmetric positive definite matrix"):
        make_solver(MATRICES["nonsymmetric"], method="cg")
    with pytest.raises(cs.InputError, match=r"square and non-empty, got shape \(3, 4\)"):
        make_solver(sparse.eye(3, 4))
    with pytest.raises(cs.InputError, match="NaN or infinite"):
        make_solver(sparse.diags([1.0, np.nan]))
    with pytest.raises(cs.InputError, match="the matrix is singular"):
        make_solver(sparse.csr_matrix((3, 3)) + sparse.diags([1.0, 0.0, 1.0], format="csr"), method="direct")
    solver = make_solver(MATRICES["symmetric"])
    with pytest.raises(cs.InputError, match=rf"rhs must have shape \({N},\)"):
        solver.solve(np.ones(5))
    with pytest.raises(cs.InputError, match=r"the solver was made for \(1331, 1331\)"):
        solver.update(sparse.eye(5))


@needs_petsc
def test_options_petsc_rejects_raise_input_error() -> None:
    with pytest.raises(cs.InputError, match="PETSc rejected petsc_options"):
        make_solver(MATRICES["symmetric"], backend="petsc", petsc_options={"ksp_type": "no_such_krylov_method"})


def test_missing_petsc4py_raises_missing_dependency_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "petsc4py", None)
    with pytest.raises(cs.MissingDependencyError, match=r"linear-solver backend 'petsc'.*cellscape\[petsc\]"):
        make_solver(MATRICES["symmetric"], backend="petsc")
    assert petsc_has_cuda() is False


def test_petsc_option_strings_are_parsed() -> None:
    parsed = parse_petsc_options("-ksp_type cg -ksp_rtol 1e-3 -ksp_monitor -pc_factor_shift_amount -1e-2")
    assert parsed == {"ksp_type": "cg", "ksp_rtol": "1e-3", "ksp_monitor": "", "pc_factor_shift_amount": "-1e-2"}
    assert parse_petsc_options({"-ksp_monitor": None, "pc_gamg_threshold": 0.02, "ksp_view": True}) == {
        "ksp_monitor": "", "pc_gamg_threshold": "0.02", "ksp_view": "true"}
    assert parse_petsc_options(None) == {}
    with pytest.raises(cs.InputError, match="value 'cg' does not follow an option name"):
        parse_petsc_options("cg -ksp_type")
    with pytest.raises(cs.InputError, match="must be a dict or a string"):
        parse_petsc_options(["-ksp_type", "cg"])  # type: ignore[arg-type]


def _two_species() -> tuple[sparse.csr_matrix, list[np.ndarray]]:
    """Two species on the cube, coupled by a reversible reaction (a non-symmetric off-diagonal block pair)."""
    a = MATRICES["symmetric"]
    n = a.shape[0]
    mass = sparse.diags(np.asarray(a.sum(axis=1)).ravel())
    matrix = sparse.bmat([[a + 0.5 * DT * mass, -0.2 * DT * mass], [-0.5 * DT * mass, 1.5 * a + 0.2 * DT * mass]])
    return matrix.tocsr(), [np.arange(n), np.arange(n, 2 * n)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_amg_per_block_solves_a_coupled_two_species_system(backend: str) -> None:
    matrix, blocks = _two_species()
    rhs = np.concatenate([RHS, -RHS[::-1]])
    reference = linalg.spsolve(matrix.tocsc(), rhs)
    solver = make_solver(matrix, backend=backend, method="gmres", preconditioner="amg", blocks=blocks, rtol=1e-11)
    x = solver.solve(rhs)
    assert _relative_error(x, reference) <= 1e-8
    assert 1 <= solver.stats.iterations < 60
    if backend == "petsc":
        pc = solver.ksp.getPC()
        assert pc.getType() == "fieldsplit"
        assert [sub.getPC().getType() for sub in pc.getFieldSplitSubKSP()] == ["gamg", "gamg"]


def test_blocks_must_partition_the_unknowns() -> None:
    matrix, blocks = _two_species()
    with pytest.raises(cs.InputError, match=r"blocks must partition the 2662 unknowns"):
        make_solver(matrix, preconditioner="amg", method="gmres", blocks=[blocks[0], blocks[1][:-1]])
    with pytest.raises(cs.InputError, match=r"blocks must partition"):
        make_solver(matrix, preconditioner="amg", method="gmres", blocks=[blocks[0], blocks[0]])
