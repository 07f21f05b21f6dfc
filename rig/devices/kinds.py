"""Which module opens each kind of controller, camera and display a rig file can declare.

The table names factories by dotted path and imports only the one a rig file asks for, so a real
rig never imports the simulator (rig/sim/). A new kind (a Pololu Maestro, say) is one new module
with a factory `open_x(opening) -> device`, its config model in rig/config.py, and one line here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rig.config import RigConfig
from rig.devices import Camera, Display, Motion

FACTORIES: dict[str, dict[str, str]] = {
    "controller": {
        "rigctl": "rig.devices.rigctl:open_controller",
        # the rigctl protocol: the firmware's own core built for this PC, on a pty
        "rigctl-host": "rig.sim.controllers:open_rigctl_host",
        "simavr": "rig.sim.controllers:open_simavr",
        "maestro": "rig.devices.maestro:open_controller",
        "sim-maestro": "rig.sim.maestro:open_controller",
    },
    "camera": {
        "gphoto2": "rig.devices.gphoto2cam:open_camera",
        "sim": "rig.sim.camera:open_camera",
        "sim-gphoto2": "rig.sim.vcam:open_camera",
    },
    "display": {
        "pygame": "rig.devices.display:open_display",
        "sim": "rig.sim.display:open_display",
    },
}


@dataclass
class Opening:
    """What a factory gets: the rig file, and where to register what must be closed again."""

    rig: RigConfig
    rig_path: Path
    stack: ExitStack  # closes everything opened so far, in reverse order
    fast: bool = False  # simulated devices drop their latencies and frame waits; real ones ignore it
    # Shared by the devices of one opening that need each other (the simulated world), by key.
    shared: dict[str, Any] = field(default_factory=dict)


def _factory(role: str, kind: str) -> Any:
    """The factory function of a kind, imported now (and only now)."""
    module, name = FACTORIES[role][kind].split(":")
    return getattr(importlib.import_module(module), name)


def open_controller(opening: Opening) -> Motion:
    """The rig file's controller, connected, closed by `opening.stack`."""
    make: Callable[[Opening], Motion] = _factory("controller", opening.rig.controller.kind)
    return make(opening)


def open_display(opening: Opening) -> Display:
    make: Callable[[Opening], Display] = _factory("display", opening.rig.display.kind)
    display = make(opening)
    opening.stack.callback(display.close)
    return display


def open_camera(opening: Opening) -> Camera:
    """The rig file's camera, open; a simulated one needs the simulated controller and display opened first."""
    make: Callable[[Opening], Camera] = _factory("camera", opening.rig.camera.kind)
    camera = make(opening)
    camera.open()
    opening.stack.callback(camera.close)
    return camera


@dataclass
class Devices:
    motion: Motion
    camera: Camera
    display: Display
    stack: ExitStack  # closes everything in reverse order

    def close(self) -> None:
        self.stack.close()


def open_devices(rig: RigConfig, rig_path: Path, fast: bool = False) -> Devices:
    """Open controller, display and camera; anything opened is closed again if a later one fails.

    `fast` drops simulated latencies and display frame waits (tests of the store and engine)."""
    opening = Opening(rig, rig_path, ExitStack(), fast)
    try:
        motion = open_controller(opening)
        display = open_display(opening)
        camera = open_camera(opening)
        return Devices(motion, camera, display, opening.stack)
    except BaseException:  # a device that fails to open, Ctrl-C included: close the ones opened; re-raised
        opening.stack.close()
        raise
