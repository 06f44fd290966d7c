"""Sparse linear solvers for the simulation stage: one interface over SciPy/pyamg and PETSc.

A solver prepares repeated solves of ``A x = b`` with one matrix (factorization
or preconditioner set-up happens once) and re-prepares for a new matrix of the
same size with :meth:`LinearSolver.update` (a new time step, a Newton Jacobian)::

    solver = make_solver(mass + dt * stiffness)            # SciPy, chosen automatically
    x = solver.solve(rhs)
    solver.stats.iterations, solver.stats.residual_norm
    solver = make_solver(A, backend="petsc", petsc_options="-ksp_type bcgs -pc_type ilu")

Backends
--------
``"scipy"``
    ``method="auto"`` picks a sparse LU (SuperLU ``splu``) below
    :data:`DIRECT_LIMIT` unknowns and an iterative method above it:
    conjugate gradients for symmetric matrices, GMRES otherwise.
    ``preconditioner="auto"`` picks smoothed-aggregation algebraic multigrid
    (pyamg) for symmetric matrices and an incomplete LU (``spilu``) otherwise.
``"petsc"`` (petsc4py, extra ``petsc``)
    ``method="auto"`` is always iterative: CG + GAMG for symmetric matrices,
    GMRES + ILU(0) otherwise; ``"direct"`` is ``preonly`` + PETSc's LU. Any
    PETSc option (``ksp_type``, ``pc_type``, ``pc_gamg_threshold``,
    ``ksp_monitor``...) can be given in ``petsc_options`` and overrides these
    defaults. Options are stored under a prefix unique to each solver, so
    they never reach another solver. CUDA matrix and vector types are used
    when PETSc was built with CUDA.

MPI (PETSc backend under ``mpiexec -n N``)
------------------------------------------
When PETSc's ``COMM_WORLD`` has more than one rank, every rank passes the same
(replicated) matrix and right-hand side; the solver partitions the unknowns
into N contiguous blocks of a reverse Cuthill–McKee ordering of the matrix
graph (for a mesh: N slices with short interfaces), gives each rank the rows
of its block in a distributed ``MPIAIJ`` matrix, solves with the same Krylov
method, and returns the full solution on every rank. Parallel defaults differ
only where PETSc needs it: ILU/ICC become block Jacobi with ILU/ICC per rank
(``bjacobi``), and ``"direct"`` is a redundant LU on every rank (this PETSc has
no parallel direct solver such as MUMPS). Assembly stays replicated: memory per
rank is that of the serial matrix, the solve is distributed.

Semantics shared by both backends
---------------------------------
"Symmetric" means symmetric positive definite (as ``M + Δt D K``): such
matrices get CG, multigrid and symmetric orderings. Symmetry is detected
(to a relative ``1e-10``) unless ``symmetric=`` is given; pass
``symmetric=False`` for a symmetric indefinite matrix. Iterative solves stop
when the true residual ``‖b − A x‖₂ ≤ max(rtol ‖b‖₂, atol)`` (PETSc is set to
unpreconditioned norms for CG, GMRES and BiCGStab to match). A solve that
does not converge raises :class:`ConvergenceError`; it never returns an
inaccurate solution silently. Units are those of the caller: ``x`` has the
unit of ``b`` divided by the unit of ``A``.
"""

from __future__ import annotations

import itertools
import math
import shlex
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

import cellscape as cs

if TYPE_CHECKING:
    from scipy import sparse

__all__ = [
    "BACKENDS",
    "DEFAULT_MAX_ITERATIONS",
    "DIRECT_LIMIT",
    "METHODS",
    "PRECONDITIONERS",
    "ConvergenceError",
    "LinearSolver",
    "PetscSolver",
    "ScipySolver",
    "SolveStats",
    "is_symmetric",
    "make_solver",
    "parse_petsc_options",
    "petsc_has_cuda",
]

BACKENDS = ("scipy", "petsc")
METHODS = ("auto", "direct", "cg", "gmres", "bicgstab")
PRECONDITIONERS = ("auto", "amg", "ilu", "jacobi", "none")
DIRECT_LIMIT = 50_000
"""Unknowns below which the SciPy backend's ``method="auto"`` factorizes instead of iterating."""
DEFAULT_MAX_ITERATIONS = 10_000
"""Iteration cap of iterative methods when ``max_iterations`` is None (PETSc's own default too)."""
SYMMETRY_RTOL = 1e-10
"""``max|A − Aᵀ| ≤ SYMMETRY_RTOL · max|A|`` counts as symmetric when ``symmetric`` is None."""
GMRES_RESTART = 30

