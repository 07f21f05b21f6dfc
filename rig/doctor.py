"""`rig doctor`: what this machine can reach, before an operator starts a night-long session.

Each check answers in one line with what was found or what to do; a failed check does not stop the
others. Only what the given rig uses is judged (a simulated rig needs no camera on USB and no firmware
image); the rest is reported for information. Exit status: 0 the rig can run, 1 something it needs is
missing, 2 the rig file is wrong.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from rig.config import RigConfig
from rig.errors import RigError

FIRMWARE = Path(__file__).resolve().parents[1] / "firmware"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    needed: bool = True  # False: reported for information, the rig does not use it


def machine_checks(rig: RigConfig | None = None) -> list[Check]:
    """Cameras, serial ports and firmware tools found on this machine; needed only as far as `rig` uses them."""
    camera = _cameras()
    checks = [replace(camera, needed=rig is not None and rig.camera.backend == "gphoto2"), _serial_ports()]
    simavr = rig is not None and rig.controller.port == "simavr"
    image = FIRMWARE / "build" / ("rigctl.elf" if simavr else "rigctl.hex")
    checks.append(Check("firmware image", image.exists(), str(image) if image.exists() else "not built; run: make firmware",
                        needed=simavr))
    avrdude = shutil.which("avrdude")
    checks.append(Check("avrdude (to flash)", avrdude is not None,
                        avrdude or "not installed; run: apt-get install avrdude", needed=False))
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
