"""Synthetic CheXpert-style demo data: chest-x-ray phantoms plus a CheXpert-form manifest.

The rig needs something to put on the monitor without downloading CheXpert, so this module draws
radiograph-like phantoms with numpy + cv2 and lays them out exactly like `CheXpert-v1.0-small`.
Everything derives from one seed, so a demo data set is reproducible byte for byte.

Run: `python -m rig.demo_data OUT_DIR [--count N] [--seed S]`.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

__all__ = ["CHEXPERT_COLUMNS", "CHEXPERT_TRAIN_ROWS", "LABELS", "make_demo_data", "main", "write_phantom",
           "write_scale_manifest"]

LABELS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
CHEXPERT_COLUMNS: tuple[str, ...] = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *LABELS)
DATASET_DIR = "CheXpert-v1.0-small"
JPEG_QUALITY = 92

# Rough per-finding odds of (positive, negative, uncertain); the rest is blank, as in CheXpert.
_LABEL_ODDS: dict[str, tuple[float, float, float]] = {
    "Enlarged Cardiomediastinum": (0.05, 0.08, 0.05),
    "Cardiomegaly": (0.12, 0.05, 0.04),
    "Lung Opacity": (0.45, 0.03, 0.02),
    "Lung Lesion": (0.04, 0.01, 0.01),
    "Edema": (0.23, 0.08, 0.06),
    "Consolidation": (0.07, 0.12, 0.12),
    "Pneumonia": (0.03, 0.01, 0.08),
    "Atelectasis": (0.15, 0.01, 0.15),
    "Pneumothorax": (0.09, 0.25, 0.01),
    "Pleural Effusion": (0.38, 0.10, 0.05),
    "Pleural Other": (0.02, 0.00, 0.01),
    "Fracture": (0.04, 0.01, 0.00),
    "Support Devices": (0.52, 0.03, 0.01),
}


# --------------------------------------------------------------------------------------------
# Drawing primitives: soft masks on a normalized anatomical grid.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Grid:
    """Anatomical coordinates: u across (-1..1 spans the thorax), v down (0 apex, ~1.35 base)."""

    u: np.ndarray  # shape (1, w)
    v: np.ndarray  # shape (h, 1)
    cx: float  # pixel column of u = 0
    row0: float  # pixel row of v = 0
    scale: float  # pixels per unit

    def px(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Anatomical points to fixed-point (shift=4) pixel points for cv2 drawing."""
        pts = np.stack([self.cx + u * self.scale, self.row0 + v * self.scale], axis=-1)
        return np.round(pts * 16).astype(np.int32)


def _make_grid(h: int, w: int, rng: np.random.Generator) -> _Grid:
    """Fit the thorax to any aspect ratio with isotropic anatomy; tight crops like real films."""
    scale = min(w / rng.uniform(2.1, 2.35), h / rng.uniform(1.7, 1.85))
    cx = w / 2 + rng.uniform(-0.03, 0.03) * w
    row0 = h * rng.uniform(0.45, 0.5) - 0.68 * scale
    u = ((np.arange(w, dtype=np.float32) - cx) / scale)[None, :]
    v = ((np.arange(h, dtype=np.float32) - row0) / scale)[:, None]
    return _Grid(u, v, cx, row0, scale)


def _smooth(x: np.ndarray) -> np.ndarray:
    """Smoothstep of x clipped to 0..1, so organ edges are soft like real projections."""
    x = np.clip(x, 0.0, 1.0)
    smooth: np.ndarray = x * x * (3.0 - 2.0 * x)
    return smooth