_PETSC_KSP_TYPES = {"cg": "cg", "gmres": "gmres", "bicgstab": "bcgs", "direct": "preonly"}
# Krylov methods whose unpreconditioned residual norm PETSc can monitor (CG with a left, the others with a right preconditioner)
_PETSC_RIGHT_PRECONDITIONED = ("gmres", "fgmres", "lgmres", "bcgs", "gcr")
_prefix_counter = itertools.count()


class ConvergenceError(cs.CellscapeError, ArithmeticError):
    """An iterative solve that stopped before reaching its tolerance (or diverged).

    Attributes ``backend``, ``method``, ``iterations``, ``residual_norm`` and
    ``reason`` say how far it got; the message also says what to try.
    """

    def __init__(self, backend: str, method: str, preconditioner: str, iterations: int, residual_norm: float,
                 target: float, reason: str):
        self.backend, self.method, self.preconditioner = backend, method, preconditioner
        self.iterations, self.residual_norm, self.reason = iterations, residual_norm, reason
        super().__init__(
            f"linear solve did not converge ({backend}: {method} with preconditioner {preconditioner}): "
            f"{reason} after {iterations} iteration(s), residual norm {residual_norm:.3e} (wanted <= {target:.3e}); "
            "raise max_iterations or rtol, use a stronger preconditioner (amg, ilu), "
            "or method 'direct' for up to a few 100k unknowns"
        )


@attrs.frozen
class SolveStats:
    """What the last solve did, and totals since the solver was made.

    Attributes
    ----------
    backend : str
        ``"scipy"`` or ``"petsc"``.
    method : str
        The method actually used: ``"direct"``, ``"cg"``, ``"gmres"``,
        ``"bicgstab"`` for SciPy; PETSc's KSP type (``"cg"``, ``"bcgs"``,
        ``"preonly"``...) for PETSc, after ``petsc_options``.
    preconditioner : str
        The preconditioner actually used (PETSc: the PC type, e.g. ``"gamg"``, ``"lu"``).
    iterations : int
        Krylov iterations of the last solve (0 for a SciPy direct solve).
    residual_norm : float
        ``‖b − A x‖₂`` of the last solve, in the unit of ``b``; NaN before any solve.
    rhs_norm : float
        ``‖b‖₂`` of the last solve.
    reason : str
        Why the last solve stopped, e.g. ``"converged"``, ``"direct"``, or PETSc's ``CONVERGED_RTOL``.
    solves : int
        Number of solves since the solver was made.
    total_iterations : int
        Sum of ``iterations`` over those solves.
    setups : int
        Number of factorizations / preconditioner set-ups (1 + calls of :meth:`LinearSolver.update`).
    """

    backend: str
    method: str
    preconditioner: str
    iterations: int = 0
    residual_norm: float = math.nan
    rhs_norm: float = math.nan
    reason: str = "not solved yet"
    solves: int = 0
    total_iterations: int = 0
    setups: int = 1

    @property
    def relative_residual(self) -> float:
        """``‖b − A x‖₂ / ‖b‖₂`` of the last solve (0 when b = 0)."""
        return self.residual_norm / self.rhs_norm if self.rhs_norm > 0 else 0.0 * self.residual_norm


