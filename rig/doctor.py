"""`rig doctor`: what this machine can reach, before an operator starts a night-long session.

Each check answers in one line with what was found or what to do; a failed check does not stop the
others, and the exit status says whether any failed.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from rig.config import RigConfig
from rig.errors import RigError

FIRMWARE = Path(__file__).resolve().parents[1] / "firmware"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def machine_checks() -> list[Check]:
    """Cameras, serial ports and firmware tools found on this machine."""
    checks = [_cameras(), _serial_ports()]
    elf = FIRMWARE / "build" / "rigctl.hex"
    checks.append(Check("firmware image", elf.exists(),
                        str(elf) if elf.exists() else "not built; run: make firmware"))
    avrdude = shutil.which("avrdude")
    checks.append(Check("avrdude (to flash)", avrdude is not None,
                        avrdude or "not installed; run: apt-get install avrdude"))
    return checks


def _cameras() -> Check:
    try:
        from rig.devices.gphoto2cam import list_cameras

        cameras = list_cameras(probe=True)
    except Exception as e:  # libgphoto2 missing or broken: say so, keep checking the rest
        return Check("cameras (libgphoto2)", False, f"cannot list cameras: {e}")
    if not cameras:
        return Check("cameras (libgphoto2)", False, "none detected; check the USB cable and that the camera is on")
    lines = []
    for c in cameras:
        extra = f" serial {c['serial']}" if c.get("serial") else ""
        extra += f" ERROR {c['error']}" if c.get("error") else ""
        lines.append(f"{c['model']} at {c['port']}{extra}")
    return Check("cameras (libgphoto2)", not any(c.get("error") for c in cameras), "; ".join(lines))


def _serial_ports() -> Check:
    from serial.tools import list_ports

    ports = [f"{p.device} ({p.description})" for p in list_ports.comports()]
    return Check("serial ports", True, "; ".join(ports) if ports else "none found (a sim rig needs none)")


def rig_checks(rig: RigConfig, rig_path: Path) -> list[Check]:
    """Open the rig file's devices once: controller answers, camera opens, display opens."""
    from rig.rigs import open_devices

    try:
        devices = open_devices(rig, rig_path, fast=True)
    except RigError as e:
        return [Check(f"rig {rig.name}", False, str(e))]
    try:
        state = devices.motion.state()
        return [Check(f"rig {rig.name}: controller", True,
                      f"answers; servos at {list(state.positions)}, lights {list(state.lights)}"),
                Check(f"rig {rig.name}: display", True, f"{devices.display.width}x{devices.display.height}"
                      + (" (no screen: SDL dummy driver)" if devices.display.headless else "")),
                Check(f"rig {rig.name}: camera", True, f"{rig.camera.backend} opened")]
    finally:
        devices.close()
