"""``reconstruct.align``: coarse translational alignment of a single-axis tilt series.

Geometry is the one of ``generate.tilt_series``: a point at centred (x, z)
lands at ``u = x cos θ + z sin θ`` along the image direction ``p``
perpendicular to the tilt axis. With the IMOD axis angle φ
(counter-clockwise from Y, as ``scipy.ndimage.rotate`` turns an image), the
axis runs along ``a = (cos φ, sin φ)`` and ``p = (-sin φ, cos φ)`` in
(y, x) pixel coordinates.

Estimation (cross-correlation with cosine stretching, as IMOD's tiltxcorr):
tilts are ordered by angle and each one is correlated with its neighbour
nearer to 0°, after stretching that neighbour along ``p`` by
``s = cos θ_i / cos θ_j`` about the image centre. Images are binned,
band-passed in Fourier space and tapered with a cosine edge window first;
the peak is located to sub-pixel precision by a parabola through its three
highest samples per axis. A peak at ``d`` means ``d = t_i − S t_j`` for the
image shifts ``t`` (``S`` scales the ``p`` component by ``s``), so the
shifts are accumulated outwards from the tilt closest to 0° (shift 0) as
``t_i = d_i + S t_j`` — exact for a specimen translation, where a plain sum
of the ``d`` would drift by ``(1 − s) t_j`` per step.

What cannot be known: a translation of the specimen itself (x, y, z)
moves image ``i`` by ``(Δx cos θ_i + Δz sin θ_i) p + Δy a`` and leaves
every correlation unchanged; the zero-tilt anchor fixes Δx and Δy, and
the stretch model puts the specimen's mass centre in the plane of the tilt
axis (that is Δz). ``center_shifts`` replaces the anchor by the in-plane
translation (Δx, Δy) that makes the shifts smallest in the least-squares
sense; subtracting a plain mean instead would move the tilt axis off the
image centre and blur the reconstruction.

Residuals: the neighbour correlation is measured again on the aligned
images; a perfect alignment gives ``d = 0`` for every tilt (the tilt
closest to 0° is compared with its nearest neighbour).

Tilt-axis angle (``estimate_axis``): a single-axis projection summed along
``p`` gives the same profile along the axis at every tilt (the common line
of all projections). The axis angle is the one whose profiles, taken over
a centred disc and differentiated, correlate best with the zero-tilt
profile: a 1° grid over ``±axis_search_deg``, then a 0.25° grid and a
parabola through the best three. The images are not rotated; the output
series carries the estimated axis angle, which the reconstructors undo. It
needs the specimen to stay inside that disc at every tilt (or to look alike
at every tilt where it leaves it), so treat the estimate as a starting
value to check, not a calibration.

A saved alignment (``shifts_file``, a CSV written by ``cs.write`` from the
``shifts`` output, or ``shifts_px``) is applied without estimating.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import attrs
import numpy as np

import cellscape as cs

NAME = "reconstruct.align"
MAX_TILT_DEG = 85.0
SHIFT_UNITS = {
    "tilt_angle_deg": "deg", "shift_x_px": "px", "shift_y_px": "px", "residual_px": "px",
    "correlation_peak": "", "tilt_axis_angle_deg": "deg",
}


@attrs.frozen
class AlignParams:
    binning: int = cs.param(1, choices=(1, 2, 4), help="average b×b pixel blocks before correlating "
                                                        "(shifts are always in full-size pixels)")
    lowpass_fraction: float = cs.param(0.5, gt=0, le=1, unit="Nyquist",
                                       help="low-pass cutoff; a Gaussian fall-off of 0.1 Nyquist follows it")
    highpass_fraction: float = cs.param(0.03, ge=0, lt=1, unit="Nyquist",
                                        help="Gaussian high-pass width (0 keeps everything but the mean)")
    taper_fraction: float = cs.param(0.1, ge=0, le=0.5,
                                     help="width of the cosine edge taper, as a fraction of the image size")
    center_shifts: bool = cs.param(False, help="replace the zero-tilt anchor by the least-squares specimen "
                                               "translation in x and y (smallest shifts)")
    estimate_axis: bool = cs.param(False, help="estimate the tilt-axis angle from the common line of the images")
    axis_search_deg: float = cs.param(5.0, gt=0, le=45, unit="deg",
                                      help="search the axis angle within ± this of the series' angle")
    interpolation_order: int = cs.param(3, choices=(1, 3), help="spline order used to shift the images")
    shifts_file: str | None = cs.param(None, help="apply the alignment saved in this CSV (the 'shifts' output) "
                                                  "instead of estimating one")
    shifts_px: list[list[float]] | None = cs.param(None, unit="px",
                                                   help="apply these [shift_x, shift_y] per tilt instead of estimating")


# -- image preparation ------------------------------------------------------------------------------

def bin_images(images: np.ndarray, binning: int) -> np.ndarray:
    """Average ``binning``×``binning`` blocks of (n, ny, nx) images (trailing rows/columns are cropped)."""
    images = np.asarray(images, np.float64)
    if binning == 1:
        return images
    n, ny, nx = images.shape
    my, mx = ny // binning, nx // binning
    return images[:, : my * binning, : mx * binning].reshape(n, my, binning, mx, binning).mean(axis=(2, 4))


def cosine_taper(ny: int, nx: int, fraction: float) -> np.ndarray:
    """(ny, nx) window: 1 inside, a half-cosine ramp to 0 over ``fraction`` of the size at each edge."""

    def ramp(n: int) -> np.ndarray:
        width = round(fraction * n)
        w = np.ones(n)
        if width > 0:
            edge = 0.5 - 0.5 * np.cos(np.pi * (np.arange(width) + 0.5) / width)
            w[:width], w[n - width:] = edge, edge[::-1]
        return w

    return ramp(ny)[:, None] * ramp(nx)[None, :]


def band_pass(ny: int, nx: int, lowpass_fraction: float, highpass_fraction: float) -> np.ndarray:
    """Real filter on the ``rfft2`` grid of (ny, nx) images; frequencies in units of Nyquist."""
    fy = np.fft.fftfreq(ny)[:, None] * 2
    fx = np.fft.rfftfreq(nx)[None, :] * 2
    f = np.hypot(fy, fx)
    response = np.where(f <= lowpass_fraction, 1.0, np.exp(-0.5 * ((f - lowpass_fraction) / 0.1) ** 2))
    if highpass_fraction > 0:
        response = response * (1 - np.exp(-0.5 * (f / highpass_fraction) ** 2))
    response[0, 0] = 0.0
    return response


def axis_vectors(axis_angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors (y, x) along the tilt axis and perpendicular to it (the stretch direction)."""
    phi = math.radians(axis_angle_deg)
    return np.array([math.cos(phi), math.sin(phi)]), np.array([-math.sin(phi), math.cos(phi)])