class LinearSolver:
    """Repeated solves of ``A x = b`` with one prepared sparse matrix; made by :func:`make_solver`.

    Attributes
    ----------
    shape : tuple[int, int]
        ``(n, n)``.
    symmetric : bool
        Whether the matrix is treated as symmetric positive definite.
    stats : SolveStats
        The last solve's iterations and residual, and running totals.
    """

    backend = ""

    def __init__(self, matrix: sparse.csr_matrix, *, method: str, preconditioner: str, rtol: float, atol: float,
                 max_iterations: int, symmetric: bool, blocks: list[np.ndarray] | None = None):
        self.matrix = matrix
        self.blocks = blocks
        self.shape: tuple[int, int] = matrix.shape
        self.method, self.preconditioner = method, preconditioner
        self.rtol, self.atol, self.max_iterations = rtol, atol, max_iterations
        self.symmetric = symmetric
        self.stats = SolveStats(self.backend, method, preconditioner, setups=0)

    def solve(self, rhs: np.ndarray, guess: np.ndarray | None = None) -> np.ndarray:
        """Solve ``A x = rhs``.

        Parameters
        ----------
        rhs : ndarray, shape (n,)
            Right-hand side.
        guess : ndarray, shape (n,), optional
            Starting iterate of iterative methods (ignored by direct ones); default 0.

        Returns
        -------
        ndarray, shape (n,), float64
            The solution; ``‖rhs − A x‖₂ ≤ max(rtol ‖rhs‖₂, atol)`` for iterative methods.

        Raises
        ------
        ConvergenceError
            If an iterative method stops before the tolerance or diverges.
        cellscape.InputError
            If ``rhs`` or ``guess`` has the wrong shape or is not finite.
        """
        rhs = self._vector(rhs, "rhs")
        guess = None if guess is None else self._vector(guess, "guess")
        x, iterations, reason, failed = self._solve(rhs, guess)
        residual_norm = float(np.linalg.norm(rhs - self.matrix @ x))
        rhs_norm = float(np.linalg.norm(rhs))
        target = max(self.rtol * rhs_norm, self.atol)
        if failed or not np.isfinite(residual_norm):
            raise ConvergenceError(self.backend, self.stats.method, self.stats.preconditioner, iterations, residual_norm,
                                   target, reason)
        self.stats = attrs.evolve(self.stats, iterations=iterations, residual_norm=residual_norm, rhs_norm=rhs_norm,
                                  reason=reason, solves=self.stats.solves + 1,
                                  total_iterations=self.stats.total_iterations + iterations)
        return x

    def update(self, matrix: sparse.spmatrix | np.ndarray) -> None:
        """Prepare for a new matrix of the same shape (same sparsity pattern is cheapest for PETSc).

        The method, preconditioner, tolerances and symmetry stay as chosen at
        construction; the factorization or preconditioner is rebuilt.

        Raises
        ------
        cellscape.InputError
            If the new matrix is not square of the same size, or not finite.
        """
        csr = _as_csr(matrix)
        if csr.shape != self.shape:
            raise cs.InputError(f"update(): the new matrix has shape {csr.shape}, the solver was made for {self.shape}")
        self.matrix = csr
        self._setup()
        self.stats = attrs.evolve(self.stats, setups=self.stats.setups + 1)

    def _vector(self, values: np.ndarray, name: str) -> np.ndarray:
        array = np.asarray(values, dtype=np.float64)
        if array.shape != (self.shape[0],):
            raise cs.InputError(f"{name} must have shape ({self.shape[0]},) to match the matrix, got {array.shape}")
        if not np.all(np.isfinite(array)):
            raise cs.InputError(f"{name} contains NaN or infinite values")
        return array

    def _setup(self) -> None:
        raise NotImplementedError

    def _solve(self, rhs: np.ndarray, guess: np.ndarray | None) -> tuple[np.ndarray, int, str, bool]:
        """Return the solution, iterations, reason and whether the solve failed."""
        raise NotImplementedError


