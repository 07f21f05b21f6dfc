"""Moire: two fine, slightly converging line gratings over the picture, sampled by the pixel grid.

CheXphoto draws two line masks on a 2x upsampled canvas twice the picture's size, warps, rotates and
composites them and downsamples the result. Here each grating's transmission is computed exactly as
the pixel would integrate it: the line coverage of a pixel is the difference of the square wave's
running integral at the pixel's two edges (a box filter, no upsampling, no canvas). Where the local
line period is close to a pixel, or the two gratings cross at a small angle, what survives the
sampling is the beat: moire fringes. Up to 640 px wide the period is CheXphoto's; above, it grows with
the width, so a full-size image shows the fringes a small one does (a fixed 1.75-px grating on a
2048-px image is a texture that vanishes when the image is shrunk).
"""

from __future__ import annotations

import math

import numpy as np

from rig.synth.base import Context, Params, Perturbation, per_level, register, row_blocks, scale

# CheXphoto's gap between 1-px lines on the 2x canvas, and the lines' opacity.
_GAP = {1: 20.0, 2: 4.5, 3: 2.5, 4: 1.0}
_OPACITY = {1: 0.05, 2: 0.15, 3: 0.35, 4: 0.5}
_LINE = 0.5  # line width in picture pixels (1 px on the 2x canvas)
_SPREAD = (1.14, 1.6)  # the lines converge: the period grows by this factor from one edge to the other


def _integral(p: np.ndarray, duty: np.float32, tmp: np.ndarray) -> np.ndarray:
    """Running integral of the square wave (1 on the first `duty` of each cycle), in place: p -> F(p)."""
    np.floor(p, out=tmp)
    p -= tmp
    np.minimum(p, duty, out=p)
    tmp *= duty
    p += tmp
    return p


class _Grating:
    """Near-vertical lines `angle_deg` off vertical whose period grows along their length from
    period * 1.14 to period * 1.6 (converging lines); `coverage` gives the share of each pixel they cover."""

    def __init__(self, h: int, w: int, period: float, angle_deg: float, offset: float, flip: bool) -> None:
        y = np.arange(h, dtype=np.float64)
        t = (h - 1 - y if flip else y) / max(h - 1, 1)
        self.inv = (1 / (period * (_SPREAD[0] + (_SPREAD[1] - _SPREAD[0]) * t))).astype(np.float32)[:, None]
        self.start = ((y * math.tan(math.radians(angle_deg)) + offset)[:, None] * self.inv).astype(np.float32)
        self.half = self.inv * np.float32(0.5)
        self.duty = np.float32(_LINE / period)
        self.x = np.arange(w, dtype=np.float32)[None, :]

    def coverage(self, rows: slice, out: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        inv, half = self.inv[rows], self.half[rows]
        np.multiply(self.x, inv, out=a)
        a += self.start[rows]  # phase at the pixel centre, in cycles
        np.subtract(a, half, out=out)
        a += half
        _integral(a, self.duty, b)
        _integral(out, self.duty, b)
        np.subtract(a, out, out=out)
        out /= inv  # mean over the pixel's width
        return out


def _moire(img: np.ndarray, level: int, rng: np.random.Generator, ctx: Context) -> tuple[np.ndarray, Params]:
    h, w = img.shape[:2]
    period = (1 + _GAP[level]) / 2 * max(1.0, scale(img))  # picture pixels
    opacity = np.float32(_OPACITY[level])
    angle = float(rng.normal(0, 1))  # the second grating's angle to the first, degrees (CheXphoto's)
    off1, off2 = rng.uniform(0, 100, 2)
    flip = bool(rng.integers(2))
    g1 = _Grating(h, w, period, 0.0, off1, flip)
    g2 = _Grating(h, w, period, angle, off2, not flip)  # converging the other way: the beat curves
    out = np.empty_like(img)
    blocks = row_blocks(h, w)
    n = blocks[0].stop - blocks[0].start
    c1, c2, a, b = (np.empty((n, w), np.float32) for _ in range(4))
    for rows in blocks:
        k = rows.stop - rows.start
        t1 = g1.coverage(rows, c1[:k], a[:k], b[:k])
        t2 = g2.coverage(rows, c2[:k], a[:k], b[:k])
        t1 *= -opacity  # transmission of the two line masks, composited: (1 - o c1)(1 - o c2)
        t1 += np.float32(1)
        t2 *= -opacity
        t2 += np.float32(1)
        t1 *= t2
        block = img[rows]
        if block.ndim == 3:
            t1 = t1[..., None]
        res = block * t1
        res += np.float32(0.5)
        np.clip(res, 0, 255, out=res)
        out[rows] = res
    beat = period / (2 * math.sin(math.radians(max(abs(angle), 1e-3)) / 2))
    return out, {"period_px": period, "opacity": float(opacity), "angle_deg": angle, "beat_px": beat}


register(Perturbation("moire", "two converging line gratings beating with each other and the pixel grid",
                      per_level(f"line period {(1 + g) / 2:g} px @<=640, opacity {_OPACITY[n]:g}"
                                for n, g in _GAP.items()),
                      ("period_px", "opacity", "angle_deg", "beat_px"), _moire))
