"""Persistent camera session vs a fresh camera init per shot, on libgphoto2's virtual camera.

A shell loop over the gphoto2 CLI (`gphoto2 --capture-image-and-download` per item) pays process
start, port/driver discovery and camera init on every shot; `GPhoto2Camera` pays them once per run.
Both sides run the same real PTP stack; each side runs in fresh processes so that neither passes the
virtual camera's 26-captures-per-process store limit. Prints per-shot times and their ratio.

    PYTHONPATH=. python bench/bench_gphoto2.py [--shots 20] [--frame-mb 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent(
    """
    import json, sys, time
    mode, shots, frame_size, frame_path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    from rig.sim.vcam import VirtualCameraDir, strip_padding
    vdir = VirtualCameraDir(frame_size); vdir.activate()
    jpeg = open(frame_path, "rb").read()
    vdir.put_frame(jpeg)
    times = []
    if mode == "persistent":
        from rig.devices.gphoto2cam import GPhoto2Camera
        t0 = time.perf_counter()
        cam = GPhoto2Camera(); cam.open()
        open_s = time.perf_counter() - t0
        for _ in range(shots):
            t = time.perf_counter()
            files = cam.download(cam.trigger())
            times.append(time.perf_counter() - t)
            assert strip_padding(files[0].data) == jpeg
        cam.close()
    else:  # what one CLI invocation does: load ports and drivers, detect, init, capture, get, exit
        import gphoto2 as gp
        open_s = 0.0
        t = time.perf_counter()
        cam = gp.Camera(); cam.init()
        path = cam.capture(gp.GP_CAPTURE_IMAGE)
        cfile = cam.file_get(path.folder, path.name, gp.GP_FILE_TYPE_NORMAL)
        data = bytes(cfile.get_data_and_size())
        cam.file_delete(path.folder, path.name)
        cam.exit()
        times.append(time.perf_counter() - t)
        assert strip_padding(data) == jpeg
    vdir.cleanup()
    print(json.dumps({"open_s": open_s, "times": times}))
    """
)


def child(mode: str, shots: int, frame_size: int, frame: Path) -> tuple[float, list[float], float]:
    """Run one child process; return (open time, per-shot times, wall time incl. interpreter)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(shots), str(frame_size), str(frame)],
                         check=True, capture_output=True, text=True, env=env, cwd=ROOT).stdout
    wall = time.perf_counter() - t
    result = json.loads(out.strip().splitlines()[-1])
    return result["open_s"], result["times"], wall


def ms(values: list[float]) -> str:
    return f"median {1000 * statistics.median(values):7.2f} ms  mean {1000 * statistics.fmean(values):7.2f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shots", type=int, default=20, help="shots per side (max 25: one process' budget)")
    ap.add_argument("--frame-mb", type=float, default=8.0, help="padded frame size in MB")
    args = ap.parse_args()
    shots = min(args.shots, 25)
    size = int(args.frame_mb * 1024 * 1024)

    import tempfile

    import cv2
    import numpy as np

    frame = Path(tempfile.mkdtemp(prefix="bench-gphoto2-")) / "frame.jpg"
    img = np.random.default_rng(0).integers(0, 255, (480, 640, 3), np.uint8)
    frame.write_bytes(cv2.imencode(".jpg", img)[1].tobytes())

    open_s, persistent, p_wall = child("persistent", shots, size, frame)
    fresh: list[float] = []
    fresh_wall: list[float] = []
    for _ in range(shots):  # one process per shot, like a shell loop over the CLI
        _, times, wall = child("fresh", 1, size, frame)
        fresh += times
        fresh_wall.append(wall)

    print(f"virtual camera, {shots} shots per side, frame {args.frame_mb:g} MB (capture+download+delete)")
    print(f"  persistent session : {ms(persistent)}   (session open once: {1000 * open_s:.1f} ms)")
    print(f"  fresh init per shot: {ms(fresh)}   (in-process: init+capture+download+exit)")
    print(f"  fresh process/shot : {ms(fresh_wall)}   (wall: python + libgphoto2 load, like a CLI loop)")
    print(f"  ratio fresh init / persistent     : {statistics.median(fresh) / statistics.median(persistent):6.1f}x")
    fresh_process_ratio = statistics.median(fresh_wall) / statistics.median(persistent)
    print(f"  ratio fresh process / persistent  : {fresh_process_ratio:6.1f}x")
    print("  per-shot persistent (ms): " + " ".join(f"{1000 * t:.1f}" for t in persistent))
    print("  per-shot fresh init (ms): " + " ".join(f"{1000 * t:.1f}" for t in fresh))
    print(f"  persistent process wall (all {shots} shots): {p_wall:.2f} s")


if __name__ == "__main__":
    main()