class ScipySolver(LinearSolver):
    """SciPy backend: SuperLU, or CG / GMRES / BiCGStab with pyamg, ``spilu`` or Jacobi preconditioning."""

    backend = "scipy"

    def __init__(self, matrix: sparse.csr_matrix, **kwargs: Any):
        super().__init__(matrix, **kwargs)
        self._setup()
        self.stats = attrs.evolve(self.stats, setups=1)

    def _setup(self) -> None:
        from scipy.sparse import linalg

        if self.method == "direct":
            try:
                if self.symmetric:
                    # a symmetric fill-reducing ordering roughly halves the fill of 3D FEM factors against COLAMD
                    self._factor = linalg.splu(self.matrix.tocsc(), permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                                               options={"SymmetricMode": True})
                else:
                    self._factor = linalg.splu(self.matrix.tocsc())
            except RuntimeError as exc:
                raise cs.InputError(f"sparse LU failed ({exc}): the matrix is singular; check boundary conditions "
                                    "(a pure-Neumann stiffness matrix needs a mass term or a fixed value)") from exc
            return
        self._apply_preconditioner = self._make_preconditioner()

    def _make_preconditioner(self) -> Callable[[np.ndarray], np.ndarray] | None:
        from scipy.sparse import linalg

        csr = self.matrix
        if self.preconditioner == "none":
            return None
        if self.preconditioner == "jacobi":
            diagonal = csr.diagonal()
            if np.any(diagonal == 0):
                raise cs.InputError("preconditioner 'jacobi' needs a nonzero diagonal; the matrix has zeros on it")
            inverse_diagonal = 1.0 / diagonal
            return lambda v: inverse_diagonal * np.ravel(v)
        if self.preconditioner == "ilu":
            try:
                if self.symmetric:
                    ilu = linalg.spilu(csr.tocsc(), permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                                       options={"SymmetricMode": True})
                else:
                    ilu = linalg.spilu(csr.tocsc())
            except RuntimeError as exc:
                raise cs.InputError(f"incomplete LU failed ({exc}); use preconditioner 'amg' or 'jacobi'") from exc
            return ilu.solve
        pyamg = cs.require("pyamg", extra="solve", who="the scipy solver's preconditioner 'amg' (or use 'ilu' or 'jacobi')")

        def cycle(matrix: sparse.csr_matrix) -> Any:
            if self.symmetric:
                return pyamg.smoothed_aggregation_solver(matrix, symmetry="symmetric").aspreconditioner(cycle="V")
            return pyamg.rootnode_solver(matrix, symmetry="nonsymmetric").aspreconditioner(cycle="V")

        if self.blocks is None:
            return cycle(csr)
        # block Jacobi: one AMG cycle per block (species), the coupling between blocks left to the Krylov method
        parts = [(rows, cycle(csr[rows][:, rows].tocsr())) for rows in self.blocks]

        def apply(v: np.ndarray) -> np.ndarray:
            v = np.ravel(v)
            out = np.empty_like(v)
            for rows, part in parts:
                out[rows] = part(v[rows])
            return out

        return apply

    def _solve(self, rhs: np.ndarray, guess: np.ndarray | None) -> tuple[np.ndarray, int, str, bool]:
        from scipy.sparse import linalg

        if self.method == "direct":
            return self._factor.solve(rhs), 0, "direct", False
        n = self.shape[0]
        preconditioner = None
        if self._apply_preconditioner is not None:
            preconditioner = linalg.LinearOperator((n, n), matvec=self._apply_preconditioner, dtype=np.float64)
        iterations = 0

        def count(_: object) -> None:
            nonlocal iterations
            iterations += 1

        common = {"x0": guess, "rtol": self.rtol, "atol": self.atol, "M": preconditioner, "callback": count}
        if self.method == "cg":
            x, info = linalg.cg(self.matrix, rhs, maxiter=self.max_iterations, **common)
        elif self.method == "bicgstab":
            x, info = linalg.bicgstab(self.matrix, rhs, maxiter=self.max_iterations, **common)
        else:
            # scipy counts GMRES's maxiter in restart cycles; "pr_norm" calls back once per inner iteration
            restart = min(GMRES_RESTART, self.max_iterations)
            x, info = linalg.gmres(self.matrix, rhs, restart=restart, maxiter=math.ceil(self.max_iterations / restart),
                                   callback_type="pr_norm", **common)
        if info > 0:
            reason = "iteration limit reached" if iterations >= self.max_iterations else f"stagnated (scipy info {info})"
            return x, iterations, reason, True
        if info < 0:
            return x, iterations, f"breakdown (scipy info {info})", True
        return x, iterations, "converged", False


