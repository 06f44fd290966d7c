"""A known whole-cell population (ellipsoid cell and nucleus, spherical organelles) with known parameters.

Shared by tests/plugins/generate/test_gmm.py (parameter recovery) and benchmarks/bench_generative.py.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

import cellscape as cs

VOXEL_NM = 10.0
GRID = (42, 50, 60)
CELL_MEDIAN_VOXELS = np.array([24.0, 20.0, 16.0])  # semi-axes along x, y, z
CELL_LOG_SD = 0.04
NUCLEUS_FRACTION = 0.35  # nucleus semi-axes / cell semi-axes
NUCLEUS_OFFSET = 0.1  # nucleus centre shifted along x by this fraction of the cell's x semi-axis
COUNT_MEAN = 6.0
VOLUME_MEDIAN_VOXELS = 4 / 3 * math.pi * 3.0**3  # spheres of radius 3 voxels
VOLUME_LOG_SD = 0.3
NAMES = {1: "cytosol", 2: "nucleus", 3: "mitochondrion"}


def ellipsoid_mask(shape: tuple[int, ...], centre: np.ndarray, semi: np.ndarray) -> np.ndarray:
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return ((z - centre[0]) / semi[0]) ** 2 + ((y - centre[1]) / semi[1]) ** 2 + ((x - centre[2]) / semi[2]) ** 2 <= 1


def ball_mask(shape: tuple[int, ...], centre: np.ndarray, radius: float) -> tuple[tuple[slice, ...], np.ndarray]:
    """Voxels within ``radius`` of ``centre`` (voxel units): a box of the grid and the mask inside it."""
    low = np.maximum(np.floor(centre - radius).astype(int), 0)
    high = np.minimum(np.ceil(centre + radius).astype(int) + 1, shape)
    box = tuple(slice(a, b) for a, b in zip(low, high, strict=True))
    z, y, x = np.ogrid[box]
    return box, (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius**2


def known_cell(rng: np.random.Generator) -> np.ndarray:
    """One cell of the known population: lognormal ellipsoid cell and nucleus, Poisson count of spheres with
    lognormal volume placed uniformly (2 voxels from the membrane, the nuclear envelope and each other)."""
    semi_xyz = CELL_MEDIAN_VOXELS * np.exp(rng.normal(0, CELL_LOG_SD, 3))
    semi = semi_xyz[::-1]  # z, y, x
    centre = (np.array(GRID) - 1) / 2
    cell = ellipsoid_mask(GRID, centre, semi)
    n_centre = centre + np.array([0, 0, NUCLEUS_OFFSET * semi[2]])
    nucleus = ellipsoid_mask(GRID, n_centre, NUCLEUS_FRACTION * semi * np.exp(rng.normal(0, 0.03, 3)))
    free = (ndimage.distance_transform_edt(cell) > 2) & (ndimage.distance_transform_edt(~nucleus) > 2)
    data = np.where(cell, 1, 0).astype(np.uint8)
    data[nucleus] = 2
    for _ in range(rng.poisson(COUNT_MEAN)):
        radius = (3 * VOLUME_MEDIAN_VOXELS * math.exp(rng.normal(0, VOLUME_LOG_SD)) / (4 * math.pi)) ** (1 / 3)
        candidates = np.argwhere(free)
        for _ in range(1000):
            c = candidates[rng.integers(len(candidates))] + rng.uniform(-0.5, 0.5, 3)
            box, body = ball_mask(GRID, c, radius)
            if body.any() and free[box][body].all():
                break
        else:
            raise AssertionError("the test population could not place its organelles")
        data[box][body] = 3
        keep_out, around = ball_mask(GRID, c, radius + 2.0)
        free[keep_out] &= ~around
    return data


def known_population(n_cells: int, seed: int) -> list[cs.Labels]:
    rng = np.random.default_rng(seed)
    return [cs.Labels(known_cell(rng), NAMES, VOXEL_NM) for _ in range(n_cells)]