def _ellipse(g: _Grid, cu: float, cv: float, au: float, av: float, soft: float = 0.08,
             angle_deg: float = 0.0, power: float = 2.0) -> np.ndarray:
    """Soft filled (super)ellipse, 1 inside and 0 outside, on the grid."""
    du, dv = g.u - cu, g.v - cv
    if angle_deg:
        a = np.deg2rad(angle_deg)
        du, dv = du * np.cos(a) + dv * np.sin(a), -du * np.sin(a) + dv * np.cos(a)
    if power == 2.0:
        r = np.sqrt((du / au) ** 2 + (dv / av) ** 2)
    else:
        r = (np.abs(du / au) ** power + np.abs(dv / av) ** power) ** (1.0 / power)
    return _smooth((1.0 - r) / soft)


def _polyline_layer(shape: tuple[int, int], curves: list[tuple[np.ndarray, int]]) -> np.ndarray:
    """Draw (points, thickness) antialiased curves into a 0..1 float layer."""
    layer = np.zeros(shape, np.uint8)
    for pts, thick in curves:
        cv2.polylines(layer, [pts], False, 255, max(1, thick), cv2.LINE_AA, shift=4)
    return layer.astype(np.float32) / 255.0


def _noise(shape: tuple[int, int], cell: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth random field, cheap: low-res normal noise upsampled with cubic interpolation."""
    h, w = shape
    small = rng.standard_normal((int(h / cell) + 3, int(w / cell) + 3), dtype=np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _vessels(g: _Grid, shape: tuple[int, int], hila: list[tuple[float, float, float]],
             rng: np.random.Generator, n: int = 9) -> np.ndarray:
    """Branching vessel markings fanning out from the hila, fading to the periphery."""
    curves: list[tuple[np.ndarray, int]] = []
    thick = max(1, int(round(g.scale * 0.022)))
    for hu, hv, side in hila:
        for k in range(n):
            ang = np.pi / 2 - side * (np.pi * (k + 0.5) / n - 0.1) + rng.normal(0, 0.12)
            _branch(g, curves, hu, hv, ang, rng.uniform(0.22, 0.34), thick, rng, depth=0)
    layer = cv2.GaussianBlur(_polyline_layer(shape, curves), (0, 0), max(0.7, g.scale * 0.006))
    fade = np.zeros(shape, np.float32)
    for hu, hv, _ in hila:
        fade = np.maximum(fade, np.exp(-np.hypot(g.u - hu, g.v - hv) / 0.45))
    return layer * fade


def _branch(g: _Grid, curves: list[tuple[np.ndarray, int]], u: float, v: float, ang: float, length: float, thick: int,
            rng: np.random.Generator, depth: int) -> None:
    """One wiggly vessel segment that splits in two, recursively, thinning as it goes."""
    steps = 5
    angs = ang + np.cumsum(rng.normal(0, 0.18, steps))
    seg = length / steps
    us = u + np.concatenate([[0], np.cumsum(np.cos(angs) * seg)])
    vs = v + np.concatenate([[0], np.cumsum(np.sin(angs) * seg)])
    curves.append((g.px(us, vs), thick))
    if depth < 3:
        for turn in (-0.4, 0.4):
            if rng.random() < 0.8:
                _branch(g, curves, us[-1], vs[-1], angs[-1] + turn + rng.normal(0, 0.15),
                        length * 0.7, max(1, thick - 1), rng, depth + 1)


# --------------------------------------------------------------------------------------------
# Frontal (PA/AP) phantom. Units: half the thorax width; u > 0 is the patient's left.
# --------------------------------------------------------------------------------------------


def _body_halfwidth(v: np.ndarray, shoulders: float) -> np.ndarray:
    """Frontal soft-tissue silhouette: narrow neck widening to shoulders and chest wall."""
    return 0.32 + (shoulders - 0.32) * _smooth((v + 0.42) / 0.32) - 0.08 * _smooth(v / 0.6)


def _frontal_ribs(g: _Grid, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Posterior ribs arcing out from the spine and down the wall; fainter anterior ribs."""
    curves: list[tuple[np.ndarray, int]] = []
    anterior: list[tuple[np.ndarray, int]] = []
    th = np.linspace(0.0, 1.0, 28)
    thick = max(1, int(round(g.scale * rng.uniform(0.038, 0.048))))
    spacing = rng.uniform(0.12, 0.135)
    for i in range(10):
        v0 = -0.08 + i * spacing
        reach = 0.55 + 0.37 * _smooth(np.array((i + 0.5) / 4.0))
        for side in (-1.0, 1.0):
            u = side * (0.09 + reach * np.sin(th * np.pi / 2))
            v = v0 + (0.2 + 0.015 * i) * (1.0 - np.cos(th * np.pi / 2)) - 0.04 * np.sin(th * np.pi)
            curves.append((g.px(u, v), thick))
            ua = side * (0.09 + reach * (1.0 - 0.7 * th))
            va = v0 + 0.12 + 0.3 * th**1.3
            anterior.append((g.px(ua, va), max(1, int(thick * 0.7))))
    return _polyline_layer(shape, curves) + 0.45 * _polyline_layer(shape, anterior)


def _clavicles(g: _Grid, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Two S-curved clavicles from the sternal notch out to the shoulders."""
    t = np.linspace(0.0, 1.0, 20)
    lift = rng.uniform(-0.06, 0.06)
    curves = []
    for side in (-1.0, 1.0):
        u = side * (0.1 + 0.72 * t)
        v = lift + 0.02 - 0.15 * t + 0.035 * np.sin(2 * np.pi * t)
        curves.append((g.px(u, v), max(1, int(round(g.scale * 0.065)))))
    return _polyline_layer(shape, curves)


def _frontal_lungs(g: _Grid, inspiration: float) -> np.ndarray:
    """Both lung fields: rounded apices, steep lateral walls, cut below by diaphragm domes."""
    lungs = np.zeros((g.v.shape[0], g.u.shape[1]), np.float32)
    for side, dome in ((-1.0, 1.08), (1.0, 1.13)):
        lung = _ellipse(g, side * 0.52, 0.66, 0.43, 0.74 + inspiration, soft=0.1, power=2.6)
        lung *= _smooth((side * g.u - 0.12) / 0.08)
        diaphragm = dome + inspiration + 0.3 * ((g.u - side * 0.48) / 0.45) ** 2
        lungs = np.maximum(lungs, lung * _smooth((diaphragm - g.v) / 0.05))
    return lungs


def _frontal_bones(g: _Grid, air: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Spine, ribs (seen best against lung air), clavicles and humeral heads, as added density."""
    shape = air.shape
    spine = _smooth((0.09 - np.abs(g.u)) / 0.03)
    bones = spine * (0.025 + 0.01 * np.cos(2 * np.pi * g.v / 0.13))
    ribs = _frontal_ribs(g, shape, rng)
    bones = bones + cv2.GaussianBlur(ribs, (0, 0), max(0.6, g.scale * 0.006)) * (0.015 + 0.06 * air)
    bones += 0.08 * _clavicles(g, shape, rng)
    for side in (-1.0, 1.0):  # humeral heads
        bones += 0.1 * _ellipse(g, side * 1.22, -0.12, 0.14, 0.16, soft=0.2)
    return bones


def _render_frontal(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Radiodensity-like image in 0..1 for a frontal chest view."""
    g = _make_grid(h, w, rng)
    shape = (h, w)
    heart_scale = rng.uniform(0.85, 1.25)
    inspiration = rng.uniform(-0.06, 0.06)

    halfwidth = _body_halfwidth(g.v, rng.uniform(1.3, 1.45))
    body = _smooth((halfwidth - np.abs(g.u)) / 0.08)
    depth = np.sqrt(np.clip(1.0 - (g.u / (halfwidth + 0.05)) ** 2, 0.0, 1.0))
    img = 0.04 + body * (0.36 + 0.22 * depth)

    lungs = _frontal_lungs(g, inspiration)
    heart = _ellipse(g, 0.14 * heart_scale, 1.02 + inspiration, 0.42 * heart_scale, 0.28,
                     soft=0.12, angle_deg=-12)
    medi = _smooth((0.16 + 0.04 * g.v - np.abs(g.u - 0.02)) / 0.08)
    knob = _ellipse(g, 0.15, 0.34, 0.1, 0.09, soft=0.5)
    centre = np.maximum(np.maximum(heart, medi), knob)

    air = lungs * (1.0 - centre)
    zone = 0.7 + 0.3 * np.exp(-(((g.v - 0.6) / 0.5) ** 2)) * _smooth((np.abs(g.u) - 0.05) / 0.4)
    img -= air * rng.uniform(0.34, 0.4) * zone
    img += 0.02 * centre * body
    for side in (-1.0, 1.0):  # hilar shadows
        img += 0.05 * _ellipse(g, side * 0.24, 0.62, 0.1, 0.16, soft=0.6)
    img -= 0.06 * _ellipse(g, 0.0, 0.0, 0.065, 0.5, soft=0.4)  # trachea
    img -= 0.06 * _ellipse(g, 0.5, 1.27 + inspiration, 0.16, 0.07, soft=0.5)  # gastric bubble

    img += _frontal_bones(g, air, rng)
    hila = [(-0.22, 0.6, -1.0), (0.22, 0.58, 1.0)]
    img += 0.12 * _vessels(g, shape, hila, rng) * air
    img += 0.015 * _noise(shape, max(2.0, g.scale * 0.04), rng) * air  # parenchymal mottle
    return img


# --------------------------------------------------------------------------------------------
# Lateral phantom: patient facing image left (anterior left, spine right).
# --------------------------------------------------------------------------------------------


def _lateral_spine(g: _Grid, rng: np.random.Generator) -> np.ndarray:
    """Stacked vertebral bodies with darker disc spaces along a gentle kyphosis."""
    axis = 0.56 + 0.08 * np.sin(np.pi * np.clip(g.v, -0.3, 1.6) / 1.6) + rng.uniform(-0.03, 0.03)
    column = _smooth((0.15 - np.abs(g.u - axis)) / 0.03)
    discs = _smooth((np.abs(np.sin(np.pi * (g.v - rng.uniform(0, 0.13)) / 0.13)) - 0.2) / 0.25)
    posterior = _smooth((0.07 - np.abs(g.u - axis - 0.26)) / 0.04)
    return column * (0.35 + 0.65 * discs) + 0.4 * posterior


def _lateral_bones(g: _Grid, body: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Spine (fading caudally), oblique ribs, sternum and raised humeri, as added density."""
    shape = body.shape
    spine = cv2.GaussianBlur(_lateral_spine(g, rng), (0, 0), max(0.6, g.scale * 0.008))
    bones: np.ndarray = 0.07 * spine * (1.1 - 0.4 * np.clip(g.v, 0, 1.2))
    t = np.linspace(0.0, 1.0, 16)
    curves = [(g.px(0.75 - 0.7 * t, -0.1 + i * 0.13 + 0.12 * t + 0.08 * t**2),
               max(1, int(g.scale * 0.04))) for i in range(10)]
    ribs = cv2.GaussianBlur(_polyline_layer(shape, curves), (0, 0), max(0.8, g.scale * 0.01))
    bones += 0.05 * ribs * body
    bones += 0.08 * _ellipse(g, -0.88, 0.45, 0.04, 0.42, soft=0.3, angle_deg=-6)  # sternum
    humeri = [(g.px(np.linspace(0.15, -0.45, 8), np.linspace(0.05, -0.7, 8)),
               max(1, int(g.scale * 0.13)))]
    bones += 0.08 * cv2.GaussianBlur(_polyline_layer(shape, humeri), (0, 0), g.scale * 0.02)
    return bones


def _render_lateral(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Radiodensity-like image in 0..1 for a lateral chest view."""
    g = _make_grid(h, w, rng)
    shape = (h, w)
    heart_scale = rng.uniform(0.85, 1.2)

    front = -1.0 - 0.06 * np.sin(np.pi * np.clip(g.v, 0, 1.4) / 1.4) + 0.6 * _smooth(-g.v / 0.4)
    back = 1.05 - 0.15 * _smooth(-g.v / 0.5)
    body = _smooth((g.u - front) / 0.06) * _smooth((back - g.u) / 0.06)
    img: np.ndarray = 0.04 + body * (0.48 + 0.08 * np.sqrt(np.clip(1 - (g.u / 1.1) ** 2, 0, 1)))
    shoulders = body * _smooth((0.3 - g.v) / 0.45)
    img += 0.1 * shoulders

    lung = _ellipse(g, 0.0, 0.62, 0.84, 0.76, soft=0.2, power=2.4)
    diaphragm = 1.08 + 0.3 * np.clip((g.u + 0.85) / 1.6, 0.0, None) ** 1.6
    lung *= _smooth((diaphragm - g.v) / 0.05)
    heart = _ellipse(g, -0.4, 1.02, 0.42 * heart_scale, 0.32 * heart_scale, soft=0.5,
                     angle_deg=35)
    air = lung * (1.0 - 0.6 * heart) * (1.0 - 0.4 * shoulders)
    img -= air * rng.uniform(0.28, 0.34)
    img += 0.04 * _ellipse(g, 0.02, 0.6, 0.14, 0.14, soft=0.6)  # hilum
    img -= 0.05 * _ellipse(g, -0.45, 1.25, 0.16, 0.07, soft=0.5)  # gastric bubble
    trachea = g.px(np.linspace(-0.1, 0.1, 10), np.linspace(-0.5, 0.55, 10))
    img -= 0.05 * cv2.GaussianBlur(_polyline_layer(shape, [(trachea, int(g.scale * 0.08))]),
                                   (0, 0), g.scale * 0.015)

    img += _lateral_bones(g, body, rng)

    img += 0.07 * _vessels(g, shape, [(-0.05, 0.6, -1.0), (0.08, 0.6, 1.0)], rng, n=6) * air
    img += 0.015 * _noise(shape, max(2.0, g.scale * 0.04), rng) * air
    return img


# --------------------------------------------------------------------------------------------
# Finishing: resolution, texture, blur, exposure, patient rotation, lead marker.
# --------------------------------------------------------------------------------------------

_WORK_SHORT_SIDE = 400  # anatomy is rendered at most this size, then upscaled: keeps it fast


def _finish(img: np.ndarray, size: tuple[int, int], rng: np.random.Generator,
            lateral: bool) -> np.ndarray:
    """Turn a density map into an 8-bit radiograph with plausible noise, blur and exposure."""
    h, w = img.shape
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 0.9))
    angle = rng.uniform(-4.0, 4.0)
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, rng.uniform(1.0, 1.05))
    img = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    if (w, h) != size:
        img = cv2.resize(img, size, interpolation=cv2.INTER_CUBIC)
    gain = rng.uniform(0.9, 1.1)
    gamma = rng.uniform(0.85, 1.2)
    img = np.clip(img * gain + rng.uniform(-0.03, 0.05), 0.0, 1.0) ** gamma
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(0.012)  # quantum noise
    out = np.clip(img * 255.0, 0, 255).astype(np.uint8)
    _marker(out, rng, lateral)
    return out


def _marker(out: np.ndarray, rng: np.random.Generator, lateral: bool) -> None:
    """Burn in a bright lead side marker ("R"/"L") near a top corner, as on real films."""
    h, w = out.shape
    size = min(h, w) / 320 * 0.8
    text = "L" if lateral else str(rng.choice(["R", "L"]))
    x = int(w * (0.05 if rng.random() < 0.5 else 0.88))
    y = int(h * rng.uniform(0.07, 0.12))
    cv2.putText(out, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, size, 235, max(1, int(2 * size)),
                cv2.LINE_AA)


def phantom(width: int, height: int, seed: int, lateral: bool = False) -> np.ndarray:
    """An 8-bit greyscale chest-x-ray phantom (height x width); deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    f = min(1.0, _WORK_SHORT_SIDE / min(width, height))
    work_w, work_h = max(8, round(width * f)), max(8, round(height * f))
    render = _render_lateral if lateral else _render_frontal
    density = render(work_h, work_w, rng).astype(np.float32)
    return _finish(density, (width, height), rng, lateral)


def write_phantom(path: Path, width: int, height: int, seed: int, lateral: bool = False) -> None:
    """Write one phantom JPEG (creating folders) so tests and demos can make single images."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), phantom(width, height, seed, lateral),
                       [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
        raise OSError(f"could not write {path}")


# --------------------------------------------------------------------------------------------
# Data set layout and manifest.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _View:
    """One planned image: where it goes and what the manifest says about it."""

    rel_path: str
    patient: int
    lateral: bool


def _plan_views(count: int, rng: np.random.Generator) -> list[_View]:
    """Patients with 1-2 studies of 1-2 views, CheXpert naming; patient 1 shows every case."""
    views: list[_View] = []
    patient = 0
    while len(views) < count:
        patient += 1
        n_studies = 2 if patient == 1 or rng.random() < 0.35 else 1
        for study in range(1, n_studies + 1):
            with_lateral = (patient == 1 and study == 1) or rng.random() < 0.45
            names = ["view1_frontal.jpg"] + (["view2_lateral.jpg"] if with_lateral else [])
            for name in names:
                if len(views) < count:
                    rel = f"{DATASET_DIR}/train/patient{patient:05d}/study{study}/{name}"
                    views.append(_View(rel, patient, name.endswith("lateral.jpg")))
    return views


def _random_size(rng: np.random.Generator) -> tuple[int, int]:
    """Width 320..1024 and height for an aspect (h/w) of 0.75..1.3, like resized CheXpert."""
    width = int(rng.integers(320, 1025))
    height = int(round(width * rng.uniform(0.75, 1.3)))
    return width, height


def _labels(rng: np.random.Generator) -> dict[str, str]:
    """Sparse CheXpert labels: mostly blank, some 1.0 / 0.0 / -1.0; No Finding only when clean."""
    out: dict[str, str] = {}
    for name, (pos, neg, unc) in _LABEL_ODDS.items():
        r = rng.random()
        out[name] = ("1.0" if r < pos else "0.0" if r < pos + neg
                     else "-1.0" if r < pos + neg + unc else "")
    findings = [v for k, v in out.items() if k != "Support Devices"]
    out["No Finding"] = "" if "1.0" in findings or "-1.0" in findings else "1.0"
    return out


def make_demo_data(out_dir: Path, count: int = 14, seed: int = 0) -> Path:
    """Write `count` phantom images in CheXpert layout plus `train.csv`; return its path."""
    if count < 1:
        raise ValueError("count must be at least 1")
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    views = _plan_views(count, rng)
    patients: dict[int, tuple[str, int]] = {}
    rows: list[dict[str, str]] = []
    for view in views:
        sex, age = patients.setdefault(
            view.patient, (str(rng.choice(["Male", "Female"])), int(rng.integers(18, 91))))
        width, height = _random_size(rng)
        image_seed = int(rng.integers(2**31))
        write_phantom(out_dir / view.rel_path, width, height, image_seed, view.lateral)
        row = {"Path": view.rel_path, "Sex": sex, "Age": str(age),
               "Frontal/Lateral": "Lateral" if view.lateral else "Frontal",
               "AP/PA": "" if view.lateral else ("AP" if rng.random() < 0.8 else "PA")}
        row.update(_labels(rng))
        rows.append(row)
    manifest = out_dir / "train.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(CHEXPERT_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


CHEXPERT_TRAIN_ROWS = 223_414  # images in CheXpert's training manifest (64,540 patients, 187,641 studies)


def write_scale_manifest(out_dir: Path, rows: int = CHEXPERT_TRAIN_ROWS, images: list[Path] | None = None,
                         seed: int = 0) -> Path:
    """Write a CheXpert-form `train.csv` of `rows` rows (the full training manifest by default) for
    scale tests and benchmarks; return its path.

    Drawing 223,414 phantoms would take hours, so rows are laid out like CheXpert's (about 1.2 images
    per study, 2.9 studies per patient, with labels) but no image is drawn. With `images`, every row's
    path under `out_dir` is a relative symbolic link to a copy of one of them in `out_dir/sources`, in
    turn (`make_demo_data` ones, say; inside the image root, as the rig requires): the rig then shows
    and photographs real images while the manifest keeps its full size.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sources: list[Path] = []
    for k, image in enumerate(images or []):
        copy = out_dir / "sources" / f"{k}{Path(image).suffix}"
        copy.parent.mkdir(exist_ok=True)
        shutil.copyfile(image, copy)
        sources.append(copy)
    rng = np.random.default_rng(seed)
    # Per row: does it start a new study, and does that study start a new patient (CheXpert's ratios).
    new_study = rng.random(rows) < 187_641 / CHEXPERT_TRAIN_ROWS
    new_patient = rng.random(rows) < 64_540 / 187_641
    ages = rng.integers(18, 91, rows)
    label_draws = rng.random((rows, len(_LABEL_ODDS)))
    odds = np.array(list(_LABEL_ODDS.values()))
    cuts = np.cumsum(odds, axis=1)  # (findings, 3): positive, negative, uncertain upper bounds
    codes = (label_draws[:, :, None] >= cuts[None, :, :]).sum(axis=2)  # 0 pos, 1 neg, 2 unc, 3 blank
    values = np.array(["1.0", "0.0", "-1.0", ""])[codes]
    support = list(_LABEL_ODDS).index("Support Devices")
    findings = np.delete(codes, support, axis=1)
    no_finding = np.where(((findings == 0) | (findings == 2)).any(axis=1), "", "1.0")
    manifest = out_dir / "train.csv"
    patient = study = view = 0
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(CHEXPERT_COLUMNS)
        for i in range(rows):
            if i == 0 or new_study[i]:
                if i == 0 or new_patient[i]:
                    patient, study = patient + 1, 0
                study, view = study + 1, 0
            view += 1
            lateral = view > 1
            name = f"view{view}_{'lateral' if lateral else 'frontal'}.jpg"
            rel = f"{DATASET_DIR}/train/patient{patient:05d}/study{study}/{name}"
            writer.writerow((rel, "Female" if i % 2 else "Male", str(ages[i]), "Lateral" if lateral else "Frontal",
                             "" if lateral else ("AP" if i % 5 else "PA"), no_finding[i], *values[i]))
            if sources:
                link = out_dir / rel
                link.parent.mkdir(parents=True, exist_ok=True)
                link.unlink(missing_ok=True)
                link.symlink_to(os.path.relpath(sources[i % len(sources)], link.parent))
    return manifest


def main(argv: list[str] | None = None) -> int:
    """CLI entry: write demo data and print one line saying what was written."""
    parser = argparse.ArgumentParser(prog="python -m rig.demo_data",
                                     description="Write CheXpert-style phantom demo data.")
    parser.add_argument("out_dir", type=Path, help="folder to write into (created if missing)")
    parser.add_argument("--count", type=int, default=14, help="number of images (default 14)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    manifest = make_demo_data(args.out_dir, args.count, args.seed)
    print(f"wrote {args.count} phantom images and {manifest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