class PetscSolver(LinearSolver):
    """PETSc backend (petsc4py): a KSP configured by defaults, then by ``petsc_options`` under a private prefix.

    Attributes
    ----------
    ksp : petsc4py.PETSc.KSP
        The Krylov solver, for inspection or further configuration.
    options_prefix : str
        This solver's PETSc options prefix, ``"cellscape_<n>_"``.
    """

    backend = "petsc"

    def __init__(self, matrix: sparse.csr_matrix, *, petsc_options: Mapping[str, str], **kwargs: Any):
        PETSc = _petsc()
        super().__init__(matrix, **kwargs)
        self._PETSc = PETSc
        # every rank of COMM_WORLD must reach the same calls: only where they all run this code (a script under
        # mpiexec, or a step the runner runs collectively), not in a step that rank 0 runs alone
        distributed = PETSc.COMM_WORLD.getSize() > 1 and cs.mpi_shared()
        self.comm = PETSc.COMM_WORLD if distributed else PETSc.COMM_SELF
        self.ranks = self.comm.getSize()
        self._order: np.ndarray | None = None  # unknowns in partition order (MPI only)
        self.options_prefix = f"cellscape_{next(_prefix_counter)}_"
        self.petsc_options = dict(petsc_options)
        self._block_options: list[str] = []
        self.use_cuda = petsc_has_cuda()
        database = PETSc.Options(self.options_prefix)
        for key, value in self.petsc_options.items():
            database[key] = value
        weakref.finalize(self, _forget_options, PETSc, self.options_prefix, list(self.petsc_options)).atexit = False
        self._petsc_matrix = self._build_matrix(matrix)
        self.ksp = self._configure_ksp()
        if self._block_options:  # read when the field split sets up (at the first solve): forgotten with the solver
            weakref.finalize(self, _forget_options, PETSc, self.options_prefix, self._block_options).atexit = False
        pc_type = self.ksp.getPC().getType()
        self.stats = SolveStats("petsc", self.ksp.getType(), pc_type, setups=1)

    def _build_matrix(self, csr: sparse.csr_matrix) -> Any:
        PETSc = self._PETSc
        if self.ranks > 1:
            matrix = self._distributed_matrix(csr)
        else:
            matrix = PETSc.Mat().createAIJ(size=csr.shape, csr=_petsc_csr(PETSc, csr), comm=PETSc.COMM_SELF)
        matrix.assemble()
        if self.symmetric:
            matrix.setOption(PETSc.Mat.Option.SYMMETRIC, True)
        if self.use_cuda:
            matrix = matrix.convert("aijcusparse")
        self._pattern = (csr.indptr.copy(), csr.indices.copy())
        return matrix

    def _distributed_matrix(self, csr: sparse.csr_matrix) -> Any:
        """This rank's block of rows of the matrix in partition order, as part of an MPIAIJ matrix."""
        PETSc = self._PETSc
        if self._order is None:
            from scipy.sparse.csgraph import reverse_cuthill_mckee

            self._order = np.asarray(reverse_cuthill_mckee(csr.tocsr(), symmetric_mode=False), dtype=np.int64)
            n, rank = csr.shape[0], self.comm.getRank()
            bounds = np.linspace(0, n, self.ranks + 1).round().astype(np.int64)
            self._rows = (int(bounds[rank]), int(bounds[rank + 1]))
        start, stop = self._rows
        order = self._order
        local = csr[order[start:stop]][:, order].tocsr()
        local.sort_indices()
        n = csr.shape[0]
        return PETSc.Mat().createAIJ(size=((stop - start, n), (stop - start, n)), csr=_petsc_csr(PETSc, local),
                                     comm=self.comm)

    def _configure_ksp(self) -> Any:
        PETSc = self._PETSc
        ksp = PETSc.KSP().create(comm=self.comm)
        ksp.setOptionsPrefix(self.options_prefix)  # before the PC makes field splits: they inherit it
        ksp.setOperators(self._petsc_matrix)
        ksp.setType(_PETSC_KSP_TYPES[self.method])
        pc = ksp.getPC()
        if self.method == "direct":
            pc.setType("lu" if self.ranks == 1 else "redundant")
        elif self.blocks is not None and self.preconditioner == "amg":
            # one GAMG per block (species), additively: PETSc's field split
            pc.setType("fieldsplit")
            pc.setFieldSplitType(PETSc.PC.CompositeType.ADDITIVE)
            owned = None if self.ranks == 1 else np.argsort(self._order)  # original unknown -> partition position
            start, stop = (0, self.shape[0]) if self.ranks == 1 else self._rows
            database = PETSc.Options(self.options_prefix)
            for number, rows in enumerate(self.blocks):
                positions = np.sort(rows if owned is None else owned[rows])
                positions = positions[(positions >= start) & (positions < stop)].astype(PETSc.IntType)
                pc.setFieldSplitIS((str(number), PETSc.IS().createGeneral(positions, comm=self.comm)))
                for key, value in ((f"fieldsplit_{number}_ksp_type", "preonly"), (f"fieldsplit_{number}_pc_type", "gamg")):
                    if key not in self.petsc_options:
                        database[key] = value
                        self._block_options.append(key)
        elif self.ranks > 1 and self.preconditioner == "ilu":
            pc.setType("bjacobi")  # one ILU/ICC block per rank (PETSc's own ILU is sequential)
        else:
            pc.setType({"amg": "gamg", "ilu": "icc" if self.symmetric else "ilu", "jacobi": "jacobi",
                        "none": "none"}[self.preconditioner])
        ksp.setTolerances(rtol=self.rtol, atol=self.atol, max_it=self.max_iterations)
        try:
            ksp.setFromOptions()
        except PETSc.Error as exc:
            raise cs.InputError(f"PETSc rejected petsc_options {self.petsc_options} ({exc}); "
                                "see the PETSc manual pages of KSPSetFromOptions and PCSetFromOptions") from exc
        if not {"ksp_norm_type", "ksp_pc_side"} & set(self.petsc_options):
            # make PETSc's rtol mean ‖b − A x‖ ≤ rtol ‖b‖ as in the scipy backend, not a preconditioned norm
            if ksp.getType() == "cg":
                ksp.setNormType(PETSc.KSP.NormType.UNPRECONDITIONED)
            elif ksp.getType() in _PETSC_RIGHT_PRECONDITIONED:
                ksp.setPCSide(PETSc.PC.Side.RIGHT)
                ksp.setNormType(PETSc.KSP.NormType.UNPRECONDITIONED)
        return ksp

    def _setup(self) -> None:
        csr = self.matrix
        same_pattern = (np.array_equal(csr.indptr, self._pattern[0]) and np.array_equal(csr.indices, self._pattern[1])
                        and not self.use_cuda and self.ranks == 1)
        if same_pattern:
            self._petsc_matrix.zeroEntries()
            self._petsc_matrix.setValuesCSR(*_petsc_csr(self._PETSc, csr))
            self._petsc_matrix.assemble()
        else:
            self._petsc_matrix = self._build_matrix(csr)
        # set the operators again so the preconditioner / factorization is rebuilt before the next solve
        self.ksp.setOperators(self._petsc_matrix)

    def _local(self, values: np.ndarray) -> np.ndarray:
        """This rank's entries of a replicated vector, in partition order."""
        if self.ranks == 1:
            return values
        start, stop = self._rows
        return values[self._order[start:stop]]  # type: ignore[index]

    def _gathered(self, vec: Any) -> np.ndarray:
        """A distributed solution vector, in the original order, on every rank."""
        if self.ranks == 1:
            return np.array(vec.getArray(readonly=True), dtype=np.float64)
        scatter, everywhere = self._PETSc.Scatter.toAll(vec)
        scatter.scatter(vec, everywhere, addv=False, mode=self._PETSc.Scatter.Mode.FORWARD)
        ordered = np.array(everywhere.getArray(readonly=True), dtype=np.float64)
        x = np.empty_like(ordered)
        x[self._order] = ordered
        scatter.destroy()
        everywhere.destroy()
        return x

    def _solve(self, rhs: np.ndarray, guess: np.ndarray | None) -> tuple[np.ndarray, int, str, bool]:
        PETSc = self._PETSc
        x_vec, b_vec = self._petsc_matrix.createVecs()
        b_vec.setArray(self._local(rhs))
        if guess is not None and self.ksp.getType() != "preonly":
            x_vec.setArray(self._local(guess))
            self.ksp.setInitialGuessNonzero(True)
        else:
            x_vec.set(0.0)
            self.ksp.setInitialGuessNonzero(False)
        try:
            self.ksp.solve(b_vec, x_vec)
        except PETSc.Error as exc:
            x = np.full(self.shape[0], np.nan)
            return x, self.ksp.getIterationNumber(), f"PETSc error {exc}", True
        reason_code = self.ksp.getConvergedReason()
        x = self._gathered(x_vec)
        return x, self.ksp.getIterationNumber(), _reason_name(PETSc, reason_code), reason_code < 0


