"""QA time per photo at 2, 12 and 24 MP, as a share of the camera's download time for that photo.

Photos are rendered by the simulated studio at each size (the demo rig's 1280x1024 screen; poses
`front` and `left`), saved as JPEG at the simulator's quality (90: ~2.7 MB at 24 MP) and at a DSLR
"fine" quality (98: ~10 MB at 24 MP, as a camera's own 24 MP JPEG). Each photo is checked by
`PhotoQA.check_files` (decoded at a reduced DCT scale, docs/decisions/0014) and, as baselines in
the same run, by the full-decode path (`decode_photo` whole, then `PhotoQA.check` at full resolution)
and by the code before the markers were searched where the last photo had them (`--old REV`: rig/qa.py
at that git revision, loaded beside the current one). Paths: `new`, the second and later photos at a
pose on one instance (the engine's steady state: markers searched around their predicted places);
`fresh`, a new instance per photo (a thread's first photo: the whole photo searched); `old`, the
old code's steady state; `full`, the full-decode baseline. One thread: cv2.setNumThreads(1). Times
are medians over repeats, the paths interleaved.

Download time: the dslr-usb2 profile's 0.45 s (a ~10 MB JPEG at ~25 MB/s) is the ratio's bound;
the JPEG's own size at 25 MB/s is printed beside it (stricter for small files, where a real camera's
per-transfer overhead dominates instead).

    .venv/bin/python bench/bench_qa.py [--repeats 5] [--sizes 2,12,24] [--old REV]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from types import ModuleType

import cv2
import numpy as np
import yaml

from rig.config import TIMING_PROFILES, QAConfig, load_rig
from rig.demo_data import make_demo_data
from rig.fiducials import draw_fiducials, fiducial_layout
from rig.images import prepare
from rig.qa import Expected, PhotoQA, Verdict, decode_photo
from rig.sim.studio import Scene, Studio

ROOT = Path(__file__).resolve().parents[1]
SIZES = {2: (1600, 1200), 12: (4000, 3000), 24: (6000, 4000)}
QUALITIES = (90, 98)
POSES = ("front", "left")
USB_MB_S = 25.0
DOWNLOAD_S = TIMING_PROFILES["dslr-usb2"]["download_s"]
STEPS = ("decode", "detection", "registration", "sharpness")
OLD_REV = "5af7b46"  # main before the predicted marker search (issue 13)


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "?")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{model}, {os.cpu_count()} cores, load average {load} (shared machine); cv2 threads 1"


def photos(data_dir: Path, megapixels: int) -> tuple[Expected, dict[tuple[str, int], bytes]]:
    """JPEGs of frame 684 from each pose at each quality, and what QA expects of them."""
    rig_yaml = yaml.safe_load((ROOT / "calibration" / "sim-rig.yaml").read_text())
    w, h = SIZES[megapixels]
    rig_yaml["sim"].update(photo_width=w, photo_height=h, time_scale=0.0)
    path = data_dir / f"rig-{megapixels}.yaml"
    path.write_text(yaml.safe_dump(rig_yaml))
    rig = load_rig(path)
    studio = Studio(rig)
    sw, sh = rig.display.width, rig.display.height
    layout = fiducial_layout(sw, sh)
    shown = prepare(next((data_dir / "CheXpert-v1.0-small").rglob("*.jpg")), sw, sh, band=layout.band)
    x, y, xw, xh = shown.xray
    expected = Expected(684, layout, shown.xray, shown.source_size, shown.canvas[y:y + xh, x:x + xw])
    frame = draw_fiducials(shown.canvas, 684, layout)
    levels = rig.light_levels("bright")
    lights = tuple(levels.get(ch, 0) for ch in range(max(levels) + 1))
    out = {}
    for pose in POSES:
        pulses = [1500.0] * len(rig.servos)
        for ch, us in rig.pose_targets(pose).items():
            pulses[ch] = float(us)
        bgr = cv2.cvtColor(studio.render(Scene(frame, tuple(pulses), lights)), cv2.COLOR_RGB2BGR)
        for q in QUALITIES:
            ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, q])
            assert ok
            out[pose, q] = data.tobytes()
    return expected, out


Run = tuple[float, float, dict[str, float], Verdict]  # wall s, thread CPU s, wall s by step, verdict


def old_module(rev: str) -> ModuleType | None:
    """rig/qa.py as it was at git revision `rev`, imported beside the current one, or None."""
    try:
        source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:rig/qa.py"], capture_output=True,
                                check=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"old path skipped: rig/qa.py at {rev} not readable ({e})")
        return None
    spec = importlib.util.spec_from_loader("rig_qa_old", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (dataclasses look their module up)
    exec(compile(source, f"{rev}:rig/qa.py", "exec"), module.__dict__)
    return module


def new_path(qa: PhotoQA, data: bytes, expected: Expected) -> Run:
    wall, cpu = time.perf_counter(), time.thread_time()
    verdict, _ = qa.check_files([data], expected)
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    assert verdict.ok, verdict.reasons
    return wall, cpu, verdict.timings, verdict


def full_path(qa: PhotoQA, data: bytes, expected: Expected) -> Run:
    """The same, decoding the photo whole and checking it at full resolution."""
    wall, cpu = time.perf_counter(), time.thread_time()
    photo = decode_photo(data)
    decoded = time.perf_counter() - wall
    assert photo is not None
    verdict = qa.check(photo, expected)
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    assert verdict.ok, verdict.reasons
    return wall, cpu, {"decode": decoded, **verdict.timings}, verdict


def entropy_floor(data: bytes, repeats: int) -> float:
    """Median wall s of decoding at 1/8 (little but the Huffman decoding every scale must do)."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        decode_photo(data, 8)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def screen_px_apart(a: Verdict, b: Verdict, expected: Expected) -> float:
    """Largest distance in screen px between where the two homographies put the x-ray area's points."""
    assert a.homography is not None and b.homography is not None
    x, y, w, h = expected.xray
    grid = np.array([[[x + w * i / 4, y + h * j / 4] for i in range(5) for j in range(5)]], np.float64)
    back = cv2.perspectiveTransform(cv2.perspectiveTransform(grid, a.homography), np.linalg.inv(b.homography))
    return float(np.linalg.norm(back[0] - grid[0], axis=1).max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sizes", default="2,12,24", help="megapixels, from " + ",".join(map(str, SIZES)))
    ap.add_argument("--old", default=OLD_REV, help="git revision whose rig/qa.py is the `old` baseline")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    old = old_module(args.old)
    print(machine())
    print(f"download bound: dslr-usb2 profile {DOWNLOAD_S:.2f} s per photo; also shown: JPEG size / "
          f"{USB_MB_S:g} MB/s")
    print(f"{'MP':>3} {'q':>3} {'MB':>5} {'pose':>6} {'path':>5} {'1/s':>3} {'wall ms':>8} {'cpu ms':>7} "
          + " ".join(f"{s:>6}" for s in ("dec", "detect", "reg", "sharp"))
          + f" {'÷0.45s':>7} {'÷size':>7} {'floor':>6} {'ΔH':>5} {'÷old':>5}")
    print("  (1/s: decode scale; dec..sharp: wall ms by step, sharp includes clipping; ÷0.45s, ÷size: QA wall time ÷ "
          "download time; floor: decode at 1/8 ÷ 0.45 s, the Huffman decoding no scale avoids; ΔH: largest "
          "distance in screen px between the new and full-resolution homographies over the x-ray; ÷old: wall time ÷ "
          "the old code's in the same run)")
    # (MP, quality, path) -> per pose: (QA ÷ 0.45 s, QA ÷ size-scaled download, thread CPU ÷ 0.45 s), and MB
    ratios: dict[tuple[int, int, str], list[tuple[float, float, float]]] = {}
    sizes: dict[tuple[int, int], float] = {}
    with TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        make_demo_data(data_dir, count=1, seed=1)
        for mp in (int(s) for s in args.sizes.split(",")):
            expected, jpegs = photos(data_dir, mp)
            for (pose, q), data in jpegs.items():
                qa, baseline = PhotoQA(QAConfig()), PhotoQA(QAConfig())
                new_path(qa, data, expected)  # the first photo of an instance may decode twice: steady state
                old_qa = None if old is None else old.PhotoQA(QAConfig())
                if old_qa is not None:
                    new_path(old_qa, data, expected)
                runs: dict[str, list[Run]] = {"new": [], "fresh": [], "old": [], "full": []}
                for _ in range(args.repeats):
                    runs["new"].append(new_path(qa, data, expected))
                    runs["fresh"].append(new_path(PhotoQA(QAConfig()), data, expected))
                    if old_qa is not None:
                        runs["old"].append(new_path(old_qa, data, expected))
                    runs["full"].append(full_path(baseline, data, expected))
                if not runs["old"]:
                    del runs["old"]
                old_wall = statistics.median(r[0] for r in runs["old"]) if "old" in runs else None
                sizes[mp, q] = len(data) / 1e6
                size_s = len(data) / 1e6 / USB_MB_S
                floor = entropy_floor(data, args.repeats) / DOWNLOAD_S
                apart = screen_px_apart(runs["new"][0][3], runs["full"][0][3], expected)
                for name, rs in runs.items():
                    wall = statistics.median(r[0] for r in rs)
                    cpu = statistics.median(r[1] for r in rs)
                    steps = [statistics.median(r[2].get(s, 0.0) for r in rs) for s in STEPS]
                    ratios.setdefault((mp, q, name), []).append((wall / DOWNLOAD_S, wall / size_s, cpu / DOWNLOAD_S))
                    extra = f" {floor:6.3f} {apart:5.3f}" if name == "new" else f" {'':6} {'':5}"
                    extra += f" {wall / old_wall:5.2f}" if old_wall else ""
                    print(f"{mp:>3} {q:>3} {len(data) / 1e6:5.1f} {pose:>6} {name:>5} {rs[0][3].scale:>3} "
                          f"{1000 * wall:8.1f} {1000 * cpu:7.1f} " + " ".join(f"{1000 * s:6.1f}" for s in steps)
                          + f" {wall / DOWNLOAD_S:7.3f} {wall / size_s:7.3f}{extra}")
    print("QA time ÷ the camera's download time, mean over poses: ÷ 0.45 s (thread CPU ÷ 0.45 s; ÷ size / 25 MB/s)")
    for (mp, q), mb in sizes.items():
        mean = {path: tuple(statistics.fmean(r[i] for r in ratios[mp, q, path]) for i in range(3))
                for path in ("new", "fresh", "old", "full") if (mp, q, path) in ratios}
        new, full = mean["new"], mean["full"]
        print(f"  {mp:>2} MP q{q} ({mb:4.1f} MB): reduced decode {new[0]:.3f} ({new[2]:.3f}; {new[1]:.3f}), "
              f"full decode (baseline) {full[0]:.3f} ({full[2]:.3f}; {full[1]:.3f}), speed-up {full[0] / new[0]:.2f}x")
        if "old" in mean:
            o, f = mean["old"], mean["fresh"]
            print(f"  {'':>2}    {'':>3}   ÷ old code, wall (thread CPU): second photo at the same pose "
                  f"{new[0] / o[0]:.2f} ({new[2] / o[2]:.2f}), speed-up {o[0] / new[0]:.2f}x ({o[2] / new[2]:.2f}x); "
                  f"a thread's first photo {f[0] / o[0]:.2f} ({f[2] / o[2]:.2f})")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
