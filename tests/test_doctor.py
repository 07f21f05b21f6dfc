"""`rig doctor RIG` judges what that rig uses, and only that: exit 0 when it can run, 1 when a device it
needs is missing, 2 for a bad rig file."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import REPO, RIG_BIN, run_rig


@pytest.mark.parametrize("rig", ["sim-rig.yaml", "sim-gphoto2-rig.yaml", "simavr-rig.yaml"])
def test_a_shipped_simulated_rig_passes_on_a_machine_without_a_camera(rig: str) -> None:
    """No USB camera here; the simavr rig needs the firmware ELF, which `make test` builds first."""
    result = run_rig("doctor", str(REPO / "calibration" / rig))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout
    assert "controller: answers" in result.stdout
    # What the rig does not use is still reported, marked as not needed.
    assert "cameras (libgphoto2)" in result.stdout and "avrdude" in result.stdout


def test_a_real_camera_rig_without_a_camera_fails_on_the_camera(tmp_path: Path) -> None:
    rig = yaml.safe_load((REPO / "calibration" / "sim-rig.yaml").read_text())
    rig["camera"] = {"kind": "gphoto2"}
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump(rig))
    result = run_rig("doctor", str(path))
    assert result.returncode == 1, result.stdout + result.stderr
    fails = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert fails and all("camera" in line for line in fails), result.stdout


def test_a_bad_rig_file_is_an_operator_mistake(tmp_path: Path) -> None:
    path = tmp_path / "rig.yaml"
    path.write_text("name: x\n")
    result = run_rig("doctor", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_the_real_rig_example_names_each_missing_device_in_one_line() -> None:
    """calibration/real-rig.example.yaml on a machine without its Arduino, camera or display server."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER")}
    result = subprocess.run([*RIG_BIN, "doctor", "calibration/real-rig.example.yaml"], capture_output=True,
                            text=True, timeout=120, cwd=REPO, env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stdout + result.stderr
    fails = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert len(fails) == 3, result.stdout
    controller, display, camera = fails
    assert controller.startswith("FAIL rig lab-rig: controller: ") and "controller.port" in controller
    assert "/dev/ttyACM0" in controller and "check the cable or fix the port" in controller
    assert display.startswith("FAIL rig lab-rig: display: ") and "$DISPLAY and $WAYLAND_DISPLAY" in display
    assert camera.startswith("FAIL rig lab-rig: camera: ") and "no camera found by libgphoto2" in camera