def make_solver(
    matrix: sparse.spmatrix | np.ndarray,
    backend: str = "scipy",
    method: str = "auto",
    preconditioner: str = "auto",
    rtol: float = 1e-10,
    atol: float = 0.0,
    max_iterations: int | None = None,
    petsc_options: Mapping[str, object] | str | None = None,
    symmetric: bool | None = None,
    blocks: list[np.ndarray] | None = None,
) -> LinearSolver:
    """Prepare repeated solves ``matrix @ x = b``: factorize or set up the preconditioner once.

    Parameters
    ----------
    matrix : scipy sparse matrix or ndarray, shape (n, n), float
        The system matrix (any unit; ``x`` gets the unit of ``b`` over it).
    backend : {"scipy", "petsc"}
        Library that solves; "petsc" needs petsc4py (``pip install 'cellscape[petsc]'``).
    method : {"auto", "direct", "cg", "gmres", "bicgstab"}
        "auto": see the module docstring (SciPy: direct below :data:`DIRECT_LIMIT`
        unknowns; then CG if symmetric, else GMRES. PETSc: CG if symmetric,
        else GMRES). "cg" needs a symmetric positive definite matrix.
    preconditioner : {"auto", "amg", "ilu", "jacobi", "none"}
        Of iterative methods (ignored by "direct"). "auto": "amg" if symmetric,
        else "ilu". "amg" is pyamg smoothed aggregation (root-node for
        non-symmetric matrices) or PETSc GAMG; "ilu" is SciPy ``spilu`` or
        PETSc ILU(0) (ICC(0) if symmetric); "jacobi" the inverse diagonal.
    rtol, atol : float
        Stop when ``‖b − A x‖₂ ≤ max(rtol ‖b‖₂, atol)`` (atol in the unit of b).
    max_iterations : int, optional
        Iteration cap of iterative methods; default :data:`DEFAULT_MAX_ITERATIONS`.
    petsc_options : dict or str, optional
        PETSc options, e.g. ``{"ksp_type": "bcgs", "pc_type": "gamg"}`` or
        ``"-ksp_type bcgs -pc_type gamg -ksp_monitor"``; they override the
        choices above (the key of a flag maps to ``""``). Backend "petsc" only.
    symmetric : bool, optional
        Treat the matrix as symmetric positive definite; detected when None.
    blocks : list of int arrays, optional
        A partition of the unknowns into blocks (e.g. one per species of a
        reaction–diffusion system). With the "amg" preconditioner each block
        gets its own multigrid cycle (block Jacobi; PETSc: an additive
        ``fieldsplit`` with GAMG per block), so coarse levels never mix
        species; the reactions coupling the blocks are left to the Krylov
        method. The iteration count then stays nearly flat as the mesh is
        refined, where one AMG of the whole coupled matrix degrades.

    Returns
    -------
    LinearSolver
        With ``solve(rhs, guess=None)``, ``update(matrix)`` and ``stats``.

    Raises
    ------
    cellscape.InputError
        Unknown backend, method or preconditioner; bad tolerances; a matrix
        that is not square, empty or finite; "cg" on a non-symmetric matrix;
        ``petsc_options`` with the scipy backend; options PETSc rejects.
    cellscape.MissingDependencyError
        If petsc4py (backend "petsc") or pyamg (SciPy "amg") is not installed.
    """
    _check_choice("backend", backend, BACKENDS)
    _check_choice("method", method, METHODS)
    _check_choice("preconditioner", preconditioner, PRECONDITIONERS)
    if not (rtol >= 0 and atol >= 0 and (rtol > 0 or atol > 0)):
        raise cs.InputError(f"tolerances must be >= 0 and not both 0, got rtol={rtol!r}, atol={atol!r}")
    if max_iterations is None:
        max_iterations = DEFAULT_MAX_ITERATIONS
    elif isinstance(max_iterations, bool) or not isinstance(max_iterations, int | np.integer) or max_iterations < 1:
        raise cs.InputError(f"max_iterations must be a positive integer, got {max_iterations!r}")
    if petsc_options is not None and backend != "petsc":
        raise cs.InputError(f"petsc_options are given but the backend is {backend!r}; use backend 'petsc'")
    csr = _as_csr(matrix)
    if symmetric is None:
        symmetric = is_symmetric(csr)
    if method == "cg" and not symmetric:
        raise cs.InputError("method 'cg' needs a symmetric positive definite matrix and this one is not symmetric; "
                            "use 'gmres' or 'bicgstab'")
    if method == "auto":
        if backend == "scipy" and csr.shape[0] < DIRECT_LIMIT:
            method = "direct"
        else:
            method = "cg" if symmetric else "gmres"
    if method == "direct":
        preconditioner = "none"
    elif preconditioner == "auto":
        preconditioner = "amg" if symmetric else "ilu"
    if blocks is not None:
        blocks = [np.asarray(rows, dtype=np.int64) for rows in blocks]
        covered = np.concatenate(blocks) if blocks else np.zeros(0, np.int64)
        if len(covered) != csr.shape[0] or not np.array_equal(np.sort(covered), np.arange(csr.shape[0])):
            raise cs.InputError(f"blocks must partition the {csr.shape[0]} unknowns: every index 0..{csr.shape[0] - 1} "
                                "in exactly one block")
        if len(blocks) < 2:
            blocks = None
    common = {"method": method, "preconditioner": preconditioner, "rtol": float(rtol), "atol": float(atol),
              "max_iterations": int(max_iterations), "symmetric": bool(symmetric), "blocks": blocks}
    if backend == "petsc":
        return PetscSolver(csr, petsc_options=parse_petsc_options(petsc_options), **common)
    return ScipySolver(csr, **common)


