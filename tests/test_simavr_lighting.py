"""On the simavr rig the simulated camera sees the light duty measured on the AVR's PWM pins, so one image
photographed under two lighting presets differs the way it does on the sim rig (dim darker than bright)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import cv2
import numpy as np
from conftest import rig_file, run_rig, session_file

PRESETS = [{"pose": "front", "lighting": "bright"}, {"pose": "front", "lighting": "dim"}]


def _brightness(tmp_path: Path, phantoms: Path, port: str) -> dict[tuple[str, str], float]:
    """Mean grey level of each accepted photo, by (image, lighting preset)."""
    tmp_path.mkdir()
    rig = rig_file(tmp_path, controller={"kind": port}, motion={"settle_ms": 60})
    session = session_file(tmp_path, phantoms, rig, conditions=PRESETS)
    result = run_rig("run", str(session), timeout=300)
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(tmp_path / "run" / "run.sqlite") as db:
        rows = db.execute("""SELECT im.image_id, c.lighting, a.photo FROM attempts a JOIN items it ON it.seq = a.seq
                             JOIN images im ON im.image_no = it.image_no
                             JOIN conditions c ON c.condition_no = it.condition_no
                             WHERE a.status = 'accepted'""").fetchall()
    assert len(rows) == 16
    return {(image, lighting): float(cv2.imread(str(tmp_path / "run" / photo), cv2.IMREAD_GRAYSCALE).mean())
            for image, lighting, photo in rows}


def test_lighting_presets_differ_on_the_simavr_rig_as_on_the_sim_rig(tmp_path: Path, phantoms: Path) -> None:
    host = _brightness(tmp_path / "sim", phantoms, "rigctl-host")
    avr = _brightness(tmp_path / "avr", phantoms, "simavr")
    images = {image for image, _ in host}
    host_ratio = np.array([host[i, "bright"] / host[i, "dim"] for i in sorted(images)])
    avr_ratio = np.array([avr[i, "bright"] / avr[i, "dim"] for i in sorted(images)])
    assert (host_ratio > 1.2).all(), f"the sim rig's presets must differ: {host_ratio}"
    # the same image under the same preset looks the same on both rigs (same light levels reach the camera)
    assert np.allclose(avr_ratio, host_ratio, rtol=0.05), f"simavr {avr_ratio} vs sim {host_ratio}"
    for key, level in host.items():
        assert abs(avr[key] - level) < 0.05 * level, f"{key}: simavr photo mean {avr[key]:.1f}, sim {level:.1f}"
