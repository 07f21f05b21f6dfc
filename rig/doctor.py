"""`rig doctor`: what this machine can reach, before an operator starts a night-long session.

Each check answers in one line with what was found or what to do; a failed check does not stop the
others. Only what the given rig uses is judged (a simulated rig needs no camera on USB and no firmware
image); the rest is reported for information. Exit status: 0 the rig can run, 1 something it needs is
missing, 2 the rig file is wrong.
"""

from __future__ import annotations

import shutil
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

from rig.config import MaestroConfig, RigConfig
from rig.errors import RigError

FIRMWARE = Path(__file__).resolve().parents[1] / "firmware"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    needed: bool = True  # False: reported for information, the rig does not use it
    listing: bool = False  # what this machine has, for information; the rig's own checks judge it


def machine_checks(rig: RigConfig | None = None) -> list[Check]:
    """Cameras, serial ports and firmware tools found on this machine; needed only as far as `rig` uses them."""
    # A rig with a gphoto2 camera has it judged by its own camera check (rig_checks); this lists them all.
    checks = [replace(_cameras(), needed=False, listing=True), replace(_serial_ports(), listing=True)]
    simavr = rig is not None and rig.controller.kind == "simavr"
    image = FIRMWARE / "build" / ("rigctl.elf" if simavr else "rigctl.hex")
    checks.append(Check("firmware image", image.exists(),
                        str(image) if image.exists() else "not built; run: make firmware", needed=simavr))
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
    """Open the rig file's devices one by one (controller, display, camera): one line for each.

    A device that is missing does not stop the checks of the others."""
    from rig.devices.kinds import Opening, open_camera, open_controller, open_display

    opening = Opening(rig, rig_path, ExitStack(), fast=True)
    checks = []
    if isinstance(rig.controller, MaestroConfig):  # its settings live on the Maestro: read back what we can
        from rig.devices.maestro import maestro_checks

        checks += maestro_checks(rig.controller, rig)
    try:
        try:
            state = open_controller(opening).state()
            checks.append(Check(f"rig {rig.name}: controller", True, f"answers; servos at {list(state.positions)}, "
                                f"lights {list(state.lights)} ({rig.controller.kind})"))
        except RigError as e:
            checks.append(Check(f"rig {rig.name}: controller", False, str(e)))
        try:
            display = open_display(opening)
            checks.append(Check(f"rig {rig.name}: display", True, f"{rig.display.kind} {display.width}x{display.height}"
                                + (" (headless: nothing is shown)" if rig.display.headless else "")))
        except RigError as e:
            checks.append(Check(f"rig {rig.name}: display", False, str(e)))
        try:
            open_camera(opening)
            checks.append(Check(f"rig {rig.name}: camera", True, f"{rig.camera.kind} opened"))
        except RigError as e:
            checks.append(Check(f"rig {rig.name}: camera", False, str(e)))
    finally:
        opening.stack.close()
    return checks
