"""Gaussian-process surrogates of a forward model over its parameter box, and the fit that uses one.

The surrogate maps box coordinates z ∈ [0, 1]^p (log-scaled for log
parameters) to the m outputs. Every output is standardized and modelled as a
Gaussian process with a constant mean and one shared Matérn-5/2 kernel with
a length scale per parameter (ARD) plus a small nugget; each output's signal
variance is profiled out, and the length scales and nugget maximize the
summed log marginal likelihood (L-BFGS-B from a few starts). Predictions
are the posterior means. Written with NumPy/SciPy: a few dozen training runs
of a solver need nothing heavier.

:func:`surrogate_fit` is the sequential (Bayesian-optimization-like) fit:
train on a small space-filling design, fit the parameters on the surrogate
(cheap, multi-start), run the real model at the surrogate's optimum, add it
to the design, retrain, and stop when the optimum stops moving. The error of
the surrogate's prediction at each new point *before* it joined the design
is its out-of-sample validation error.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import numpy as np

import cellscape as cs

from ._forward import CachedForward, ForwardFailure, ParameterSpec
from .fit import FitResult, fit_least_squares

__all__ = ["GaussianProcess", "SurrogateFit", "surrogate_fit"]

_SQRT5 = math.sqrt(5.0)


def _matern52(a: np.ndarray, b: np.ndarray, length: np.ndarray) -> np.ndarray:
    d = np.sqrt(np.maximum(((a[:, None, :] - b[None, :, :]) / length) ** 2, 0.0).sum(axis=2))
    return (1.0 + _SQRT5 * d + 5.0 / 3.0 * d**2) * np.exp(-_SQRT5 * d)


class GaussianProcess:
    """A multi-output GP regression with a shared Matérn-5/2 ARD kernel (see the module docstring).

    Parameters
    ----------
    restarts : int
        Extra random starts of the hyperparameter optimization (first training only; later ones
        start from the previous hyperparameters).
    seed : int
        Seed of those starts.
    """

    def __init__(self, restarts: int = 3, seed: int = 0):
        self.restarts, self.seed = restarts, seed
        self.length: np.ndarray | None = None
        self.nugget = 1e-8

    def _likelihood(self, log_params: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
        from scipy import linalg

        p = x.shape[1]
        length, nugget = np.exp(log_params[:p]), math.exp(log_params[p])
        k = _matern52(x, x, length) + (nugget + 1e-10) * np.eye(len(x))
        try:
            factor = linalg.cho_factor(k, lower=True)
        except linalg.LinAlgError:
            return 1e10
        alpha = linalg.cho_solve(factor, y)
        n = len(x)
        signal = np.maximum((y * alpha).sum(axis=0) / n, 1e-300)  # profiled variance of each output
        log_det = 2.0 * np.log(np.diag(factor[0])).sum()
        return float(0.5 * n * np.log(signal).sum() + 0.5 * y.shape[1] * log_det)

    def fit(self, x: np.ndarray, y: np.ndarray) -> GaussianProcess:
        """Train on inputs ``x`` (n, p) in the unit box and outputs ``y`` (n, m)."""
        from scipy import linalg, optimize

        x, y = np.asarray(x, float), np.asarray(y, float)
        if len(x) < 2:
            raise cs.InputError(f"a Gaussian process needs at least 2 training points, got {len(x)}")
        self.x = x
        self.mean, self.scale = y.mean(axis=0), y.std(axis=0)
        self.scale[self.scale == 0] = 1.0
        z = (y - self.mean) / self.scale
        p = x.shape[1]
        bounds = [*([(math.log(0.02), math.log(20.0))] * p), (math.log(1e-10), math.log(1e-2))]
        rng = np.random.default_rng(self.seed)
        starts = [np.r_[np.full(p, math.log(0.5)), math.log(1e-6)]]
        if self.length is not None and len(self.length) == p:
            # a refit after adding a point starts from the previous optimum, which barely moves
            starts = [np.r_[np.log(self.length), math.log(max(self.nugget, 1e-10))], starts[0]]
        else:
            starts += [np.array([rng.uniform(lo, hi) for lo, hi in bounds]) for _ in range(self.restarts)]
        best = None
        for start in starts:
            result = optimize.minimize(self._likelihood, start, args=(x, z), method="L-BFGS-B", bounds=bounds)
            if best is None or result.fun < best.fun:
                best = result
        assert best is not None
        self.length, self.nugget = np.exp(best.x[:p]), float(np.exp(best.x[p]))
        k = _matern52(x, x, self.length) + (self.nugget + 1e-10) * np.eye(len(x))
        self._factor = linalg.cho_factor(k, lower=True)
        self._z = z
        self._alpha = linalg.cho_solve(self._factor, z)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Posterior mean at ``x`` (n, p) → (n, m) (or (p,) → (m,))."""
        single = np.ndim(x) == 1
        x = np.atleast_2d(np.asarray(x, float))
        if self.length is None:
            raise cs.InputError("the Gaussian process is not trained; call fit first")
        mean = _matern52(x, self.x, self.length) @ self._alpha * self.scale + self.mean
        return mean[0] if single else mean

    def predict_std(self, x: np.ndarray) -> np.ndarray:
        """Posterior standard deviation at ``x`` (n, p) → (n, m), in output units."""
        from scipy import linalg

        x = np.atleast_2d(np.asarray(x, float))
        cross = _matern52(x, self.x, self.length)
        reduction = (cross * linalg.cho_solve(self._factor, cross.T).T).sum(axis=1)
        correlation = np.maximum(1.0 - reduction, 0.0)  # of the latent function, without the nugget
        signal = (self._z * self._alpha).sum(axis=0) / len(self.x)  # the profiled variance of each output
        return np.sqrt(correlation[:, None] * signal[None]) * self.scale


