"""``generate.em_image``: render a labels geometry as an EM-like volume (or tilt series) with perfect labels.

Rendering, in order:

1. **Staining** — every voxel gets the density of its class: ``staining``
   by class name, else the built-in density of the classes
   ``generate.phantom_cell`` writes (cytosol 0.3, nucleus 0.5, mitochondrion
   0.6), else ``default_density``; label 0 gets ``background_density``. Units are those of
   ``generate.phantom_cell``: arbitrary mass-density units, 1 = a membrane.
2. **Membranes** — labelled voxels closer than ``membrane_thickness_nm`` to a
   voxel of another label (at least the voxels on the boundary) get
   ``membrane_density``: the dark rims that stained lipid bilayers give at the
   plasma membrane, the nuclear envelope and organelle membranes.
3. **Blur** — a Gaussian point-spread function of standard deviation
   ``psf_sigma_nm`` (per axis in voxels: σ / voxel size). This is the
   ``clean`` output.
4. **Noise** at a chosen signal-to-noise ratio, ``snr = std(clean) /
   std(noise)`` over the whole volume (the convention of
   ``generate.tilt_series``):

   - ``gaussian``: additive white noise of standard deviation ``std(clean) / snr``;
   - ``poisson``: shot noise of a bright-field image. The expected electron count
     of a voxel is ``k (c_max − c + 0.25 (c_max − c_min))`` — transmission
     falls with density, the darkest voxel keeps a fifth of the brightest
     one's count — with the dose ``k`` chosen so the noise (whose variance is
     the mean count) gives the requested SNR; the counts are mapped back to
     density units, so ``volume − clean`` is the noise in both cases.

With ``invert`` the output is ``c_max − value`` (stained structures dark on a
bright background, as a bright-field EM image is displayed); the SNR does not
change. The random numbers come from ``seed`` only.

A tilt series (training data for reconstruction and segmentation together) is
the ``clean`` volume projected by ``generate.tilt_series`` — in a spec chain
``generate.em_image → generate.tilt_series`` (``inputs: {volume: em.clean}``,
``noise_snr`` there); in Python :meth:`EMImage.tilt_series`, which calls the
same projector.
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

import cellscape as cs

#: Default densities of the classes ``generate.phantom_cell`` writes.
DEFAULT_STAINING = {"cytosol": 0.3, "nucleus": 0.5, "mitochondrion": 0.6}
#: The darkest voxel of a Poisson image keeps this fraction of the density range as expected transmission.
POISSON_FLOOR = 0.25


@attrs.frozen
class EMImageParams:
    staining: dict[str, float] = cs.param({}, ge=0,
                                          help="density of each class, by class name (mass-density units); every "
                                               "name must be a class of the labels")
    default_density: float = cs.param(0.3, ge=0, help="density of labelled classes not named in 'staining' and "
                                                      "without a built-in density")
    background_density: float = cs.param(0.0, ge=0, help="density of label 0 (outside the cell)")
    membrane_density: float = cs.param(1.0, ge=0, help="density of membranes at label boundaries")
    membrane_thickness_nm: float = cs.param(15.0, ge=0, unit="nm",
                                            help="membrane thickness inside each labelled region (at least one voxel); "
                                                 "0: no membranes")
    psf_sigma_nm: float = cs.param(10.0, ge=0, unit="nm", help="standard deviation of the Gaussian point-spread function")
    snr: float | None = cs.param(5.0, gt=0, help="std(clean) / std(noise); None: no noise")
    noise: str = cs.param("gaussian", choices=("gaussian", "poisson"), help="additive Gaussian or bright-field shot noise")
    invert: bool = cs.param(False, help="bright-field look: max density minus value (stained structures dark)")
    seed: int = cs.param(0, ge=0, help="random seed of the noise")


def stained_density(labels: cs.Labels, staining: dict[str, float], default_density: float = 0.3,
                    background_density: float = 0.0, membrane_density: float = 1.0,
                    membrane_thickness_nm: float = 15.0, who: str = "generate.em_image") -> np.ndarray:
    """Density of each voxel from its class and the membranes at label boundaries (no blur, no noise).

    Parameters
    ----------
    labels : Labels
        The geometry; ``class_names`` name the classes ``staining`` refers to.
    staining : dict[str, float]
        Density per class name; every name must be a class of ``labels``. Classes not named get the built-in
        density of their name (``DEFAULT_STAINING``) or ``default_density``.
    default_density, background_density, membrane_density : float
        Densities of other classes, of label 0 and of membranes.
    membrane_thickness_nm : float
        Labelled voxels closer than this (nm) to another label are membrane; at least the boundary voxels. 0: none.

    Returns
    -------
    ndarray, shape (nz, ny, nx), float32
    """
    from scipy import ndimage

    names = labels.class_names
    unknown = sorted(set(staining) - set(names.values()))
    if unknown:
        known = ", ".join(repr(n) for n in sorted(set(names.values()))) or "none (the labels have no class names)"
        raise cs.InputError(f"{who}: 'staining' names class(es) {', '.join(map(repr, unknown))} that the labels do not "
                            f"have; their classes are {known}")
    negative = sorted(name for name, value in staining.items() if not value >= 0)
    if negative:
        raise cs.InputError(f"{who}: 'staining' gives class(es) {', '.join(map(repr, negative))} a density that is not "
                            "a number >= 0; densities are mass-density units, 1 = a membrane")
    data = np.asarray(labels.data)
    values = labels.label_values()
    lookup = np.full(int(data.max()) + 1, default_density, np.float32)
    lookup[0] = background_density
    for value in values:
        name = names.get(value)
        lookup[value] = staining.get(name, DEFAULT_STAINING.get(name, default_density))  # type: ignore[arg-type]
    density = lookup[data]
    if membrane_thickness_nm > 0:
        spacing = labels.voxel_size_nm
        thickness = max(membrane_thickness_nm, min(spacing))
        for value in values:
            region = data == value
            # distance from each voxel of the region to the nearest voxel of another label (the grid edge counts too)
            depth = ndimage.distance_transform_edt(np.pad(region, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
            density[region & (depth <= thickness)] = membrane_density
    return density


def add_noise(clean: np.ndarray, snr: float, noise: str, seed: int) -> np.ndarray:
    """``clean`` plus noise at ``snr = std(clean) / std(noise)`` (see the module docstring); float32."""
    rng = np.random.default_rng(seed)
    signal_sd = float(clean.std())
    if signal_sd == 0:
        raise cs.InputError("generate.em_image: the clean image is uniform (every voxel the same density), so no SNR "
                            "can be defined; give labels with more than one class or different staining")
    if noise == "gaussian":
        return (clean + rng.normal(0.0, signal_sd / snr, clean.shape)).astype(np.float32)
    top, bottom = float(clean.max()), float(clean.min())
    transmission = top - clean.astype(np.float64) + POISSON_FLOOR * (top - bottom)
    # noise variance in density units = mean(transmission) / k; choose the dose k so its sd is signal_sd / snr
    dose = snr**2 * float(transmission.mean()) / signal_sd**2
    counts = rng.poisson(dose * transmission)
    return (top + POISSON_FLOOR * (top - bottom) - counts / dose).astype(np.float32)


class EMImage(cs.Generator):
    """EM-like volume from labels: staining per class, membranes, Gaussian PSF, Gaussian or Poisson noise at an SNR."""

    name = "generate.em_image"
    Params = EMImageParams
    inputs = {"labels": cs.Port(cs.Labels, help="the geometry: labels with class names")}
    outputs = {
        "volume": cs.Port(cs.Volume, help="the EM-like image, noise included"),
        "clean": cs.Port(cs.Volume, help="the same image before noise (project it with generate.tilt_series)"),
    }

    def generate(self, labels: cs.Labels) -> dict[str, cs.Artefact]:
        clean = self.render_clean(labels)
        p = self.params
        noisy = clean if p.snr is None else add_noise(clean, p.snr, p.noise, p.seed)
        if p.invert:
            top = float(clean.max())
            clean, noisy = top - clean, top - noisy
        spacing, origin = labels.voxel_size_nm, labels.origin_nm
        return {"volume": cs.Volume(noisy, spacing, origin), "clean": cs.Volume(clean, spacing, origin)}

    def render_clean(self, labels: cs.Labels) -> np.ndarray:
        """The stained, membrane-rimmed and blurred density, (nz, ny, nx) float32, before noise and inversion."""
        from scipy import ndimage

        p = self.params
        density = stained_density(labels, p.staining, p.default_density, p.background_density, p.membrane_density,
                                  p.membrane_thickness_nm, self.name)
        if p.psf_sigma_nm > 0:
            sigma = [p.psf_sigma_nm / v for v in labels.voxel_size_nm]
            density = ndimage.gaussian_filter(density, sigma, mode="nearest")
        return density.astype(np.float32)

    def tilt_series(self, labels: cs.Labels, min_angle_deg: float = -60.0, max_angle_deg: float = 60.0,
                    step_deg: float = 2.0, angles_deg: Any = None) -> cs.TiltSeries:
        """Render ``labels`` and project it with ``generate.tilt_series`` (tilt axis Y), noise at this ``snr``.

        Parameters
        ----------
        labels : Labels
            The geometry; x and z voxel sizes must be equal (nm).
        min_angle_deg, max_angle_deg, step_deg : float
            The tilt range in degrees (ignored when ``angles_deg`` is given).
        angles_deg : sequence of float, optional
            Explicit tilt angles in degrees.

        Returns
        -------
        TiltSeries
            Projections of the clean density, with Gaussian noise of ``std(projections) / snr`` when ``snr`` is set
            (the definition of ``generate.tilt_series``'s ``noise_snr``).
        """
        from .tilt_series import TiltSeriesProjector

        p = self.params
        if p.noise != "gaussian" and p.snr is not None:
            raise cs.InputError(f"{self.name}: a tilt series gets Gaussian noise on its projections; set noise to "
                                "'gaussian' (or snr to None)")
        clean = self.render_clean(labels)
        projector = TiltSeriesProjector(min_angle_deg=min_angle_deg, max_angle_deg=max_angle_deg, step_deg=step_deg,
                                        angles_deg=None if angles_deg is None else [float(a) for a in angles_deg],
                                        noise_snr=p.snr, seed=p.seed)
        return projector(cs.Volume(clean, labels.voxel_size_nm, labels.origin_nm))
