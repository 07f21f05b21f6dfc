"""Blur perturbations: defocus (Gaussian) and camera shake (linear motion)."""

from __future__ import annotations

import math

import cv2
import numpy as np

from rig.synth.base import Context, Params, Perturbation, per_level, register, scale

_SIGMA = {1: 1.5, 2: 3.0, 3: 6.0, 4: 10.0}  # CheXphoto's radii at 640 px wide
_LENGTH = {1: 2, 2: 10, 3: 25, 4: 45}  # CheXphoto's motion kernel lengths at 640 px wide


def gaussian(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; wide ones run on a shrunk copy (same look, a fraction of the taps)."""
    if sigma <= 4:
        return cv2.GaussianBlur(img, (0, 0), sigma)
    h, w = img.shape[:2]
    k = max(2, int(sigma / 2))
    small = cv2.resize(img, (max(1, math.ceil(w / k)), max(1, math.ceil(h / k))), interpolation=cv2.INTER_AREA)
    residual = math.sqrt(max(sigma * sigma - k * k / 4, 0.25)) / k
    small = cv2.GaussianBlur(small, (0, 0), residual)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _blur(img: np.ndarray, level: int, rng: np.random.Generator, ctx: Context) -> tuple[np.ndarray, Params]:
    sigma = _SIGMA[level] * scale(img)
    return gaussian(img, sigma), {"sigma_px": sigma}


def _motion(img: np.ndarray, level: int, rng: np.random.Generator, ctx: Context) -> tuple[np.ndarray, Params]:
    """A horizontal smear (CheXphoto's kernel): a running box sum, cost independent of its length."""
    length = max(1, round(_LENGTH[level] * scale(img)))
    return cv2.blur(img, (length, 1), borderType=cv2.BORDER_REFLECT), {"length_px": float(length)}


register(Perturbation("blur", "out of focus: Gaussian blur", per_level(f"sigma {s:g} px @640" for s in _SIGMA.values()),
                      ("sigma_px",), _blur))
register(Perturbation("motion", "camera shake: horizontal motion blur",
                      per_level(f"{n} px @640" for n in _LENGTH.values()), ("length_px",), _motion))
