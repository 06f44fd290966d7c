"""``filter.nad``: nonlinear anisotropic diffusion (Perona–Malik), smoothing noise but not edges.

The volume ``u`` evolves by ``∂u/∂t = div(g(|∂u|) ∇u)``: between neighbouring voxels
intensity flows freely where they differ little (noise) and hardly at all where
they differ much (an edge, e.g. a membrane). The conductance ``g`` of each pair of
face neighbours depends on their difference in intensity per nm:

``exponential``
    ``g = exp(-(d / kappa)²)``: favours high-contrast edges over low-contrast ones.
``quadratic``
    ``g = 1 / (1 + (d / kappa)²)``: favours wide regions over small ones.

``kappa`` (volume units per nm) is the difference at which the conductance has
fallen to 1/e (exponential) or 1/2 (quadratic). By default it is twice a robust
estimate of the noise in the differences: ``2 × 1.4826 × MAD`` of all face-neighbour
differences per nm, which for a volume that is mostly flat regions plus noise
is the noise's own spread.

The scheme is explicit, conservative (the mean is preserved: no flux leaves
the volume) and takes ``iterations`` steps of ``time_step``; time is measured
in units of the finest voxel edge squared, so a step of at most 1/6 keeps every
update a convex combination of neighbours (no new extrema, stable) for any
voxel size. Anisotropic voxels are handled by using their sizes in the
differences and the divergence.
"""

from __future__ import annotations

import attrs
import numpy as np

import cellscape as cs

from .gaussian import float_data, like

CONDUCTANCES = ("exponential", "quadratic")
STABLE_TIME_STEP = 1.0 / 6.0
AUTO_KAPPA_NOISE_MULTIPLE = 2.0


def conductance(difference_per_nm: np.ndarray, kappa: float, kind: str) -> np.ndarray:
    """Perona–Malik edge-stopping function ``g`` (1 for no difference, towards 0 across edges)."""
    ratio_sq = np.square(difference_per_nm / np.float32(kappa))
    if kind == "exponential":
        return np.exp(-ratio_sq)
    if kind == "quadratic":
        return 1.0 / (1.0 + ratio_sq)
    raise ValueError(f"unknown conductance '{kind}'; known: {CONDUCTANCES}")


def robust_difference_noise(data: np.ndarray, voxel_size_nm: tuple[float, float, float]) -> float:
    """1.4826 × median absolute deviation of face-neighbour differences per nm (the noise's std in them).

    Differences of exactly 0 are left out: they come from flat regions (a
    reconstruction clipped at zero, padding) that hold no noise. At most about
    a million differences per axis are used (evenly strided), enough for a median.
    """
    parts = []
    for axis, size in enumerate(voxel_size_nm):
        if data.shape[axis] < 2:
            continue
        difference = (np.diff(data, axis=axis) / np.float32(size)).ravel()
        difference = difference[:: max(1, difference.size // 1_000_000)]
        parts.append(difference[difference != 0])
    differences = np.concatenate(parts) if parts else np.zeros(0)
    if differences.size == 0:
        return 0.0
    return 1.4826 * float(np.median(np.abs(differences - np.median(differences))))


@attrs.frozen
class NADParams:
    iterations: int = cs.param(10, ge=1, help="number of explicit diffusion steps")
    kappa: float | None = cs.param(None, gt=0, unit="volume units/nm",
                                   help="edge threshold: intensity difference per nm at which diffusion is damped; "
                                        "None = 2 × a robust (MAD) estimate of the noise in neighbour differences")
    time_step: float = cs.param(0.125, gt=0, le=STABLE_TIME_STEP, unit="finest voxel²",
                                help="diffusion time per iteration; at most 1/6 for the explicit scheme to be stable")
    conductance: str = cs.param("exponential", choices=CONDUCTANCES,
                                help="edge-stopping function: 'exponential' keeps high-contrast edges, "
                                     "'quadratic' keeps wide regions")


class NonlinearAnisotropicDiffusion(cs.Filter):
    """Nonlinear anisotropic (Perona–Malik) diffusion: edge-preserving denoising."""

    name = "filter.nad"
    Params = NADParams

    def kappa(self, data: np.ndarray, voxel_size_nm: tuple[float, float, float]) -> float:
        """The edge threshold in volume units per nm: the parameter, or the automatic estimate."""
        if self.params.kappa is not None:
            return float(self.params.kappa)
        noise = robust_difference_noise(data, voxel_size_nm)
        if not noise > 0:
            raise cs.InputError(
                f"{self.name}: cannot estimate kappa automatically: the volume is constant or piecewise constant "
                "(no noise to remove); give 'kappa' explicitly")
        return AUTO_KAPPA_NOISE_MULTIPLE * noise

    def filter(self, volume: cs.Volume) -> cs.Volume:
        """Diffuse ``volume`` (data [z, y, x]) into a float32 volume on the same grid; the mean is preserved."""
        p = self.params
        u = float_data(volume).copy()
        voxel_size_nm = volume.voxel_size_nm
        kappa = self.kappa(u, voxel_size_nm)
        finest = min(voxel_size_nm)
        # voxel edges in units of the finest one: time_step <= 1/6 is then stable for any voxel shape
        spacing = tuple(size / finest for size in voxel_size_nm)
        step = np.float32(p.time_step)
        update = np.empty_like(u)
        for _ in self.progress(range(p.iterations), description=f"{self.name}: diffusing"):
            update.fill(0.0)
            for axis, (size_nm, h) in enumerate(zip(voxel_size_nm, spacing, strict=True)):
                if u.shape[axis] < 2:
                    continue
                difference = np.diff(u, axis=axis)
                flux = conductance(difference / np.float32(size_nm), kappa, p.conductance) * difference
                flux *= np.float32(1.0 / (h * h))
                lower = [slice(None)] * 3
                upper = [slice(None)] * 3
                lower[axis] = slice(None, -1)
                upper[axis] = slice(1, None)
                update[tuple(lower)] += flux  # flux in from the next voxel; zero flux through the volume's faces
                update[tuple(upper)] -= flux
            u += step * update
        return like(volume, u)
