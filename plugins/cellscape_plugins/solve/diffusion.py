"""``solve.diffusion``: one species diffusing in a closed cell (P1 FEM, backward Euler).

    M (uⁿ⁺¹ − uⁿ) / Δt + D K uⁿ⁺¹ = 0,    zero flux through every boundary

Mesh coordinates are in nm and are converted to µm, so with D in µm²/s and
time in s the equation is solved in consistent units; concentrations are in
µM. The matrix ``M + Δt D K`` is factorized once (direct) or solved by
conjugate gradients with an algebraic-multigrid preconditioner.
"""

from __future__ import annotations

import attrs
import numpy as np

import cellscape as cs

from ._p1 import assemble_p1, lumped_mass

NM_PER_UM = 1000.0


@attrs.frozen
class DiffusionParams:
    species: str = cs.param("c", help="name of the species")
    diffusion_um2_per_s: float = cs.param(1.0, gt=0, unit="um^2/s", help="diffusion coefficient")
    t_end_s: float = cs.param(1.0, gt=0, unit="s", help="simulated time")
    dt_s: float = cs.param(0.01, gt=0, unit="s", help="time step")
    n_outputs: int = cs.param(21, ge=2, help="number of saved time points, t = 0 included")
    initial: str = cs.param("ball", choices=("ball", "constant", "region"), help="initial condition")
    initial_uM: float = cs.param(1.0, ge=0, unit="uM", help="concentration in the source ball (or everywhere)")
    source_center_nm: tuple[float, float, float] | None = cs.param(
        None, unit="nm", help="centre (x, y, z) of the source ball; default: one radius inside the cell's -x end")
    source_radius_nm: float = cs.param(200.0, gt=0, unit="nm", help="radius of the source ball")
    region_values_uM: dict[int, float] = cs.param({}, unit="uM", help="initial value per region marker ('region')")
    regions: list[int] | None = cs.param(None, help="region markers to simulate in; default: the whole mesh")
    mass: str = cs.param("consistent", choices=("consistent", "lumped"), help="mass matrix")
    solver: str = cs.param("direct", choices=("direct", "cg"), help="sparse LU, or CG with AMG for large meshes")


class Diffusion(cs.Solver):
    """Diffusion of one species in a closed domain: P1 finite elements, backward Euler, SciPy solvers."""

    name = "solve.diffusion"
    Params = DiffusionParams

    def _domain(self, mesh: cs.TetMesh) -> np.ndarray:
        p = self.params
        if p.regions is None:
            return mesh.tetrahedra
        present = sorted(int(r) for r in np.unique(mesh.region_markers))
        missing = [r for r in p.regions if r not in present]
        if missing:
            raise cs.InputError(f"solve.diffusion: region(s) {missing} are not in the mesh; regions present: {present}")
        return mesh.tetrahedra[np.isin(mesh.region_markers, p.regions)]

    def _initial(self, mesh: cs.TetMesh, points_um: np.ndarray, tets: np.ndarray) -> np.ndarray:
        p = self.params
        u = np.zeros(len(points_um))
        active = np.zeros(len(points_um), bool)
        active[tets.ravel()] = True
        if p.initial == "constant":
            u[active] = p.initial_uM
        elif p.initial == "region":
            if not p.region_values_uM:
                raise cs.InputError("solve.diffusion: initial 'region' needs region_values_uM, e.g. {1: 0.0, 2: 5.0}")
            for region, value in sorted(p.region_values_uM.items()):
                chosen = mesh.tetrahedra[mesh.region_markers == region]
                if len(chosen) == 0:
                    raise cs.InputError(f"solve.diffusion: region_values_uM names region {region}, which is not in the mesh")
                u[np.unique(chosen)] = np.maximum(u[np.unique(chosen)], value)
            u[~active] = 0.0
        else:
            if p.source_center_nm is None:
                domain_points = points_um[active]
                start = domain_points[np.argmin(domain_points[:, 0])]
                centre = start + np.array([p.source_radius_nm / NM_PER_UM, 0.0, 0.0])
            else:
                centre = np.asarray(p.source_center_nm) / NM_PER_UM
            inside = active & (np.linalg.norm(points_um - centre, axis=1) <= p.source_radius_nm / NM_PER_UM)
            if not inside.any():
                raise cs.InputError(
                    f"solve.diffusion: the source ball (radius {p.source_radius_nm} nm) contains no mesh node; "
                    "increase source_radius_nm or move source_center_nm inside the cell"
                )
            u[inside] = p.initial_uM
        return u

    def solve(self, mesh: cs.TetMesh) -> cs.Fields:
        from scipy.sparse import linalg

        p = self.params
        if p.dt_s > p.t_end_s:
            raise cs.InputError(f"solve.diffusion: dt_s ({p.dt_s} s) is longer than t_end_s ({p.t_end_s} s)")
        points_um = mesh.points / NM_PER_UM
        tets = self._domain(mesh)
        try:
            stiffness, mass = assemble_p1(points_um, tets, lumped=p.mass == "lumped")
        except ValueError as exc:
            raise cs.InputError(f"solve.diffusion: the mesh has {exc}; repair or re-mesh it") from exc
        n_steps = max(1, round(p.t_end_s / p.dt_s))
        dt = p.t_end_s / n_steps
        output_steps = np.unique(np.round(np.linspace(0, n_steps, p.n_outputs)).astype(int))
        active = np.zeros(len(points_um), bool)
        active[tets.ravel()] = True
        # nodes outside the simulated regions keep a unit diagonal so the system stays non-singular
        system = (mass + dt * p.diffusion_um2_per_s * stiffness).tolil()
        for node in np.flatnonzero(~active):
            system[node, node] = 1.0
        system = system.tocsc()
        if p.solver == "direct":
            factor = linalg.splu(system)
            step = factor.solve
        else:
            import pyamg

            preconditioner = pyamg.smoothed_aggregation_solver(system.tocsr()).aspreconditioner()

            def step(rhs: np.ndarray) -> np.ndarray:
                solution, info = linalg.cg(system, rhs, rtol=1e-10, M=preconditioner, maxiter=500)
                if info != 0:
                    raise cs.InputError(f"solve.diffusion: CG did not converge (info {info}); try solver: direct")
                return solution

        u = self._initial(mesh, points_um, tets)
        values = [u.copy()]
        for n in self.progress(range(1, n_steps + 1), total=n_steps, description="time steps"):
            u = step(mass @ u)
            u[~active] = 0.0
            if n in output_steps:
                values.append(u.copy())
        times = output_steps * dt
        return cs.Fields(mesh, times, {p.species: np.array(values)}, {p.species: "uM"})


def total_amount(points_nm: np.ndarray, tets: np.ndarray, values: np.ndarray) -> np.ndarray:
    """∫u dV (µM·µm³) of each row of ``values`` (times × nodes), with the lumped mass."""
    weights = lumped_mass(points_nm / NM_PER_UM, tets)
    return values @ weights


