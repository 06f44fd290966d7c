"""``generate.gmm``: a CellOrganizer-style generative model of a whole cell, learned from labels.

What is learned
---------------
Training data are :class:`cellscape.Labels` volumes with named classes (as
``generate.phantom_cell`` writes them: ``cytosol``, ``nucleus``,
``mitochondrion``). A *cell* is a connected region of the cell, nucleus and
organelle classes together (holes filled); several cells may share one
volume. Each organelle is a connected component (26-connectivity) of an
organelle class inside a cell. Then, per the model of Zhao & Murphy
(CellOrganizer), in the cell's own frame:

- **Cell and nucleus** — the cell is summarised by the ellipsoid of equal
  second moments (semi-axes ``a1 ≥ a2 ≥ a3`` in nm and principal directions:
  the *cell frame*, each axis signed so that the nucleus lies on its positive
  side). The nucleus is an ellipsoid aligned with the cell frame: its
  semi-axes along the cell axes and its centre offset, in units of the cell's
  semi-axes. The nine numbers ``log a_cell (3), log a_nucleus (3), offset (3)``
  follow one multivariate Gaussian (a lognormal for the lengths), whose
  covariance is shrunk by Ledoit–Wolf so a few dozen cells suffice. With
  ``cell_shape: spharm`` the cell outline itself is learned too: each training
  cell is expanded in spherical harmonics up to ``spharm_degree`` in its
  principal-axes frame (``generate.spharm``), the coefficient vectors get a
  PCA shape space, and a sampled outline (bulges included) is drawn from it;
  the nucleus is then drawn from the Gaussian *conditioned* on the sampled
  cell's semi-axes. Outlines that are not star-shaped about their centroid
  are filled in by the radial fit (``generate.spharm`` warns).
- **Organelle count** per class — Poisson, or negative binomial when the counts
  are over-dispersed (``count_model: auto`` chooses by the dispersion test:
  ``sum((n - mean)²) / mean`` against χ² with N − 1 degrees of freedom at 5 %).
- **Organelle size and shape** per class — ``log volume`` (lognormal volume)
  and the log aspect ratios ``log(a2/a1)``, ``log(a3/a1)`` of its moment
  ellipsoid, one 3D Gaussian. Sampled organelles are ellipsoids in a uniformly
  random orientation.
- **Organelle position** per class — in normalised cell coordinates: the
  direction ``u`` from the nucleus centre to the organelle centre, in the cell
  frame, and the fraction ``t`` of the way from the nuclear envelope (t = 0) to
  the plasma membrane (t = 1) along that ray. ``(logit t, u)`` follow a
  Gaussian mixture (scikit-learn; number of components by BIC).

Sampling draws a cell and nucleus (an ellipsoid in the training voxel size,
aligned with the grid axes — longest along x — or randomly oriented), a count
per class, then places each organelle by rejection: it must lie more than
``margin_nm`` inside the plasma membrane and outside the nuclear envelope and
more than ``gap_nm`` (at least two voxels) from every other organelle, so no
two organelles overlap or touch and all are inside the cell. An organelle that
does not fit in ``max_attempts`` draws makes the whole cell be redrawn; after
``max_cell_attempts`` cells sampling stops with an error that says what to
relax. Rejection conditions the distributions on "it fits", as in
CellOrganizer; the benchmark (``benchmarks/bench_generative.py``) measures how
far the sampled descriptors stay from the training ones.

The fitted model is a :class:`cellscape.Model` (arrays + JSON, no pickle) and
:meth:`CellGMM.parameters_table` lists every parameter as a :class:`cellscape.Table`.

Using it
--------
Python::

    gmm = cs.method("generate.gmm", organelle_classes=["mitochondrion"])
    gmm.fit([labels_1, labels_2, ...])          # Labels volumes, one or more cells each
    cells = gmm.sample(20, seed=1)              # list of Labels (cytosol, nucleus, organelles)
    gmm.save("cell_model.npz"); gmm.parameters_table()

In a spec (see ``spec/examples/synthetic_cells.yaml``) ``generate.gmm`` takes
``training`` labels or a trained ``model`` and returns one sampled cell
(``labels``), its organelle ``instances``, the ``model`` and the
``parameters`` table; chain ``mesh.marching_cubes → mesh.improve →
mesh.tetrahedralize`` to get simulation meshes.

Exporting sampled cells to simulators
-------------------------------------
- **MCell / CellBlender**: ``cs.write(surface, "cell.mdl")`` writes the surface
  mesh as an MDL ``POLYGON_LIST`` in µm with one named surface region per
  marker (plasma membrane, nuclear envelope, each organelle class).
- **FEM solvers**: ``cs.write(tet_mesh, "cell.vtu")`` or ``"cell.xdmf"`` (region
  and boundary markers kept) for FEniCS/DOLFINx, scikit-fem or ParaView.
- **Virtual Cell (VCell)**: the simplest route is the label image itself —
  ``cs.write(labels, "cell.tif")`` — imported as an *image geometry* from a
  pre-segmented image: each distinct pixel value (0 outside, 1 cytosol,
  2 nucleus, 3… organelles) becomes a subvolume you map to a compartment; set
  the voxel size (nm) shown in the TIFF's metadata as the geometry's extent.
  A closed surface (``cs.write(surface, "cell.stl")``, one object per file) can
  instead be imported as a *geometry from surface*, which VCell samples on its
  own grid.
- **SBML spatial** (libSBML's ``spatial`` package, e.g. for VCell or
  Smoldyn-based tools): the label array is a ``SampledFieldGeometry`` — a
  ``SampledField`` holding the labels (z, y, x order, uncompressed integers)
  and one ``SampledVolume`` per compartment whose ``sampledValue`` is the label
  value; the domain's extent is the grid shape times ``voxel_size_nm``.
  Alternatively a ``ParametricGeometry`` takes the surface mesh: vertices as
  ``SpatialPoints`` (x, y, z, convert nm to the model's length unit) and each
  marker's triangles as one ``ParametricObject``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

import cellscape as cs

FORMAT = "cellscape-cell-gmm-1"
#: Fewest training cells the model accepts (nine correlated cell/nucleus numbers need a population).
MIN_CELLS = 5
#: Fewest organelles of a class (over all training cells) for its size and position models.
MIN_ORGANELLES = 5
#: Cell/nucleus feature names, in the order of the Gaussian.
CELL_FEATURES = ("log_cell_a1", "log_cell_a2", "log_cell_a3", "log_nucleus_a1", "log_nucleus_a2", "log_nucleus_a3",
                 "nucleus_offset_1", "nucleus_offset_2", "nucleus_offset_3")
SIZE_FEATURES = ("log_volume", "log_a2_over_a1", "log_a3_over_a1")
POSITION_FEATURES = ("logit_t", "u1", "u2", "u3")
_T_CLIP = 0.01


@attrs.frozen
class CellGMMParams:
    cell_class: str = cs.param("cytosol", help="class name of the cell body (cytoplasm, with its plasma membrane)")
    nucleus_class: str = cs.param("nucleus", help="class name of the nucleus (one per cell)")
    organelle_classes: list[str] = cs.param(["mitochondrion"], help="class names of the organelles to model")
    count_model: str = cs.param("auto", choices=("auto", "poisson", "negative_binomial"),
                                help="organelle count distribution; auto: negative binomial when over-dispersed")
    cell_shape: str = cs.param("ellipsoid", choices=("ellipsoid", "spharm"),
                               help="cell outline: its moment ellipsoid, or spherical harmonics from a PCA shape space "
                                    "(generate.spharm) with the nucleus conditioned on the sampled cell's semi-axes")
    spharm_degree: int = cs.param(8, ge=1, le=32, help="degree of the cell's spherical-harmonic expansion (cell_shape: "
                                                       "spharm)")
    max_position_components: int = cs.param(4, ge=1, le=16,
                                            help="most Gaussian components of the position model (chosen by BIC)")
    orientation: str = cs.param("aligned", choices=("aligned", "random"),
                                help="sampled cell frame: aligned (longest axis along x, shortest along z) or random")
    margin_nm: float = cs.param(20.0, ge=0, unit="nm",
                                help="organelles and nucleus stay more than this inside the plasma membrane; "
                                     "organelles more than this outside the nuclear envelope")
    gap_nm: float = cs.param(20.0, ge=0, unit="nm",
                             help="smallest distance between two organelles (at least two voxels)")
    padding_voxels: int = cs.param(3, ge=1, le=64, unit="voxel", help="empty voxels around a sampled cell")
    max_attempts: int = cs.param(200, ge=1, le=100_000, help="placement draws per organelle before the cell is redrawn")
    max_cell_attempts: int = cs.param(20, ge=1, le=10_000, help="cells redrawn before sampling fails with an error")
    seed: int = cs.param(0, ge=0, help="random seed of fitting (mixtures) and of the sampled cell")
    phantom_training_cells: int = cs.param(
        0, ge=0, le=1000,
        help="with no 'training' or 'model' input: fit on this many generate.phantom_cell cells (seeds 0, 1, ...)")
    phantom_mitochondria: list[int] = cs.param([2, 3, 4, 5, 6], ge=0, le=50,
                                               help="mitochondria of the phantom training cells, used in turn")


# ------------------------------------------------------------------------------------------------ geometry helpers


def moment_ellipsoid(points_nm: np.ndarray, voxel_size_nm: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ellipsoid with the second moments of a voxelised solid.

    Parameters
    ----------
    points_nm : ndarray, shape (n, 3)
        Voxel centres (z, y, x) in nm.
    voxel_size_nm : (3,) floats
        Voxel edges in nm; each voxel adds the variance of a uniform cube (v²/12).

    Returns
    -------
    centre : ndarray, shape (3,)
        Centroid (z, y, x) in nm.
    semi_axes : ndarray, shape (3,)
        Semi-axes in nm, descending (a solid ellipsoid has variance a²/5 along an axis).
    axes : ndarray, shape (3, 3)
        Unit principal directions as columns (z, y, x components), in the order of ``semi_axes``.
    """
    centre = points_nm.mean(axis=0)
    offsets = points_nm - centre
    covariance = offsets.T @ offsets / len(points_nm) + np.diag(np.square(voxel_size_nm) / 12.0)
    values, vectors = np.linalg.eigh(covariance)
    order = np.argsort(values)[::-1]
    return centre, np.sqrt(5.0 * np.maximum(values[order], 0.0)), vectors[:, order]


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A rotation matrix drawn uniformly (Haar measure) from SO(3)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def exit_distance(mask: np.ndarray, origin_nm: np.ndarray, directions: np.ndarray,
                  voxel_size_nm: Sequence[float]) -> np.ndarray:
    """Distance from ``origin_nm`` along each unit direction to the first voxel outside ``mask``, in nm.

    ``mask`` is (nz, ny, nx) bool with voxel ``[k, j, i]`` centred at ``(k, j, i) * voxel_size_nm``;
    ``directions`` is (n, 3) unit vectors (z, y, x). The ray is sampled every half of the smallest voxel edge.
    """
    from scipy import ndimage

    spacing = np.asarray(voxel_size_nm, float)
    step = 0.5 * float(spacing.min())
    length = float(np.linalg.norm(np.asarray(mask.shape) * spacing))
    distances = np.arange(0.0, length + step, step)
    points = origin_nm[None, None, :] + distances[None, :, None] * directions[:, None, :]
    inside = ndimage.map_coordinates(mask.astype(np.uint8), (points / spacing).reshape(-1, 3).T, order=0,
                                     mode="constant", cval=0).reshape(len(directions), len(distances))
    first_out = np.argmin(inside, axis=1)  # the first 0; rays start inside so it is never index 0 unless outside
    return np.maximum(first_out - 0.5, 0.0) * step


