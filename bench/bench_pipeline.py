"""The capture pipeline against the physical bound, the controller's own work per capture, and a long run.

(a) Achieved captures/s ÷ the physical bound on the realistic profile (dslr-usb2, time scale 1) at
    2 MP and 24 MP. The bound is computed from the rig file and profile for the exact sequence of
    captures the run took: the camera downloads one photo at a time, and each trigger needs its
    cycle first (a pose change: max(move_ms, distance/slew) + settle_ms; a light change: settle_ms;
    then settle frames / refresh, shutter lag, exposure). Photos are rendered once by the simulated
    studio (zero latencies) and replayed by a camera that keeps the profile's latencies, so the
    simulator's rendering takes no CPU from the controller (a real camera renders in its own hardware).
    The frame ids are deterministic on a fresh run store, so each replayed photo shows its own frame.
(b) Controller work per capture on the zero profile at 2 MP (replayed photos, display not waiting for
    refreshes, no moves): prepare, show, readback, QA, write, from each attempt's stored timing.
(c) Captures/s over the first and last thousand of a 3,000-capture run (zero profile, the simulated
    camera at a small photo size).
(d) Peak memory (VmHWM) of a whole run in a process of its own at 2 MP, realistic profile: with the
    replaying camera (the controller's own memory, as with a real camera) and with the simulated
    studio rendering in the same process; each ÷ the 300 MB target.

    .venv/bin/python bench/bench_pipeline.py [--images 16] [--sizes 2,24] [--long 3000] [--keep DIR] [--no-memory]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import yaml

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

from rig.config import RigConfig
from rig.demo_data import make_demo_data
from rig.devices import CameraFile, Shot
from rig.devices.kinds import Devices, Opening, open_controller, open_devices, open_display
from rig.engine import BACKLOG, QA_THREADS, Engine, RunResult
from rig.manifest import Manifest
from rig.plan import Plan
from rig.session import Session, load_session
from rig.store import RunStore

ROOT = Path(__file__).resolve().parents[1]
CONDITIONS = [{"pose": "front", "lighting": "bright"}, {"pose": "left", "lighting": "dim"},
              {"pose": "right_high", "lighting": "bright"}]


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown CPU")
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()} (figures under shared load)"


def rig_file(directory: Path, photo: tuple[int, int], profile: str, time_scale: float,
             display: tuple[int, int] = (1280, 1024), motion: dict[str, int] | None = None) -> Path:
    """The demo's simulated rig with the given photo size and timing profile."""
    rig = yaml.safe_load((ROOT / "calibration" / "sim-rig.yaml").read_text())
    rig["sim"].update(photo_width=photo[0], photo_height=photo[1], profile=profile, time_scale=time_scale)
    rig["display"].update(width=display[0], height=display[1])
    if motion:
        rig["motion"].update(motion)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "rig.yaml"
    path.write_text(yaml.safe_dump(rig, sort_keys=False))
    return path


