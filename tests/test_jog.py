"""`rig jog` driven through tmux, as an operator over ssh would use it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import yaml

from conftest import REPO


def _screen(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout


def _wait_for(session: str, text: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        screen = _screen(session)
        if text in screen:
            return screen
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never appeared; screen:\n{_screen(session)}")


def test_keys_move_the_channel_and_save_writes_the_pose_keeping_comments(tmp_path: Path) -> None:
    assert shutil.which("tmux"), "tmux is installed by make test"
    rig = tmp_path / "rig.yaml"
    rig.write_text((REPO / "calibration" / "sim-rig.yaml").read_text())
    session = f"jog-{uuid.uuid4().hex[:8]}"
    cmd = f"SDL_VIDEODRIVER=dummy {sys.executable} -m rig.cli jog {rig}"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "160", "-y", "30", cmd], check=True, cwd=REPO)
    try:
        _wait_for(session, "rig jog: sim-rig")
        keys = ["3", "Right", "Right", "Down", "4", "Left"]  # pan +2 x 10 us, tilt -50 us
        for key in keys:
            subprocess.run(["tmux", "send-keys", "-t", session, key], check=True)
            time.sleep(0.15)
        screen = _wait_for(session, "pulse  1520 us  target  1520 us")
        assert "camera_tilt      servo 1  pulse  1450 us" in _wait_for(session, "pulse  1450 us")
        assert "(no calibration)" in screen
        subprocess.run(["tmux", "send-keys", "-t", session, "s"], check=True)
        _wait_for(session, "save pose as")
        subprocess.run(["tmux", "send-keys", "-t", session, "high_left", "Enter"], check=True)
        _wait_for(session, "saved pose 'high_left'")
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    text = rig.read_text()
    assert "# named servo targets (pulses)" in text  # the operator's comments survive
    saved = yaml.safe_load(text)["poses"]["high_left"]
    assert saved["camera_pan"] == 1520 and saved["camera_tilt"] == 1450
    assert saved["light_left"] == 1500 and saved["light_right"] == 1500
