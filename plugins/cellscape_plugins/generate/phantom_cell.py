"""``generate.phantom_cell``: a seeded synthetic cell with its ground-truth labels.

The cell is a smooth, slightly irregular ellipsoid bounded by a plasma
membrane; inside lie a nucleus (an ellipsoid with a nuclear envelope) and a
few mitochondria (capsules with a membrane) that touch neither the nucleus,
the plasma membrane nor each other. The density mimics EM mass density:
membranes darkest-stained (highest value), then mitochondria, nucleus,
cytosol, and an empty outside.
"""

from __future__ import annotations

import attrs
import numpy as np

import cellscape as cs

#: Ground-truth label values and names.
CLASS_NAMES = {1: "cytosol", 2: "nucleus", 3: "mitochondrion"}
#: Density of each compartment (arbitrary mass-density units) and of membranes.
DENSITY = {"outside": 0.0, "cytosol": 0.3, "nucleus": 0.5, "mitochondrion": 0.6, "membrane": 1.0}


def _shape3(shape: int | tuple[int, int, int]) -> tuple[int, int, int]:
    return (shape,) * 3 if isinstance(shape, int) else tuple(shape)  # type: ignore[return-value]


def _capsule(grid: tuple[np.ndarray, np.ndarray, np.ndarray], a: np.ndarray, b: np.ndarray, radius: float) -> np.ndarray:
    """Voxels within ``radius`` of the segment a–b (coordinates in voxels, z, y, x)."""
    ab = b - a
    rel = [g - c for g, c in zip(grid, a, strict=True)]
    t = np.clip(sum(r * d for r, d in zip(rel, ab, strict=True)) / float(ab @ ab), 0.0, 1.0)
    dist2 = sum((r - t * d) ** 2 for r, d in zip(rel, ab, strict=True))
    return dist2 <= radius**2


