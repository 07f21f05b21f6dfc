"""`rig doctor RIG` judges what that rig uses, and only that: exit 0 when it can run, 1 when a device it
needs is missing, 2 for a bad rig file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_rig


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