def parse_petsc_options(options: Mapping[str, object] | str | None) -> dict[str, str]:
    """PETSc options as a ``{name: value}`` dict without leading dashes.

    Parameters
    ----------
    options : dict, str or None
        ``{"ksp_type": "cg", "-pc_type": "gamg", "ksp_monitor": True}`` or
        ``"-ksp_type cg -pc_type gamg -ksp_monitor"``. Booleans become
        ``"true"``/``"false"``, None and flags without a value become ``""``.

    Raises
    ------
    cellscape.InputError
        If a string has a value without an option name before it, or ``options`` is another type.
    """
    if options is None:
        return {}
    if isinstance(options, str):
        parsed: dict[str, str] = {}
        key = None
        for token in shlex.split(options):
            if token.startswith("-") and not _is_number(token):
                key = token.lstrip("-")
                parsed[key] = ""
            elif key is not None and parsed[key] == "":
                parsed[key] = token
            else:
                raise cs.InputError(f"petsc_options: value {token!r} does not follow an option name (-name value)")
        return parsed
    if not isinstance(options, Mapping):
        raise cs.InputError(f"petsc_options must be a dict or a string, got {type(options).__name__}")
    return {str(key).lstrip("-"): _option_value(value) for key, value in options.items()}


class PetscCollective:
    """Mixin of the solver methods: under ``mpiexec -n N`` a step with ``backend: petsc`` runs on every rank."""

    params: Any

    def runs_collectively(self) -> bool:
        """The PETSc backend distributes the matrix by rows over the ranks, so every rank must take part."""
        return getattr(self.params, "backend", "scipy") == "petsc"


