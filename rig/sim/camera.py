"""The simulated camera: photographs the studio at the moment of the trigger.

`trigger` waits the shutter lag, captures what the display shows and the rig's physical state
(cheap copies), then waits the exposure; `download` renders and JPEG-encodes it after the download
time, so the expensive work runs on the I/O thread exactly where a real camera's transfer would.
Latencies come from the rig file's `sim:` timing profile, multiplied by `time_scale`.
"""

from __future__ import annotations

import itertools
import time
from typing import Callable, Sequence

import numpy as np

from rig.devices import CameraFile, Shot
from rig.sim.studio import Scene, Studio


class SimCamera:
    """A Camera that photographs `frame_source()` from the pose `physical_source()` reports."""

    def __init__(self, studio: Studio, frame_source: Callable[[], np.ndarray],
                 physical_source: Callable[[], tuple[tuple[float, ...], tuple[int, ...]]]) -> None:
        self.studio = studio
        self.frame_source, self.physical_source = frame_source, physical_source
        self._numbers = itertools.count(1)

    def _wait(self, name: str) -> None:
        sim = self.studio.sim
        delay = sim.timing(name) * sim.time_scale
        if delay > 0:
            time.sleep(delay)

    def open(self) -> None:
        pass

    def trigger(self) -> Shot:
        self._wait("shutter_lag_s")
        pulses, lights = self.physical_source()
        scene = Scene(self.frame_source(), pulses, lights)
        self._wait("exposure_s")
        return Shot(next(self._numbers), {"scene": scene})

    def download(self, shot: Shot) -> Sequence[CameraFile]:
        self._wait("download_s")
        scene = shot.info["scene"]
        assert isinstance(scene, Scene)
        return [CameraFile(f"SIM_{shot.number:05d}.JPG", self.studio.jpeg(scene))]

    def close(self) -> None:
        pass
