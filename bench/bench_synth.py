"""`rig synth` throughput: images per second per core for each perturbation and both published sets,
at CheXpert-small size (320 x 390) and full size (2048 x 2500), against baselines measured in the same
run, plus the speed-up from 1 to N local workers (and the real command's end-to-end rate).

Per core = one process with OpenCV held to one thread, doing what a worker does per image: decode the
JPEG, run the chain, encode the JPEG (the write is left out: it is the disk's). Baselines:
  * decode+encode: `identity`, the floor any perturbation pays;
  * CheXphoto's approach re-implemented with numpy/OpenCV for `glare_matte` (a 2-D Gaussian density
    evaluated at every pixel, an RGBA float mask, alpha compositing) and `moire` (2x upsampling, two
    line masks on a canvas twice the picture's size, each warped, rotated, cropped and composited,
    then downsampling). OpenCV is faster than the Pillow calls it stands in for, so the ratio against
    the real scripts would be larger.

    PYTHONPATH=. python bench/bench_synth.py [--seconds 1.5] [--scaling-images 160]
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rig.demo_data import phantom  # noqa: E402
from rig.synth.base import SETS, registry  # noqa: E402
from rig.synth.job import Spec, encode, perturb  # noqa: E402

SIZES = {"320x390": (320, 390), "2048x2500": (2048, 2500)}


def jpeg_of(w: int, h: int) -> bytes:
    ok, data = cv2.imencode(".jpg", phantom(w, h, seed=4), [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    return data.tobytes()


def rate(fn, seconds: float, least: int = 3) -> float:
    """Calls per second of fn(i), at least `least` calls and `seconds` of wall time, after one warm-up."""
    fn(0)  # warm caches and lazy imports
    n, t0 = 0, time.perf_counter()
    while n < least or time.perf_counter() - t0 < seconds:
        fn(n + 1)
        n += 1
    return n / (time.perf_counter() - t0)


def ours(chain: tuple[str, ...], data: bytes, rig: str | None):
    spec = Spec(chain, 3, 0, "/unused", rig)
    buf = np.frombuffer(data, np.uint8)

    def run(i: int) -> None:
        img = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
        out, _ = perturb(spec, f"patient{i}/study1/view1_frontal.jpg", img)
        encode(out)
    return run


# ---------------------------------------------------------------- CheXphoto's approach, re-implemented


def chexphoto_glare_matte(img: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    mean = np.array([rng.uniform(0, w), rng.uniform(0, h)])
    cov = (level * 50.0) ** 2
    xs, ys = np.meshgrid(np.arange(w), np.arange(h))
    pts = np.stack([xs, ys], axis=-1).astype(np.float64)
    d = pts - mean
    pdf = np.exp(-0.5 * (d[..., 0] ** 2 + d[..., 1] ** 2) / cov) / (2 * np.pi * cov)  # multivariate_normal.pdf
    mask = np.zeros((h, w, 4), float)
    mask[..., :3] = 255
    mask[..., 3] = np.fmin(150 + 20 * level, pdf * level * 100 / pdf.max())
    rgba = np.dstack([np.repeat(img[..., None], 3, 2), np.full((h, w), 255, np.uint8)]).astype(float)
    a = mask[..., 3:] / 255
    rgba[..., :3] = mask[..., :3] * a + rgba[..., :3] * (1 - a)
    return rgba[..., :3].astype(np.uint8)


def chexphoto_moire(img: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    gap, opacity = {1: (20, 0.05), 2: (4.5, 0.15), 3: (2.5, 0.35), 4: (1, 0.5)}[level]
    h, w = img.shape[:2]
    rgba = cv2.cvtColor(img, cv2.COLOR_GRAY2BGRA)
    up = cv2.resize(rgba, (2 * w, 2 * h), interpolation=cv2.INTER_LANCZOS4).astype(np.float32)
    dim = max(2 * w, 2 * h) * 2
    base = np.zeros((dim, dim, 4), np.uint8)
    rows = np.remainder(np.arange(dim), 1 + gap) < 1
    base[rows, :, 3] = int(opacity * 255)
    for angle in (90.0, 90.0 + rng.normal(0, 1)):
        src = np.float32([[0, 0], [dim, 0], [dim, dim], [0, dim]])
        dst = np.float32([[0, dim * 0.25], [dim, 0], [dim, dim], [0, dim * 0.75]])
        warped = cv2.warpPerspective(base, cv2.getPerspectiveTransform(dst, src), (dim, dim))
        rot = cv2.warpAffine(warped, cv2.getRotationMatrix2D((dim / 2, dim / 2), angle, 1.0), (dim, dim))
        ox, oy = (int(v) for v in rng.uniform(0, 100, 2))
        left, top = (dim - 2 * w) // 2 + ox, (dim - 2 * h) // 2 + oy
        crop = rot[top:top + 2 * h, left:left + 2 * w].astype(np.float32)
        a = crop[..., 3:] / 255
        up[..., :3] = crop[..., :3] * a + up[..., :3] * (1 - a)
    return cv2.resize(up, (w, h), interpolation=cv2.INTER_LANCZOS4).astype(np.uint8)[..., :3]


def theirs(fn, data: bytes):
    buf = np.frombuffer(data, np.uint8)
    rng = np.random.default_rng(0)

    def run(i: int) -> None:
        img = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
        encode(fn(img, 3, rng))
    return run


# ---------------------------------------------------------------- scaling of the real command


def _warm(_: int) -> None:
    from rig.synth.job import _configure

    _configure()
    registry()


def scaling(n_images: int, workers: int) -> tuple[float, float]:
    """Steady-state images/s of the photographic set over n copies of a 320x390 phantom with 1 and with
    `workers` warm pool processes (the pool `rig synth` uses: forkserver, 4 images per task)."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from rig.synth.job import Item, process_batch

    rates = []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "view1_frontal.jpg"
        src.write_bytes(jpeg_of(320, 390))
        for n in (1, workers):
            out = Path(tmp) / f"out{n}"
            (out / ".synth-tmp").mkdir(parents=True)
            spec = Spec(SETS["photographic"], 3, 0, str(out))
            items = [Item(f"patient{i:05d}/study1/view1_frontal.jpg", str(src), f"p/{i}.jpg") for i in range(n_images)]
            with ProcessPoolExecutor(n, mp_context=get_context("forkserver")) as pool:
                list(pool.map(_warm, range(n)))
                t0 = time.perf_counter()
                futures = [pool.submit(process_batch, spec, items[i:i + 4]) for i in range(0, n_images, 4)]
                assert all(o.ok for f in futures for o in f.result())
                rates.append(n_images / (time.perf_counter() - t0))
    return rates[0], rates[1]


