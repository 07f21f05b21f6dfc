"""Assemble a rig file's devices: real drivers, or the simulated ones when the rig file says `sim`.

This is the only place that knows which kind of device the engine gets.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass

from rig.config import RigConfig
from rig.devices import Camera, Motion
from rig.display import Display


@dataclass
class Devices:
    motion: Motion
    camera: Camera
    display: Display
    stack: ExitStack  # closes everything in reverse order

    def close(self) -> None:
        self.stack.close()


def open_devices(rig: RigConfig, fast: bool = False) -> Devices:
    """Open controller, display and camera; anything opened is closed again if a later one fails.

    `fast` drops simulated latencies and display frame waits (tests of the store and engine).
    """
    from rig.devices.rigctl import RigController

    stack = ExitStack()
    try:
        physical = None
        port = rig.controller.port
        if port == "sim":
            from rig.sim.twin import TwinServer

            twin = TwinServer().start()
            stack.callback(twin.stop)
            port, physical = twin.port, twin.physical
        motion = RigController.connect(port, rig)
        stack.callback(motion.close)
        display = Display(rig.display, wait_frames=not fast)
        stack.callback(display.close)
        camera = _camera(rig, display, physical, fast)
        camera.open()
        stack.callback(camera.close)
        return Devices(motion, camera, display, stack)
    except BaseException:
        stack.close()
        raise


def _camera(rig: RigConfig, display: Display, physical: object, fast: bool) -> Camera:
    backend = rig.camera.backend
    if backend == "gphoto2":
        from rig.devices.gphoto2cam import GPhoto2Camera

        return GPhoto2Camera(model=rig.camera.model, port=rig.camera.port, settings=rig.camera.settings,
                             keep_on_camera=rig.camera.keep_on_camera)
    if physical is None:
        from rig.errors import ConfigError

        raise ConfigError(f"camera.backend '{backend}' photographs the simulated studio and needs "
                          "controller.port: sim; use backend: gphoto2 for a real camera")
    from rig.sim.camera import SimCamera
    from rig.sim.studio import Studio

    studio = Studio(rig)
    if fast:
        studio.sim = studio.sim.model_copy(update={"time_scale": 0.0})
    if backend == "sim-gphoto2":
        from rig.sim.vcam import SimGPhoto2Camera

        sim_cam = SimCamera(studio, display.frame, physical)  # type: ignore[arg-type]
        return SimGPhoto2Camera(render=lambda: sim_cam.render_now())  # type: ignore[call-arg]
    return SimCamera(studio, display.frame, physical)  # type: ignore[arg-type]