def relative_rms_error(predicted: np.ndarray, actual: np.ndarray, reference: np.ndarray) -> float:
    """RMS of ``predicted − actual`` over the RMS spread of the ``reference`` outputs (n, m) about their mean."""
    spread = float(np.sqrt(np.mean((reference - reference.mean(axis=0)) ** 2)))
    return float(np.sqrt(np.mean((predicted - actual) ** 2))) / max(spread, 1e-300)


@attrs.frozen
class SurrogateFit:
    """A surrogate-accelerated fit.

    Attributes
    ----------
    result : FitResult
        The estimate on the final surrogate, with residuals and s from the real model at the estimate;
        its confidence intervals use the surrogate's Jacobian.
    solver_runs : int
        Real model evaluations used (design, refinements).
    rounds : int
        Refinement rounds.
    validation_errors : list of float
        Relative RMS error of the surrogate at each refinement point before it joined the design.
    design : ndarray, shape (n, p)
        Every θ the real model was run at.
    surrogate : GaussianProcess
    """

    result: FitResult
    solver_runs: int
    rounds: int
    validation_errors: list[float]
    design: np.ndarray
    surrogate: GaussianProcess


def surrogate_fit(forward: CachedForward, observed: np.ndarray, specs: list[ParameterSpec],
                  sigma: np.ndarray | None = None, n_initial: int = 8, max_rounds: int = 15,
                  tolerance: float = 1e-4, accuracy: float = 0.05, n_starts: int = 8, seed: int = 0,
                  confidence: float = 0.95) -> SurrogateFit:
    """Fit on a GP surrogate refined where the fit goes (see the module docstring).

    Parameters
    ----------
    forward : CachedForward
        The real model θ → outputs.
    observed, sigma, confidence
        As in :func:`.fit.fit_least_squares`.
    n_initial : int
        Space-filling design points (scrambled Sobol in box coordinates) besides the initial values.
    max_rounds : int
        Refinements (one real run each) at most.
    tolerance : float
        Stop when the optimum moves less than this in box coordinates (max over parameters).
    accuracy : float
        Also stop when the optimum moved less than 0.02 and the surrogate predicted the real outputs
        there to within ``accuracy`` times the residual standard deviation (RMS over the outputs, weighted
        by 1/σ): the surrogate's error then shifts the estimate by a small fraction of its standard error.
    n_starts : int
        Multi-start of each fit on the surrogate (free: no real runs).
    """
    from .uq import unit_sobol

    p = len(specs)
    runs_before = forward.runs

    def to_theta(z: np.ndarray) -> np.ndarray:
        return np.array([s.from_unit(np.clip(v, 0.0, 1.0)) for s, v in zip(specs, z, strict=True)])

    start = np.array([s.to_unit(s.start()) for s in specs])
    design_z = np.vstack([start[None], unit_sobol(n_initial, p, seed)]) if n_initial else start[None]
    outputs = forward.batch(np.stack([to_theta(z) for z in design_z]))
    ok = np.isfinite(outputs).all(axis=1)
    if ok.sum() < 2:
        raise ForwardFailure(f"only {int(ok.sum())} of {len(design_z)} design runs of the surrogate succeeded; "
                             f"first error: {forward.failures[0][1] if forward.failures else 'none'}")
    design_z, outputs = design_z[ok], outputs[ok]
    errors: list[float] = []
    previous = None
    miss = spread = math.inf
    gp = GaussianProcess(seed=seed)
    rounds = 0
    weight = 1.0 / np.asarray(sigma, float) if sigma is not None else np.ones(observed.size)
    for rounds in range(1, max_rounds + 1):
        gp.fit(design_z, outputs)
        best_design = int(np.argmin((((outputs - observed) * weight) ** 2).sum(axis=1)))
        box_specs = [attrs.evolve(s, initial=float(s.from_unit(design_z[best_design, i]))) for i, s in enumerate(specs)]
        cheap = CachedForward(lambda theta: gp.predict(np.array([s.to_unit(v) for s, v in zip(specs, theta, strict=True)])),
                              observed.size)
        on_surrogate = fit_least_squares(cheap, observed, box_specs, sigma, n_starts=n_starts, seed=seed + rounds,
                                         confidence=confidence)
        z_new = np.array([s.to_unit(v) for s, v in zip(specs, on_surrogate.estimate, strict=True)])
        if any(np.abs(z_new - z).max() < 1e-9 for z in design_z):
            y_new = outputs[int(np.argmin(np.abs(design_z - z_new).max(axis=1)))]  # already run there
        else:
            y_new = forward(to_theta(z_new))
            if not np.isfinite(y_new).all():
                raise ForwardFailure(f"the real model failed at the surrogate's optimum θ = {to_theta(z_new).tolist()}: "
                                     f"{forward.failures[-1][1]}")
            predicted_here = gp.predict(z_new)
            errors.append(relative_rms_error(predicted_here, y_new, outputs))
            weighted = (y_new - observed) * weight
            spread = math.sqrt(float(weighted @ weighted) / max(observed.size - p, 1)) if sigma is None else 1.0
            miss = math.sqrt(float(np.mean(((predicted_here - y_new) * weight) ** 2)))
            design_z, outputs = np.vstack([design_z, z_new]), np.vstack([outputs, y_new])
        if previous is not None:
            moved = np.abs(z_new - previous).max()
            if moved < tolerance or (moved < 0.02 and errors and miss < accuracy * spread):
                break
        previous = z_new
    gp.fit(design_z, outputs)
    cheap = CachedForward(lambda theta: gp.predict(np.array([s.to_unit(v) for s, v in zip(specs, theta, strict=True)])),
                          observed.size)
    final_specs = [attrs.evolve(s, initial=float(v)) for s, v in zip(specs, to_theta(z_new), strict=True)]
    final = fit_least_squares(cheap, observed, final_specs, sigma, n_starts=1, confidence=confidence)
    final = with_real_residuals(final, forward(final.estimate), observed, specs, sigma)  # usually a cache hit
    return SurrogateFit(final, forward.runs - runs_before, rounds, errors,
                        np.stack([to_theta(z) for z in design_z]), gp)