def command_rate(n_images: int, workers: int) -> float:
    """Wall-clock images/s of the real `rig synth --set photographic` (process start-up included)."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        img = jpeg_of(320, 390)
        with open(data.with_suffix(".csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["Path", "Sex"])
            for i in range(n_images):
                rel = f"train/patient{i:05d}/study1/view1_frontal.jpg"
                (data / rel).parent.mkdir(parents=True, exist_ok=True)
                (data / rel).write_bytes(img)
                w.writerow([rel, "Female"])
        r = subprocess.run([sys.executable, "-m", "rig.cli", "synth", "--csv", str(data.with_suffix(".csv")),
                            "--image-root", str(data), "--out", str(Path(tmp) / "out"), "--set", "photographic",
                            "--workers", str(workers)], capture_output=True, text=True, cwd=ROOT)
        assert r.returncode == 0, r.stderr
        return float(re.search(r"made this run in [\d.]+ s \(([\d.]+) img/s\)", r.stderr).group(1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=1.5, help="time per measurement")
    ap.add_argument("--scaling-images", type=int, default=160)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    cores = len(os.sched_getaffinity(0))
    print(f"rig synth benchmark: {cores} core(s), load average {os.getloadavg()[0]:.1f} at start "
          f"(a shared machine: figures are noisy)")
    from tests.conftest import rig_file  # a small simulated rig for 'studio'

    rig = str(rig_file(Path(tempfile.mkdtemp())))
    chains = {name: (name,) for name in registry()}
    chains.update({f"--set {k}": v for k, v in SETS.items()})
    for label, (w, h) in SIZES.items():
        data = jpeg_of(w, h)
        floor = rate(ours(("identity",), data, None), args.seconds)
        print(f"\n{label}: images/s per core, level 3 (decode + chain + encode); decode+encode alone: {floor:.1f}/s")
        print(f"  {'chain':22s} {'img/s':>8s} {'x of decode+encode time':>24s}")
        for label_c, chain in chains.items():
            if chain == ("studio",) and w > 1000:
                continue  # the studio renders the rig's photo size whatever the input: once is enough
            r = rate(ours(chain, data, rig), args.seconds)
            print(f"  {label_c:22s} {r:8.1f} {floor / r:24.2f}")
        for name, fn in (("glare_matte", chexphoto_glare_matte), ("moire", chexphoto_moire)):
            base = rate(theirs(fn, data), args.seconds, least=1)
            mine = rate(ours((name,), data, None), args.seconds)
            print(f"  CheXphoto's approach, {name}: {base:.2f} img/s; "
                  f"ours {mine:.1f} img/s: {mine / base:.1f}x faster per core")
    one, many = scaling(args.scaling_images, cores)
    print(f"\nscaling, --set photographic on {args.scaling_images} 320x390 images, warm pool: 1 worker "
          f"{one:.1f} img/s, {cores} workers {many:.1f} img/s: speed-up {many / one:.2f}x, "
          f"efficiency {many / one / cores:.0%}")
    whole = command_rate(args.scaling_images, cores)
    print(f"the real command, rig synth --set photographic --workers {cores}, same images: {whole:.1f} img/s "
          f"(start-up, journal and CSV included)")


if __name__ == "__main__":
    main()