def petsc_has_cuda() -> bool:
    """Whether the installed PETSc was built with CUDA (False when petsc4py is missing or cannot tell)."""
    try:
        PETSc = _petsc()
        return bool(PETSc.Sys.hasExternalPackage("cuda"))
    except (ImportError, AttributeError, RuntimeError):
        return False
    except Exception as exc:  # petsc4py raises PETSc.Error, which is not importable without it
        if type(exc).__name__ == "Error":
            return False
        raise


def is_symmetric(matrix: sparse.csr_matrix) -> bool:
    """Whether ``max|A − Aᵀ| ≤ SYMMETRY_RTOL · max|A|``."""
    scale = abs(matrix).max() if matrix.nnz else 0.0
    difference = abs(matrix - matrix.T)
    return bool(difference.nnz == 0 or difference.max() <= SYMMETRY_RTOL * scale)


def _petsc() -> Any:
    """The PETSc module of petsc4py, initialized on first use."""
    import sys

    petsc4py = cs.require("petsc4py", extra="petsc", who="the linear-solver backend 'petsc'")
    if "petsc4py.PETSc" not in sys.modules:
        petsc4py.init()
    from petsc4py import PETSc

    return PETSc


def _petsc_csr(PETSc: Any, csr: sparse.csr_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (csr.indptr.astype(PETSc.IntType), csr.indices.astype(PETSc.IntType), csr.data.astype(PETSc.ScalarType))


def _forget_options(PETSc: Any, prefix: str, keys: list[str]) -> None:
    database = PETSc.Options(prefix)
    for key in keys:
        database.delValue(key)


def _reason_name(PETSc: Any, code: int) -> str:
    names = {value: name for name, value in vars(PETSc.KSP.ConvergedReason).items()
             if isinstance(value, int) and not name.startswith("_")}
    return names.get(code, f"reason {code}")


def _as_csr(matrix: sparse.spmatrix | np.ndarray) -> sparse.csr_matrix:
    from scipy import sparse

    try:
        csr = sparse.csr_matrix(matrix, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as exc:
        raise cs.InputError(f"the system matrix must be a real sparse matrix or 2D array ({exc})") from exc
    if csr.shape[0] != csr.shape[1] or csr.shape[0] == 0:
        raise cs.InputError(f"the system matrix must be square and non-empty, got shape {csr.shape}")
    csr.sum_duplicates()
    csr.sort_indices()
    if not np.all(np.isfinite(csr.data)):
        raise cs.InputError("the system matrix contains NaN or infinite values")
    return csr


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise cs.InputError(f"unknown linear-solver {name} {value!r}; choose one of {', '.join(choices)}")


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _option_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
