"""The simulated camera: photographs the studio at the moment of the trigger.

`trigger` waits the shutter lag, captures what the display shows and the rig's physical state
(cheap copies), then waits the exposure and hands the scene to the camera's own processor (one
worker thread that renders and JPEG-encodes, as a real camera processes its photo while the host
moves on); `download` waits the transfer time and returns the JPEG. Latencies come from the rig
file's `sim:` timing profile, multiplied by `time_scale`.

Every JPEG carries the physical state it was taken in (servo pulses and light levels as the
simulator measured them, e.g. on the AVR's pins) in a JPEG comment, so tests can check each accepted
photo against the plan with ground truth instead of the controller's own readback.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from rig.devices import CameraFile, Shot
from rig.devices.kinds import Opening
from rig.sim.studio import Scene, Studio
from rig.sim.world import photographed


class SimCamera:
    """A Camera that photographs `frame_source()` from the pose `physical_source()` reports."""

    def __init__(self, studio: Studio, frame_source: Callable[[], np.ndarray],
                 physical_source: Callable[[], tuple[tuple[float, ...], tuple[int, ...]]]) -> None:
        self.studio = studio
        self.frame_source, self.physical_source = frame_source, physical_source
        self._numbers = itertools.count(1)
        self._processor: ThreadPoolExecutor | None = None  # the Studio is used by this one thread only

    def _wait(self, name: str) -> None:
        sim = self.studio.sim
        delay = sim.timing(name) * sim.time_scale
        if delay > 0:
            time.sleep(delay)

    @property
    def timing_s(self) -> tuple[float, float]:
        """Seconds of one photo's (trigger, download), for the run's time estimate before it starts."""
        sim = self.studio.sim
        return ((sim.timing("shutter_lag_s") + sim.timing("exposure_s")) * sim.time_scale,
                sim.timing("download_s") * sim.time_scale)

    def open(self) -> None:
        self._processor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sim-camera")

    def trigger(self) -> Shot:
        assert self._processor is not None, "open() the camera first"
        self._wait("shutter_lag_s")
        pulses, lights = self.physical_source()
        scene = Scene(self.frame_source(), pulses, lights)
        self._wait("exposure_s")
        return Shot(next(self._numbers), {"jpeg": self._processor.submit(self._jpeg, scene)})

    def _jpeg(self, scene: Scene) -> bytes:
        return with_truth(self.studio.jpeg(scene), scene.pulses, scene.lights)

    def download(self, shot: Shot) -> Sequence[CameraFile]:
        self._wait("download_s")
        jpeg = shot.info["jpeg"]
        assert isinstance(jpeg, Future)
        return [CameraFile(f"SIM_{shot.number:05d}.JPG", jpeg.result())]

    def close(self) -> None:
        if self._processor is not None:
            self._processor.shutdown(wait=False, cancel_futures=True)


_TRUTH = b"rig-sim truth "


def with_truth(jpeg: bytes, pulses: Sequence[float], lights: Sequence[int]) -> bytes:
    """The JPEG with a comment segment (COM, right after SOI) naming the physical state it shows."""
    text = _TRUTH + (f"pulses={','.join(f'{p:.2f}' for p in pulses)} "
                     f"lights={','.join(str(int(v)) for v in lights)}").encode()
    return jpeg[:2] + b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text + jpeg[2:]


def truth(jpeg: bytes) -> tuple[tuple[float, ...], tuple[int, ...]] | None:
    """(pulses, lights) a simulated photo was taken at, from its comment; None if it has none."""
    if jpeg[2:4] != b"\xff\xfe":
        return None
    n = int.from_bytes(jpeg[4:6], "big")
    text = jpeg[6:4 + n]
    if not text.startswith(_TRUTH):
        return None
    kv = dict(p.split("=", 1) for p in text[len(_TRUTH):].decode().split())
    return tuple(float(v) for v in kv["pulses"].split(",")), tuple(int(v) for v in kv["lights"].split(","))


def studio(opening: Opening) -> Studio:
    """The opening's studio; `--fast` (Opening.fast) drops its simulated latencies."""
    made = Studio(opening.rig)
    if opening.fast:
        made.sim = made.sim.model_copy(update={"time_scale": 0.0})
    return made


def open_camera(opening: Opening) -> SimCamera:
    """`kind: sim` (rig/devices/kinds.py): photographs the simulated display from the simulated controller's pose."""
    physical, screen = photographed(opening)
    return SimCamera(studio(opening), screen, physical)
