"""`rig jog` driven through tmux, as an operator over ssh would use it.

The controller is the firmware's core built for the PC (rigctl-host), started by this test process,
with its host-silence timeout off: whatever state it is left in after jog exits is what jog left it in.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from rig.sim.hostfw import HostFirmware

PARK = (1500.0, 1500.0, 1500.0, 1500.0)


def _screen(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout


def _wait_for(session: str, text: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        screen = _screen(session)
        if text in screen:
            return screen
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared; screen:\n{_screen(session)}")


def _send(session: str, *keys: str) -> None:
    subprocess.run(["tmux", "send-keys", "-t", session, *keys], check=True)


def _key(session: str, key: str, then: str) -> str:
    """Press a key and wait until the screen shows its effect."""
    _send(session, key)
    return _wait_for(session, then)


def _wait_physical(host: HostFirmware, want: tuple[tuple[float, ...], tuple[int, ...]], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while host.physical() != want:
        assert time.monotonic() < deadline, f"the controller stayed at {host.physical()}, not {want}"
        time.sleep(0.05)


@pytest.fixture
def controller_rig(tmp_path: Path) -> Iterator[tuple[Path, HostFirmware]]:
    assert shutil.which("tmux"), "tmux is installed by make test"
    host = HostFirmware().start()
    text = (REPO / "calibration" / "sim-rig.yaml").read_text()
    text = text.replace("  kind: rigctl-host ", f"  kind: rigctl\n  port: {host.port} ")
    text = text.replace("host_timeout_ms: 30000", "host_timeout_ms: 0")
    rig = tmp_path / "rig.yaml"
    rig.write_text(text)
    try:
        yield rig, host
    finally:
        host.stop()


@pytest.fixture
def jog(controller_rig: tuple[Path, HostFirmware]) -> Iterator[str]:
    rig, _ = controller_rig
    session = f"jog-{uuid.uuid4().hex[:8]}"
    cmd = f"{sys.executable} -m rig.cli jog {rig}"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "160", "-y", "30", cmd], check=True, cwd=REPO)
    try:
        _wait_for(session, "rig jog: sim-rig")
        yield session
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def _move_away_from_park(session: str) -> None:
    _key(session, "3", "step 10")
    _key(session, "Right", "target  1510 us")
    _key(session, "Down", "> camera_tilt")
    _key(session, "4", "step 50")
    _key(session, "Left", "target  1450 us")
    for _ in range(3):
        _send(session, "Down")
    _wait_for(session, "> left ")
    _key(session, "Right", "level  50")


def _gone(session: str) -> bool:
    return subprocess.run(["tmux", "has-session", "-t", session], capture_output=True).returncode != 0


def test_keys_move_the_channel_and_a_slowly_typed_name_saves_the_pose(
        jog: str, controller_rig: tuple[Path, HostFirmware]) -> None:
    rig, host = controller_rig
    _key(jog, "3", "step 10")
    _key(jog, "Right", "target  1510 us")
    _key(jog, "Right", "target  1520 us")
    screen = _wait_for(jog, "pulse  1520 us  target  1520 us")
    assert "(no calibration)" in screen
    _key(jog, "Down", "> camera_tilt")
    _key(jog, "4", "step 50")
    assert "camera_tilt      servo 1  pulse  1450 us" in _key(jog, "Left", "pulse  1450 us")
    _key(jog, "s", "save pose as")
    for ch in "high_left":  # an operator typing: well over the screen's 0.2 s redraw timeout per key
        time.sleep(0.5)
        _send(jog, "-l", ch)
    _wait_for(jog, "save pose as (Enter to save, Esc to cancel): high_left")
    time.sleep(1.0)  # thinking before Enter
    _key(jog, "Enter", "saved pose 'high_left'")
    _send(jog, "q")
    text = rig.read_text()
    assert "# named servo targets (pulses)" in text  # the operator's comments survive
    saved = yaml.safe_load(text)["poses"]["high_left"]
    assert saved["camera_pan"] == 1520 and saved["camera_tilt"] == 1450
    assert saved["light_left"] == 1500 and saved["light_right"] == 1500
    _wait_physical(host, (PARK, (0, 0)))


@pytest.mark.parametrize("how", ["q", "ctrl-c", "sigterm", "terminal-closed", "crash"])
def test_every_exit_parks_and_turns_the_lights_off(
        jog: str, controller_rig: tuple[Path, HostFirmware], how: str) -> None:
    rig, host = controller_rig
    _move_away_from_park(jog)
    _wait_physical(host, ((1510.0, 1450.0, 1500.0, 1500.0), (50, 0)))
    pid = subprocess.run(["tmux", "display-message", "-p", "-t", jog, "#{pane_pid}"],
                         capture_output=True, text=True, check=True).stdout.strip()
    if how == "q":
        _send(jog, "q")
    elif how == "ctrl-c":
        _send(jog, "C-c")
    elif how == "sigterm":
        subprocess.run(["kill", "-TERM", pid], check=True)
    elif how == "terminal-closed":  # ssh dropped: the terminal hangs up
        subprocess.run(["tmux", "kill-session", "-t", jog], check=True)
    else:  # a crash inside the screen loop: the rig file was broken in an editor meanwhile, then `s`
        rig.write_text(rig.read_text() + "\nposes: [unclosed\n")
        _key(jog, "s", "save pose as")
        _send(jog, "-l", "x")
        _send(jog, "Enter")
    _wait_physical(host, (PARK, (0, 0)))
    deadline = time.monotonic() + 30
    while not _gone(jog):
        assert time.monotonic() < deadline, f"jog did not exit after {how}"
        time.sleep(0.05)