def fresh_session(directory: Path, data: Path, rig: Path, repeats: int = 1) -> tuple[Session, RunStore, RunStore]:
    """A session over the data with a fresh run store (frame ids start at 1), and a reader."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "session.yaml"
    path.write_text(yaml.safe_dump({
        "rig": str(rig), "manifest": {"csv": str(data / "train.csv"), "image_root": str(data)},
        "conditions": CONDITIONS, "repeats": repeats, "retries": 2, "output": str(directory / "run")}))
    session = load_session(path)
    store = RunStore.create(session.output, session.path,
                            Plan.of(session, Manifest(session.manifest_csv, session.image_root, None)))
    return session, store, RunStore(session.output)


def run(session: Session, store: RunStore, reader: RunStore, devices: Devices, backlog: int = BACKLOG,
        qa_threads: int = QA_THREADS) -> tuple[RunResult, float]:
    """The engine over the whole plan; returns its result and the wall-clock start (time.time())."""
    try:
        t0 = time.time()
        result = Engine(session, store, reader, devices, backlog=backlog, qa_threads=qa_threads).run()
    finally:
        devices.close()
        store.close()
        reader.close()
    return result, t0


@dataclass(frozen=True)
class Attempt:
    finished_at: float  # time.time() of its commit
    commanded: dict[str, int]  # servo channel -> pulse
    lights: dict[str, int]
    timing: dict[str, float]  # seconds by stage


def attempts(output: Path) -> list[Attempt]:
    """Every attempt in commit order (= trigger order: the writer commits in download order)."""
    with sqlite3.connect(output / "run.sqlite") as db:
        rows = db.execute("SELECT finished_at, commanded, lights, timing FROM attempts ORDER BY attempt_id").fetchall()
    return [Attempt(float(f), json.loads(c or "{}"), json.loads(li or "{}"), json.loads(t or "{}"))
            for f, c, li, t in rows]


# ---------------------------------------------------------------- replayed photos


def record(directory: Path, data: Path, photo: tuple[int, int]) -> list[Path]:
    """Render every photo of a fresh run once (zero latencies); returns them in shot order (kept under
    `directory`: with --keep a later run reuses them)."""
    kept = sorted((directory / "photos").glob("*.jpg"))
    if kept:
        return kept
    rig = rig_file(directory, photo, "zero", 0.0)
    session, store, reader = fresh_session(directory, data, rig)
    devices = open_devices(session.rig, session.rig_path, fast=True)
    shots: dict[int, bytes] = {}
    download = devices.camera.download

    def keep(shot: Shot) -> Sequence[CameraFile]:
        files = download(shot)
        shots[shot.number] = files[0].data
        return files

    devices.camera.download = keep  # type: ignore[method-assign]
    result, _ = run(session, store, reader, devices)
    if result.rejected or result.failed_attempts:
        print(f"  note: the recording run had {result.rejected} rejected / {result.failed_attempts} failed attempts;"
              " replays after a retake may show another frame")
    paths = []
    for number in sorted(shots):
        path = directory / "photos" / f"{number:05d}.jpg"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(shots[number])
        paths.append(path)
    return paths


class ReplayCamera:
    """A Camera that hands out pre-rendered photos in shot order with the rig file's profile latencies."""

    def __init__(self, photos: list[Path], rig: RigConfig) -> None:
        sim = rig.sim
        self.photos = photos
        self.trigger_s = (sim.timing("shutter_lag_s") + sim.timing("exposure_s")) * sim.time_scale
        self.download_s = sim.timing("download_s") * sim.time_scale
        self.timing_s = (self.trigger_s, self.download_s)
        self._number = 0

    def open(self) -> None: ...

    def trigger(self) -> Shot:
        if self.trigger_s:
            time.sleep(self.trigger_s)
        self._number += 1
        return Shot(self._number)

    def download(self, shot: Shot) -> Sequence[CameraFile]:
        t = time.monotonic()
        data = self.photos[(shot.number - 1) % len(self.photos)].read_bytes()
        time.sleep(max(0.0, self.download_s - (time.monotonic() - t)))  # the transfer, reading included
        return [CameraFile(f"IMG_{shot.number:05d}.JPG", data)]

    def close(self) -> None: ...


def replay_devices(rig_path: Path, photos: list[Path], fast: bool) -> Devices:
    """The simulated controller and display as a run opens them, with the replaying camera."""
    from rig.session import load_rig_for_run

    opening = Opening(load_rig_for_run(rig_path), rig_path, ExitStack(), fast)
    try:
        motion, display = open_controller(opening), open_display(opening)
    except BaseException:
        opening.stack.close()
        raise
    return Devices(motion, ReplayCamera(photos, opening.rig), display, opening.stack)


# ---------------------------------------------------------------- (a) against the physical bound


def physical_bound(rig: RigConfig, rows: list[Attempt]) -> tuple[list[float], list[str]]:
    """When each photo's download could end at the earliest, for this sequence of captures (seconds from
    the run's start), and the derivation in words.

    The main thread triggers capture i once its cycle is done (cycle_i after capture i-1's exposure,
    never waiting for QA); the camera downloads one photo at a time, each after its exposure."""
    sim, display, motion = rig.sim, rig.display, rig.motion
    download = sim.timing("download_s") * sim.time_scale
    exposure = (sim.timing("shutter_lag_s") + sim.timing("exposure_s")) * sim.time_scale
    frames = display.settle_frames / display.refresh_hz
    slew = {s.channel: s.slew for s in rig.servos.values()}
    pose = {str(s.channel): s.park for s in rig.servos.values()}  # the rig starts parked
    lights: dict[str, int] | None = None
    triggered = done = 0.0
    ends, moves = [], []
    for r in rows:
        targets, levels = r.commanded, r.lights
        cycle = frames + exposure
        changed = False
        if targets != {k: pose.get(k) for k in targets}:
            need = max([abs(v - pose.get(k, v)) / slew[int(k)] for k, v in targets.items()], default=0.0)
            move = max(motion.move_ms / 1000, need)
            moves.append(move)
            cycle += move
            pose.update(targets)
            changed = True
        if levels != lights:
            lights, changed = levels, True
        if changed:
            cycle += motion.settle_ms / 1000
        triggered += cycle
        done = max(done, triggered) + download
        ends.append(done)
    words = [f"download {download * 1000:.0f} ms (one at a time); trigger cycle {(frames + exposure) * 1000:.0f} ms "
             f"= {display.settle_frames} settle frames at {display.refresh_hz:g} Hz {frames * 1000:.1f} "
             f"+ shutter lag and exposure {exposure * 1000:.1f}",
             f"{len(moves)} pose changes (move max(move_ms {motion.move_ms}, distance/slew) = "
             f"{', '.join(f'{m * 1000:.0f}' for m in moves)} ms, + settle {motion.settle_ms} ms), "
             "overlapping downloads"]
    return ends, words


