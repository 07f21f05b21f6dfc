"""Geometric perturbations: tilt (a photo taken at an angle), rotation, translation."""

from __future__ import annotations

import math

import cv2
import numpy as np

from rig.synth.base import Context, Params, Perturbation, per_level, register, scale

_TILT_DEG = {1: 10.0, 2: 20.0, 3: 30.0, 4: 40.0}  # largest angle between film plane and camera
_FOCAL = 1.2  # focal length in image widths (a normal lens)


def tilt_homography(w: int, h: int, yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """Source pixel -> photo pixel for the picture plane turned by yaw (about its vertical axis) and
    pitch (its horizontal axis) in front of a pinhole camera, scaled so the whole picture stays in the
    frame: the near edge grows, the far edge shrinks, as in a photo of a screen taken at an angle."""
    f = _FOCAL * max(w, h)
    cx, cy = (w - 1) / 2, (h - 1) / 2
    a, b = math.radians(yaw_deg), math.radians(pitch_deg)
    ry = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    r = ry @ rx
    k = np.array([[f, 0, cx], [0, f, cy], [0, 0, 1]])
    centred = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]])
    hom = k @ np.column_stack([r[:, 0], r[:, 1], [0, 0, f]]) @ centred
    hom /= hom[2, 2]
    corners = np.array([[-0.5, -0.5, 1], [w - 0.5, -0.5, 1], [w - 0.5, h - 0.5, 1], [-0.5, h - 0.5, 1]]).T
    p = hom @ corners
    x, y = p[0] / p[2] - cx, p[1] / p[2] - cy
    z = min((w / 2) / np.abs(x).max(), (h / 2) / np.abs(y).max())  # the largest scale that keeps it all in
    fitted: np.ndarray = np.array([[z, 0, cx * (1 - z)], [0, z, cy * (1 - z)], [0, 0, 1]]) @ hom
    return fitted


def _tilt(img: np.ndarray, level: int, rng: np.random.Generator, ctx: Context) -> tuple[np.ndarray, Params]:
    angle = _TILT_DEG[level] * rng.uniform(0.5, 1.0)
    direction = rng.uniform(0, 2 * math.pi)  # which way the axis of the turn lies
    yaw, pitch = angle * math.cos(direction), angle * math.sin(direction)
    h, w = img.shape[:2]
    hom = tilt_homography(w, h, yaw, pitch)
    out = cv2.warpPerspective(img, hom, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out, {"yaw_deg": yaw, "pitch_deg": pitch}


def _rotation(img: np.ndarray, level: int, rng: np.random.Generator, ctx: Context) -> tuple[np.ndarray, Params]:
    """Turn by 5 degrees per level either way on a canvas grown to hold the whole picture (black)."""
    angle = 5.0 * level * (1 if rng.integers(2) else -1)
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w // 2, h // 2), angle, 1.0)
    c, s = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(h * s + w * c), int(h * c + w * s)
    m[0, 2] += nw / 2 - w // 2
    m[1, 2] += nh / 2 - h // 2
    return cv2.warpAffine(img, m, (nw, nh), flags=cv2.INTER_LINEAR), {"angle_deg": angle}


def _translation(img: np.ndarray, level: int, rng: np.random.Generator, ctx: Context) -> tuple[np.ndarray, Params]:
    """Shift by 20 px per level (at 640 px wide) along each axis, either way, on black."""
    step = 20.0 * level * scale(img)
    dx = step * (1 if rng.integers(2) else -1)
    dy = step * (1 if rng.integers(2) else -1)
    h, w = img.shape[:2]
    m = np.array([[1, 0, round(dx)], [0, 1, round(dy)]], np.float64)
    return (cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_NEAREST),
            {"dx_px": float(round(dx)), "dy_px": float(round(dy))})


register(Perturbation("tilt", "photo taken at an angle: the picture plane turned in front of the camera, on black",
                      per_level(f"{a / 2:g}-{a:g} deg" for a in _TILT_DEG.values()), ("yaw_deg", "pitch_deg"), _tilt))
register(Perturbation("rotation", "turned in plane on a grown black canvas",
                      ("+-5 deg", "+-10 deg", "+-15 deg", "+-20 deg"), ("angle_deg",), _rotation))
register(Perturbation("translation", "shifted on black", ("20 px @640", "40 px", "60 px", "80 px"),
                      ("dx_px", "dy_px"), _translation))