def with_real_residuals(final: FitResult, real: np.ndarray, observed: np.ndarray, specs: list[ParameterSpec],
                        sigma: np.ndarray | None) -> FitResult:
    """A fit on a surrogate with the real model's predictions, residuals and s at its estimate.

    The standard errors and intervals (from the surrogate's Jacobian) are scaled by s_real / s_surrogate.
    ``real`` holding NaN (the real model failed there) leaves ``final`` as it is.
    """
    if not np.isfinite(real).all():
        return final
    weight = 1.0 / np.asarray(sigma, float) if sigma is not None else np.ones(observed.size)
    residuals = observed - real
    dof = final.dof
    r = residuals * weight
    s2 = float(r @ r) / dof if (sigma is None and dof > 0) else 1.0
    rescale = math.sqrt(s2) / final.sigma_hat if sigma is None and final.sigma_hat > 0 else 1.0
    return attrs.evolve(final, predicted=real, residuals=residuals, cost=float(0.5 * r @ r),
                        sigma_hat=math.sqrt(s2), std_error=final.std_error * rescale,
                        covariance=final.covariance * rescale**2,
                        ci_low=_rescale_interval(final, specs, rescale, low=True),
                        ci_high=_rescale_interval(final, specs, rescale, low=False))


def _rescale_interval(result: FitResult, specs: list[ParameterSpec], factor: float, low: bool) -> np.ndarray:
    """Interval ends with the half-width scaled by ``factor`` (on log θ for log parameters)."""
    ends = []
    for i, s in enumerate(specs):
        theta, end = result.estimate[i], (result.ci_low if low else result.ci_high)[i]
        if s.log:
            ends.append(theta * math.exp(math.log(end / theta) * factor))
        else:
            ends.append(theta + (end - theta) * factor)
    return np.array(ends)


def describe(fit: SurrogateFit) -> dict[str, Any]:
    """Numbers for the runs table."""
    errors = fit.validation_errors
    return {"surrogate": "gp", "surrogate_solver_runs": float(fit.solver_runs), "surrogate_rounds": float(fit.rounds),
            "surrogate_validation_error": float(errors[-1]) if errors else math.nan,
            "surrogate_validation_error_max": float(max(errors)) if errors else math.nan}