def make_phantom_cell(
    shape: int | tuple[int, int, int] = 64,
    voxel_size_nm: float = 10.0,
    n_mitochondria: int = 4,
    seed: int = 0,
    membrane_thickness_voxels: float = 1.5,
    noise_sigma: float = 0.0,
) -> tuple[cs.Labels, cs.Volume]:
    """Build a phantom cell; returns ``(labels, density)`` on the same grid.

    Parameters
    ----------
    shape : int or (nz, ny, nx)
        Grid size in voxels (each ≥ 24).
    voxel_size_nm : float
        Isotropic voxel size in nm.
    n_mitochondria : int
        Number of mitochondria to place.
    seed : int
        Seed; the same seed gives bit-identical arrays.
    membrane_thickness_voxels : float
        Thickness of every membrane, in voxels.
    noise_sigma : float
        Standard deviation of Gaussian noise added to the density.
    """
    from scipy import ndimage

    nz, ny, nx = _shape3(shape)
    if min(nz, ny, nx) < 24:
        raise cs.InputError(f"generate.phantom_cell: shape {shape} is too small; every axis needs >= 24 voxels")
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(np.arange(nz, dtype=float), np.arange(ny, dtype=float), np.arange(nx, dtype=float),
                       indexing="ij")
    center = np.array([nz, ny, nx], float) / 2 - 0.5 + rng.uniform(-0.02, 0.02, 3) * np.array([nz, ny, nx])
    semi = np.array([0.32 * nz, 0.37 * ny, 0.40 * nx]) * rng.uniform(0.92, 1.0, 3)
    radius = np.sqrt(sum(((g - c) / s) ** 2 for g, c, s in zip(grid, center, semi, strict=True)))
    # a smooth random bulge field makes the outline irregular without creating thin parts
    bulges = ndimage.gaussian_filter(rng.standard_normal((nz, ny, nx)), sigma=min(nz, ny, nx) / 6, mode="wrap")
    bulges *= 0.06 / max(float(np.abs(bulges).max()), 1e-12)
    cell = radius * (1.0 + bulges) <= 1.0

    n_center = center + rng.uniform(-0.06, 0.06, 3) * semi
    n_semi = semi * rng.uniform(0.36, 0.44, 3)
    nucleus = sum(((g - c) / s) ** 2 for g, c, s in zip(grid, n_center, n_semi, strict=True)) <= 1.0

    thickness = membrane_thickness_voxels
    margin = thickness + 1.0
    # where a mitochondrion may lie: inside the cell, away from its membrane and from the nucleus
    free = (ndimage.distance_transform_edt(cell) > margin) & (ndimage.distance_transform_edt(~nucleus) > margin)
    mitochondria = np.zeros((nz, ny, nx), bool)
    mito_radius = max(1.0 + thickness, 0.045 * min(nz, ny, nx))
    placed, attempts = 0, 0
    # a candidate's centre must be far enough from everything for its radius
    centres = np.argwhere(ndimage.distance_transform_edt(free) > mito_radius)
    while placed < n_mitochondria:
        attempts += 1
        if attempts > 300 * max(n_mitochondria, 1) or len(centres) == 0:
            raise cs.InputError(
                f"generate.phantom_cell: could only place {placed} of {n_mitochondria} mitochondria in a "
                f"{nz}x{ny}x{nx} grid; use a larger shape or fewer mitochondria"
            )
        middle = centres[rng.integers(len(centres))].astype(float)
        direction = rng.standard_normal(3)
        direction *= rng.uniform(0.8, 2.0) * mito_radius / np.linalg.norm(direction)
        capsule = _capsule(grid, middle - direction, middle + direction, mito_radius)
        if not capsule.any() or not free[capsule].all():
            continue
        mitochondria |= capsule
        free &= ndimage.distance_transform_edt(~capsule) > margin + 0.5
        centres = np.argwhere(ndimage.distance_transform_edt(free) > mito_radius)
        placed += 1

    labels = np.zeros((nz, ny, nx), np.uint8)
    labels[cell] = 1
    labels[nucleus] = 2
    labels[mitochondria] = 3

    density = np.full((nz, ny, nx), DENSITY["outside"], np.float32)
    density[cell] = DENSITY["cytosol"]
    density[nucleus] = DENSITY["nucleus"]
    density[mitochondria] = DENSITY["mitochondrion"]
    for compartment in (cell, nucleus, mitochondria):
        shell = compartment & (ndimage.distance_transform_edt(compartment) <= thickness)
        density[shell] = DENSITY["membrane"]
    if noise_sigma > 0:
        density += rng.normal(0.0, noise_sigma, density.shape).astype(np.float32)
    spacing = (voxel_size_nm,) * 3
    return cs.Labels(labels, CLASS_NAMES, spacing), cs.Volume(density, spacing)


@attrs.frozen
class PhantomCellParams:
    shape: int | tuple[int, int, int] = cs.param(64, help="grid size in voxels: one number or (nz, ny, nx); each >= 24")
    voxel_size_nm: float = cs.param(10.0, gt=0, unit="nm", help="isotropic voxel size")
    n_mitochondria: int = cs.param(4, ge=0, le=50, help="number of mitochondria")
    seed: int = cs.param(0, help="random seed (same seed, same cell)")
    membrane_thickness_voxels: float = cs.param(1.5, gt=0, le=5, unit="voxel", help="thickness of every membrane")
    noise_sigma: float = cs.param(0.0, ge=0, help="standard deviation of Gaussian noise added to the density")


class PhantomCell(cs.Generator):
    """A synthetic cell (membrane, nucleus, mitochondria) as ground-truth labels and an EM-like density."""

    name = "generate.phantom_cell"
    Params = PhantomCellParams
    outputs = {"labels": cs.Labels, "density": cs.Volume}

    def generate(self) -> dict[str, cs.Artefact]:
        p = self.params
        labels, density = make_phantom_cell(p.shape, p.voxel_size_nm, p.n_mitochondria, p.seed,
                                            p.membrane_thickness_voxels, p.noise_sigma)
        return {"labels": labels, "density": density}