def _ellipsoid_mask(shape: tuple[int, ...], voxel_size_nm: np.ndarray, centre_nm: np.ndarray, semi_axes_nm: np.ndarray,
                    frame: np.ndarray) -> tuple[tuple[slice, ...], np.ndarray] | None:
    """Voxels of an ellipsoid: its bounding box in the grid and the mask within it, or None when the box leaves the grid."""
    half = np.sqrt(((frame * semi_axes_nm[None, :]) ** 2).sum(axis=1))  # half extent along z, y, x
    low = np.floor((centre_nm - half) / voxel_size_nm).astype(int)
    high = np.ceil((centre_nm + half) / voxel_size_nm).astype(int) + 1
    if (low < 0).any() or (high > np.asarray(shape)).any():
        return None
    box = tuple(slice(lo, hi) for lo, hi in zip(low, high, strict=True))
    axes = [np.arange(lo, hi) * v - c for lo, hi, v, c in zip(low, high, voxel_size_nm, centre_nm, strict=True)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    local = grid @ frame  # coordinates along the ellipsoid's axes
    return box, (np.square(local / semi_axes_nm).sum(axis=-1) <= 1.0)


# ------------------------------------------------------------------------------------------------ training data


@attrs.frozen
class CellMeasurements:
    """What the model learns from one training cell (lengths in nm, positions in the cell frame)."""

    cell_features: np.ndarray  # (9,) CELL_FEATURES
    counts: dict[str, int]
    sizes: dict[str, np.ndarray]  # class -> (n, 3) SIZE_FEATURES
    positions: dict[str, np.ndarray]  # class -> (n, 4) POSITION_FEATURES
    sh_coefficients: np.ndarray | None = None  # ((L + 1)²,) nm, in the cell's principal-axes frame


def _class_values(labels: cs.Labels, name: str, role: str, who: str) -> list[int]:
    values = [v for v, n in labels.class_names.items() if n == name]
    if not values:
        known = ", ".join(repr(n) for n in sorted(set(labels.class_names.values()))) or "none"
        raise cs.InputError(f"{who}: the training labels have no class named {name!r} (the {role}); their classes are "
                            f"{known}: set '{role}_class{'es' if role == 'organelle' else ''}' to one of them")
    return values


def measure_cells(labels: cs.Labels, cell_class: str, nucleus_class: str, organelle_classes: Sequence[str],
                  who: str = "generate.gmm", spharm_degree: int | None = None) -> list[CellMeasurements]:
    """Measure every cell of a labels volume for the model (see the module docstring).

    With ``spharm_degree`` the cell outline is also expanded in spherical harmonics (``generate.spharm``'s
    ``fit_shape``: centroid, principal axes, no scaling).

    Raises :class:`cellscape.InputError` for an unknown class name, a cell touching the volume border or a
    cell without a nucleus.
    """
    from scipy import ndimage

    data = np.asarray(labels.data)
    spacing = np.asarray(labels.voxel_size_nm, float)
    cell_values = _class_values(labels, cell_class, "cell", who)
    nucleus_values = _class_values(labels, nucleus_class, "nucleus", who)
    organelle_values = {name: _class_values(labels, name, "organelle", who) for name in organelle_classes}
    every = cell_values + nucleus_values + [v for vs in organelle_values.values() for v in vs]
    full = np.ones((3, 3, 3), bool)
    cells, n_cells = ndimage.label(ndimage.binary_fill_holes(np.isin(data, every)), structure=full)
    measured = []
    for index, box in enumerate(ndimage.find_objects(cells), start=1):
        if any(s.start == 0 or s.stop == n for s, n in zip(box, data.shape, strict=True)):
            raise cs.InputError(
                f"{who}: training cell {index} of {n_cells} touches the volume border (bounding box "
                f"{[(s.start, s.stop) for s in box]} in a {data.shape} grid), so its shape is cut; crop the volume "
                "with a margin around each cell or drop the cells at the border")
        grown = tuple(slice(s.start - 1, s.stop + 1) for s in box)
        cell = cells[grown] == index
        local = data[grown]
        nucleus_all = cell & np.isin(local, nucleus_values)
        parts, n_parts = ndimage.label(nucleus_all, structure=full)
        if n_parts == 0:
            raise cs.InputError(f"{who}: training cell {index} has no {nucleus_class!r} voxels; every training cell "
                                "needs a nucleus (remove cells without one)")
        nucleus = parts == 1 + int(np.argmax(ndimage.sum_labels(nucleus_all, parts, range(1, n_parts + 1))))
        offset = np.array([s.start for s in grown], float) * spacing
        c_centre, c_semi, frame = moment_ellipsoid(np.argwhere(cell) * spacing + offset, spacing)
        nucleus_points = np.argwhere(nucleus) * spacing + offset
        n_centre = nucleus_points.mean(axis=0)
        frame = frame * np.where(frame.T @ (n_centre - c_centre) < 0, -1.0, 1.0)[None, :]
        along = (nucleus_points - n_centre) @ frame
        n_semi = np.sqrt(5.0 * (np.mean(along**2, axis=0) + (np.square(spacing) @ np.square(frame)) / 12.0))
        cell_features = np.concatenate([np.log(c_semi), np.log(n_semi), frame.T @ (n_centre - c_centre) / c_semi])
        counts, sizes, positions = {}, {}, {}
        local_origin_nm = offset
        for name, values in organelle_values.items():
            objects, n_objects = ndimage.label(cell & np.isin(local, values), structure=full)
            counts[name] = n_objects
            size_rows, centres = [], []
            for k in range(1, n_objects + 1):
                points = np.argwhere(objects == k) * spacing + offset
                centre, semi, _ = moment_ellipsoid(points, spacing)
                volume = len(points) * float(np.prod(spacing))
                size_rows.append([math.log(volume), math.log(semi[1] / semi[0]), math.log(semi[2] / semi[0])])
                centres.append(centre)
            sizes[name] = np.asarray(size_rows, float).reshape(-1, 3)
            if centres:
                rays = np.asarray(centres) - n_centre
                reach = np.linalg.norm(rays, axis=1)
                directions = rays / np.maximum(reach, 1e-9)[:, None]
                start = n_centre - local_origin_nm
                nucleus_exit = exit_distance(nucleus, start, directions, spacing)
                cell_exit = exit_distance(cell, start, directions, spacing)
                t = (reach - nucleus_exit) / np.maximum(cell_exit - nucleus_exit, 1e-9)
                t = np.clip(t, _T_CLIP, 1.0 - _T_CLIP)
                positions[name] = np.column_stack([np.log(t / (1.0 - t)), directions @ frame])
            else:
                positions[name] = np.zeros((0, 4))
        coefficients = None
        if spharm_degree is not None:
            from ._shapes import shapes_from_labels
            from .spharm import fit_shape

            outline = cs.Labels(cell.astype(np.uint8), {1: "cell"}, tuple(spacing), tuple(offset))
            shape = shapes_from_labels(outline, [1], who=who)[0]
            coefficients = fit_shape(shape, spharm_degree, align=True, scale="none", who=who).coefficients
        measured.append(CellMeasurements(cell_features, counts, sizes, positions, coefficients))
    return measured


def phantom_population(n_cells: int, mitochondria: Sequence[int], shape: int = 64,
                       voxel_size_nm: float = 10.0) -> list[cs.Labels]:
    """Labels of ``n_cells`` ``generate.phantom_cell`` cells (seeds 0..n-1, mitochondria counts used in turn)."""
    from .phantom_cell import make_phantom_cell

    counts = list(mitochondria) or [4]
    return [make_phantom_cell(shape, voxel_size_nm, counts[i % len(counts)], seed=i)[0] for i in range(n_cells)]


# ------------------------------------------------------------------------------------------------ distributions


def _fit_gaussian(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and Ledoit–Wolf-shrunk covariance of (n, d) features (each feature standardised before shrinking)."""
    from sklearn.covariance import LedoitWolf

    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    shrunk = LedoitWolf().fit((features - mean) / scale).covariance_
    return mean, shrunk * np.outer(scale, scale)


def _fit_counts(counts: np.ndarray, choice: str) -> dict[str, Any]:
    """Poisson or negative-binomial count model (method of moments) with the dispersion test."""
    from scipy import stats

    mean = float(counts.mean())
    variance = float(counts.var(ddof=1)) if len(counts) > 1 else mean
    statistic = float(((counts - mean) ** 2).sum() / mean) if mean > 0 else 0.0
    p_value = float(stats.chi2.sf(statistic, len(counts) - 1)) if mean > 0 else 1.0
    over = variance > mean and p_value < 0.05
    distribution = {"auto": "negative_binomial" if over else "poisson"}.get(choice, choice)
    model = {"distribution": distribution, "mean": mean, "variance": variance, "dispersion_p_value": p_value}
    if distribution == "negative_binomial":
        if variance <= mean:
            raise cs.InputError(f"generate.gmm: the organelle counts are not over-dispersed (variance {variance:.3g} <= "
                                f"mean {mean:.3g}); a negative binomial cannot fit them: use count_model 'poisson' or 'auto'")
        r = mean**2 / (variance - mean)
        model.update(r=r, p=r / (r + mean))
    return model


def _fit_mixture(features: np.ndarray, max_components: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian mixture (full covariances) with the number of components chosen by BIC; (weights, means, covariances)."""
    from sklearn.mixture import GaussianMixture

    most = max(1, min(max_components, len(features) // 10))
    best, best_bic = None, math.inf
    for k in range(1, most + 1):
        mixture = GaussianMixture(k, covariance_type="full", reg_covar=1e-4, random_state=seed).fit(features)
        bic = mixture.bic(features)
        if bic < best_bic:
            best, best_bic = mixture, bic
    assert best is not None
    return best.weights_, best.means_, best.covariances_


def _draw_count(model: dict[str, Any], rng: np.random.Generator) -> int:
    if model["distribution"] == "negative_binomial":
        return int(rng.negative_binomial(model["r"], model["p"]))
    return int(rng.poisson(model["mean"]))


def _draw_mixture(weights: np.ndarray, means: np.ndarray, covariances: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    k = int(rng.choice(len(weights), p=weights / weights.sum()))
    return rng.multivariate_normal(means[k], covariances[k])


# ------------------------------------------------------------------------------------------------ the method


class CellGMM(cs.Generator):
    """Generative cell model (CellOrganizer-style): ellipsoid cell and nucleus, organelle counts, sizes, positions."""

    name = "generate.gmm"
    Params = CellGMMParams
    inputs = {
        "training": cs.Port(cs.Labels, optional=True, help="labels of one or more training cells (named classes)"),
        "model": cs.Port(cs.Model, optional=True, help="a trained generate.gmm model to sample from"),
    }
    outputs = {
        "labels": cs.Port(cs.Labels, help="one sampled cell: cytosol, nucleus and organelle classes"),
        "instances": cs.Port(cs.Labels, help="the sampled organelles, one label value each"),
        "model": cs.Model,
        "parameters": cs.Port(cs.Table, help="every fitted parameter"),
    }

    def __init__(self, params: Any = None, **values: Any):
        super().__init__(params, **values)
        self.model: cs.Model | None = None

    # -- the stage call -------------------------------------------------------------------------------------------

    def generate(self, training: cs.Labels | None = None, model: cs.Model | None = None) -> dict[str, cs.Artefact]:
        p = self.params
        if training is not None and model is not None:
            raise cs.InputError(f"{self.name}: give 'training' labels to fit a model or a trained 'model', not both")
        if model is not None:
            self.load(model)
        elif training is not None:
            self.fit(training)
        elif p.phantom_training_cells > 0:
            self.fit(phantom_population(p.phantom_training_cells, p.phantom_mitochondria))
        else:
            raise cs.InputError(f"{self.name}: give 'training' labels, a trained 'model', or set "
                                "'phantom_training_cells' to fit on synthetic phantom cells")
        labels, instances = self.sample_with_instances(1, p.seed)[0]
        assert self.model is not None
        return {"labels": labels, "instances": instances, "model": self.model, "parameters": self.parameters_table()}

    # -- fitting --------------------------------------------------------------------------------------------------

    def fit(self, training: cs.Labels | Sequence[cs.Labels]) -> cs.Model:
        """Learn the model from labels of training cells; returns (and keeps) the :class:`cellscape.Model`.

        Parameters
        ----------
        training : Labels or sequence of Labels
            Volumes holding whole cells (not touching the border) with the classes named by the parameters;
            all with the same voxel size (nm).
        """
        from sklearn import __version__ as sklearn_version

        p = self.params
        volumes = [training] if isinstance(training, cs.Labels) else list(training)
        if not volumes:
            raise cs.InputError(f"{self.name}: no training labels given")
        spacing = volumes[0].voxel_size_nm
        if any(not np.allclose(v.voxel_size_nm, spacing, rtol=1e-6) for v in volumes):
            raise cs.InputError(f"{self.name}: training volumes have different voxel sizes "
                                f"{sorted({v.voxel_size_nm for v in volumes})}; resample them to one voxel size")
        degree = p.spharm_degree if p.cell_shape == "spharm" else None
        cells = [m for v in volumes
                 for m in measure_cells(v, p.cell_class, p.nucleus_class, p.organelle_classes, self.name, degree)]
        if len(cells) < MIN_CELLS:
            raise cs.InputError(f"{self.name}: {len(cells)} training cell(s) found, too few to fit the model; give at "
                                f"least {MIN_CELLS} cells (each a connected region of the cell classes)")
        arrays: dict[str, np.ndarray] = {}
        cell_features = np.stack([c.cell_features for c in cells])
        arrays["cell_mean"], arrays["cell_covariance"] = _fit_gaussian(cell_features)
        arrays["cell_training_features"] = cell_features
        if degree is not None:
            from .spharm import ShapeSpace

            space = ShapeSpace.fit(np.stack([c.sh_coefficients for c in cells]), who=self.name)
            arrays["cell_sh_mean"], arrays["cell_sh_components"] = space.mean, space.components
            arrays["cell_sh_variances"] = space.variances
        count_models = {}
        for name in p.organelle_classes:
            counts = np.array([c.counts[name] for c in cells], float)
            arrays[f"{name}/training_counts"] = counts.astype(np.int64)
            count_models[name] = _fit_counts(counts, p.count_model)
            if counts.sum() == 0:
                continue
            if counts.sum() < MIN_ORGANELLES:
                raise cs.InputError(f"{self.name}: only {int(counts.sum())} {name!r} object(s) in {len(cells)} training "
                                    f"cells, too few to fit their size and position; give cells holding at least "
                                    f"{MIN_ORGANELLES} in total, or drop {name!r} from 'organelle_classes'")
            sizes = np.concatenate([c.sizes[name] for c in cells])
            positions = np.concatenate([c.positions[name] for c in cells])
            arrays[f"{name}/size_mean"], arrays[f"{name}/size_covariance"] = _fit_gaussian(sizes)
            weights, means, covariances = _fit_mixture(positions, p.max_position_components, p.seed)
            arrays[f"{name}/position_weights"] = weights
            arrays[f"{name}/position_means"] = means
            arrays[f"{name}/position_covariances"] = covariances
            arrays[f"{name}/training_sizes"] = sizes
        names = [p.cell_class, p.nucleus_class, *p.organelle_classes]
        meta = {
            "format": FORMAT,
            "cell_shape": p.cell_shape, "spharm_degree": degree,
            "voxel_size_nm": list(spacing),
            "class_values": {name: value for value, name in enumerate(names, start=1)},
            "cell_class": p.cell_class, "nucleus_class": p.nucleus_class,
            "organelle_classes": list(p.organelle_classes),
            "count_models": count_models,
            "n_training_cells": len(cells),
            "cell_features": list(CELL_FEATURES), "size_features": list(SIZE_FEATURES),
            "position_features": list(POSITION_FEATURES),
            "seed": p.seed,
            "sklearn_version": sklearn_version,
        }
        self.model = cs.Model(self.name, arrays, meta)
        return self.model

    # -- sampling -------------------------------------------------------------------------------------------------

    def sample(self, n: int, seed: int = 0) -> list[cs.Labels]:
        """``n`` sampled cells as Labels (classes as in training: cell, nucleus, organelles), reproducible by ``seed``."""
        return [labels for labels, _ in self.sample_with_instances(n, seed)]

    def sample_with_instances(self, n: int, seed: int = 0) -> list[tuple[cs.Labels, cs.Labels]]:
        """Like :meth:`sample`, each cell with a second Labels holding one value per organelle (1, 2, ...)."""
        model = self._require_model()
        rng = np.random.default_rng(seed)
        return [self._sample_cell(model, rng) for _ in range(n)]

    def _sample_cell(self, model: cs.Model, rng: np.random.Generator) -> tuple[cs.Labels, cs.Labels]:
        from scipy import ndimage

        p = self.params
        meta, arrays = model.meta, model.arrays
        spacing = np.asarray(meta["voxel_size_nm"], float)
        values = meta["class_values"]
        gap = max(p.gap_nm, 1.75 * float(spacing.max()))  # > √3 voxels: 26-connected labelling keeps them apart
        for _ in range(p.max_cell_attempts):
            if p.orientation == "aligned":
                frame = np.eye(3)[:, [2, 1, 0]]  # frame axes 1, 2, 3 along x, y, z
            else:
                frame = random_rotation(rng)
            frame = frame * rng.choice([-1.0, 1.0], 3)[None, :]
            drawn = self._draw_cell(model, rng, frame, spacing)
            if drawn is None:
                continue
            cell, centre, cell_semi, nucleus_semi, offset = drawn
            shape = cell.shape
            nucleus_centre = centre + frame @ (offset * cell_semi)
            nucleus_part = _ellipsoid_mask(shape, spacing, nucleus_centre, nucleus_semi, frame)
            if nucleus_part is None or not nucleus_part[1].any():
                continue
            nucleus = np.zeros(shape, bool)
            nucleus[nucleus_part[0]] = nucleus_part[1]
            depth = ndimage.distance_transform_edt(cell, sampling=spacing)
            if not (depth[nucleus] > p.margin_nm).all():
                continue
            free = (depth > p.margin_nm) & (ndimage.distance_transform_edt(~nucleus, sampling=spacing) > p.margin_nm)
            placed = self._place_organelles(model, rng, free, cell, nucleus, nucleus_centre, frame, spacing, gap)
            if placed is None:
                continue
            data = np.zeros(shape, np.uint8)
            data[cell] = values[meta["cell_class"]]
            data[nucleus] = values[meta["nucleus_class"]]
            instances = np.zeros(shape, np.uint16)
            instance_names = {}
            for number, (name, box, mask) in enumerate(placed, start=1):
                data[box][mask] = values[name]
                instances[box][mask] = number
                instance_names[number] = f"{name} {number}"
            origin = tuple(-centre)  # the cell centre at 0 nm
            class_names = {v: k for k, v in values.items()}
            return (cs.Labels(data, class_names, tuple(spacing), origin),
                    cs.Labels(instances, instance_names, tuple(spacing), origin))
        counts = {name: int(arrays[f"{name}/training_counts"].max()) for name in meta["organelle_classes"]}
        raise cs.InputError(
            f"{self.name}: could not sample a cell with all its organelles placed after {p.max_cell_attempts} cells x "
            f"{p.max_attempts} placement draws (the most per training cell: {counts}); lower 'margin_nm' "
            f"({p.margin_nm:g} nm) or 'gap_nm' ({p.gap_nm:g} nm), raise 'max_attempts' or 'max_cell_attempts', "
            "or check that the training organelles fit inside their cells")

    def _draw_cell(self, model: cs.Model, rng: np.random.Generator, frame: np.ndarray, spacing: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """A cell mask on its own grid, its centre (nm), semi-axes along the frame, nucleus semi-axes and offset."""
        arrays, pad = model.arrays, self.params.padding_voxels
        mean, covariance = arrays["cell_mean"], arrays["cell_covariance"]
        if model.meta.get("cell_shape", "ellipsoid") == "ellipsoid":
            features = rng.multivariate_normal(mean, covariance)
            cell_semi = np.exp(features[:3])
            half = np.sqrt(((frame * cell_semi[None, :]) ** 2).sum(axis=1))
            shape = tuple(int(n) for n in np.ceil(2 * half / spacing) + 2 * pad + 1)
            centre = (np.asarray(shape) - 1) / 2 * spacing
            part = _ellipsoid_mask(shape, spacing, centre, cell_semi, frame)
            if part is None:
                return None
            cell = np.zeros(shape, bool)
            cell[part[0]] = part[1]
            return cell, centre, cell_semi, np.exp(features[3:6]), features[6:]
        from ._harmonics import evaluate, icosphere
        from .spharm import ShapeSpace

        space = ShapeSpace(arrays["cell_sh_mean"], arrays["cell_sh_components"], arrays["cell_sh_variances"])
        coefficients = space.sample(1, int(rng.integers(2**62)))[0]
        directions = np.asarray(icosphere(3)[0])
        radius = evaluate(coefficients, directions)
        if radius.min() <= 0:
            return None  # a self-intersecting outline: draw again
        # the expansion's x, y, z are the frame's axes 1, 2, 3; image offsets (z, y, x) = frame @ local
        half = np.abs((directions * radius[:, None]) @ frame.T).max(axis=0) * 1.05 + spacing
        shape = tuple(int(n) for n in np.ceil(2 * half / spacing) + 2 * pad + 1)
        centre = (np.asarray(shape) - 1) / 2 * spacing
        axes = [np.arange(n) * v - c for n, v, c in zip(shape, spacing, centre, strict=True)]
        local = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3) @ frame
        distance = np.linalg.norm(local, axis=1)
        cell = distance <= 0.97 * radius.min()
        unsure = (distance > 0.97 * radius.min()) & (distance <= 1.03 * radius.max())
        cell[unsure] = distance[unsure] <= evaluate(coefficients, local[unsure] / distance[unsure, None])
        cell = cell.reshape(shape)
        points = local[cell.ravel()]
        cell_semi = np.sqrt(5.0 * (np.mean((points - points.mean(axis=0)) ** 2, axis=0)
                                   + (np.square(spacing) @ np.square(frame)) / 12.0))
        # the nucleus given the cell: the Gaussian of the nucleus features conditioned on the log cell semi-axes
        gain = covariance[3:, :3] @ np.linalg.inv(covariance[:3, :3])
        conditional_mean = mean[3:] + gain @ (np.log(cell_semi) - mean[:3])
        conditional_cov = covariance[3:, 3:] - gain @ covariance[:3, 3:]
        nucleus = rng.multivariate_normal(conditional_mean, 0.5 * (conditional_cov + conditional_cov.T))
        return cell, centre + frame @ points.mean(axis=0), cell_semi, np.exp(nucleus[:3]), nucleus[3:]

    def _place_organelles(self, model: cs.Model, rng: np.random.Generator, free: np.ndarray, cell: np.ndarray,
                          nucleus: np.ndarray, nucleus_centre: np.ndarray, frame: np.ndarray, spacing: np.ndarray,
                          gap: float) -> list[tuple[str, tuple[slice, ...], np.ndarray]] | None:
        """Organelles as (class, box, mask) placed by rejection in ``free`` (updated), or None when one does not fit."""
        from scipy import ndimage

        arrays, meta = model.arrays, model.meta
        placed = []
        for name in meta["organelle_classes"]:
            count = _draw_count(meta["count_models"][name], rng)
            if count == 0:
                continue
            size_mean, size_cov = arrays[f"{name}/size_mean"], arrays[f"{name}/size_covariance"]
            mixture = (arrays[f"{name}/position_weights"], arrays[f"{name}/position_means"],
                       arrays[f"{name}/position_covariances"])
            for _ in range(count):
                for _ in range(self.params.max_attempts):
                    size = rng.multivariate_normal(size_mean, size_cov)
                    ratios = np.exp(np.minimum(size[1:], 0.0))
                    a1 = (3.0 * math.exp(size[0]) / (4.0 * math.pi * ratios[0] * ratios[1])) ** (1.0 / 3.0)
                    semi = np.array([a1, a1 * ratios[0], a1 * ratios[1]])
                    position = _draw_mixture(*mixture, rng)
                    t = 1.0 / (1.0 + math.exp(-position[0]))
                    direction = frame @ position[1:]
                    direction /= max(float(np.linalg.norm(direction)), 1e-12)
                    inner = exit_distance(nucleus, nucleus_centre, direction[None], spacing)[0]
                    outer = exit_distance(cell, nucleus_centre, direction[None], spacing)[0]
                    centre = nucleus_centre + direction * (inner + t * (outer - inner))
                    part = _ellipsoid_mask(free.shape, spacing, centre, semi, random_rotation(rng))
                    if part is None or not part[1].any() or not free[part[0]][part[1]].all():
                        continue
                    box, mask = part
                    placed.append((name, box, mask))
                    # keep the next organelles more than `gap` away: distance to this one, computed around it only
                    reach = np.ceil(gap / spacing).astype(int) + 1
                    around = tuple(slice(max(s.start - r, 0), min(s.stop + r, n))
                                   for s, r, n in zip(box, reach, free.shape, strict=True))
                    body = np.zeros(free[around].shape, bool)
                    inner_box = tuple(slice(s.start - a.start, s.stop - a.start) for s, a in zip(box, around, strict=True))
                    body[inner_box] = mask
                    free[around] &= ndimage.distance_transform_edt(~body, sampling=spacing) > gap
                    break
                else:
                    return None
        return placed

    # -- the parameters as a table --------------------------------------------------------------------------------

    def parameters_table(self) -> cs.Table:
        """Every fitted parameter: columns component, parameter, distribution, value, unit (long format)."""
        model = self._require_model()
        arrays, meta = model.arrays, model.meta
        rows: list[tuple[str, str, str, float, str]] = []
        mean, sd = arrays["cell_mean"], np.sqrt(np.diag(arrays["cell_covariance"]))
        for i, feature in enumerate(CELL_FEATURES):
            component = meta["cell_class"] if feature.startswith("log_cell") else meta["nucleus_class"]
            if feature.startswith("log_"):
                axis = feature.rsplit("_", 1)[1]
                rows.append((component, f"semi_axis_{axis}_median", "lognormal", float(np.exp(mean[i])), "nm"))
                rows.append((component, f"semi_axis_{axis}_log_sd", "lognormal", float(sd[i]), ""))
            else:
                rows.append((component, f"{feature}_mean", "normal", float(mean[i]), "cell semi-axis"))
                rows.append((component, f"{feature}_sd", "normal", float(sd[i]), "cell semi-axis"))
        if meta.get("cell_shape") == "spharm":
            rows.append((meta["cell_class"], "spharm_degree", "spherical_harmonics", float(meta["spharm_degree"]), ""))
            rows.append((meta["cell_class"], "shape_space_modes", "gaussian_pca",
                         float(len(arrays["cell_sh_variances"])), ""))
        for name in meta["organelle_classes"]:
            counts = meta["count_models"][name]
            distribution = counts["distribution"]
            rows.append((name, "count_mean", distribution, counts["mean"], "per cell"))
            rows.append((name, "count_variance", distribution, counts["variance"], "per cell"))
            rows.append((name, "count_dispersion_p_value", "chi2", counts["dispersion_p_value"], ""))
            if distribution == "negative_binomial":
                rows.append((name, "count_r", distribution, counts["r"], ""))
                rows.append((name, "count_p", distribution, counts["p"], ""))
            if f"{name}/size_mean" not in arrays:
                continue
            size_mean = arrays[f"{name}/size_mean"]
            size_sd = np.sqrt(np.diag(arrays[f"{name}/size_covariance"]))
            rows.append((name, "volume_median", "lognormal", float(np.exp(size_mean[0])), "nm^3"))
            rows.append((name, "volume_log_sd", "lognormal", float(size_sd[0]), ""))
            for i, ratio in ((1, "a2_over_a1"), (2, "a3_over_a1")):
                rows.append((name, f"{ratio}_median", "lognormal", float(np.exp(size_mean[i])), ""))
                rows.append((name, f"{ratio}_log_sd", "lognormal", float(size_sd[i]), ""))
            weights = arrays[f"{name}/position_weights"]
            rows.append((name, "position_components", "gaussian_mixture", float(len(weights)), ""))
            for k, (w, m) in enumerate(zip(weights, arrays[f"{name}/position_means"], strict=True)):
                rows.append((name, f"position_{k}_weight", "gaussian_mixture", float(w), ""))
                rows.append((name, f"position_{k}_t_median", "gaussian_mixture", float(1 / (1 + np.exp(-m[0]))),
                             "nucleus to membrane"))
        columns = list(zip(*rows, strict=True))
        return cs.Table({"component": np.array(columns[0]), "parameter": np.array(columns[1]),
                         "distribution": np.array(columns[2]), "value": np.array(columns[3], float),
                         "unit": np.array(columns[4])}, title=f"{self.name} parameters")

    # -- saving and loading ---------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the fitted model (a :class:`cellscape.Model`) to a cellscape file, e.g. ``cell_model.npz``."""
        return cs.write(self._require_model(), path)

    def load(self, source: str | Path | cs.Model) -> CellGMM:
        """Use a fitted model: a :class:`cellscape.Model` or a file written by :meth:`save`."""
        model = source if isinstance(source, cs.Model) else cs.read(source)
        if not isinstance(model, cs.Model):
            raise cs.InputError(f"{source}: holds a {type(model).__name__}, not a trained model")
        model.require(self.name)
        if model.meta.get("format") != FORMAT or "cell_mean" not in model.arrays:
            raise cs.InputError(f"{self.name}: the model is not a {FORMAT} model")
        self.model = model
        return self

    def _require_model(self) -> cs.Model:
        if self.model is None:
            raise cs.InputError(f"{self.name}: no fitted model; call fit() or load() first, or give 'training' labels")
        return self.model
