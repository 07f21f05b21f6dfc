"""Pulse -> angle: the one conversion, and fitting it to measured angles.

A calibrated servo's angle is a polynomial in its pulse (highest power first, numpy's order); the
calibration file stores those coefficients and everything that turns a pulse into degrees (poses in
degrees, export, jog, the simulator's true joints) goes through `pulse_to_angle`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def pulse_to_angle(coeffs: Sequence[float], pulse: float) -> float:
    """The angle in degrees a servo with this pulse -> angle polynomial reaches at `pulse` microseconds."""
    return float(np.polyval(coeffs, pulse))


@dataclass(frozen=True)
class AngleFit:
    """pulse -> angle as a polynomial, with its residuals."""

    coeffs: tuple[float, ...]  # highest power first (numpy.polyval order)
    rms_deg: float
    max_deg: float
    samples: int

    def angle(self, pulse: float) -> float:
        return pulse_to_angle(self.coeffs, pulse)

    def pulse(self, angle: float, lo: float, hi: float) -> float:
        """The pulse giving `angle` inside [lo, hi] (the fit is monotonic there)."""
        a_lo, a_hi = self.angle(lo), self.angle(hi)
        if not min(a_lo, a_hi) - 1e-9 <= angle <= max(a_lo, a_hi) + 1e-9:
            raise ValueError(f"{angle:.2f} deg is outside {min(a_lo, a_hi):.2f}..{max(a_lo, a_hi):.2f}")
        for _ in range(60):  # bisection: robust for any monotonic polynomial
            mid = (lo + hi) / 2
            if (self.angle(mid) - angle) * (a_hi - a_lo) > 0:
                hi = mid
            else:
                lo = mid
        return (lo + hi) / 2


NOISE_FLOOR_DEG = 0.05  # residuals below this are measurement noise, not a curve worth fitting


def fit_angles(pulses: np.ndarray, angles: np.ndarray, max_degree: int = 3) -> AngleFit:
    """Linear, or a higher degree only where the lower one leaves residuals above the noise floor and
    the higher one halves them: a servo's non-linearity is fitted, the measurement's noise is not."""
    best: AngleFit | None = None
    for degree in range(1, max_degree + 1):
        if len(pulses) < degree + 3:
            break
        coeffs = np.polyfit(pulses, angles, degree)
        resid = angles - np.polyval(coeffs, pulses)
        fit = AngleFit(tuple(float(c) for c in coeffs), float(np.sqrt(np.mean(resid ** 2))),
                       float(np.max(np.abs(resid))), len(pulses))
        if best is None or (best.rms_deg > NOISE_FLOOR_DEG and fit.rms_deg < best.rms_deg / 2):
            best = fit
    assert best is not None, "need at least 4 samples"
    return best
