"""Assemble a rig file's devices: real drivers, or the simulated ones when the rig file says `sim`.

This is the only place that knows which kind of device the engine gets.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from rig.config import RigConfig
from rig.devices import Camera, Motion
from rig.display import Display
from rig.errors import ConfigError


@dataclass
class Devices:
    motion: Motion
    camera: Camera
    display: Display
    stack: ExitStack  # closes everything in reverse order
    physical: Callable[[], tuple[tuple[float, ...], tuple[int, ...]]] | None = None  # sim only: true rig state

    def close(self) -> None:
        self.stack.close()


def open_devices(rig: RigConfig, rig_path: Path, fast: bool = False) -> Devices:
    """Open controller, display and camera; anything opened is closed again if a later one fails.

    `fast` drops simulated latencies and display frame waits (tests of the store and engine).
    """
    stack = ExitStack()
    try:
        motion, physical = open_controller(rig, rig_path, stack)
        # The simulated rig's display can lag behind show() (rig file: sim.display_lag_frames).
        lag = rig.sim.display_lag_frames if physical is not None else 0
        display = Display(rig.display, wait_frames=not fast, lag_frames=lag, seed=rig.sim.seed)
        stack.callback(display.close)
        camera = _camera(rig, display, physical, fast)
        camera.open()
        stack.callback(camera.close)
        return Devices(motion, camera, display, stack, physical)
    except BaseException:
        stack.close()
        raise


def open_controller(rig: RigConfig, rig_path: Path, stack: ExitStack) -> tuple[Motion, Callable[[], tuple[tuple[float, ...], tuple[int, ...]]] | None]:
    """The controller alone (what `rig jog` needs), closed by `stack`; with the simulator's true state."""
    from rig.devices.link import PortUnavailable
    from rig.devices.rigctl import RigController

    physical = None
    port = rig.controller.port
    if port == "sim":
        from rig.sim.hostfw import HostFirmware

        host = HostFirmware().start()
        stack.callback(host.stop)
        port, physical, power_cycle = host.port, host.physical, host.power_cycle
    elif port == "simavr":
        from rig.sim.avr import AvrSimulator

        avr = AvrSimulator()
        stack.callback(avr.stop)
        port, physical, power_cycle = avr.port, avr.physical, avr.power_cycle
    if physical is not None:  # the simulated cable's noise and power cuts (rig file: sim.line_noise, ...)
        from rig.sim.line import faulty_wiring

        port = faulty_wiring(rig.sim, port, power_cycle, stack)
    try:
        motion = RigController.connect(port, rig)
    except PortUnavailable as e:
        raise ConfigError(f"{rig_path}: controller.port: {e}; check the cable or fix the port") from None
    stack.callback(motion.close)
    return motion, physical


def _camera(rig: RigConfig, display: Display, physical: object, fast: bool) -> Camera:
    backend = rig.camera.backend
    if backend == "gphoto2":
        from rig.devices.gphoto2cam import GPhoto2Camera

        return GPhoto2Camera(model=rig.camera.model, port=rig.camera.port, settings=rig.camera.settings,
                             keep_on_camera=rig.camera.keep_on_camera)
    if physical is None:
        raise ConfigError(f"camera.backend '{backend}' photographs the simulated studio and needs "
                          "controller.port: sim; use backend: gphoto2 for a real camera")
    from rig.sim.camera import SimCamera
    from rig.sim.studio import Studio

    studio = Studio(rig)
    if fast:
        studio.sim = studio.sim.model_copy(update={"time_scale": 0.0})
    if backend == "sim-gphoto2":
        from rig.sim.studio import Scene
        from rig.sim.vcam import SimGPhoto2Camera

        def render() -> bytes:  # what the camera sees at the trigger, through libgphoto2's virtual camera
            pulses, lights = physical()  # type: ignore[operator]
            return studio.jpeg(Scene(display.frame(), pulses, lights))

        return SimGPhoto2Camera(render, settings=rig.camera.settings, keep_on_camera=rig.camera.keep_on_camera)
    return SimCamera(studio, display.frame, physical)  # type: ignore[arg-type]
