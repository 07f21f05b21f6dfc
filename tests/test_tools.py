"""`rig doctor` and `rig firmware`: what an operator sees before a session."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from conftest import REPO, RIG_BIN, run_rig

from rig.sim.vcam import vusb_dir


def test_doctor_lists_the_virtual_camera_and_checks_a_rig(tmp_path: Path, phantoms: Path) -> None:
    jpeg = next((phantoms / "CheXpert-v1.0-small").rglob("*.jpg"))
    shutil.copy(jpeg, tmp_path / "frame.jpg")
    env = dict(os.environ, IOLIBS=str(vusb_dir()), VCAMERADIR=str(tmp_path))
    result = subprocess.run([*RIG_BIN, "doctor", str(REPO / "calibration" / "sim-rig.yaml")], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    out = result.stdout
    assert "ok   cameras (libgphoto2): " in out and " at usb:" in out
    assert "ok   rig sim-rig: controller: answers; servos at [1500, 1500, 1500, 1500]" in out
    assert "Traceback" not in result.stderr


def test_doctor_reports_an_unreachable_controller_in_one_line(tmp_path: Path) -> None:
    rig = (REPO / "calibration" / "sim-rig.yaml").read_text()
    rig = rig.replace("  kind: rigctl-host ", "  kind: rigctl\n  port: /dev/ttyUSB-gone ")
    (tmp_path / "rig.yaml").write_text(rig)
    result = run_rig("doctor", str(tmp_path / "rig.yaml"))
    assert result.returncode == 1
    assert "FAIL rig sim-rig: " in result.stdout and "controller.port" in result.stdout


def test_firmware_flash_refuses_a_port_that_does_not_exist() -> None:
    result = run_rig("firmware", "flash", "--port", "/dev/ttyACM-not-there")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "no such device" in result.stderr