def against_bound(label: str, rig_path: Path, photos: list[Path], directory: Path, data: Path,
                  backlog: int = BACKLOG) -> float:
    session, store, reader = fresh_session(directory, data, rig_path)
    result, t0 = run(session, store, reader, replay_devices(rig_path, photos, fast=False), backlog=backlog)
    rows = attempts(session.output)
    ends, words = physical_bound(session.rig, rows)
    commits = [r.finished_at - t0 for r in rows]
    n, k = len(rows), min(backlog, len(rows) // 4)  # steady: after the first `backlog` captures filled the stages
    steady_bound = (ends[-1] - ends[k]) / (n - 1 - k)
    steady = (commits[-1] - commits[k]) / (n - 1 - k)
    med = {k: statistics.median(r.timing.get(k, 0.0) for r in rows)
           for k in ("download_wait", "download", "qa_wait", "qa", "commit_wait", "write", "backlog_wait")}
    print(f"(a) {label}: {n} captures ({result.captured} accepted, {result.rejected} rejected), backlog {backlog}")
    for w in words:
        print(f"    bound: {w}")
    print(f"    bound per capture (steady, capture {k + 1} to {n}) {steady_bound * 1000:.1f} ms = "
          f"{1 / steady_bound:.3f} captures/s; whole run to the last download {ends[-1]:.2f} s")
    print(f"    achieved: {steady * 1000:.1f} ms per capture between commits {k + 1} and {n} = {1 / steady:.3f} "
          f"captures/s; whole run to the last commit {commits[-1]:.2f} s")
    print("    median stage times (ms): " + ", ".join(f"{k} {v * 1000:.1f}" for k, v in med.items()))
    ratio = steady_bound / steady
    print(f"    RATIO achieved / bound: steady {ratio:.3f}   whole run {ends[-1] / commits[-1]:.3f}")
    return ratio


# ---------------------------------------------------------------- (b) controller work per capture


def overhead(rig_path: Path, photos: list[Path], directory: Path, data: Path) -> None:
    """Stages one after another (backlog 1, one QA thread), so that each stage's time is its own work on
    one core, not time shared with the others; then the same run pipelined, for its wall time."""
    session, store, reader = fresh_session(directory / "serial", data, rig_path)
    result, t0 = run(session, store, reader, replay_devices(rig_path, photos, fast=True), backlog=1, qa_threads=1)
    rows = attempts(session.output)
    session, store, reader = fresh_session(directory / "pipelined", data, rig_path)
    _, p0 = run(session, store, reader, replay_devices(rig_path, photos, fast=True))
    piped = attempts(session.output)
    pipelined = (piped[-1].finished_at - p0) / len(piped)

    def med(*keys: str) -> float:
        return statistics.median(sum(r.timing.get(k, 0.0) for k in keys) for r in rows)

    parts = {"prepare (decode, letterbox; prefetched)": med("prepare"), "fiducials (draw, reference)": med("fiducials"),
             "show (display blit)": med("settle"),
             "readback (confirm before + after)": med("move", "readback"), "QA": med("qa"), "write": med("write")}
    total = sum(parts.values())
    wall = (rows[-1].finished_at - t0) / len(rows)
    print(f"(b) controller work per capture, zero profile, 2 MP replayed ({len(rows)} captures, "
          f"{result.captured} accepted), stages one after another, medians:")
    for k, v in parts.items():
        print(f"    {k:40s} {v * 1000:7.2f} ms")
    print(f"    {'total':40s} {total * 1000:7.2f} ms   (wall per capture {wall * 1000:.1f} ms one after another, "
          f"{pipelined * 1000:.1f} ms pipelined)")
    print(f"    RATIO total / 20 ms target: {total / 0.020:.2f}")


# ---------------------------------------------------------------- (c) a long run


def long_run(directory: Path, captures: int) -> None:
    images = max(1, captures // (len(CONDITIONS) * 10))
    data = directory / "data"
    make_demo_data(data, count=images, seed=3)
    rig = rig_file(directory, (600, 450), "zero", 0.0, display=(480, 384), motion={"move_ms": 0, "settle_ms": 0})
    session, store, reader = fresh_session(directory, data, rig, repeats=10)
    devices = open_devices(session.rig, session.rig_path, fast=True)
    result, _ = run(session, store, reader, devices)
    done = sorted(r.finished_at for r in attempts(session.output))
    k = min(1000, len(done) // 3)
    first = (k - 1) / (done[k - 1] - done[0])
    last = (k - 1) / (done[-1] - done[-k])
    print(f"(c) {len(done)} attempts ({result.captured} accepted) of {images} images x {len(CONDITIONS)} conditions "
          f"x 10 repeats, zero profile, photo 600x450, display 480x384")
    print(f"    first {k}: {first:.1f} captures/s   last {k}: {last:.1f} captures/s   "
          f"RATIO last / first {last / first:.3f}")


# ---------------------------------------------------------------- (d) peak memory, a process per run

def _hwm_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def memory_child(directory: Path, data: Path, photos_dir: Path | None) -> None:
    """One whole run at 2 MP (dslr-usb2 at time scale 0.1) in this fresh process; prints its VmHWM in MB.
    With `photos_dir` the camera replays those photos, else the simulated studio renders them here."""
    rig = rig_file(directory, (1600, 1200), "dslr-usb2", 0.1)
    session, store, reader = fresh_session(directory, data, rig)
    if photos_dir is not None:
        devices = replay_devices(rig, sorted(photos_dir.glob("*.jpg")), fast=False)
    else:
        devices = open_devices(session.rig, session.rig_path)
    result, _ = run(session, store, reader, devices)
    print(json.dumps({"hwm_mb": _hwm_mb(), "captured": result.captured}))


def memory(work: Path, data: Path) -> None:
    photos = record(work / "record-1600x1200", data, (1600, 1200))
    found = {}
    for name, extra in (("replayed", ["--photos", str(photos[0].parent)]), ("studio", [])):
        out = subprocess.run([sys.executable, __file__, "--memory-child", str(work / f"mem-{name}-{time.time_ns()}"),
                              "--data", str(data), *extra], capture_output=True, text=True, timeout=900)
        if out.returncode != 0:
            raise SystemExit(f"memory run failed: {out.stderr[-2000:]}")
        found[name] = json.loads(out.stdout.strip().splitlines()[-1])
    rep, studio = found["replayed"], found["studio"]
    print(f"(d) peak memory of a whole run at 2 MP ({rep['captured']} captures), a process of its own:")
    print(f"    camera replaying photos (the controller's own)   {rep['hwm_mb']:7.1f} MB   "
          f"RATIO / 300 MB target: {rep['hwm_mb'] / 300:.2f}")
    print(f"    simulated studio rendering in the same process   {studio['hwm_mb']:7.1f} MB   "
          f"RATIO / 300 MB target: {studio['hwm_mb'] / 300:.2f}   "
          f"(studio / replayed {studio['hwm_mb'] / rep['hwm_mb']:.2f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=16, help="phantom images (x3 conditions; >= 14 for 42 captures)")
    ap.add_argument("--sizes", default="2,24", help="photo sizes for (a), in MP: 2 (1600x1200), 24 (6000x4000)")
    ap.add_argument("--long", type=int, default=3000, help="captures of the long run (c); 0 skips it")
    ap.add_argument("--backlog", type=int, default=BACKLOG, help="the engine's backlog for (a)")
    ap.add_argument("--skip-overhead", action="store_true")
    ap.add_argument("--keep", type=Path, help="work here (and keep it) instead of a temporary folder")
    ap.add_argument("--no-memory", action="store_true", help="skip (d)")
    ap.add_argument("--memory-child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--photos", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.data, args.photos)
        return
    print(machine())
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        work = args.keep or Path(tmp)
        data = work / "data"
        if not (data / "train.csv").exists():
            make_demo_data(data, count=args.images, seed=1)
        known = {"2": ("2 MP (1600x1200)", (1600, 1200)), "24": ("24 MP (6000x4000)", (6000, 4000))}
        for label, size in (known[mp] for mp in args.sizes.split(",")):
            tag = f"{size[0]}x{size[1]}"
            t = time.monotonic()
            photos = record(work / f"record-{tag}", data, size)
            print(f"    ({len(photos)} photos at {tag} rendered once by the simulated studio "
                  f"({time.monotonic() - t:.1f} s; 0: kept from an earlier run), then replayed)")
            real = work / f"real-{tag}-{time.time_ns()}"  # a fresh run store each time
            against_bound(label, rig_file(real, size, "dslr-usb2", 1.0), photos, real, data, args.backlog)
            if size == (1600, 1200) and not args.skip_overhead:
                zero = work / f"zero-{time.time_ns()}"
                overhead(rig_file(zero, size, "zero", 0.0, motion={"move_ms": 0, "settle_ms": 0}), photos, zero, data)
        if args.long:
            long_run(work / f"long-{time.time_ns()}", args.long)
        if not args.no_memory:
            memory(work, data)


if __name__ == "__main__":
    main()
