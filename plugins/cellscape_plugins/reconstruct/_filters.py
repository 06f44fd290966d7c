"""Projection filters of weighted backprojection, and the weights of uneven tilts."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

FILTERS = ("ram-lak", "shepp-logan", "cosine", "hamming", "hann")


def angle_weights(angles_deg: np.ndarray) -> np.ndarray:
    """Angular interval (radians) each tilt stands for: half the gaps to its neighbours.

    The first and last tilts get half their single gap; a series covering
    [-90°, 90°] therefore sums to π, the full half-turn.
    """
    order = np.argsort(angles_deg)
    sorted_rad = np.radians(np.asarray(angles_deg, float)[order])
    gaps = np.diff(sorted_rad)
    weights_sorted = np.zeros_like(sorted_rad)
    weights_sorted[:-1] += gaps / 2
    weights_sorted[1:] += gaps / 2
    weights = np.empty_like(weights_sorted)
    weights[order] = weights_sorted
    return weights


def padded_length(nu: int) -> int:
    """FFT length for filtering rows of ``nu`` samples without wrap-around."""
    return max(64, 1 << math.ceil(math.log2(2 * nu)))


def ramp_filter(n: int, name: str) -> np.ndarray:
    """Frequency response (length n, FFT order) of the ramp filter with a window."""
    # Spatial ramp kernel sampled at integer offsets: h(0) = 1/4, h(odd k) = -1/(πk)², h(even k) = 0.
    k = np.concatenate([np.arange(0, n // 2 + 1), np.arange(-(n - n // 2 - 1), 0)])
    kernel = np.zeros(n)
    kernel[0] = 0.25
    odd = k % 2 == 1
    kernel[odd] = -1.0 / (np.pi * k[odd]) ** 2
    response = np.real(np.fft.fft(kernel))
    omega = np.fft.fftfreq(n) * 2 * np.pi  # radians per sample, in (-π, π]
    if name == "shepp-logan":
        x = omega / 2
        window = np.where(x == 0, 1.0, np.sin(x) / np.where(x == 0, 1.0, x))
    elif name == "cosine":
        window = np.cos(omega / 2)
    elif name == "hamming":
        window = 0.54 + 0.46 * np.cos(omega)
    elif name == "hann":
        window = 0.5 + 0.5 * np.cos(omega)
    else:
        window = np.ones(n)
    return response * window


def sirt_like_windows(transfer: np.ndarray, angles_deg: np.ndarray, n: int, iterations: int,
                      relaxation: float) -> np.ndarray:
    """Per-angle windows (n_angles, n // 2 + 1) that make one WBP mimic ``iterations`` of SIRT.

    SIRT from zero after k steps applies ``1 - (1 - λ M)^k`` to the exact
    inverse, where M is SIRT's normalised operator ``C Aᵀ R A``. ``transfer``
    is M's measured 2D transfer function on the (z, x) slice, centred
    (``fftshift``-ed, shape (nz, nx)); along the direction of each tilt it
    gives the factor by which that projection's ramp filter is damped.
    """
    from scipy import ndimage

    nz, nx = transfer.shape
    freq = np.fft.rfftfreq(n)  # cycles per detector sample
    windows = np.empty((len(angles_deg), len(freq)))
    for i, theta in enumerate(np.radians(angles_deg)):
        fx, fz = freq * np.cos(theta), freq * np.sin(theta)
        # centred index of frequency f along an axis of length m: m // 2 + f * m
        coords = np.stack([nz // 2 + fz * nz, nx // 2 + fx * nx])
        m = ndimage.map_coordinates(transfer, coords, order=1, mode="nearest")
        windows[i] = 1.0 - np.clip(1.0 - relaxation * m, 0.0, 1.0) ** iterations
    return windows


def filter_rows(xp: Any, rays: Any, response: Any, nu: int) -> Any:
    """Filter each detector row along u: ``rays`` (n_angles, nu, s) times a per-angle response (n_angles, n//2+1, 1)."""
    n = 2 * (response.shape[1] - 1)
    padded = xp.concat([rays, xp.zeros((rays.shape[0], n - nu, rays.shape[2]), dtype=rays.dtype)], axis=1)
    spectrum = xp.fft.rfft(padded, axis=1) * response
    return xp.astype(xp.fft.irfft(spectrum, n=n, axis=1)[:, :nu, :], rays.dtype)
