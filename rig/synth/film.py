"""`film`: the x-ray as a film on a lightbox, photographed (not in CheXphoto; four levels).

The digital image is read as the film's transmittance through a density curve with base + fog (a
film never clears fully), the lightbox lights it unevenly (fall-off towards its edges, the bands of
its fluorescent tubes), the film lies inside the frame with the bare lightbox around it, its edges
curl, its grain shows, its blue polyester base tints the light, and the camera's tone curve encodes
the result. Every stage is a table lookup, an outer product or one remap of the whole image.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from rig.synth.base import Context, Params, Perturbation, per_level, register, row_blocks

_FOG = {1: 0.10, 2: 0.18, 3: 0.26, 4: 0.35}  # base + fog density
_FALLOFF = {1: 0.10, 2: 0.20, 3: 0.30, 4: 0.40}  # lightbox brightness lost at its corners
_BANDS = {1: 0.02, 2: 0.04, 3: 0.06, 4: 0.09}  # tube banding, relative amplitude
_MARGIN = {1: 0.02, 2: 0.04, 3: 0.06, 4: 0.08}  # bare lightbox around the film, fraction of each side
_CURL = {1: 0.004, 2: 0.010, 3: 0.018, 4: 0.028}  # edge curl, fraction of the height
_GRAIN = {1: 0.015, 2: 0.025, 3: 0.035, 4: 0.05}  # grain, relative transmittance noise
_TINT = {1: 0.04, 2: 0.07, 3: 0.10, 4: 0.13}  # blue base: red and green lose this much (x2 for red)


def _transmittance_lut(fog: float, density_range: float) -> np.ndarray:
    """Grey level (bright = bone = clear film) -> film transmittance 10^-D."""
    v = np.arange(256, dtype=np.float64) / 255.0
    return (10.0 ** -(fog + (1 - v) * density_range)).astype(np.float32)


def _maps(h: int, w: int, margins: np.ndarray, curl: float) -> tuple[np.ndarray, np.ndarray]:
    """For each photo pixel, where it falls on the film (source pixels): the film shrunk into the
    frame's margins, its top and bottom edges bowed by the curl. x depends on the column only and the
    bow is a product of a column and a row term, so both maps are broadcasts, not per-pixel solves."""
    left, right, top, bottom = margins
    u = ((np.arange(w) + 0.5) / w - left) / (1 - left - right)  # 0..1 across the film
    v = ((np.arange(h) + 0.5) / h - top) / (1 - top - bottom)
    xn = 2 * u - 1
    bow = curl * (xn * xn - 1 / 3)  # strongest at the film's left and right ends
    mx = np.empty((h, w), np.float32)
    mx[:] = (u * w - 0.5).astype(np.float32)[None, :]
    my = np.multiply((2 * v - 1).astype(np.float32)[:, None], (h * bow).astype(np.float32)[None, :])
    my += (v * h - 0.5).astype(np.float32)[:, None]
    return mx, my


def _film(img: np.ndarray, level: int, rng: np.random.Generator, ctx: Context) -> tuple[np.ndarray, Params]:
    grey = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    h, w = grey.shape
    fog = _FOG[level] * rng.uniform(0.8, 1.2)
    density_range = rng.uniform(2.0, 2.6)
    margins = _MARGIN[level] * rng.uniform(0.5, 1.5, 4)
    curl = _CURL[level] * rng.uniform(0.5, 1.0) * (1 if rng.integers(2) else -1)
    falloff, bands, grain, tint = _FALLOFF[level], _BANDS[level] * rng.uniform(0.5, 1), _GRAIN[level], _TINT[level]
    tube_period, tube_phase = rng.uniform(0.25, 0.45) * w, rng.uniform(0, 2 * math.pi)
    exposure = rng.uniform(0.85, 1.0)  # the camera meters the bright lightbox: white just below clipping

    film = cv2.LUT(grey, _transmittance_lut(fog, density_range))
    # Grain: clumps about two pixels wide, drawn at half resolution.
    noise: np.ndarray = rng.standard_normal(((h + 1) // 2, (w + 1) // 2), dtype=np.float32)
    noise = cv2.resize(noise, (w, h), interpolation=cv2.INTER_LINEAR)
    # OpenCV takes a number as the second operand (a Scalar); its stubs only list arrays
    film = cv2.multiply(film, cv2.add(cv2.multiply(noise, grain * 1.4), 1.0))  # type: ignore[call-overload]
    mx, my = _maps(h, w, margins, curl)
    seen = cv2.remap(film, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=1.0)

    # The lightbox: fall-off towards its edges and the bands of its tubes (a column and a row term).
    x = np.linspace(-1, 1, w)
    y = np.linspace(-1, 1, h)
    cols = (1 + bands * np.cos(2 * math.pi / tube_period * np.arange(w) + tube_phase))
    light_x = ((1 - falloff / 2 * x * x) * cols * exposure).astype(np.float32)
    light_y = (falloff / 2 * y * y).astype(np.float32)
    cols_e = (cols * exposure).astype(np.float32)[None, :]
    for rows in row_blocks(h, w):
        block = seen[rows]
        block *= light_x[None, :] - light_y[rows, None] * cols_e
    # The camera's tone curve once on the grey, then the base's tint per channel (a gain before the
    # curve is a gain after it: (g t)^(1/2.2) = g^(1/2.2) t^(1/2.2)).
    np.maximum(seen, 0, out=seen)
    encoded = cv2.pow(seen, 1 / 2.2)
    channels = [cv2.convertScaleAbs(encoded, alpha=255.0 * gain ** (1 / 2.2), beta=0.0)
                for gain in (1 - 2 * tint, 1 - tint, 1.0)]  # R, G, B through the blue base
    params = {"fog": fog, "density_range": density_range, "margin": float(margins.mean()), "curl": curl,
              "falloff": falloff, "bands": bands, "grain": grain, "tint": tint}
    return cv2.merge(channels), params


register(Perturbation("film", "an x-ray film on a lightbox, photographed: density curve, base tint, uneven "
                      "light, film edge and curl, grain",
                      per_level(f"fog {_FOG[n]:g} D, margin {_MARGIN[n]:.0%}, curl {_CURL[n]:.1%}, grain {_GRAIN[n]:g}"
                                for n in range(1, 5)),
                      ("fog", "density_range", "margin", "curl", "falloff", "bands", "grain", "tint"), _film))
