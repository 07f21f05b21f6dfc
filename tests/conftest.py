"""Shared fixtures: small phantom data sets and session/rig files that run fast on the simulated rig."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

if TYPE_CHECKING:
    from rig.devices.kinds import Devices
    from rig.sim.world import SimWorld

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
# These tests' operator has the venv's `rig` on PATH (README), so hints say plain `rig`;
# tests/test_command_hints.py checks a fresh shell without it.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
# rig remembers manifests and clean store closes in the user's cache folder (ADR 0015): the suite keeps its own,
# so it neither reads what an operator's runs left nor leaves anything in their home.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="rig-test-cache-")

REPO = Path(__file__).resolve().parents[1]
RIG_BIN = [sys.executable, "-m", "rig.cli"]


def rig_file(directory: Path, **overrides: object) -> Path:
    """A small, quick simulated rig (the demo rig's poses and presets).

    Screen and photo keep the demo's ratio of screen pixels to sensor pixels (0.9), so moire and
    marker sizes look as they do in the demo, at an eighth of its pixels."""
    rig = yaml.safe_load((REPO / "calibration" / "sim-rig.yaml").read_text())
    rig["display"].update(width=480, height=384, settle_frames=1)
    rig["motion"].update(move_ms=0, settle_ms=0)
    rig["sim"].update(photo_width=600, photo_height=450, time_scale=0.0)
    for key, value in overrides.items():
        if isinstance(value, dict) and value.get("kind", rig.get(key, {}).get("kind")) == rig.get(key, {}).get("kind"):
            rig.setdefault(key, {}).update(value)
        else:
            rig[key] = value
    path = directory / "rig.yaml"
    path.write_text(yaml.safe_dump(rig, sort_keys=False))
    return path


def open_sim_devices(rig_path: Path, fast: bool = True) -> tuple[Devices, SimWorld]:
    """The simulated rig's devices as `open_devices` opens them, with the simulated world they share
    (the true servo pulses and light levels: ground truth no caller of the devices gets)."""
    from contextlib import ExitStack

    from rig.devices.kinds import Devices, Opening, open_camera, open_controller, open_display
    from rig.session import load_rig_for_run
    from rig.sim.world import world

    opening = Opening(load_rig_for_run(rig_path), rig_path, ExitStack(), fast)
    try:
        motion, display = open_controller(opening), open_display(opening)
        devices = Devices(motion, open_camera(opening), display, opening.stack)
    except BaseException:
        opening.stack.close()
        raise
    return devices, world(opening)


def session_file(directory: Path, data: Path, rig: Path, **overrides: object) -> Path:
    session = {
        "rig": str(rig),
        "manifest": {"csv": str(data / "train.csv"), "image_root": str(data)},
        "conditions": [{"pose": "front", "lighting": "bright"}, {"pose": "left", "lighting": "dim"},
                       {"pose": "right_high", "lighting": "left_only"}],
        "repeats": 1,
        "retries": 2,
        "output": str(directory / "run"),
    }
    session.update(overrides)
    path = directory / "session.yaml"
    path.write_text(yaml.safe_dump(session, sort_keys=False))
    return path


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height (a decompression bomb's calling card)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture(scope="session")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight phantom x-rays with a CheXpert-form manifest (read-only: copy before changing)."""
    from rig.demo_data import make_demo_data

    out = tmp_path_factory.mktemp("phantoms")
    make_demo_data(out, count=8, seed=1)
    return out


def run_rig(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The real `rig` command in its own process, as an operator runs it."""
    return subprocess.run([*RIG_BIN, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


@dataclass(frozen=True)
class FinishedRun:
    """A `rig run` that exited 0: its files and what it printed (read-only: copy before changing)."""

    session: Path
    rig: Path
    run: Path
    stderr: str
    elapsed_s: float


@pytest.fixture(scope="session")
def simavr_run(tmp_path_factory: pytest.TempPathFactory, phantoms: Path) -> FinishedRun:
    """The default session on the real firmware in simavr, run once for the suite:
    tests/test_simavr_session.py checks it, tests/test_noisy_line.py compares a noisy run against it."""
    directory = tmp_path_factory.mktemp("simavr")
    rig = rig_file(directory, controller={"kind": "simavr"}, motion={"settle_ms": 60})
    session = session_file(directory, phantoms, rig)
    started = time.monotonic()
    result = run_rig("run", str(session), timeout=900)
    elapsed_s = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    assert "24/24 done" in result.stderr, result.stderr[-3000:]
    return FinishedRun(session, rig, directory / "run", result.stderr, elapsed_s)


def photos_show_their_sources(run: Path, rig_path: Path) -> int:
    """Rectify every accepted photo with the studio's ground-truth geometry for its pose and check that
    it correlates best with its own source image; returns how many photos were checked."""
    import json
    import sqlite3

    import cv2
    import numpy as np

    from rig.config import load_rig
    from rig.fiducials import fiducial_layout
    from rig.images import prepare
    from rig.sim.studio import Studio

    rig = load_rig(rig_path)
    studio = Studio(rig)
    w, h = rig.display.width, rig.display.height
    band = fiducial_layout(w, h).band
    with sqlite3.connect(run / "run.sqlite") as db:
        rows = db.execute("""SELECT a.photo, im.file, c.targets FROM attempts a JOIN items it ON it.seq = a.seq
                             JOIN images im ON im.image_no = it.image_no
                             JOIN conditions c ON c.condition_no = it.condition_no
                             WHERE a.status = 'accepted'""").fetchall()
    sources = {f: cv2.cvtColor(prepare(f, w, h, band=band).canvas, cv2.COLOR_RGB2GRAY).astype(np.float32).ravel()
               for f in {r[1] for r in rows}}
    for photo, file, targets in rows:
        pulses = [1500.0] * 4
        for ch, us in json.loads(targets).items():
            pulses[int(ch)] = us
        corners = studio.screen_corners(tuple(pulses), w, h)
        H = cv2.getPerspectiveTransform(corners, np.float32([[0, 0], [w, 0], [w, h], [0, h]]))
        img = cv2.imread(str(run / photo), cv2.IMREAD_GRAYSCALE)
        assert img is not None, f"{photo} does not decode"
        rect = cv2.warpPerspective(img, H, (w, h)).astype(np.float32).ravel()
        scores = {f: np.corrcoef(rect, s)[0, 1] for f, s in sources.items()}
        best = max(scores, key=lambda f: scores[f])
        assert best == file, f"{photo} looks like {best}, not its own source {file}"
    return len(rows)


def export_table(session: Path, out: Path) -> list[dict[str, str]]:
    """`rig export` the session's run to `out` and read back its captures.csv."""
    import csv

    result = run_rig("export", str(session), "--out", str(out))
    assert result.returncode == 0, result.stderr
    with open(out / "captures.csv", newline="") as f:
        return list(csv.DictReader(f))


SYNTH_REFERENCE = ("--set", "photographic", "--level", "3", "--seed", "5")


@pytest.fixture(scope="session")
def synth_one_worker(tmp_path_factory: pytest.TempPathFactory, phantoms: Path) -> Path:
    """`rig synth` of the phantoms with SYNTH_REFERENCE on one local worker, made once (read-only): the same
    job on several workers (tests/test_synth.py) and on a Dask cluster (tests/test_synth_dask.py) must give
    its bytes."""
    out = tmp_path_factory.mktemp("synth") / "one"
    result = run_rig("synth", "--csv", str(phantoms / "train.csv"), "--image-root", str(phantoms), "--out", str(out),
                     *SYNTH_REFERENCE, "--workers", "1", timeout=300)
    assert result.returncode == 0, result.stderr
    return out
