"""Glare: light reflected by the screen or film into the camera, composited as white.

Both masks are separable (a product of a row profile and a column profile), so a mask costs one
outer product instead of a 2-D density evaluated at every pixel.
"""

from __future__ import annotations

import numpy as np

from rig.synth.base import Context, Params, Perturbation, per_level, register, row_blocks, scale


def composite_white(img: np.ndarray, terms: list[tuple[np.ndarray, np.ndarray]], cap: float = 1.0) -> np.ndarray:
    """Alpha-composite white over the image, img + alpha * (255 - img), where alpha is the largest of
    the outer products (row profile x column profile) in `terms`, at most `cap`; band by band, so the
    mask never exists as a full float image."""
    out = np.empty_like(img)
    for rows in row_blocks(*img.shape[:2]):
        alpha: np.ndarray | None = None
        for gy, gx in terms:
            a = np.multiply(gy[rows, None], gx[None, :])
            alpha = a if alpha is None else np.maximum(alpha, a, out=alpha)
        assert alpha is not None, "composite_white needs at least one term"
        if cap < 1.0:
            np.minimum(alpha, np.float32(cap), out=alpha)
        f = img[rows].astype(np.float32)
        a = alpha[..., None] if f.ndim == 3 else alpha
        f += a * (np.float32(255) - f)
        f += np.float32(0.5)
        out[rows] = f  # in 0..255.5 by construction: truncation rounds
    return out


def _glare_matte(img: np.ndarray, level: int, rng: np.random.Generator, ctx: Context) -> tuple[np.ndarray, Params]:
    """A diffuse bright spot (a lamp on a matte screen): a Gaussian of sigma 50 px per level at 320 px
    wide, at a uniformly drawn position, peak opacity 100 per level out of 255, capped at 150 + 20 * level
    (CheXphoto's parameters)."""
    h, w = img.shape[:2]
    x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
    sigma = 50.0 * level * scale(img)
    gx = np.exp(-0.5 * ((np.arange(w, dtype=np.float32) - np.float32(x0)) / np.float32(sigma)) ** 2)
    gy = np.exp(-0.5 * ((np.arange(h, dtype=np.float32) - np.float32(y0)) / np.float32(sigma)) ** 2)
    peak = float(gx.max() * gy.max())  # CheXphoto normalises by the largest value inside the image
    gx *= np.float32(100 * level / 255 / peak)
    return composite_white(img, [(gy, gx)], cap=(150 + 20 * level) / 255), {"x": x0 / w, "y": y0 / h,
                                                                             "sigma_px": sigma}


def _soft_box(n: int, start: float, end: float, feather: float) -> np.ndarray:
    """1 inside [start, end), falling smoothly to 0 over `feather` px outside it."""
    x = np.arange(n, dtype=np.float32) + np.float32(0.5)
    d = np.maximum(np.float32(start) - x, x - np.float32(end))  # > 0 outside
    t = np.clip(1 - d / np.float32(max(feather, 1e-3)), 0, 1)
    return np.where(d <= 0, np.float32(1), t * t * (3 - 2 * t)).astype(np.float32)


def _glare_glossy(img: np.ndarray, level: int, rng: np.random.Generator, ctx: Context) -> tuple[np.ndarray, Params]:
    """A window's reflection in glossy glass: a bright box (0.1 per level of each side, plus up to 0.05)
    at one of nine places (corners, edge centres, centre; CheXphoto's layout), opacity 150 + 20 * level
    + up to 20 out of 255; where CheXphoto's box is flat and cut sharp, this one has soft edges, a
    brightness ramp across it and a faint halo."""
    h, w = img.shape[:2]
    bw, bh = (0.1 * level + rng.uniform(0, 0.05)) * w, (0.1 * level + rng.uniform(0, 0.05)) * h
    col, row = int(rng.integers(3)), int(rng.integers(3))

    def place(n: int, size: float, where: int) -> float:
        return 0.0 if where == 0 else n - size if where == 2 else rng.uniform(0.3, 0.7) * n - size / 2

    x0, y0 = place(w, bw, col), place(h, bh, row)
    alpha = (150 + 20 * level + rng.uniform(0, 20)) / 255
    feather = 0.015 * w
    # The reflected window is brighter towards one side (the lamp or sky behind it) ...
    ramp = np.linspace(1.0, rng.uniform(0.6, 0.9), w, dtype=np.float32)
    if rng.integers(2):
        ramp = ramp[::-1]
    gx = _soft_box(w, x0, x0 + bw, feather) * ramp * np.float32(alpha)
    gy = _soft_box(h, y0, y0 + bh, feather)
    # ... and a glossy coating spreads a faint halo around it.
    spread = 0.08 * max(w, h)
    hx = _soft_box(w, x0, x0 + bw, spread) * np.float32(0.3 * alpha)
    hy = _soft_box(h, y0, y0 + bh, spread)
    params = {"x": (x0 + bw / 2) / w, "y": (y0 + bh / 2) / h, "width": bw / w, "height": bh / h, "opacity": alpha}
    return composite_white(img, [(gy, gx), (hy, hx)]), params


register(Perturbation("glare_matte", "diffuse glare of a lamp on a matte surface (white Gaussian spot)",
                      per_level(f"sigma {50 * n} px @640, opacity <= {150 + 20 * n}/255" for n in range(1, 5)),
                      ("x", "y", "sigma_px"), _glare_matte))
register(Perturbation("glare_glossy", "specular glare of a window on glossy glass (bright soft-edged box)",
                      per_level(f"{10 * n}-{10 * n + 5}% of each side, opacity {150 + 20 * n}-{170 + 20 * n}/255"
                                for n in range(1, 5)),
                      ("x", "y", "width", "height", "opacity"), _glare_glossy))