def stretch(image: np.ndarray, factor: float, axis_angle_deg: float, centre: tuple[float, float]) -> np.ndarray:
    """``image`` stretched by ``factor`` perpendicular to the tilt axis about ``centre`` (outside: 0)."""
    from scipy import ndimage

    _, p = axis_vectors(axis_angle_deg)
    matrix = np.eye(2) + (1.0 / factor - 1.0) * np.outer(p, p)
    c = np.asarray(centre)
    return ndimage.affine_transform(image, matrix, c - matrix @ c, order=1, mode="constant", cval=0.0)


def _stretch_matrix(factor: float, p: np.ndarray) -> np.ndarray:
    return np.eye(2) + (factor - 1.0) * np.outer(p, p)


# -- correlation --------------------------------------------------------------------------------------

def _parabola(minus: np.ndarray, centre: np.ndarray, plus: np.ndarray) -> np.ndarray:
    denominator = minus - 2 * centre + plus
    safe = np.where(np.abs(denominator) > 1e-12, denominator, -1.0)
    return np.where(np.abs(denominator) > 1e-12, 0.5 * (minus - plus) / safe, 0.0).clip(-0.5, 0.5)


def correlate(reference: np.ndarray, target: np.ndarray, window: np.ndarray,
              response: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shift of each target relative to its reference, by band-passed normalised cross-correlation.

    Parameters
    ----------
    reference, target : ndarray, shape (n, ny, nx)
        Mean-free images; ``target[k] ≈ reference[k]`` moved by the returned shift.
    window : (ny, nx) edge taper; response : band-pass on the rfft2 grid.

    Returns
    -------
    shifts : (n, 2) float, (dy, dx) in pixels; peaks : (n,) normalised correlation at the peak.
    """
    n, ny, nx = target.shape
    fa = np.fft.rfft2((reference - reference.mean(axis=(1, 2), keepdims=True)) * window) * response
    fb = np.fft.rfft2((target - target.mean(axis=(1, 2), keepdims=True)) * window) * response
    cc = np.fft.irfft2(fb * np.conj(fa), s=(ny, nx))
    norms = np.sqrt((np.fft.irfft2(fa, s=(ny, nx)) ** 2).sum(axis=(1, 2))
                    * (np.fft.irfft2(fb, s=(ny, nx)) ** 2).sum(axis=(1, 2)))
    flat = cc.reshape(n, -1).argmax(axis=1)
    iy, ix = np.unravel_index(flat, (ny, nx))
    k = np.arange(n)
    peak = cc[k, iy, ix]
    dy = _parabola(cc[k, (iy - 1) % ny, ix], peak, cc[k, (iy + 1) % ny, ix])
    dx = _parabola(cc[k, iy, (ix - 1) % nx], peak, cc[k, iy, (ix + 1) % nx])
    sy = np.where(iy > ny // 2, iy - ny, iy) + dy
    sx = np.where(ix > nx // 2, ix - nx, ix) + dx
    return np.stack([sy, sx], axis=1), peak / np.where(norms > 0, norms, 1.0)


# -- the alignment itself -------------------------------------------------------------------------------

@attrs.frozen
class _Setup:
    """Everything the pair measurements share, on the binned grid."""

    binning: int
    centre: tuple[float, float]
    window: np.ndarray
    response: np.ndarray


def _setup(shape: tuple[int, int], params: AlignParams) -> _Setup:
    b = params.binning
    ny, nx = shape[0] // b, shape[1] // b
    if min(ny, nx) < 8:
        raise cs.InputError(f"{NAME}: 'binning': {b} leaves {ny}×{nx}-pixel images; need at least 8×8")
    centre = (((shape[0] - 1) / 2 - (b - 1) / 2) / b, ((shape[1] - 1) / 2 - (b - 1) / 2) / b)
    return _Setup(b, centre, cosine_taper(ny, nx, params.taper_fraction),
                  band_pass(ny, nx, params.lowpass_fraction, params.highpass_fraction))


def _partners(angles: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    """Tilt order by angle, the position in it of the tilt closest to 0°, and per tilt its partner.

    A tilt's partner is its angular neighbour nearer to 0°; the tilt closest to 0° is paired with its
    nearest neighbour (used only to measure its residual).
    """
    order = np.argsort(angles, kind="stable")
    position = int(np.argmin(np.abs(angles[order])))
    partner = np.empty(len(angles), int)
    partner[order[position + 1:]] = order[position:-1]
    partner[order[:position]] = order[1:position + 1]
    neighbours = [order[k] for k in (position - 1, position + 1) if 0 <= k < len(order)]
    partner[order[position]] = min(neighbours, key=lambda j: abs(angles[j] - angles[order[position]]))
    return order, position, partner


def measure_pairs(images: np.ndarray, angles: np.ndarray, partner: np.ndarray, axis_angle_deg: float,
                  setup: _Setup) -> tuple[np.ndarray, np.ndarray]:
    """Shift ``d_i`` (binned px, (y, x)) of each tilt against its cosine-stretched partner, and the peak."""
    cos = np.cos(np.radians(angles))
    mean_free = images - images.mean(axis=(1, 2), keepdims=True)
    stretched = np.stack([stretch(mean_free[j], cos[i] / cos[j], axis_angle_deg, setup.centre)
                          for i, j in enumerate(partner)])
    return correlate(stretched, mean_free, setup.window, setup.response)


def accumulate(relative: np.ndarray, angles: np.ndarray, order: np.ndarray, position: int,
               axis_angle_deg: float) -> np.ndarray:
    """Absolute shifts (n, 2) (y, x) from ``d_i = t_i − S t_partner``, outwards from ``t = 0`` at 0°."""
    _, p = axis_vectors(axis_angle_deg)
    cos = np.cos(np.radians(angles))
    shifts = np.zeros((len(angles), 2))
    steps = [(order[k], order[k - 1]) for k in range(position + 1, len(order))]
    steps += [(order[k], order[k + 1]) for k in range(position - 1, -1, -1)]
    for i, j in steps:
        shifts[i] = relative[i] + _stretch_matrix(cos[i] / cos[j], p) @ shifts[j]
    return shifts


def specimen_translation_basis(angles: np.ndarray, axis_angle_deg: float, with_z: bool = False) -> np.ndarray:
    """(2n, k) image shifts (y, x per tilt, flattened) of a unit specimen translation in x, y (and z)."""
    a, p = axis_vectors(axis_angle_deg)
    theta = np.radians(angles)
    columns = [(np.cos(theta)[:, None] * p).ravel(), np.tile(a, len(angles))]
    if with_z:
        columns.append((np.sin(theta)[:, None] * p).ravel())
    return np.stack(columns, axis=1)


def center(shifts: np.ndarray, angles: np.ndarray, axis_angle_deg: float, with_z: bool = False) -> np.ndarray:
    """``shifts`` (n, 2) (y, x) minus their least-squares specimen translation in x, y (and z)."""
    basis = specimen_translation_basis(angles, axis_angle_deg, with_z)
    coefficients, *_ = np.linalg.lstsq(basis, shifts.ravel(), rcond=None)
    return (shifts.ravel() - basis @ coefficients).reshape(shifts.shape)


def apply_shifts(projections: np.ndarray, shifts_yx: np.ndarray, order: int = 3) -> np.ndarray:
    """Images moved by ``-shifts_yx`` (so content displaced by the shift goes back); edges get the image mean.

    Parameters
    ----------
    projections : (n, ny, nx) array; shifts_yx : (n, 2) displacement (y, x) in pixels; order : spline order.
    """
    from scipy import ndimage

    dtype = projections.dtype if projections.dtype.kind == "f" else np.dtype(np.float32)
    out = np.empty(projections.shape, dtype)
    for i, image in enumerate(projections):
        image = np.asarray(image, dtype)
        ndimage.shift(image, -np.asarray(shifts_yx[i], float), out[i], order=order, mode="constant",
                      cval=float(image.mean()))
    return out


def common_line_score(images: np.ndarray, axis_angles_deg: np.ndarray, reference: int,
                      margin_px: float = 0.0) -> np.ndarray:
    """Mean correlation of each tilt's profile along the axis with the reference tilt's, per candidate angle.

    ``images`` (n, ny, nx) are summed over a centred disc into 1-pixel bins of the axis coordinate
    (linear weights, so the score is smooth in the angle); profiles are differentiated and compared
    by the peak of their normalised 1D cross-correlation (any shift along the axis is allowed).
    The disc keeps ``margin_px`` from the image edges, where shifted images hold fill values.
    """
    n, ny, nx = images.shape
    y, x = np.mgrid[:ny, :nx]
    y, x = y - (ny - 1) / 2, x - (nx - 1) / 2
    radius = max(min(ny, nx) / 2 - 1 - margin_px, 4.0)
    inside = np.hypot(y, x) <= radius
    values = (images - images.mean(axis=(1, 2), keepdims=True))[:, inside]
    y, x = y[inside], x[inside]
    length = int(2 * math.ceil(radius)) + 3
    padded = 2 * length
    others = np.arange(n) != reference
    scores = np.empty(len(axis_angles_deg))
    for k, angle in enumerate(axis_angles_deg):
        a, _ = axis_vectors(float(angle))
        coordinate = y * a[0] + x * a[1] + math.ceil(radius) + 1
        low = np.floor(coordinate).astype(int)
        frac = coordinate - low
        offsets = (np.arange(n) * length)[:, None]
        profiles = (np.bincount((offsets + low).ravel(), (values * (1 - frac)).ravel(), n * length)
                    + np.bincount((offsets + low + 1).ravel(), (values * frac).ravel(), n * length))
        gradient = np.diff(profiles.reshape(n, length), axis=1)
        gradient -= gradient.mean(axis=1, keepdims=True)
        spectra = np.fft.rfft(gradient, padded, axis=1)
        cc = np.fft.irfft(spectra * np.conj(spectra[reference]), padded, axis=1)
        best = cc.argmax(axis=1)
        rows = np.arange(n)
        minus, top, plus = cc[rows, best - 1], cc[rows, best], cc[rows, (best + 1) % padded]
        curvature = minus - 2 * top + plus
        # the parabola's top, so a sub-pixel offset along the axis costs nothing
        cc = top - np.where(curvature < 0, (minus - plus) ** 2 / (8 * np.where(curvature < 0, curvature, -1.0)), 0.0)
        norms = np.sqrt((gradient**2).sum(axis=1) * (gradient[reference] ** 2).sum())
        scores[k] = float((cc / np.where(norms > 0, norms, 1.0))[others].mean())
    return scores


def estimate_axis_angle(images: np.ndarray, reference: int, start_deg: float, search_deg: float,
                        margin_px: float = 0.0) -> float:
    """Tilt-axis angle (deg) within ``start_deg ± search_deg`` maximising :func:`common_line_score`."""
    coarse = start_deg + np.arange(-math.floor(search_deg), math.floor(search_deg) + 1, 1.0)
    if len(coarse) < 3:
        coarse = start_deg + np.linspace(-search_deg, search_deg, 5)
    best = float(coarse[int(np.argmax(common_line_score(images, coarse, reference, margin_px)))])
    fine = best + np.arange(-1.0, 1.0001, 0.25)
    fine = fine[np.abs(fine - start_deg) <= search_deg + 1e-9]
    scores = common_line_score(images, fine, reference, margin_px)
    k = int(np.argmax(scores))
    if 0 < k < len(fine) - 1:
        return float(fine[k] + 0.25 * _parabola(scores[k - 1:k], scores[k:k + 1], scores[k + 1:k + 2])[0])
    return float(fine[k])


# -- saved alignments ----------------------------------------------------------------------------------

def _saved_shifts(params: AlignParams, tilts: cs.TiltSeries) -> tuple[np.ndarray, float | None]:
    """Shifts (n, 2) (y, x) and the axis angle (if saved) from ``shifts_file`` or ``shifts_px``."""
    n = len(tilts.tilt_angles_deg)
    if params.shifts_px is not None:
        rows = params.shifts_px
        if len(rows) != n:
            raise cs.InputError(f"{NAME}: 'shifts_px' has {len(rows)} rows for {n} tilt images; "
                                "give one [shift_x, shift_y] per tilt")
        bad = [i for i, row in enumerate(rows) if len(row) != 2]
        if bad:
            raise cs.InputError(f"{NAME}: 'shifts_px' row {bad[0]} has {len(rows[bad[0]])} values; "
                                "each row is [shift_x, shift_y]")
        xy = np.asarray(rows, float)
        if not np.isfinite(xy).all():
            raise cs.InputError(f"{NAME}: 'shifts_px' holds non-finite values")
        return xy[:, ::-1].copy(), None
    assert params.shifts_file is not None
    path = Path(params.shifts_file)
    try:
        table = cs.read(path, "table")
    except cs.InputError as exc:
        raise cs.InputError(f"{NAME}: 'shifts_file': {exc}") from exc
    missing = [c for c in ("shift_x_px", "shift_y_px") if c not in table.columns]
    if missing:
        raise cs.InputError(f"{NAME}: 'shifts_file' {path} lacks column(s) {', '.join(missing)}; "
                            "write it with cs.write(outputs['shifts'], ...)")
    if table.n_rows != n:
        raise cs.InputError(f"{NAME}: 'shifts_file' {path} has {table.n_rows} rows for {n} tilt images; "
                            "it was saved for another tilt series")
    if "tilt_angle_deg" in table.columns:
        saved = np.asarray(table.columns["tilt_angle_deg"], float)
        differ = np.abs(saved - tilts.tilt_angles_deg) > 0.01
        if differ.any():
            i = int(np.argmax(differ))
            raise cs.InputError(f"{NAME}: 'shifts_file' {path} row {i} is for tilt {saved[i]:g}°, "
                                f"the series has {tilts.tilt_angles_deg[i]:g}°")
    yx = np.stack([np.asarray(table.columns["shift_y_px"], float),
                   np.asarray(table.columns["shift_x_px"], float)], axis=1)
    if not np.isfinite(yx).all():
        raise cs.InputError(f"{NAME}: 'shifts_file' {path} holds non-finite shifts")
    axis = table.columns.get("tilt_axis_angle_deg")
    return yx, (float(axis[0]) if axis is not None and len(axis) else None)


class Align(cs.Method):
    """Coarse translational alignment: cosine-stretched cross-correlation of neighbouring tilts."""

    name = NAME
    stage = "reconstruct"
    Params = AlignParams
    inputs = {"tilts": cs.Port(cs.TiltSeries, "single-axis tilt series to align")}
    outputs = {
        "aligned": cs.Port(cs.TiltSeries, "the shifted images (axis angle estimated, if asked)"),
        "shifts": cs.Port(cs.Table, "per tilt: angle, shift_x/y (content displacement removed), residual, "
                                    "correlation peak, axis angle; apply again with 'shifts_file'"),
    }

    def align(self, tilts: cs.TiltSeries) -> dict[str, Any]:
        """Estimate (or read) the shifts and apply them; returns ``{"aligned": TiltSeries, "shifts": Table}``."""
        p = self.params
        angles = np.asarray(tilts.tilt_angles_deg, float)
        if np.abs(angles).max() > MAX_TILT_DEG:
            raise cs.InputError(f"{NAME}: tilts beyond ±{MAX_TILT_DEG:g}° (got {np.abs(angles).max():g}°) cannot "
                                "be aligned by cosine stretching; leave them out first")
        saved = p.shifts_px is not None or p.shifts_file is not None
        if p.shifts_px is not None and p.shifts_file is not None:
            raise cs.InputError(f"{NAME}: give 'shifts_file' or 'shifts_px', not both")
        if saved and p.estimate_axis:
            raise cs.InputError(f"{NAME}: 'estimate_axis' cannot be combined with a saved alignment "
                                "('shifts_file' / 'shifts_px')")
        if p.highpass_fraction >= p.lowpass_fraction:
            raise cs.InputError(f"{NAME}: 'highpass_fraction' ({p.highpass_fraction:g}) must be below "
                                f"'lowpass_fraction' ({p.lowpass_fraction:g})")
        setup = _setup(tilts.projections.shape[1:], p)
        order, position, partner = _partners(angles)
        reference = int(order[position])
        axis = tilts.tilt_axis_angle_deg
        if saved:
            shifts, saved_axis = _saved_shifts(p, tilts)
            axis = axis if saved_axis is None else saved_axis
        else:
            binned = bin_images(tilts.projections, p.binning)
            if p.estimate_axis:
                # the common line needs the images in register: align once with the declared axis,
                # keeping the specimen central so that as little as possible leaves the disc
                relative, _ = measure_pairs(binned, angles, partner, axis, setup)
                first = center(accumulate(relative, angles, order, position, axis), angles, axis, with_z=True)
                moved = apply_shifts(binned, first, order=1)
                axis = estimate_axis_angle(moved, reference, axis, p.axis_search_deg, float(np.abs(first).max()))
            relative, _ = measure_pairs(binned, angles, partner, axis, setup)
            shifts = accumulate(relative, angles, order, position, axis) * p.binning
            if p.center_shifts:
                shifts = center(shifts, angles, axis)
        aligned = apply_shifts(tilts.projections, shifts, p.interpolation_order)
        residual, peaks = measure_pairs(bin_images(aligned, p.binning), angles, partner, axis, setup)
        table = cs.Table({
            "tilt_angle_deg": angles,
            "shift_x_px": shifts[:, 1],
            "shift_y_px": shifts[:, 0],
            "residual_px": np.hypot(residual[:, 0], residual[:, 1]) * p.binning,
            "correlation_peak": peaks,
            "tilt_axis_angle_deg": np.full(len(angles), axis),
        }, SHIFT_UNITS, "tilt-series alignment")
        return {"aligned": cs.TiltSeries(aligned, angles, tilts.pixel_size_nm, axis), "shifts": table}

    def run(self, **inputs: cs.Artefact) -> dict[str, cs.Artefact]:
        return self._check_outputs(self.align(inputs["tilts"]))  # type: ignore[arg-type]
