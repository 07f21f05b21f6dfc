"""Tone perturbations (CheXphoto's digital family): brightness, contrast, their random mix, exposure.

Each is a point operation, so it is one 256-entry lookup table (two tables composed for
`random-digital`): a single cv2.LUT pass over the image, whatever its size.
"""

from __future__ import annotations

import cv2
import numpy as np

from rig.synth.base import Apply, Context, Params, Perturbation, per_level, register

_X = np.arange(256, dtype=np.float64)


def _strength(level: int) -> float:
    """CheXphoto's step per level: 0.5 at level 1, then the level itself."""
    return 0.5 if level == 1 else float(level)


def _lut(values: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(values + 0.5), 0, 255).astype(np.uint8)


def _grey_mean(img: np.ndarray) -> int:
    """Mean grey level, as PIL's contrast enhancer takes it (luma of RGB), rounded."""
    m = cv2.mean(img)
    mean = m[0] if img.ndim == 2 else 0.299 * m[0] + 0.587 * m[1] + 0.114 * m[2]
    return int(mean + 0.5)


def _factor(level: int, rng: np.random.Generator, up: bool, step_up: float, step_down: float) -> float:
    jitter = rng.uniform(-0.01, 0.01)
    f = _strength(level)
    return 1 + f * step_up + jitter if up else 1 / (1 + f * step_down + jitter)


def _brightness_lut(factor: float) -> np.ndarray:
    return _lut(_X * factor)  # blend with black


def _contrast_lut(factor: float, mean: int) -> np.ndarray:
    return _lut(mean + (_X - mean) * factor)  # blend with the mean grey


def _brightness(up: bool) -> Apply:
    def apply(img: np.ndarray, level: int, rng: np.random.Generator, ctx: Context) -> tuple[np.ndarray, Params]:
        factor = _factor(level, rng, up, 0.2, 0.4)
        return cv2.LUT(img, _brightness_lut(factor)), {"factor": factor}
    return apply


def _contrast(up: bool) -> Apply:
    def apply(img: np.ndarray, level: int, rng: np.random.Generator, ctx: Context) -> tuple[np.ndarray, Params]:
        factor = _factor(level, rng, up, 0.2, 0.4)
        return cv2.LUT(img, _contrast_lut(factor, _grey_mean(img))), {"factor": factor}
    return apply


def _random_digital(img: np.ndarray, level: int, rng: np.random.Generator, ctx: Context) -> tuple[np.ndarray, Params]:
    """Contrast up or down, then brightness up or down (fair coins), as one composed table."""
    contrast_up, brightness_up = bool(rng.integers(2)), bool(rng.integers(2))
    cf = _factor(level, rng, contrast_up, 0.2, 0.4)
    bf = _factor(level, rng, brightness_up, 0.2, 0.4)
    lut = _brightness_lut(bf)[_contrast_lut(cf, _grey_mean(img))]
    return cv2.LUT(img, lut), {"contrast_factor": cf, "brightness_factor": bf}


_GAIN = {1: 3.0, 2: 5.0, 3: 7.0, 4: 10.0}


def _exposure(img: np.ndarray, level: int, rng: np.random.Generator, ctx: Context) -> tuple[np.ndarray, Params]:
    """A sigmoid tone curve (CheXphoto uses gain 5 at every level; here level 2 is theirs)."""
    gain, cutoff = _GAIN[level], 0.5 + rng.uniform(-0.05, 0.05)
    lut = _lut(255.0 / (1 + np.exp(gain * (cutoff - _X / 255.0))))
    return cv2.LUT(img, lut), {"gain": gain, "cutoff": cutoff}


def _identity(img: np.ndarray, level: int, rng: np.random.Generator, ctx: Context) -> tuple[np.ndarray, Params]:
    return img, {}


_UP = ("x1.1", "x1.4", "x1.6", "x1.8")
_DOWN = ("/1.2", "/1.8", "/2.2", "/2.6")
register(Perturbation("brightness_up", "scale grey levels up (blend with black)", _UP, ("factor",), _brightness(True)))
register(Perturbation("brightness_down", "scale grey levels down", _DOWN, ("factor",), _brightness(False)))
register(Perturbation("contrast_up", "stretch about the mean grey", _UP, ("factor",), _contrast(True)))
register(Perturbation("contrast_down", "squeeze towards the mean grey", _DOWN, ("factor",), _contrast(False)))
register(Perturbation("random-digital", "contrast up or down, then brightness up or down (coin flips)",
                      ("contrast/brightness x1.1 or /1.2", "x1.4 or /1.8", "x1.6 or /2.2", "x1.8 or /2.6"),
                      ("contrast_factor", "brightness_factor"), _random_digital))
register(Perturbation("exposure", "sigmoid tone curve about mid-grey", per_level(f"gain {g:g}" for g in _GAIN.values()),
                      ("gain", "cutoff"), _exposure))
register(Perturbation("identity", "unchanged (re-encoded)", ("-", "-", "-", "-"), (), _identity))
